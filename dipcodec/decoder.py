"""Decoding: bitstream -> weights -> one forward pass -> pixels. Imports nothing of the fitting code."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from .container import Bitstream, section_sizes, unpack
from .entropy import decode_symbols
from .errors import DecodeError, InputError
from .network import Generator, NetworkConfig, fixed_input, reference_weights
from .quantize import dequantize

__all__ = ["Scale", "decode", "info", "render", "resolve_device"]

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
def render(config: NetworkConfig, weights: list[np.ndarray], seed: int, height: int, width: int,
           device: str | torch.device = "cpu") -> np.ndarray:
    """The decoded image: the network's output cropped to the true size, as uint8 HxW or HxWx3."""
    dev = torch.device(device)
    net = Generator(config).load(weights).to(dev)
    out = net(fixed_input(config, seed, height, width).to(dev))[0, :, :height, :width]
    pixels = torch.round(out.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
    return pixels[0] if config.out_channels == 1 else np.ascontiguousarray(pixels.transpose(1, 2, 0))


def _weights(stream: Bitstream) -> list[np.ndarray]:
    if stream.reference == "base":
        raise DecodeError(f"this file needs base model {stream.base_id.hex()}, which is not available")
    if stream.reference == "previous-frame":
        raise DecodeError("this is a frame of a sequence: decode the whole sequence")
    shapes = stream.network.tensor_shapes()
    symbols = decode_symbols(stream.weights, list(stream.models), [math.prod(s) for s in shapes])
    reference = reference_weights(stream.network, stream.seed)
    return dequantize([q.reshape(s) for q, s in zip(symbols, shapes)], reference, list(stream.step_codes))


def decode(data: bytes, *, device: str = "cpu", scale: Scale = "full") -> np.ndarray:
    """Decode a ``.dip`` file's bytes to uint8 pixels (HxW for grayscale, HxWx3 for RGB).

    A super-resolution file decodes to the large image; ``scale="native"`` brings it down to the
    size it was fitted at, through the downsampler of the fit.
    """
    if scale not in ("full", "native"):
        raise InputError(f"scale must be 'full' or 'native', got {scale!r}")
    stream = unpack(data)
    dev = resolve_device(device)
    height, width = stream.output_size
    pixels = render(stream.network, _weights(stream), stream.seed, height, width, dev)
    if scale == "native" and stream.scale > 1:
        from .restoration.downsample import downsample

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
        },
        "parameters": params,
        "section_bytes": section_sizes(data),
        "bits_per_weight": round(8 * len(stream.weights) / params, 4),
        "bpp": round(8 * len(data) / (width * height), 6),
    }
