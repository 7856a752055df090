"""Classic codecs through Pillow, to measure dipcodec against: JPEG, WebP, JPEG 2000 and AVIF.

Each codec has one setting that trades size for quality (JPEG, WebP and AVIF a quality, JPEG 2000 a
requested rate) and fixed options otherwise. Two uses: the file closest to a byte budget without
exceeding it (bisection over the setting, which assumes size grows with the setting), and a sweep of
settings whose points trace the codec's rate-distortion curve.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

__all__ = ["ClassicCodec", "CLASSIC_CODECS", "CodecSpec", "SPECS", "Encoded", "ClassicEncoder", "encode_classic",
           "decode_classic", "jpeg_at_size"]

ClassicCodec = Literal["jpeg", "webp", "jpeg2000", "avif"]
CLASSIC_CODECS: tuple[ClassicCodec, ...] = ("jpeg", "webp", "jpeg2000", "avif")


_J2K_RATES = tuple(float(f"{0.01 * 1.01**i:.4g}") for i in range(673))
"""Requested JPEG 2000 rates for bisection: 0.01 to 8 bpp in steps of 1%, rounded to 4 digits."""


@dataclass(frozen=True)
class CodecSpec:
    """How one classic codec is driven: its Pillow format and options, and the settings it is tried at.

    ``settings`` is what bisection searches (ascending, so file size grows along it); ``sweep`` is the
    subset whose points draw the curve, spaced about evenly in log-rate where the targets lie.
    """

    name: ClassicCodec
    label: str
    pillow_format: str
    setting_name: str
    settings: tuple[float, ...]
    sweep: tuple[float, ...]
    options: dict = field(default_factory=dict)
    description: str = ""


SPECS: dict[str, CodecSpec] = {
    "jpeg": CodecSpec(
        "jpeg", "JPEG", "JPEG", "quality", tuple(range(1, 96)),
        tuple(range(1, 11)) + tuple(range(12, 51, 2)) + tuple(range(55, 96, 5)),
        {"subsampling": "4:2:0"},
        "Pillow JPEG (libjpeg-turbo), 4:2:0 chroma subsampling, quality 1-95, default Huffman tables"),
    "webp": CodecSpec(
        "webp", "WebP", "WEBP", "quality", tuple(range(0, 101)), tuple(range(0, 101, 4)),
        {"method": 6},
        "Pillow WebP (libwebp), lossy, method 6 (slowest, best), quality 0-100"),
    "jpeg2000": CodecSpec(
        "jpeg2000", "JPEG 2000", "JPEG2000", "requested bpp", _J2K_RATES,
        tuple(r for i, r in enumerate(_J2K_RATES) if i % 16 == 0 and 0.025 <= r <= 3.2),
        {"irreversible": True, "mct": 1, "no_jp2": True, "quality_mode": "rates"},
        "Pillow JPEG 2000 (OpenJPEG), irreversible 9/7 wavelet, colour transform on, one layer at a requested "
        "rate, raw codestream (.j2k)"),
    "avif": CodecSpec(
        "avif", "AVIF", "AVIF", "quality", tuple(range(0, 101)), tuple(range(0, 91, 5)),
        {"speed": 4, "subsampling": "4:2:0"},
        "Pillow AVIF (libavif), speed 4, 4:2:0 chroma subsampling, quality 0-100"),
}


def encode_classic(codec: ClassicCodec, pixels: np.ndarray, setting: float) -> bytes:
    """The file ``codec`` writes for uint8 ``pixels`` (HxW or HxWx3) at ``setting``."""
    spec = SPECS[codec]
    options = dict(spec.options)
    if codec == "jpeg2000":
        bits = 8 * (1 if pixels.ndim == 2 else pixels.shape[2])
        options["quality_layers"] = [bits / setting]  # OpenJPEG takes a compression ratio
    else:
        options["quality"] = int(setting)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=spec.pillow_format, **options)
    return buffer.getvalue()


def decode_classic(data: bytes, gray: bool = False) -> np.ndarray:
    """Decode a classic codec's file to uint8 RGB (or grayscale) pixels."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L" if gray else "RGB"), dtype=np.uint8).copy()


@dataclass(frozen=True)
class Encoded:
    """One file and how long it took to write."""

    setting: float
    data: bytes
    seconds: float


class ClassicEncoder:
    """One image under one codec; remembers every file, so a sweep and several bisections share encodes."""

    def __init__(self, codec: ClassicCodec, pixels: np.ndarray) -> None:
        self.spec = SPECS[codec]
        self.pixels = pixels
        self.files: dict[float, Encoded] = {}

    def at(self, setting: float) -> Encoded:
        """The file at ``setting`` (encoded once, then remembered)."""
        if setting not in self.files:
            start = time.perf_counter()
            data = encode_classic(self.spec.name, self.pixels, setting)
            self.files[setting] = Encoded(setting, data, time.perf_counter() - start)
        return self.files[setting]

    def largest_within(self, max_bytes: int) -> tuple[Encoded, bool]:
        """The file at the highest setting that is no bigger than ``max_bytes``, by bisection.

        Files already made bound the search first. Returns (file, fits); when even the lowest setting is
        too big, that file comes back with ``fits`` False.
        """
        settings = self.spec.settings
        lo, hi = -1, len(settings)  # invariant: settings[lo] fits (or lo == -1), settings[hi] is too big
        for i, s in enumerate(settings):
            if s in self.files and len(self.files[s].data) > max_bytes:
                hi = i
                break
        for i in range(hi - 1, -1, -1):
            s = settings[i]
            if s in self.files and len(self.files[s].data) <= max_bytes:
                lo = i
                break
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if len(self.at(settings[mid]).data) <= max_bytes:
                lo = mid
            else:
                hi = mid
        if lo < 0:
            return self.at(settings[0]), False
        return self.at(settings[lo]), True


def jpeg_at_size(pixels: np.ndarray, max_bytes: int) -> tuple[int, bytes, np.ndarray]:
    """The highest JPEG quality (1-95, 4:2:0) whose file fits ``max_bytes``, by bisection.

    Returns (quality, file, decoded pixels). When even quality 1 is larger, quality 1 is returned:
    callers should compare sizes before claiming a like-for-like comparison.
    """
    found, _ = ClassicEncoder("jpeg", pixels).largest_within(max_bytes)
    return int(found.setting), found.data, decode_classic(found.data, gray=pixels.ndim == 2)
