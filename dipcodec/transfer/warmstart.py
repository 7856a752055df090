"""Encoding a sequence of frames: each frame's fit starts from the frame before it.

Key frames (the first, then every ``keyint``-th) are coded like single images, from the seed or a
base model, and set the network and the quantization grid. Every other frame starts its fit from
the mean of the decoded weights of the last ``average`` frames, codes its weights as deltas from that
same mean on the key frame's grid or a coarser copy of it, and gets a shorter, gentler fit: its start
is already close, and closer still when its canvas offset follows the camera (``motion``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from ..decoder import render, resolve_device
from ..encoder import (DEFAULT_BASE, DEFAULT_QUALITY, PRESETS, BaseChoice, EncodeResult, Preset, Progress, Start,
                       base_start, check_settings, code_image, quality_to_bpp)
from ..errors import InputError
from ..fit import FitSchedule
from ..images import ImageLike, as_array
from ..network import CanvasOffset, padded_size
from ..quantize import STEP_CODE_RANGE
from ..restoration.modes import PURPOSES, MaskLike, restoration_for
from .motion import find_canvas_offset
from .sequence import MAX_AVERAGE, MAX_FRAMES, SequenceFile, mean_weights, pack_sequence

__all__ = ["encode_sequence", "warm_schedule", "warm_grids", "DEFAULT_KEYINT", "WARM_ITERATIONS",
           "WARM_LEARNING_RATE", "WARM_BETA2", "WARM_GRID_COARSENINGS", "FrameCallback"]

DEFAULT_KEYINT = 0
"""Frames between independently decodable frames; 0: only the first frame is one."""
WARM_ITERATIONS = 1 / 3
"""A warm-started frame's fit (both phases), at most this share of the iterations of the frame coded
alone (its preset's, stretched as that frame's are). A quarter left dog's frame 1 1.3 dB below its
key frame."""
WARM_LEARNING_RATE = 0.005
"""Its learning rate: a quarter of a cold fit's, so the first steps do not throw the start away."""
WARM_BETA2 = 0.95
"""Its Adam second-moment decay, whatever the preset's: a short memory, as ``fast``'s. On dog at
``fast`` it brought the warm frames from 0.95 to 0.80 of the bits of frames coded alone at equal
PSNR, against PyTorch's 0.999 (BENCHMARKS.md, "Sequences")."""

WARM_GRID_COARSENINGS = (0, 16, 32, 48)
"""Step codes (16 an octave) by which a warm-started frame's steps may be coarser than its key
frame's: the encoder keeps the copy of the key frame's grid whose rounding trades rate for
distortion best (``postfilter_fit.GRID_DB_PER_OCTAVE``). The key frame's grid resolves a whole fit from the
seed; a change from the frame before often needs less (dog and camel frame 1: 8x coarser steps lose
0.2 to 0.35 dB for 45% fewer bytes; BENCHMARKS.md, "Sequences")."""

FrameCallback = Callable[[int, EncodeResult, float], None]
"""Called after each frame with (frame index, its result, seconds it took)."""


def warm_schedule(schedule: FitSchedule, key_float_psnr: float) -> FitSchedule:
    """The fit of a frame that starts from the frame before it: shorter, gentler, and over as soon as
    it fits as well as its key frame did (not the frame before: small shortfalls would add up), with
    the optimizer it was measured with. Like a frame coded alone it trains the preset's last share
    through a post-filter, and its stretch pays for that, so that it fits a third of such a frame's
    iterations (camel at ``fast``: 0.76 of the bits at equal PSNR where a plain warm fit, 14% longer,
    took 0.81; BENCHMARKS.md, "Sequences")."""
    stop = 10 ** (-key_float_psnr / 10) if math.isfinite(key_float_psnr) else None
    return dataclasses.replace(schedule, iterations=max(1, math.floor(schedule.iterations * WARM_ITERATIONS)),
                               qat_iterations=max(1, math.floor(schedule.qat_iterations * WARM_ITERATIONS)),
                               learning_rate=WARM_LEARNING_RATE, adam_beta2=WARM_BETA2, stop_mse=stop)


