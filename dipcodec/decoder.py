"""Decoding: bitstream -> weights -> one forward pass -> pixels (-> the file's post-filter, if any).
Imports nothing of the fitting code."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from .container import Bitstream, section_sizes, unpack
from .downsample import downsample
from .entropy import decode_symbols
from .errors import DecodeError, InputError
from .network import CanvasOffset, Generator, NetworkConfig, fixed_input, full_float32, reference_weights, roll_canvas
from .quantize import dequantize

if TYPE_CHECKING:
    from .transfer.basefile import BaseChoice, BaseModel

__all__ = ["Scale", "decode", "info", "render", "render_stream", "resolve_device", "reference_of", "decoded_weights", "as_bases"]

Scale = Literal["full", "native"]
"""For super-resolution files: the super-resolved image, or one brought back to the fitted image's size."""


def resolve_device(device: str) -> torch.device:
    """``cpu`` or ``cuda[:N]``, with a one-line error when CUDA is asked for and missing."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r} (use cpu or cuda)") from None
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r} (use cpu or cuda)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    return dev


@torch.no_grad()
@full_float32()
def render(config: NetworkConfig, weights: list[np.ndarray], seed: int, height: int, width: int,
           device: str | torch.device = "cpu", offset: CanvasOffset = (0, 0)) -> np.ndarray:
    """The decoded image: the network's output (rolled by ``offset``) cropped to the true size, as
    uint8 HxW or HxWx3."""
    dev = torch.device(device)
    net = Generator(config).load(weights).to(dev)
    out = roll_canvas(net(fixed_input(config, seed, height, width).to(dev)), offset)[0, :, :height, :width]
    pixels = torch.round(out.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
    return pixels[0] if config.out_channels == 1 else np.ascontiguousarray(pixels.transpose(1, 2, 0))


def reference_of(stream: Bitstream, bases: Sequence[BaseModel] = ()) -> list[np.ndarray]:
    """The weights a file's deltas are coded against: seeded, or a base model (from ``bases`` or the
    shipped ones; a DecodeError names a missing one). A sequence's frames get theirs from the sequence."""
    if stream.reference == "previous-frame":
        raise DecodeError("this is a frame of a sequence: decode the whole sequence")
    if stream.reference == "base":
        from .transfer.basefile import find_base

        base = find_base(stream.base_id, bases)
        if base.network != stream.network:
            raise DecodeError(f"base model {base.name} does not match the file's network")
        return list(base.weights)
    return reference_weights(stream.network, stream.seed)


def decoded_weights(stream: Bitstream, reference: list[np.ndarray]) -> list[np.ndarray]:
    """Entropy-decode and dequantize a file's weights against their reference."""
    shapes = stream.network.tensor_shapes()
    symbols = decode_symbols(stream.weights, list(stream.models), [math.prod(s) for s in shapes])
    return dequantize([q.reshape(s) for q, s in zip(symbols, shapes)], reference, list(stream.step_codes))


def as_bases(base: BaseChoice) -> tuple[BaseModel, ...]:
    """The caller's base model, if any, as the extra bases :func:`reference_of` searches."""
    if base is None:
        return ()
    from .transfer.basefile import BaseModel, load_base

    return (base if isinstance(base, BaseModel) else load_base(base),)


def decode(data: bytes, *, device: str = "cpu", scale: Scale = "full",
           base: BaseChoice = None) -> np.ndarray:
    """Decode a ``.dip`` file's bytes to uint8 pixels (HxW for grayscale, HxWx3 for RGB).

    A super-resolution file decodes to the large image; ``scale="native"`` brings it down to the
    size it was fitted at, through the downsampler of the fit. A file coded from a base model that
    does not ship with dipcodec needs it as ``base`` (a ``.dipbase`` path or a loaded one).
    """
    if scale not in ("full", "native"):
        raise InputError(f"scale must be 'full' or 'native', got {scale!r}")
    stream = unpack(data)
    dev = resolve_device(device)
    return render_stream(stream, decoded_weights(stream, reference_of(stream, as_bases(base))), dev, scale)


def render_stream(stream: Bitstream, weights: list[np.ndarray], device: torch.device,
                  scale: Scale = "full", offset: CanvasOffset = (0, 0)) -> np.ndarray:
    """A parsed file's image from its decoded weights (through the file's post-filter, if it has
    one); ``offset`` is a sequence frame's canvas offset."""
    height, width = stream.output_size
    pixels = render(stream.network, weights, stream.seed, height, width, device, offset)
    if stream.post_filter is not None:
        pixels = stream.post_filter.apply(pixels)
    if scale == "native" and stream.scale > 1:
        planes = pixels.reshape(height, width, -1)
        small = np.stack([downsample(torch.from_numpy(planes[..., c].astype(np.float32))[None, None], stream.scale)
                          [0, 0].clamp(0, 255).round().to(torch.uint8).numpy() for c in range(planes.shape[2])], -1)
        pixels = small[..., 0] if stream.channels == 1 else small
    return pixels


def info(data: bytes) -> dict:
    """What a file holds, without running the network: sizes, architecture, rate.

    ``width`` and ``height`` are those of the decoded image (``scale`` times the fitted image's for
    super-resolution), and ``bpp`` counts its pixels.
    """
    stream = unpack(data)
    cfg = stream.network
    params = cfg.parameter_count()
    height, width = stream.output_size
    return {
        "format_version": stream.version,
        "file_bytes": len(data),
        "width": width,
        "height": height,
        "channels": stream.channels,
        "mode": stream.mode,
        "scale": stream.scale,
        "reference": stream.reference,
        "base_id": stream.base_id.hex() if stream.base_id else None,
        "seed": stream.seed,
        "architecture": {
            "channels": list(cfg.channels),
            "kernel_sizes": list(cfg.kernel_sizes),
            "input_channels": cfg.input_channels,
            "shuffle": cfg.shuffle,
            "upsample": cfg.upsample,
            "activation": cfg.activation,
        },
        "parameters": params,
        "post_filter": ({"taps": stream.post_filter.taps, "precision": stream.post_filter.precision,
                         "phases": stream.post_filter.phases, "thresholds": list(stream.post_filter.thresholds)}
                        if stream.post_filter else None),
        "section_bytes": section_sizes(data),
        "bits_per_weight": round(8 * len(stream.weights) / params, 4),
        "bpp": round(8 * len(data) / (width * height), 6),
    }
