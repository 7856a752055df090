"""Restoration in one step: fit, and keep the float network's image instead of coding it.

Nothing is coded, so nothing bounds the network's weights or their number: every mode fits the
full-size network of super-resolution and denoising (no pixel shuffle) at a fixed width, and beyond
the ``fast`` preset averages the images of networks fitted from different seeds. Inpainting fits
only a window around the holes, where what is known says most about what is missing. Denoising
ends with a Wiener shrinkage of the noisy image, guided by the networks' image (``wiener``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..decoder import resolve_device
from ..encoder import PRESETS, FittedNetwork, Preset, Progress, Start, check_settings
from ..errors import InputError
from ..fit import FitSchedule
from ..images import ImageLike, as_array
from ..layout import network_layout
from ..network import NetworkConfig, Upsample
from .back_projection import back_project
from .modes import AVERAGE_DECAY, MaskLike, Restoration, RestorationMode, noise_level, restoration_for
from .wiener import wiener_refine

__all__ = ["restore", "restore_network", "hole_window", "RESTORE_WIDTH", "RESTORE_UPSAMPLE", "RESTORE_FITS",
           "INPAINT_MARGIN", "INPAINT_JITTER", "INPAINT_ITERATIONS"]

RESTORE_WIDTH = 128
"""Width of restore's networks whatever the image's size (on images of 64 pixels or more a side), as
the Deep Image Prior's are one network each. kodim07's 256-pixel crop at sigma 25: 27.6 dB at width
64, 28.2 at 128, 28.3 at 256 for 70% more time; 4x super-resolution of it and of kodim01's at 128:
+1.20 and +0.44 dB over bicubic, against +1.15 and +0.33 at width 60 of the former layout
(BENCHMARKS.md, "Restoration")."""
RESTORE_UPSAMPLE: dict[RestorationMode, Upsample] = {
    "inpaint": "bilinear", "super-resolution": "bicubic", "denoise": "bicubic"}
"""How restore's networks double their maps' size. Where a network must draw fine detail itself,
a bicubic upsampling keeps it sharper: 4x super-resolution of the kodak6 crops, one fit, gains +0.96
dB over bicubic upscaling with it and +0.87 with bilinear, in the same time; denoising them (two
fits) 27.75 dB against 27.31. Inpainting keeps bilinear: camel frames 0, 5, 10 and 15 at 19.42 dB
in the holes with bicubic, 19.51 without (BENCHMARKS.md, "Restoration"). Coded files of
super-resolution and denoising upsample bicubically too (``layout.network_layout``; format version 4)."""
RESTORE_FITS: dict[Preset, int] = {"fast": 1, "default": 2, "best": 3}
"""Networks fitted per preset (seeds ``seed``, ``seed + 1``, ...), their images averaged: two fits of
one image differ by their seed's fixed input, and their errors partly cancel. Subtitle removal on
the 16 camel frames: +0.89 and +1.00 dB over biharmonic from seeds 0 and 1 alone, +1.24 from their
average (BENCHMARKS.md, "Restoration")."""
INPAINT_MARGIN = 16
"""Known pixels kept around the holes' bounding box: the window inpainting fits. On camel's subtitles
(frames 0 and 5, 1000 iterations) margins of 16 / 32 / 64 / 128 pixels fill the holes at 19.98 /
19.86 / 19.78 / 19.72 dB and 18.89 / 18.41 / 17.99 / 17.67 dB, and the whole frame at 19.30 and
17.87 in twelve times the time: a network spent on far-away pixels fills the holes worse."""
INPAINT_MIN_SIDE = 64
"""The window grows to this many pixels a side where the image allows: narrower, the network would
lose its full-size layout (a margin of 8 on camel: 16.85 and 13.68 dB)."""
INPAINT_JITTER = 0.1
"""Input jitter of inpainting: what keeps the fill from copying noise-like texture into the holes.
On a band of camel frame 0: 20.20 dB with 0.1, 19.13 with 1/30, 18.74 with 0.2."""
INPAINT_ITERATIONS: dict[Preset, int] = {"fast": 450, "default": 1000, "best": 1000}
"""Inpainting's iterations per preset. Longer fits draw ever more of the known pixels' detail into
the holes: frames 0 and 5 at 450 / 1000 / 1500 / 2200 iterations: 19.80 / 19.98 / 19.98 / 19.13 dB
and 18.04 / 18.89 / 18.55 / 18.50."""


def restore(image: ImageLike, mode: RestorationMode, *, mask: MaskLike | None = None, factor: int | None = None, preset: Preset = "default",
            seed: int = 0, device: str = "cpu", progress: Progress | None = None) -> np.ndarray:
    """Inpaint (``mask``: non-zero = missing, or ``"subtitles"``), super-resolve by ``factor`` (default 4),
    or denoise an image; returns uint8 pixels. Inpainting keeps the known pixels as they were;
    denoising ends with :func:`~.wiener.wiener_refine` of the image by the networks' one. The
    ``default`` and ``best`` presets fit 2 and 3 networks (:data:`RESTORE_FITS`): twice and three
    times the time of one."""
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
    fits = RESTORE_FITS[preset]
    if restoration.mask is None:
        restored = _averaged_image(pixels, restoration, schedule, seed, fits, device, progress)
        if mode == "denoise":  # the networks' image guides a Wiener shrinkage of the noisy one
            restored = wiener_refine(pixels, restored, 255 * noise_level(pixels))
        return restored
    if not restoration.mask.any():
        return pixels.copy()
    rows, cols = hole_window(restoration.mask, INPAINT_MARGIN)
    window, holes = pixels[rows, cols], restoration.mask[rows, cols]
    schedule = dataclasses.replace(schedule, iterations=INPAINT_ITERATIONS[preset], input_jitter=INPAINT_JITTER,
                                   average_decay=AVERAGE_DECAY)
    filled = _averaged_image(window, Restoration("inpaint", mask=holes), schedule, seed, fits, device, progress)
    restored = pixels.copy()  # the known pixels stay exactly as they were
    restored[rows, cols] = np.where(holes[..., None] if filled.ndim == 3 else holes, filled, window)
    return restored


def restore_network(restoration: Restoration, height: int, width: int, channels: int) -> NetworkConfig:
    """The network restore fits to an image (or window) of this size: the full-size layout of
    super-resolution and denoising at RESTORE_WIDTH (inpainting's too, but upsampling bilinearly as
    RESTORE_UPSAMPLE says: no file bounds its weights), its output at the restored size."""
    purpose = "denoise" if restoration.mode == "inpaint" else restoration.purpose
    config = network_layout(*restoration.output_size(height, width), channels, purpose=purpose)(RESTORE_WIDTH)
    return dataclasses.replace(config, upsample=RESTORE_UPSAMPLE[restoration.mode])


def hole_window(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Rows and columns of the window inpainting fits: the holes' bounding box grown by ``margin``
    known pixels (at least one, so that the window holds some), and to INPAINT_MIN_SIDE a side where
    the image allows."""
    if margin < 1:
        raise ValueError(f"margin must be at least 1, got {margin}")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (_span(int(rows[0]), int(rows[-1]) + 1, mask.shape[0], margin),
            _span(int(cols[0]), int(cols[-1]) + 1, mask.shape[1], margin))


