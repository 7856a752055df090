"""Bjontegaard deltas between two rate-distortion curves, with piecewise cubic interpolation.

The method of VCEG-M33 as JVET's and CompressAI's tools now compute it: each curve is interpolated
with a monotone piecewise cubic (PCHIP) instead of Bjontegaard's single cubic polynomial, which
overshoots between points. BD-rate interpolates log-rate as a function of PSNR and averages the gap
over the PSNR range both curves cover; BD-PSNR interpolates PSNR as a function of log-rate and
averages over the common log-rate range. Each piecewise cubic is integrated exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

__all__ = ["bd_rate", "bd_psnr"]


def _curve(rates: Sequence[float], psnrs: Sequence[float], which: str) -> tuple[np.ndarray, np.ndarray]:
    """(log-rates, PSNRs) sorted by rate; refuses curves PCHIP cannot take as a function either way."""
    r = np.asarray(rates, dtype=np.float64)
    d = np.asarray(psnrs, dtype=np.float64)
    if r.ndim != 1 or r.shape != d.shape or len(r) < 2:
        raise ValueError(f"the {which} curve needs two or more (rate, PSNR) points")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(d)) and np.all(r > 0)):
        raise ValueError(f"the {which} curve has a rate that is not positive or a value that is not finite")
    order = np.argsort(r)
    r, d = r[order], d[order]
    if np.any(np.diff(r) <= 0) or np.any(np.diff(d) <= 0):
        raise ValueError(f"the {which} curve's PSNR does not rise strictly with its rate")
    return np.log(r), d


def _mean_gap(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> float:
    """Mean of (curve 2 - curve 1) over the x range both cover, each a PCHIP of y against x."""
    lo, hi = max(x1[0], x2[0]), min(x1[-1], x2[-1])
    if not hi > lo:
        raise ValueError("the curves do not overlap")
    area1 = PchipInterpolator(x1, y1).integrate(lo, hi)
    area2 = PchipInterpolator(x2, y2).integrate(lo, hi)
    return float((area2 - area1) / (hi - lo))


def bd_rate(anchor_rates: Sequence[float], anchor_psnrs: Sequence[float],
            test_rates: Sequence[float], test_psnrs: Sequence[float]) -> float:
    """Average rate difference of test against anchor at equal PSNR, in percent (negative: test saves bits)."""
    log_a, d_a = _curve(anchor_rates, anchor_psnrs, "anchor")
    log_t, d_t = _curve(test_rates, test_psnrs, "test")
    return (math.exp(_mean_gap(d_a, log_a, d_t, log_t)) - 1) * 100


def bd_psnr(anchor_rates: Sequence[float], anchor_psnrs: Sequence[float],
            test_rates: Sequence[float], test_psnrs: Sequence[float]) -> float:
    """Average PSNR difference of test against anchor at equal rate, in dB (positive: test is better)."""
    log_a, d_a = _curve(anchor_rates, anchor_psnrs, "anchor")
    log_t, d_t = _curve(test_rates, test_psnrs, "test")
    return _mean_gap(log_a, d_a, log_t, d_t)
