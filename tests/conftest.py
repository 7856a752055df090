"""Shared fixtures: tiny deterministic test images and one encoded file reused across tests.

Every encode in this suite uses ``preset="fast"`` on images of a few thousand pixels. The networks are so
small that torch's intra-op threads only cost time (a lot of it on a busy 2-core machine), so the
fixtures below run torch single-threaded. The codec's output does not depend on the thread count.
"""

from __future__ import annotations

import contextlib
import math
import struct
import zlib

import numpy as np
import pytest
import torch


def with_crc(body: bytes) -> bytes:
    """A forged file's bytes before the CRC, with the CRC32 every dipcodec file, base model and
    sequence ends with (little-endian): so that a test's forgery reaches the check it targets."""
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def make_image(height: int, width: int, gray: bool = False) -> np.ndarray:
    """Smooth gradients plus a rectangle and a disc; deterministic uint8, HxWx3 (or HxW if ``gray``)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 40 + 180 * x / max(width - 1, 1)
    g = 60 + 150 * y / max(height - 1, 1)
    b = 128 + 60 * np.sin(np.pi * (x + y) / max(height + width, 1))
    img = np.stack([r, g, b], -1)
    img[height // 4 : height // 2, width // 4 : width // 2] = [200, 40, 40]
    disc = (x - 0.7 * width) ** 2 + (y - 0.7 * height) ** 2 < (min(height, width) / 5) ** 2
    img[disc] = [30, 30, 220]
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if gray:
        return np.rint(img @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    return img


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (independent of dipcodec.evaluation)."""
    assert reference.shape == decoded.shape
    mse = float(np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@contextlib.contextmanager
def torch_threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's encodes with one torch thread (opt in with ``pytestmark``)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def rgb_image() -> np.ndarray:
    img = make_image(32, 32)
    img.setflags(write=False)
    return img


@pytest.fixture(scope="session")
def gray_image() -> np.ndarray:
    img = make_image(32, 32, gray=True)
    img.setflags(write=False)
    return img


@pytest.fixture(scope="session")
def encoded_rgb(rgb_image) -> bytes:
    """The RGB test image encoded once at 2 bpp with the fast preset."""
    import dipcodec

    with torch_threads(1):
        return dipcodec.encode(rgb_image, bpp=2.0, preset="fast")


@pytest.fixture(scope="session")
def decoded_rgb(encoded_rgb) -> np.ndarray:
    import dipcodec

    pixels = dipcodec.decode(encoded_rgb)
    pixels.setflags(write=False)
    return pixels
