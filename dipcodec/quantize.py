"""Per-tensor uniform quantization of weight deltas ``w - w_ref``.

Step sizes are stored as integer codes (``step = 2 ** (code / 16)``), so the decoder reproduces them
exactly and the rate controller can move every step by 4% at a time.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STEP_CODE_RANGE", "MAX_SYMBOL", "MAX_SENSITIVITY_SHIFT", "step_from_code", "step_scales", "step_codes_for",
           "quantize", "dequantize"]

STEP_CODE_RANGE = (-32 * 16, 8 * 16)
"""Allowed step codes: steps from 2**-32 to 2**8."""
MAX_SYMBOL = 1 << 20
"""Largest magnitude of a quantized delta; bounds the entropy models the decoder builds."""


def step_from_code(code: int) -> np.float32:
    """The exact float32 step of a step code."""
    return np.float32(2.0 ** (code / 16.0))


MAX_SENSITIVITY_SHIFT = 3.0
"""How far (octaves) measured sensitivities may move a tensor's step from the delta-RMS rule."""


def step_scales(weights: list[np.ndarray], reference: list[np.ndarray],
                sensitivities: list[float] | None = None) -> list[float]:
    """log2 of each tensor's step at fineness 0 (see :func:`step_codes_for`).

    Without sensitivities, the RMS of the tensor's delta ``w - w_ref``: what the fit moved is what
    the step must resolve (a normalization gain near its reference 1 moves by a few hundredths, and a
    step relative to the gain itself would wipe that out). With sensitivities (the error added per
    weight per squared step, one per tensor), steps go as ``1 / sqrt(sensitivity)``: at a given rate
    that allocation minimizes the added error (high-rate theory). They are centred so that the mean
    over weights matches the RMS rule, and kept within MAX_SENSITIVITY_SHIFT octaves of it.
    """
    scales = []
    for w, ref in zip(weights, reference, strict=True):
        delta = np.asarray(w, np.float64) - ref
        rms = float(np.sqrt(np.mean(np.square(delta)))) if delta.size else 0.0
        scales.append(float(np.log2(rms)) if rms > 0 else 0.0)
    if sensitivities is None:
        return scales
    counts = np.array([np.asarray(w).size for w in weights], np.float64)
    optimal = -0.5 * np.log2(np.maximum(np.asarray(sensitivities, np.float64), 1e-30))
    shift = optimal - np.asarray(scales)
    shift -= np.sum(counts * shift) / np.sum(counts)
    return [s + float(d) for s, d in zip(scales, np.clip(shift, -MAX_SENSITIVITY_SHIFT, MAX_SENSITIVITY_SHIFT))]


def step_codes_for(scales: list[float], fineness: float) -> list[int]:
    """Step codes of ``2 ** (scale - fineness)``: about ``2**fineness`` steps per unit of each scale."""
    return [int(np.clip(round(16 * (s - fineness)), *STEP_CODE_RANGE)) for s in scales]


def quantize(weights: list[np.ndarray], reference: list[np.ndarray], codes: list[int]) -> list[np.ndarray]:
    """Integer deltas ``round((w - w_ref) / step)`` as int32 arrays (clipped to +-MAX_SYMBOL)."""
    out = []
    for w, ref, code in zip(weights, reference, codes, strict=True):
        q = np.rint((np.asarray(w, np.float32) - ref) / step_from_code(code))
        out.append(np.clip(q, -MAX_SYMBOL, MAX_SYMBOL).astype(np.int32))
    return out


def dequantize(symbols: list[np.ndarray], reference: list[np.ndarray], codes: list[int]) -> list[np.ndarray]:
    """Weights ``w_ref + q * step`` in float32, computed identically on every machine."""
    return [
        (ref + q.astype(np.float32) * step_from_code(code)).astype(np.float32)
        for q, ref, code in zip(symbols, reference, codes, strict=True)
    ]
