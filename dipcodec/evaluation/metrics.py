"""Distortion metrics on uint8 images: PSNR, SSIM and MS-SSIM.

SSIM and MS-SSIM follow Wang et al. (2003, 2004) as ``pytorch_msssim`` computes them, the package
CompressAI's evaluation uses: an 11-tap Gaussian window of sigma 1.5 applied separably with no
padding ("valid"), K1 = 0.01, K2 = 0.03, data range 255, one index per channel then the channel mean.
MS-SSIM uses five scales with the weights of Wang et al. (2003), halves each scale by 2x2 averaging
(an odd side is zero-padded by one on each end, as ``avg_pool2d(padding=side % 2)`` does), and clips
negative contrast-structure terms at 0. Written here with numpy and scipy so that measuring needs no
torch, and tested against scikit-image and a value from ``pytorch_msssim``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import correlate1d

__all__ = ["MS_SSIM_WEIGHTS", "MS_SSIM_MIN_SIDE", "Quality", "psnr", "ssim", "ms_ssim", "measure"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Exponents of the five scales, finest first (Wang, Simoncelli and Bovik 2003)."""
_WINDOW = 11
_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03
_RANGE = 255.0
MS_SSIM_MIN_SIDE = (_WINDOW - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1
"""Shortest side MS-SSIM accepts (161): the coarsest scale must still hold one whole window."""


@dataclass(frozen=True)
class Quality:
    """The metrics of one decoded image; ``ms_ssim`` is None when the image is too small for it."""

    psnr: float
    ssim: float
    ms_ssim: float | None


def _pair(reference: np.ndarray, decoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if reference.shape != decoded.shape:
        raise ValueError(f"images differ in shape: {reference.shape} and {decoded.shape}")
    a = reference.astype(np.float64)
    b = decoded.astype(np.float64)
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    return a, b


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB of uint8 images over all pixels and channels (inf when they are equal)."""
    mse = float(np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return 10 * math.log10(255**2 / mse) if mse > 0 else float("inf")


def _window() -> np.ndarray:
    x = np.arange(_WINDOW, dtype=np.float64) - _WINDOW // 2
    g = np.exp(-(x**2) / (2 * _SIGMA**2))
    return g / g.sum()


def _blur_valid(stack: np.ndarray) -> np.ndarray:
    """Gaussian-filter axes 1 and 2 of ``stack`` keeping only positions where the window fits."""
    g, r = _window(), _WINDOW // 2
    out = correlate1d(stack, g, axis=1, mode="constant")[:, r : stack.shape[1] - r]
    return correlate1d(out, g, axis=2, mode="constant")[:, :, r : stack.shape[2] - r]


def _ssim_cs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and mean contrast-structure term of HxWxC float images."""
    if min(a.shape[:2]) < _WINDOW:
        raise ValueError(f"SSIM needs at least {_WINDOW} pixels a side, got {a.shape[1]}x{a.shape[0]}")
    mu_a, mu_b, aa, bb, ab = _blur_valid(np.stack([a, b, a * a, b * b, a * b]))
    c1, c2 = (_K1 * _RANGE) ** 2, (_K2 * _RANGE) ** 2
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    luminance = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
    return (luminance * cs).mean(axis=(0, 1)), cs.mean(axis=(0, 1))


def _halve(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling; an odd side gets one zero on each end first (avg_pool2d with padding)."""
    for axis in (0, 1):
        if x.shape[axis] % 2:
            pad = [(0, 0)] * x.ndim
            pad[axis] = (1, 1)
            x = np.pad(x, pad)
        n = x.shape[axis] // 2 * 2
        even = np.take(x, np.arange(0, n, 2), axis=axis)
        odd = np.take(x, np.arange(1, n, 2), axis=axis)
        x = (even + odd) / 2
    return x


def ssim(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Mean SSIM over channels (Gaussian window, valid region); images of 11 pixels a side or more."""
    a, b = _pair(reference, decoded)
    return float(_ssim_cs(a, b)[0].mean())


def ms_ssim(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Five-scale MS-SSIM, the channel mean; raises ValueError below 161 pixels a side."""
    a, b = _pair(reference, decoded)
    return _ms_ssim(a, b)


def _ms_ssim(a: np.ndarray, b: np.ndarray, first: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        raise ValueError(f"MS-SSIM needs at least {MS_SSIM_MIN_SIDE} pixels a side, got {a.shape[1]}x{a.shape[0]}")
    terms = []
    for level in range(len(MS_SSIM_WEIGHTS)):
        s, cs = first if level == 0 and first is not None else _ssim_cs(a, b)
        if level < len(MS_SSIM_WEIGHTS) - 1:
            terms.append(np.maximum(cs, 0))
            a, b = _halve(a), _halve(b)
        else:
            terms.append(np.maximum(s, 0))
    weights = np.asarray(MS_SSIM_WEIGHTS)[:, None]
    return float(np.prod(np.stack(terms) ** weights, axis=0).mean())


def measure(reference: np.ndarray, decoded: np.ndarray) -> Quality:
    """PSNR, SSIM and MS-SSIM at once (MS-SSIM's finest scale is SSIM's pass, computed once)."""
    a, b = _pair(reference, decoded)
    first = _ssim_cs(a, b)
    ms = _ms_ssim(a, b, first) if min(a.shape[:2]) >= MS_SSIM_MIN_SIDE else None
    return Quality(psnr=psnr(reference, decoded), ssim=float(first[0].mean()), ms_ssim=ms)
