"""Seeded numbers that are bit-identical on every machine and every torch/numpy version.

The decoder must regenerate the network's input and its reference weights from the seed alone, so
nothing here may depend on a library's random generator. We use SplitMix64 in counter mode: value
``i`` of a stream is a pure function of ``(seed, stream, i)``, computed with wrapping uint64 integer
arithmetic, and turned into float32 without rounding (24 random bits scaled by 2**-24 are exact).
"""

from __future__ import annotations

import numpy as np

__all__ = ["splitmix64", "uniform", "INPUT_STREAM", "weight_stream"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1

INPUT_STREAM = 0
"""Stream id of the network's fixed input; weight tensor ``k`` uses :func:`weight_stream` (k)."""


def weight_stream(tensor_index: int) -> int:
    """Stream id of the seeded initialization of the network's ``tensor_index``-th tensor."""
    return 1 + tensor_index


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def splitmix64(seed: int, stream: int, count: int) -> np.ndarray:
    """The first ``count`` uint64 values of stream ``stream`` under ``seed``."""
    return _stream_values(seed, stream, 0, count)


def _stream_values(seed: int, stream: int, start: int, count: int) -> np.ndarray:
    """Values ``start .. start + count - 1`` of a stream (counter mode: each is computed on its own)."""
    if not 0 <= seed <= _MASK64 or not 0 <= stream <= _MASK64:
        raise ValueError("seed and stream must fit in 64 unsigned bits")
    # The stream's key is itself a SplitMix64 output, so streams of one seed do not overlap.
    key = _mix(np.array([(seed + (stream + 1) * 0x9E3779B97F4A7C15) & _MASK64], dtype=np.uint64))[0]
    counter = np.arange(start + 1, start + count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix(key + counter * _GOLDEN)


_CHUNK = 1 << 20


def uniform(seed: int, stream: int, shape: tuple[int, ...], low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """float32 array of the given shape, uniform on ``[low, high)``, regenerated exactly from the seed.

    Generated in chunks, so the only large allocation is the float32 result itself."""
    count = int(np.prod(shape, dtype=np.int64))
    out = np.empty(count, np.float32)
    span, offset = np.float32(high) - np.float32(low), np.float32(low)
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        bits = _stream_values(seed, stream, start, n) >> np.uint64(40)  # top 24 bits
        out[start : start + n] = bits.astype(np.float32) * np.float32(2.0**-24) * span + offset
    return out.reshape(shape)
