"""The post-filter: per colour channel, small linear filters the encoder chooses and the decoder applies
to the network's 8-bit image (what a video codec's adaptive loop filter does).

The encoder solves (``postfilter_fit``) for the ``taps`` x ``taps`` filter plus offset that brings the decoded image
closest to the original in the least-squares sense; the file holds its coefficients as integers in
units of 2^-precision, and the decoder applies them in integer arithmetic, so that every machine
makes the same pixels. Since format version 6 a filter may have several classes, each with its own
coefficients: the pixel's phase of the network's 2x2 pixel shuffle, and its band of local activity
(how much the image varies around it), both computed from the 8-bit image the decoder already has.
``docs/FORMAT.md`` (§3.5, §6.2) specifies all of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DecodeError

__all__ = ["PostFilter", "MAX_TAPS", "MAX_PRECISION", "MAX_CODE", "PHASES", "MAX_BANDS", "MAX_THRESHOLD",
           "ACTIVITY_WINDOW", "activity", "classify"]

MAX_TAPS = 9
"""The widest filter a file may declare (81 multiply-adds per sample)."""
MAX_PRECISION = 16
MAX_CODE = 1 << 24
"""The largest magnitude of a stored coefficient or offset (255 levels at 2^-16 is under 2^24)."""
PHASES = (1, 4)
"""Phase classes a filter may have: one, or one per position in the 2x2 pixel shuffle (row parity,
then column parity), whose four sub-images the network draws from different maps."""
MAX_BANDS = 8
"""The most activity bands a filter may have (so at most 4 x 8 classes)."""
MAX_THRESHOLD = 1 << 20
"""The largest activity threshold a file may hold (activity is at most 25 * 2 * 3 * 255 < 2^16)."""
ACTIVITY_WINDOW = 5
"""Side of the box that sums a pixel's gradients into its activity."""


def activity(pixels: np.ndarray) -> np.ndarray:
    """Each pixel's activity, int64 of the image's height x width: with ``L`` the sum of the channels
    and borders mirrored without repeating the edge, ``|L[y, x+1] - L[y, x-1]| + |L[y+1, x] - L[y-1, x]|``
    summed over the ACTIVITY_WINDOW x ACTIVITY_WINDOW box around the pixel (FORMAT.md §6.2)."""
    planes = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
    level = np.pad(planes.sum(axis=2, dtype=np.int64), 1, mode="reflect")
    gradient = np.abs(level[1:-1, 2:] - level[1:-1, :-2]) + np.abs(level[2:, 1:-1] - level[:-2, 1:-1])
    r = ACTIVITY_WINDOW // 2
    summed = np.pad(gradient, r, mode="reflect").cumsum(axis=0).cumsum(axis=1)
    summed = np.pad(summed, ((1, 0), (1, 0)))  # summed[i, j]: the sum of the rows above i and columns left of j
    n = ACTIVITY_WINDOW
    return summed[n:, n:] - summed[:-n, n:] - summed[n:, :-n] + summed[:-n, :-n]


def classify(pixels: np.ndarray, phases: int, thresholds: tuple[int, ...]) -> np.ndarray:
    """Each pixel's class, int64 of height x width: ``phase * bands + band``, where the band is how
    many thresholds the pixel's activity reaches and the phase (with 4 phases) is
    ``2 * (row % 2) + column % 2``."""
    height, width = pixels.shape[:2]
    band = np.zeros((height, width), np.int64)
    if thresholds:
        band = np.searchsorted(np.asarray(thresholds, np.int64), activity(pixels), side="right")
    if phases == 1:
        return band
    rows, columns = np.arange(height)[:, None] % 2, np.arange(width)[None, :] % 2
    return (2 * rows + columns) * (len(thresholds) + 1) + band


