"""Wiener shrinkage in a sliding 8x8 DCT, guided by an estimate of the clean image.

This is the second step of BM3D without its block matching. Every 8x8 block of the noisy image, at
every offset, is transformed; each coefficient is scaled by the Wiener gain ``e^2 / (e^2 + sigma^2)``
of the estimate's coefficient ``e``; the blocks go back weighted by the inverse of their residual
noise and are averaged. Where the estimate has lost detail the gain lets the noisy coefficient
through in proportion, so it recovers some of what a smooth estimate dropped. ``restore denoise``
refines its networks' image this way: +1.6 dB on kodak6's crops (BENCHMARKS.md, "Restoration").

Colour images are filtered in an orthonormal luma and opponent space (white noise stays white, of
the same sigma). :func:`sliding_dct_denoise` is the classic denoiser the benchmarks compare with:
the same shrinkage guided by a hard-thresholded first pass instead of a network.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.fft import dctn, idctn

__all__ = ["wiener_refine", "sliding_dct_denoise", "BLOCK", "HARD_THRESHOLD", "REFINE_PASSES"]

BLOCK = 8
HARD_THRESHOLD = 2.7
"""The first pass of :func:`sliding_dct_denoise` keeps coefficients above this many sigmas (BM3D's)."""
REFINE_PASSES = 2
"""Passes of :func:`wiener_refine`, each guided by the last: on kodak6's crops the second adds 0.35
dB to the first's gain over the networks' image, with the true sigma (BENCHMARKS.md, "Restoration")."""
_OPPONENT = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]]) / np.sqrt([[3], [2], [6]])
_BAND_BLOCKS = 49152
"""Blocks transformed at once (in whole block rows): 25 MB of coefficients an array, whatever the width."""


def wiener_refine(noisy: np.ndarray, estimate: np.ndarray, sigma: float, passes: int = REFINE_PASSES) -> np.ndarray:
    """The noisy uint8 image (H x W or H x W x 3) shrunk by the Wiener gains of ``estimate`` (same
    shape, on 0-255), ``passes`` times, each pass guided by the one before; ``sigma`` is the noise's
    standard deviation on 0-255. Returns uint8. With no noise the image is its own answer, and
    under 8 pixels a side (no whole block) the estimate is."""
    if np.shape(noisy) != np.shape(estimate):
        raise ValueError(f"estimate of shape {np.shape(estimate)} for an image of shape {np.shape(noisy)}")
    if sigma <= 0:
        return _as_uint8(noisy)
    if min(noisy.shape[:2]) < BLOCK:
        return _as_uint8(estimate)
    planes, to_rgb = _planes(noisy)
    guides, _ = _planes(estimate)
    for _ in range(passes):
        guides = [_shrink(plane, guide, sigma) for plane, guide in zip(planes, guides)]
    return to_rgb(guides)


def sliding_dct_denoise(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """A classic denoiser in two steps, as BM3D's without block matching: hard thresholding at
    HARD_THRESHOLD sigma in the sliding DCT, then one Wiener pass guided by that. Returns uint8."""
    if sigma <= 0 or min(noisy.shape[:2]) < BLOCK:
        return _as_uint8(noisy)
    planes, to_rgb = _planes(noisy)
    return to_rgb([_shrink(plane, _shrink(plane, None, sigma), sigma) for plane in planes])


def _as_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _planes(image: np.ndarray) -> tuple[list[np.ndarray], Callable[[list[np.ndarray]], np.ndarray]]:
    """The image's planes in the filter's colour space, and the way back to uint8 pixels."""
    pixels = np.asarray(image, np.float64)
    if pixels.ndim == 2:
        return [pixels], lambda planes: _as_uint8(planes[0])
    opponent = pixels @ _OPPONENT.T
    return [opponent[..., c] for c in range(3)], lambda planes: _as_uint8(np.stack(planes, axis=2) @ _OPPONENT)


def _shrink(plane: np.ndarray, guide: np.ndarray | None, sigma: float) -> np.ndarray:
    """One plane through one pass: Wiener gains from the guide's coefficients, or with no guide a
    hard threshold (the block's mean always kept). Each block is weighted by the inverse of the noise
    variance its gains let through, as BM3D's aggregation does."""
    total, weight = np.zeros_like(plane), np.zeros_like(plane)
    rows = plane.shape[0] - BLOCK + 1
    band_rows = max(_BAND_BLOCKS // plane.shape[1], 1)
    for first in range(0, rows, band_rows):
        band = slice(first, min(first + band_rows, rows) + BLOCK - 1)
        coefficients = _dct_blocks(plane[band])
        if guide is None:
            gain = (np.abs(coefficients) > HARD_THRESHOLD * sigma).astype(np.float64)
            gain[..., 0, 0] = 1
            noise = sigma**2 * gain.sum(axis=(-2, -1))
        else:
            energy = _dct_blocks(guide[band]) ** 2
            gain = energy / (energy + sigma**2)
            noise = sigma**2 * (gain**2).sum(axis=(-2, -1))
        block_weight = 1 / np.maximum(noise, 1e-12)
        blocks = idctn(coefficients * gain, axes=(-2, -1), norm="ortho") * block_weight[..., None, None]
        height, width = blocks.shape[:2]
        for i in range(BLOCK):
            for j in range(BLOCK):
                total[first + i : first + i + height, j : j + width] += blocks[:, :, i, j]
                weight[first + i : first + i + height, j : j + width] += block_weight
    return total / weight


def _dct_blocks(plane: np.ndarray) -> np.ndarray:
    """The orthonormal 2-D DCT of every 8x8 block of the plane: rows x columns x 8 x 8."""
    return dctn(sliding_window_view(plane, (BLOCK, BLOCK)), axes=(-2, -1), norm="ortho")
