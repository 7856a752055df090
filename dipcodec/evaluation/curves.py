"""From per-image sweeps to one mean curve per codec.

A sweep's points are not always in order: a higher setting can give a bigger file that is no better.
Only the points no other point beats (no more bits, no less quality) are kept, and each image's
curve is read at common rates by PCHIP in log-rate. The mean curve averages those readings over
images at each rate; a rate outside any image's sweep stays undefined (NaN), never extrapolated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

__all__ = ["pareto_front", "interpolate", "mean_curve"]


def pareto_front(bpps: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The points with no other point at fewer or equal bits and a higher or equal value, by rate."""
    b = np.asarray(bpps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(b) & np.isfinite(v) & (b > 0)
    b, v = b[keep], v[keep]
    order = np.lexsort((-v, b))  # by rate, the best value first among equal rates
    xs, ys, best = [], [], -np.inf
    for i in order:
        if v[i] > best:
            if xs and xs[-1] == b[i]:
                continue
            xs.append(b[i])
            ys.append(v[i])
            best = v[i]
    return np.asarray(xs), np.asarray(ys)


def interpolate(bpps: Sequence[float], values: Sequence[float], at: Sequence[float]) -> np.ndarray:
    """One image's curve read at rates ``at`` (PCHIP in log-rate over its front); NaN outside it."""
    x, y = pareto_front(bpps, values)
    at = np.asarray(at, dtype=np.float64)
    out = np.full(at.shape, np.nan)
    if len(x) == 0:
        return out
    if len(x) == 1:
        out[at == x[0]] = y[0]
        return out
    inside = (at >= x[0]) & (at <= x[-1])
    out[inside] = PchipInterpolator(np.log(x), y)(np.log(at[inside]))
    return out


def mean_curve(sweeps: Sequence[tuple[Sequence[float], Sequence[float]]], at: Sequence[float]) -> np.ndarray:
    """Mean over images of each image's curve read at ``at``; NaN where any image's sweep falls short."""
    if not sweeps:
        return np.full(np.shape(at), np.nan)
    readings = np.stack([interpolate(b, v, at) for b, v in sweeps])
    return readings.mean(axis=0)  # a NaN anywhere in a column stays NaN
