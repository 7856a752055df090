"""Per-tensor uniform quantization of weight deltas ``w - w_ref``.

Step sizes are stored as integer codes (``step = 2 ** (code / 16)``), so the decoder reproduces them
exactly and the rate controller can move every step by 4% at a time.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STEP_CODE_RANGE", "MAX_SYMBOL", "step_from_code", "step_codes_for", "quantize", "dequantize"]

STEP_CODE_RANGE = (-32 * 16, 8 * 16)
"""Allowed step codes: steps from 2**-32 to 2**8."""
MAX_SYMBOL = 1 << 20
"""Largest magnitude of a quantized delta; bounds the entropy models the decoder builds."""


def step_from_code(code: int) -> np.float32:
    """The exact float32 step of a step code."""
    return np.float32(2.0 ** (code / 16.0))


def step_codes_for(weights: list[np.ndarray], fineness: float) -> list[int]:
    """Step codes that put about ``2**fineness`` steps in each tensor's RMS.

    Every convolution is followed by a per-channel normalization that cancels its scale, so what
    matters is the error relative to the tensor's own magnitude: one relative fineness for all tensors.
    """
    codes = []
    for w in weights:
        rms = float(np.sqrt(np.mean(np.square(w, dtype=np.float64)))) or 1.0
        code = round(16 * (np.log2(rms) - fineness))
        codes.append(int(np.clip(code, *STEP_CODE_RANGE)))
    return codes


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