@dataclass(frozen=True)
class PostFilter:
    """Filters per channel and class: ``codes[channel * classes + class]`` holds ``taps * taps`` tap
    codes, row by row, each the tap's weight minus the identity filter's in units of 2^-precision,
    then the offset in pixel levels, in the same units. One class (version 5) unless ``phases`` is 4
    or there are ``thresholds`` (version 6): see :func:`classify`."""

    taps: int
    precision: int
    codes: tuple[tuple[int, ...], ...]
    phases: int = 1
    thresholds: tuple[int, ...] = ()

    @property
    def classes(self) -> int:
        return self.phases * (len(self.thresholds) + 1)

    @staticmethod
    def check_layout(taps: int, precision: int) -> None:
        """Taps and precision within the limits (FORMAT.md §8); a parser checks them before reading on."""
        if not (1 <= taps <= MAX_TAPS and taps % 2 == 1):
            raise DecodeError(f"post-filter taps {taps} out of range (odd, 1 to {MAX_TAPS})")
        if not 0 <= precision <= MAX_PRECISION:
            raise DecodeError(f"post-filter precision {precision} out of range (0 to {MAX_PRECISION})")

    @staticmethod
    def check_classes(phases: int, thresholds: tuple[int, ...]) -> None:
        """Phases and activity thresholds within the limits (FORMAT.md §8)."""
        if phases not in PHASES:
            raise DecodeError(f"post-filter phases {phases} not allowed (1 or 4)")
        if len(thresholds) >= MAX_BANDS:
            raise DecodeError(f"post-filter has {len(thresholds) + 1} activity bands (at most {MAX_BANDS})")
        if any(not 0 < t <= MAX_THRESHOLD for t in thresholds) or list(thresholds) != sorted(set(thresholds)):
            raise DecodeError(f"post-filter activity thresholds must rise strictly within 1 .. {MAX_THRESHOLD}")

    @staticmethod
    def check_code(value: int) -> int:
        """A tap or offset code within MAX_CODE; returns it."""
        if abs(value) > MAX_CODE:
            raise DecodeError(f"post-filter coefficient out of range (magnitude at most {MAX_CODE})")
        return value

    def validate(self, channels: int) -> None:
        """The limits every file's filter obeys (FORMAT.md §8)."""
        self.check_layout(self.taps, self.precision)
        self.check_classes(self.phases, self.thresholds)
        if len(self.codes) != channels * self.classes or any(len(c) != self.taps**2 + 1 for c in self.codes):
            raise DecodeError("post-filter does not have one filter per channel and class")
        for codes in self.codes:
            for value in codes:
                self.check_code(value)

    def weights(self, index: int) -> np.ndarray:
        """Filter ``index``'s (channel * classes + class) integer tap weights, identity added back,
        ``taps`` x ``taps``, int64."""
        taps = np.array(self.codes[index][:-1], np.int64).reshape(self.taps, self.taps)
        taps[self.taps // 2, self.taps // 2] += 1 << self.precision
        return taps

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """The filtered image, uint8 of ``pixels``' shape: per sample, the sum of its class's weight
        times neighbour (borders mirrored without repeating the edge) plus the offset, plus half a
        unit, shifted right by ``precision`` bits (rounding half up), clamped to 0..255. Exact integers."""
        planes = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
        if planes.shape[2] * self.classes != len(self.codes):
            raise ValueError(f"a filter for {len(self.codes) // self.classes} channels cannot filter {planes.shape[2]}")
        height, width, radius = planes.shape[0], planes.shape[1], self.taps // 2
        classes = classify(planes, self.phases, self.thresholds) if self.classes > 1 else None
        half = (1 << self.precision) >> 1
        out = np.empty(planes.shape, np.uint8)
        for c in range(planes.shape[2]):
            padded = np.pad(planes[..., c].astype(np.int64), radius, mode="reflect")
            first = c * self.classes
            table = np.stack([self.weights(first + k).ravel() for k in range(self.classes)])
            offsets = np.array([self.codes[first + k][-1] for k in range(self.classes)], np.int64) + half
            total = np.full((height, width), offsets[0]) if classes is None else offsets[classes]
            for tap in range(self.taps * self.taps):
                column = table[:, tap]
                if column.any():
                    dy, dx = divmod(tap, self.taps)
                    weight = column[0] if classes is None else column[classes]
                    total += weight * padded[dy : dy + height, dx : dx + width]
            out[..., c] = np.clip(total >> self.precision, 0, 255)
        return out.reshape(pixels.shape)
