"""Decoding: bitstream -> weights -> one forward pass -> pixels. Imports nothing of the fitting code."""

from __future__ import annotations

import math

import numpy as np
import torch

from .container import VERSION, Bitstream, section_sizes, unpack
from .entropy import decode_symbols
from .errors import DecodeError, InputError
from .network import Generator, NetworkConfig, fixed_input, reference_weights
from .quantize import dequantize

__all__ = ["decode", "info", "render", "resolve_device"]


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


def decode(data: bytes, *, device: str = "cpu") -> np.ndarray:
    """Decode a ``.dip`` file's bytes to uint8 pixels (HxW for grayscale, HxWx3 for RGB)."""
    stream = unpack(data)
    dev = resolve_device(device)
    return render(stream.network, _weights(stream), stream.seed, stream.height, stream.width, dev)


def info(data: bytes) -> dict:
    """What a file holds, without running the network: sizes, architecture, rate."""
    stream = unpack(data)
    cfg = stream.network
    params = cfg.parameter_count()
    return {
        "format_version": VERSION,
        "file_bytes": len(data),
        "width": stream.width,
        "height": stream.height,
        "channels": stream.channels,
        "mode": stream.mode,
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
        "bpp": round(8 * len(data) / (stream.width * stream.height), 6),
    }
