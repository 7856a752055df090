"""Pillow's Lanczos downscale as a differentiable linear map, for super-resolution.

A super-resolution fit compares the network's large output, brought down by this map, with the
small input. Low-resolution images are usually made with Pillow's ``LANCZOS`` resize, so the map is
Pillow's own filter (Lanczos-3, widened by the scale factor, clipped and renormalized at the borders),
computed in float: it agrees with Pillow up to Pillow's 8-bit rounding between its two passes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["lanczos_matrix", "downsample", "back_project"]


def _lanczos3(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3), 0.0)


def lanczos_matrix(size_in: int, size_out: int) -> np.ndarray:
    """The ``size_out x size_in`` matrix of Pillow's Lanczos resize along one axis (``size_out < size_in``)."""
    scale = size_in / size_out
    support = 3 * scale
    matrix = np.zeros((size_out, size_in))
    for i in range(size_out):
        centre = (i + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        last = min(int(centre + support + 0.5), size_in)
        taps = np.arange(first, last)
        weights = _lanczos3((taps - centre + 0.5) / scale)
        matrix[i, first:last] = weights / weights.sum()
    return matrix


def downsample(image: torch.Tensor, factor: int) -> torch.Tensor:
    """An ``N x C x H x W`` tensor resized to ``H/factor x W/factor`` (sides rounded up) by Pillow's Lanczos filter."""
    h, w = image.shape[-2:]
    rows = torch.from_numpy(lanczos_matrix(h, math.ceil(h / factor))).to(image)
    cols = torch.from_numpy(lanczos_matrix(w, math.ceil(w / factor))).to(image)
    return rows @ image @ cols.T


def back_project(large: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
    """``large`` (N x C x H x W) plus the least change, in the least-squares sense, that makes its
    Lanczos downscale equal ``small`` (N x C x h x w): one step of back-projection, which gives
    back what a fit left of the input's detail (4x super-resolution of the kodak6 crops: +0.006 to
    +0.036 dB over the network's image alone; BENCHMARKS.md, "Restoration")."""
    (h, w), (big_h, big_w) = small.shape[-2:], large.shape[-2:]
    rows, cols = lanczos_matrix(big_h, h), lanczos_matrix(big_w, w)
    as_tensor = lambda matrix: torch.from_numpy(matrix).to(large)
    residual = small - as_tensor(rows) @ large @ as_tensor(cols.T)
    return large + as_tensor(_pseudo_inverse(rows)) @ residual @ as_tensor(_pseudo_inverse(cols).T)


def _pseudo_inverse(matrix: np.ndarray) -> np.ndarray:
    """M^T (M M^T)^-1 of a wide matrix of full row rank (a downscale's: each output sample has its
    own centre), by a small solve instead of an SVD: a second, not a minute, at 4096 samples."""
    return np.linalg.solve(matrix @ matrix.T, matrix).T