def warm_grids(key_step_codes: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """The quantization grids a frame that follows a key frame with these step codes chooses from."""
    low, high = STEP_CODE_RANGE
    return tuple(tuple(min(max(code + coarser, low), high) for code in key_step_codes)
                 for coarser in WARM_GRID_COARSENINGS)


def encode_sequence(frames: Sequence[ImageLike], *, bpp: float | None = None, quality: float | None = None,
                    preset: Preset = "default", seed: int = 0, device: str = "cpu", keyint: int = DEFAULT_KEYINT,
                    average: int = 1, base: BaseChoice = DEFAULT_BASE, mask: MaskLike | None = None, motion: bool = True,
                    progress: Progress | None = None, on_frame: FrameCallback | None = None) -> bytes:
    """Compress frames of one size (PIL images or uint8 arrays) to the bytes of a ``.dips`` file.

    ``bpp`` or ``quality`` sets the key frames' rate and network, as for :func:`dipcodec.encode`;
    the other frames use the key frame's quantization grid or a coarser copy of it (:func:`warm_grids`),
    so they cost what their changes cost.
    ``average`` > 1 starts each frame from the mean of the last ``average`` frames' weights instead
    of the previous frame's. ``mask`` (``"subtitles"``, or one mask image for every frame) inpaints.
    ``base`` is the key frames' reference, as for :func:`dipcodec.encode` (``"auto"``: a shipped base
    at ``fast`` unless inpainting, the seed otherwise). With ``motion`` each later frame rolls its
    network's canvas by the offset that best lines its start's image up with it
    (:func:`~dipcodec.transfer.motion.find_canvas_offset`): a pan costs no weights.
    """
    pixels = [as_array(f) for f in frames]
    check_settings(bpp, quality, preset, seed)
    if not pixels:
        raise InputError("no frames to encode")
    if len(pixels) > MAX_FRAMES:
        raise InputError(f"at most {MAX_FRAMES} frames in a sequence")
    if any(p.shape != pixels[0].shape for p in pixels):
        raise InputError("all frames of a sequence must have the same size and channels")
    if not (isinstance(keyint, int) and keyint >= 0):
        raise InputError(f"keyint must be 0 (first frame only) or a positive number of frames, got {keyint}")
    if not (isinstance(average, int) and 1 <= average <= MAX_AVERAGE):
        raise InputError(f"average must be between 1 and {MAX_AVERAGE} frames, got {average}")
    dev = resolve_device(device)
    height, width = pixels[0].shape[:2]
    channels = 1 if pixels[0].ndim == 2 else 3
    network_bpp = bpp if bpp is not None else quality_to_bpp(quality if quality is not None else DEFAULT_QUALITY)
    key_start = base_start(base, height, width, channels, network_bpp * height * width,
                           purpose=PURPOSES["inpaint" if mask is not None else None], preset=preset)
    coded: list[bytes] = []
    offsets: list[CanvasOffset] = []
    history: list[tuple[np.ndarray, ...]] = []
    key: EncodeResult | None = None
    for index, frame in enumerate(pixels):
        began = time.perf_counter()
        restoration = restoration_for(frame, mask=mask)
        if restoration is not None:
            restoration.check(frame)
        is_key = key is None or (keyint > 0 and index % keyint == 0)
        if is_key:
            history = []
            # Fitted plainly: a network trained through a post-filter draws an image far from the
            # frame (its filter undoes that), a poor start for the frames after it, and the warm
            # frames' stop rule reads the key frame's plain fit. Sequences were measured without.
            # (The warm frames after it do train their last share through a filter: warm_schedule.)
            plain = dataclasses.replace(PRESETS[preset], filtered_share=0.0)
            result = code_image(frame, network_bpp=network_bpp, target_bpp=bpp, schedule=plain,
                                seed=seed, device=dev, progress=progress, restoration=restoration, start=key_start)
            key, offset = result, (0, 0)
        else:
            weights, offset = mean_weights(history[-average:]), (0, 0)
            if motion:
                canvas = render(key.network, weights, seed, *padded_size(key.network, height, width), dev)
                offset = find_canvas_offset(canvas, frame, offsets[-1],
                                            known=None if restoration is None else ~restoration.mask)
            start = Start(key.network, tuple(weights), "previous-frame", grids=warm_grids(key.step_codes),
                          offset=offset)
            result = code_image(frame, network_bpp=network_bpp, target_bpp=None,
                                schedule=warm_schedule(PRESETS[preset], key.float_psnr),
                                seed=seed, device=dev, progress=progress,
                                restoration=restoration, start=start)
        history.append(result.weights)
        coded.append(result.data)
        offsets.append(offset)
        if on_frame:
            on_frame(index, result, time.perf_counter() - began)
    return pack_sequence(SequenceFile(tuple(coded), average, tuple(offsets)))