def _span(first: int, stop: int, size: int, margin: int) -> slice:
    low, high = max(first - margin, 0), min(stop + margin, size)
    need = min(INPAINT_MIN_SIDE, size)
    if high - low < need:  # grow evenly about the holes, shifted back inside the image
        low = max(min(low - (need - (high - low)) // 2, size - need), 0)
        high = low + need
    return slice(low, high)


def _averaged_image(pixels: np.ndarray, restoration: Restoration, schedule: FitSchedule, seed: int, fits: int,
                    device: str, progress: Progress | None) -> np.ndarray:
    """Fit restore's network under ``restoration`` from ``fits`` seeds and return the mean of their
    images as uint8 (H x W or H x W x C). ``progress`` counts the iterations all fits ran, against
    what they would run without stopping early."""
    config = restore_network(restoration, *pixels.shape[:2], 1 if pixels.ndim == 2 else 3)
    torch_device = resolve_device(device)
    total, ran = 0.0, 0

    def report(_: int, of: int, psnr: float) -> None:  # once per iteration a fit runs
        nonlocal ran
        ran += 1
        progress(ran, fits * of, psnr)

    for i in range(fits):
        fit_seed = (seed + i) % 2**32
        fitted = FittedNetwork.fit(pixels, None, schedule, fit_seed, torch_device, restoration,
                                   report if progress else None, Start.of_seed(config, fit_seed))
        total = total + fitted.output().clamp(0, 1)
        target = fitted.target  # the image as fitted, on [0, 1]
        del fitted  # one network at a time in memory
    mean = total / fits
    if restoration.mode == "super-resolution":
        mean = back_project(mean, target).clamp(0, 1)
    planes = (mean[0] * 255).round().byte().cpu().numpy()
    return planes[0] if planes.shape[0] == 1 else np.ascontiguousarray(planes.transpose(1, 2, 0))
