"""Measuring the codec: PSNR, and Pillow JPEG at a matched file size for comparison.

Sits beside the core codec; nothing in the encoder or decoder imports it.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

__all__ = ["psnr", "jpeg_at_size"]


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB of uint8 images over all pixels and channels."""
    mse = float(np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return 10 * math.log10(255**2 / mse) if mse > 0 else float("inf")


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    # 4:2:0 chroma subsampling, libjpeg-turbo's and Pillow's default for colour images.
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
    return buffer.getvalue()


def jpeg_at_size(pixels: np.ndarray, max_bytes: int) -> tuple[int, bytes, np.ndarray]:
    """The highest JPEG quality (1-95) whose file fits ``max_bytes``, by bisection.

    Returns (quality, file, decoded pixels). When even quality 1 is larger, quality 1 is returned:
    callers should compare sizes before claiming a like-for-like comparison.
    """
    lo, hi = 1, 95
    best = (1, _jpeg(pixels, 1))
    while lo <= hi:
        mid = (lo + hi) // 2
        data = _jpeg(pixels, mid)
        if len(data) <= max_bytes:
            best, lo = (mid, data), mid + 1
        else:
            hi = mid - 1
    quality, data = best
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("L" if pixels.ndim == 2 else "RGB"))
    return quality, data, decoded
