"""Restoration in one step: fit, and keep the float network's image instead of coding it."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..decoder import resolve_device
from ..encoder import BITS_PER_WEIGHT, PRESETS, FittedNetwork, Preset, Progress, check_settings, network_layout
from ..errors import InputError
from ..images import as_array
from .modes import Restoration, RestorationMode, restoration_for

__all__ = ["restore", "RESTORE_BPP", "RESTORE_WIDTH"]

RESTORE_BPP = 2.0
"""Size of the inpainting network, as a bit budget per pixel at the encoder's bits per weight: as
wide as the decoder's limits allow on a 768x512 image."""
RESTORE_WIDTH = 128
"""Width of the super-resolution and denoising networks whatever the image's size (on images of 64
pixels or more a side), as the Deep Image Prior's are one network each. kodim07's 256-pixel crop at
sigma 25: 27.6 dB at width 64, 28.2 at 128, 28.3 at 256 for 70% more time; 4x super-resolution of it
and of kodim01's at 128: +1.20 and +0.44 dB over bicubic, against +1.15 and +0.33 at width 60 of the
former layout (BENCHMARKS.md, "Restoration")."""


def restore(image, mode: RestorationMode, *, mask=None, factor: int | None = None, preset: Preset = "default",
            seed: int = 0, device: str = "cpu", progress: Progress | None = None) -> np.ndarray:
    """Inpaint (``mask``: non-zero = missing, or ``"subtitles"``), super-resolve by ``factor`` (default 4),
    or denoise an image; returns uint8 pixels. Inpainting keeps the known pixels as they were."""
    pixels = as_array(image)
    if mode not in ("inpaint", "super-resolution", "denoise"):
        raise InputError(f"unknown restoration {mode!r} (use inpaint, super-resolution or denoise)")
    if (mask is not None) != (mode == "inpaint"):
        raise InputError("a mask goes with inpainting, and inpainting needs one")
    if factor is not None and mode != "super-resolution":
        raise InputError("a factor goes with super-resolution only")
    restoration = restoration_for(pixels, mask=mask, denoise=mode == "denoise",
                                  sr=(factor or 4) if mode == "super-resolution" else None)
    restoration.check(pixels)
    check_settings(None, None, preset, seed)
    schedule = dataclasses.replace(PRESETS[preset], qat_iterations=0)
    fitted = FittedNetwork.fit(pixels, _network_bpp(restoration, pixels), schedule, seed, resolve_device(device),
                               restoration, progress)
    planes = (fitted.output()[0].clamp(0, 1) * 255).round().byte().cpu().numpy()
    restored = planes[0] if planes.shape[0] == 1 else np.ascontiguousarray(planes.transpose(1, 2, 0))
    if restoration.mask is not None:  # the known pixels stay exactly as they were
        restored = np.where(restoration.mask[..., None] if restored.ndim == 3 else restoration.mask, restored, pixels)
    return restored


def _network_bpp(restoration: Restoration, pixels: np.ndarray) -> float:
    """The bit budget per output pixel that sizes the network: RESTORE_BPP for inpainting, what a
    RESTORE_WIDTH network costs otherwise."""
    if restoration.mode == "inpaint":
        return RESTORE_BPP
    height, width = restoration.output_size(*pixels.shape[:2])
    network = network_layout(height, width, 1 if pixels.ndim == 2 else 3, purpose=restoration.purpose)(RESTORE_WIDTH)
    # Half a weight over its count, so that rounding cannot leave the budget a hair short of it.
    return (network.parameter_count() + 0.5) * BITS_PER_WEIGHT / (height * width)
