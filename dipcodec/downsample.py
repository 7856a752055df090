"""Pillow's Lanczos downscale as a differentiable linear map: part of the decoding spec.

A super-resolution file decodes at native size through this map (``decode(..., scale="native")``,
FORMAT.md §6.1), and a super-resolution fit compares the network's large output, brought down by it,
with the small input; so it lives in the core, where the decoder may import it. Low-resolution
images are usually made with Pillow's ``LANCZOS`` resize, so the map is Pillow's own filter
(Lanczos-3, widened by the scale factor, clipped and renormalized at the borders), computed in
float: it agrees with Pillow up to Pillow's 8-bit rounding between its two passes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["lanczos_matrix", "downsample"]


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
