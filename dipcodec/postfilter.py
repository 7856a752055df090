"""The post-filter: per colour channel, a small linear filter the encoder chooses and the decoder applies
to the network's 8-bit image (what a video codec's adaptive loop filter does).

The encoder solves for the ``taps`` x ``taps`` filter plus offset that brings the decoded image
closest to the original in the least-squares sense; the file holds its coefficients as integers in
units of 2^-precision, and the decoder applies them in integer arithmetic, so that every machine
makes the same pixels. ``docs/FORMAT.md`` (§3.5, §6.2) specifies both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import DecodeError

__all__ = ["PostFilter", "MAX_TAPS", "MAX_PRECISION", "MAX_CODE", "solve_post_filter", "normal_equations"]

MAX_TAPS = 9
"""The widest filter a file may declare (81 multiply-adds per sample)."""
MAX_PRECISION = 16
MAX_CODE = 1 << 24
"""The largest magnitude of a stored coefficient or offset (255 levels at 2^-16 is under 2^24)."""
_BAND_PIXELS = 1 << 17
"""Pixels per band when the encoder sums its normal equations (bounds its memory on large images)."""


@dataclass(frozen=True)
class PostFilter:
    """One filter per channel: ``codes[c]`` holds ``taps * taps`` tap codes, row by row, each the
    tap's weight minus the identity filter's in units of 2^-precision, then the offset in pixel
    levels, in the same units."""

    taps: int
    precision: int
    codes: tuple[tuple[int, ...], ...]

    @staticmethod
    def check_layout(taps: int, precision: int) -> None:
        """Taps and precision within the limits (FORMAT.md §8); a parser checks them before reading on."""
        if not (1 <= taps <= MAX_TAPS and taps % 2 == 1):
            raise DecodeError(f"post-filter taps {taps} out of range (odd, 1 to {MAX_TAPS})")
        if not 0 <= precision <= MAX_PRECISION:
            raise DecodeError(f"post-filter precision {precision} out of range (0 to {MAX_PRECISION})")

    @staticmethod
    def check_code(value: int) -> int:
        """A tap or offset code within MAX_CODE; returns it."""
        if abs(value) > MAX_CODE:
            raise DecodeError(f"post-filter coefficient out of range (magnitude at most {MAX_CODE})")
        return value

    def validate(self, channels: int) -> None:
        """The limits every file's filter obeys (FORMAT.md §8)."""
        self.check_layout(self.taps, self.precision)
        if len(self.codes) != channels or any(len(c) != self.taps**2 + 1 for c in self.codes):
            raise DecodeError("post-filter does not have one filter per channel")
        for channel in self.codes:
            for value in channel:
                self.check_code(value)

    def weights(self, channel: int) -> np.ndarray:
        """The channel's integer tap weights (identity added back), ``taps`` x ``taps``, int64."""
        taps = np.array(self.codes[channel][:-1], np.int64).reshape(self.taps, self.taps)
        taps[self.taps // 2, self.taps // 2] += 1 << self.precision
        return taps

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """The filtered image, uint8 of ``pixels``' shape: per sample, the sum of weight times
        neighbour (borders mirrored without repeating the edge) plus the offset, plus half a unit,
        shifted right by ``precision`` bits (rounding half up), clamped to 0..255. Exact integers."""
        planes = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
        if planes.shape[2] != len(self.codes):
            raise ValueError(f"a filter for {len(self.codes)} channels cannot filter {planes.shape[2]}")
        height, width, radius = planes.shape[0], planes.shape[1], self.taps // 2
        out = np.empty(planes.shape, np.uint8)
        for c in range(planes.shape[2]):
            padded = np.pad(planes[..., c].astype(np.int64), radius, mode="reflect")
            total = np.full((height, width), self.codes[c][-1] + ((1 << self.precision) >> 1), np.int64)
            for (dy, dx), weight in np.ndenumerate(self.weights(c)):
                if weight:
                    total += weight * padded[dy : dy + height, dx : dx + width]
            out[..., c] = np.clip(total >> self.precision, 0, 255)
        return out.reshape(pixels.shape)


def normal_equations(decoded: np.ndarray, original: np.ndarray, taps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per channel, the least-squares system (F^T F, F^T y) of a ``taps`` x ``taps`` filter plus
    offset, F being each pixel's mirrored neighbourhood and a 1, y the original; summed in bands."""
    dec = decoded.reshape(decoded.shape[0], decoded.shape[1], -1)
    orig = original.reshape(dec.shape)
    radius, height = taps // 2, dec.shape[0]
    rows = max(_BAND_PIXELS // dec.shape[1], 1)
    systems = []
    for c in range(dec.shape[2]):
        padded = np.pad(dec[..., c], radius, mode="reflect")
        gram, rhs = np.zeros((taps * taps + 1,) * 2), np.zeros(taps * taps + 1)
        for top in range(0, height, rows):
            band = padded[top : min(top + rows, height) + 2 * radius]
            windows = sliding_window_view(band, (taps, taps)).reshape(-1, taps * taps)
            features = np.empty((windows.shape[0], taps * taps + 1))
            features[:, :-1], features[:, -1] = windows, 1.0
            gram += features.T @ features
            rhs += features.T @ orig[top : top + rows, :, c].reshape(-1).astype(np.float64)
        systems.append((gram, rhs))
    return systems


def solve_post_filter(systems: list[tuple[np.ndarray, np.ndarray]], solved_taps: int, taps: int,
                      precision: int) -> PostFilter:
    """The ``taps`` x ``taps`` least-squares filter at ``precision`` from systems summed for a
    filter of ``solved_taps`` (its inner taps are the smaller filter's, so one pass serves all sizes)."""
    margin = (solved_taps - taps) // 2
    inner = [y * solved_taps + x for y in range(margin, margin + taps) for x in range(margin, margin + taps)]
    keep = inner + [solved_taps * solved_taps]
    identity = np.zeros(len(keep))
    identity[taps * taps // 2] = 1.0
    codes = []
    for gram, rhs in systems:
        solution, *_ = np.linalg.lstsq(gram[np.ix_(keep, keep)], rhs[keep], rcond=None)
        scaled = np.clip(np.round((solution - identity) * 2.0**precision), -MAX_CODE, MAX_CODE)
        codes.append(tuple(int(v) for v in scaled))
    return PostFilter(taps, precision, tuple(codes))
