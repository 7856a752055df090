"""Entropy coding of quantized weights with constriction's ANS coder.

Each tensor's integers are coded under a quantized Laplace model whose parameters (an integer centre,
a scale code, and the symbol range) are integers stored in the header, so encoder and decoder build
bit-identical models. The models are kept apart from the coder, as constriction does.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from .errors import DecodeError
from .quantize import MAX_SYMBOL

__all__ = ["TensorModel", "SCALE_CODE_RANGE", "fit_model", "encode_symbols", "decode_symbols", "estimate_bits"]

SCALE_CODE_RANGE = (-8 * 16, 24 * 16)
"""Allowed Laplace scale codes: ``scale = 2 ** (code / 16)`` from 1/256 to 2**24."""


@dataclass(frozen=True)
class TensorModel:
    """Entropy model of one tensor's symbols. ``low == high`` means a constant tensor: no bits coded."""

    center: int
    scale_code: int
    low: int
    high: int

    @property
    def scale(self) -> float:
        return 2.0 ** (self.scale_code / 16.0)

    def validate(self) -> None:
        """Reject parameters a forged header could use to make constriction panic or allocate."""
        if not -MAX_SYMBOL <= self.low <= self.high <= MAX_SYMBOL:
            raise DecodeError(f"symbol range [{self.low}, {self.high}] out of bounds")
        if not -MAX_SYMBOL <= self.center <= MAX_SYMBOL:
            raise DecodeError(f"model centre {self.center} out of bounds")
        if not SCALE_CODE_RANGE[0] <= self.scale_code <= SCALE_CODE_RANGE[1]:
            raise DecodeError(f"model scale code {self.scale_code} out of bounds")

    def _constriction(self) -> constriction.stream.model.QuantizedLaplace:
        return constriction.stream.model.QuantizedLaplace(self.low, self.high, float(self.center), self.scale)


def _laplace_bits(symbols: np.ndarray, center: int, scale: float) -> float:
    """Ideal code length in bits of the symbols under a quantized Laplace (no range truncation)."""
    x = np.abs(symbols.astype(np.float64) - center)
    # P(|k| bin) for a Laplace of scale b: k = 0 -> 1 - e^{-1/2b}; k != 0 -> e^{-(|k|-1/2)/b} sinh-like terms.
    half = 0.5 / scale
    p0 = -np.expm1(-half)
    pk = 0.5 * np.exp(-(x - 0.5) / scale) * -np.expm1(-2 * half)
    p = np.where(x == 0, p0, pk)
    return float(-np.log2(np.maximum(p, 1e-300)).sum())


def fit_model(symbols: np.ndarray) -> TensorModel:
    """The model that codes these symbols in the fewest bits, searching scale codes near the MLE."""
    symbols = np.asarray(symbols).ravel()
    low, high = int(symbols.min()), int(symbols.max())
    center = int(np.median(symbols))
    if low == high:
        return TensorModel(center=low, scale_code=0, low=low, high=high)
    mad = max(float(np.mean(np.abs(symbols - center))), 2.0**-6)
    guess = round(16 * np.log2(mad))
    best = min(
        range(guess - 12, guess + 13),
        key=lambda c: _laplace_bits(symbols, center, 2.0 ** (np.clip(c, *SCALE_CODE_RANGE) / 16)),
    )
    return TensorModel(center=center, scale_code=int(np.clip(best, *SCALE_CODE_RANGE)), low=low, high=high)


def estimate_bits(symbols: list[np.ndarray], models: list[TensorModel]) -> float:
    """Ideal code length, in bits, of all tensors under their models: what the ANS stream costs, to
    within a few percent on large tensors. Rate control does not use it (it packs real files, see
    ``encoder``); tests and ``tools/headroom.py`` measure models with it."""
    return sum(
        _laplace_bits(np.asarray(s).ravel(), m.center, m.scale) for s, m in zip(symbols, models) if m.low < m.high
    )


def encode_symbols(symbols: list[np.ndarray], models: list[TensorModel]) -> bytes:
    """All tensors in one ANS stream, little-endian uint32 words."""
    coder = constriction.stream.stack.AnsCoder()
    for s, m in reversed(list(zip(symbols, models, strict=True))):
        if m.low < m.high:
            coder.encode_reverse(np.asarray(s, np.int32).ravel(), m._constriction())
    return coder.get_compressed().astype("<u4").tobytes()


def decode_symbols(data: bytes, models: list[TensorModel], sizes: list[int]) -> list[np.ndarray]:
    """Inverse of :func:`encode_symbols`; raises :class:`DecodeError` unless the stream is consumed exactly."""
    if len(data) % 4:
        raise DecodeError("weight stream length is not a multiple of 4 bytes")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        out = []
        for m, n in zip(models, sizes, strict=True):
            m.validate()
            out.append(coder.decode(m._constriction(), n).astype(np.int32) if m.low < m.high else np.full(n, m.low, np.int32))
        exhausted = coder.is_empty()
    except DecodeError:
        raise
    except BaseException as exc:  # constriction raises ValueError, or a pyo3 PanicException (a BaseException)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise DecodeError(f"corrupt weight stream ({exc})") from None
    if not exhausted:
        raise DecodeError("corrupt weight stream (data left over after the last weight)")
    return out
