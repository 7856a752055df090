"""The encoder's side of the post-filter: the least-squares systems, their solution with the
coefficients rounded one at a time, and the choice of a filter's size and classes against its bytes.

Decoding needs none of it (what it needs, the filter, its classes and its integer arithmetic, is
``postfilter``); the fit trains through these filters and the encoder files one, so the whole
choice lives here, beside the fit and below the encoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .container import post_filter_section
from .fit import psnr_from_mse
from .postfilter import MAX_CODE, PostFilter, activity, classify

__all__ = ["GRID_DB_PER_OCTAVE", "POST_FILTER_TAPS", "POST_FILTER_PRECISION", "POST_FILTER_CLASSES",
           "MIN_CLASS_PIXELS", "FIT_FILTER_TAPS", "NormalEquations", "normal_equations", "solve_post_filter",
           "choose_post_filter", "post_filter_candidates", "tuning_filter_for", "fit_filter_for", "pixel_mse"]

GRID_DB_PER_OCTAVE = 1.0
"""What halving a file's bytes is worth, in dB, when the encoder picks one of several fixed grids (a
sequence's later frames) or weighs a post-filter's section against its gain: about the slope of this codec's own rate-distortion curve at the ``fast``
preset (dog frame 1 gains 1.2 dB from 13 to 26 kB, camel frame 1 0.8 dB from 10 to 20 kB)."""
POST_FILTER_TAPS = (3, 5, 7)
"""The post-filter sizes the encoder weighs against none at all (kodak6 at ``fast``: 3x3 took the
BD-rate against JPEG from +29.3% to +21.5%, 5x5 to +17.0%, 7x7 to +16.3%; BENCHMARKS.md)."""
POST_FILTER_PRECISION = 6
"""Coefficients in units of 2^-6. Rounded all at once, 2^-6 cost a filter too much (kodak6 at ``fast``,
BD-rate against JPEG +22.5% where 2^-8 gave +17.0%); rounded one at a time, each rounding's error
re-solved into the rest (:func:`_rounded_codes`), 2^-6 stays within 0.01 dB of 2^-8, its
section a fifth smaller (kodak6 at ``fast``: BENCHMARKS.md, "Post-filter coefficients rounded one at a
time")."""
POST_FILTER_CLASSES = ((1, 1), (1, 2), (1, 4), (4, 1), (4, 2), (4, 4))
"""The (phases, activity bands) each size is tried with. Bands split the pixels at the quartiles
(or the median) of their activity, so every classification is a merger of the finest one and one
pass of normal equations serves them all. Every kodak6 file at ``fast`` chose classes and gained,
+0.04 to +0.34 dB at the same size (BENCHMARKS.md, "Post-filters by class")."""
MIN_CLASS_PIXELS = 4
"""A filter with classes needs at least this many pixels per coefficient in each class."""
FIT_FILTER_TAPS = 5
"""The post-filter the float fit trains through (``FitSchedule.filtered_share``): 5x5 taps, one
filter per phase of the pixel shuffle, solved for the network's image every ``refilter_every``
iterations. It is cheap to train through on the unshuffled planes (3x3 kernels there) and corrects
what the shuffle leaves; the file's own filter is chosen after the fit, as before."""
_BAND_PIXELS = 1 << 17
"""Pixels per band when the encoder sums its normal equations (bounds its memory on large images)."""


@dataclass(frozen=True)
class NormalEquations:
    """The least-squares systems of a ``taps`` x ``taps`` filter plus offset, per channel and per cell
    of a classification: ``grams[c, k] = F^T F`` and ``rhs[c, k] = F^T y`` over the cell's pixels,
    F being each pixel's mirrored neighbourhood and a 1, y the original, and ``energy[c, k] = y^T y``.
    Sums of integer products, so exact in float64 at any image size dipcodec takes."""

    taps: int
    grams: np.ndarray
    rhs: np.ndarray
    energy: np.ndarray

    def merged(self, groups: np.ndarray, count: int) -> "NormalEquations":
        """Cells summed into ``count`` classes: cell k goes to class ``groups[k]``."""
        shape = (self.grams.shape[0], count)
        grams, rhs, energy = np.zeros(shape + self.grams.shape[2:]), np.zeros(shape + self.rhs.shape[2:]), np.zeros(shape)
        for cell, group in enumerate(groups):
            grams[:, group] += self.grams[:, cell]
            rhs[:, group] += self.rhs[:, cell]
            energy[:, group] += self.energy[:, cell]
        return NormalEquations(self.taps, grams, rhs, energy)

    def pixels(self) -> np.ndarray:
        """Pixels per cell (the constant feature's own sum)."""
        return self.grams[0, :, -1, -1]

    def squared_error(self, post_filter: PostFilter) -> float:
        """The filter's summed squared error over every channel and class, before the decoder rounds
        to whole levels and clamps: ``y^T y - 2 w^T F^T y + w^T F^T F w`` per system. The filter's
        classes must be these cells, and its taps at most these."""
        keep = _inner(self.taps, post_filter.taps)
        total = 0.0
        for index, codes in enumerate(post_filter.codes):
            c, k = divmod(index, post_filter.classes)
            w = np.append(post_filter.weights(index).ravel(), codes[-1]) / 2.0**post_filter.precision
            gram, rhs = self.grams[c, k][np.ix_(keep, keep)], self.rhs[c, k][keep]
            total += self.energy[c, k] - 2 * w @ rhs + w @ gram @ w
        return float(total)


def _inner(solved_taps: int, taps: int) -> list[int]:
    """Indices, in a ``solved_taps`` system, of a centred ``taps`` x ``taps`` filter's taps and offset."""
    margin = (solved_taps - taps) // 2
    inner = [y * solved_taps + x for y in range(margin, margin + taps) for x in range(margin, margin + taps)]
    return inner + [solved_taps * solved_taps]


def normal_equations(decoded: np.ndarray, original: np.ndarray, taps: int, cells: np.ndarray | None = None,
                     count: int = 1) -> NormalEquations:
    """The systems of a ``taps`` x ``taps`` filter per channel, per cell of ``cells`` (an int map of
    ``count`` cells, height x width; None: one cell), summed in bands of rows."""
    dec = decoded.reshape(decoded.shape[0], decoded.shape[1], -1)
    orig = original.reshape(dec.shape)
    radius, height, n = taps // 2, dec.shape[0], taps * taps + 1
    cells = np.zeros(dec.shape[:2], np.int64) if cells is None else cells
    rows = max(_BAND_PIXELS // dec.shape[1], 1)
    grams, rhs, energy = np.zeros((dec.shape[2], count, n, n)), np.zeros((dec.shape[2], count, n)), np.zeros((dec.shape[2], count))
    for c in range(dec.shape[2]):
        padded = np.pad(dec[..., c], radius, mode="reflect")
        for top in range(0, height, rows):
            band = padded[top : min(top + rows, height) + 2 * radius]
            windows = sliding_window_view(band, (taps, taps)).reshape(-1, taps * taps)
            band_cells = cells[top : top + rows].ravel()
            target = orig[top : top + rows, :, c].reshape(-1).astype(np.float64)
            order = np.argsort(band_cells, kind="stable")
            bounds = np.searchsorted(band_cells[order], np.arange(count + 1))
            features = np.empty((windows.shape[0], n))
            features[:, :-1], features[:, -1] = windows[order], 1.0
            target = target[order]
            for k in range(count):
                part, y = features[bounds[k] : bounds[k + 1]], target[bounds[k] : bounds[k + 1]]
                grams[c, k] += part.T @ part
                rhs[c, k] += part.T @ y
                energy[c, k] += y @ y
    return NormalEquations(taps, grams, rhs, energy)


def solve_post_filter(systems: NormalEquations, taps: int, precision: int, *, phases: int = 1,
                      thresholds: tuple[int, ...] = ()) -> PostFilter:
    """The ``taps`` x ``taps`` least-squares filter at ``precision`` from systems summed for a filter of
    ``systems.taps`` (its inner taps are the smaller filter's, so one pass serves all sizes), whose
    cells are the classes of ``phases`` and ``thresholds``, its coefficients rounded by
    :func:`_rounded_codes`."""
    keep = _inner(systems.taps, taps)
    identity = np.zeros(len(keep))
    identity[taps * taps // 2] = 1.0
    grams = systems.grams[:, :, keep][:, :, :, keep].reshape(-1, len(keep), len(keep))
    rhs = systems.rhs[:, :, keep].reshape(-1, len(keep))
    codes = _rounded_codes(grams, rhs, identity, 2.0**precision)
    return PostFilter(taps, precision, tuple(tuple(int(v) for v in row) for row in codes), phases, tuple(thresholds))


def _rounded_codes(grams: np.ndarray, rhs: np.ndarray, identity: np.ndarray, scale: float) -> np.ndarray:
    """Codes (int64, one row per filter) of the least-squares solutions of ``grams[f] w = rhs[f]``
    less ``identity``, in units of ``1 / scale``, rounded one at a time, the largest code first and
    the offset last, the coefficients not yet rounded re-solved after each rounding for the error it
    made (Optimal Brain Quantization's update, through the Gram matrix's pseudo-inverse). The taps
    of these filters are large and cancel one another, so rounding them all at once loses far more
    (BENCHMARKS.md, "Post-filter coefficients rounded one at a time")."""
    inverse = np.linalg.pinv(grams, hermitian=True)
    solution = np.einsum("fij,fj->fi", inverse, rhs)
    filters, n = rhs.shape
    order = np.argsort(-np.abs(solution[:, :-1] - identity[:-1]), axis=1, kind="stable")
    order = np.concatenate([order, np.full((filters, 1), n - 1)], axis=1)
    floor = 1e-12 * np.maximum(np.diagonal(inverse, axis1=1, axis2=2).max(axis=1), 1e-300)
    rows = np.arange(filters)
    codes = np.zeros((filters, n))
    for index in order.T:
        code = np.clip(np.round((solution[rows, index] - identity[index]) * scale), -MAX_CODE, MAX_CODE)
        codes[rows, index] = code
        pivot = inverse[rows, index, index]
        live = pivot > floor  # a direction the pixels never excite: nothing to re-solve
        reciprocal = np.where(live, 1.0 / np.where(live, pivot, 1.0), 0.0)
        column = inverse[rows, :, index]  # the inverse is symmetric: also its row
        solution = solution + (reciprocal * (code / scale + identity[index] - solution[rows, index]))[:, None] * column
        inverse = inverse - reciprocal[:, None, None] * column[:, :, None] * column[:, None, :]
    return codes.astype(np.int64)


def choose_post_filter(decoded: np.ndarray, original: np.ndarray, network_bytes: int, *,
                       max_bytes: int | None = None, fixed_total: bool = False,
                       also: tuple[PostFilter, ...] = (),
                       candidates: list[tuple[PostFilter, float]] | None = None) -> PostFilter | None:
    """The least-squares post-filter (of POST_FILTER_TAPS and POST_FILTER_CLASSES, or of
    ``candidates``, some of :func:`post_filter_candidates` for these images, or ``also``) whose
    filtered image scores best in PSNR less
    GRID_DB_PER_OCTAVE per doubling of the file's bytes (``network_bytes`` plus its section), with
    the file at most ``max_bytes``. With ``fixed_total`` the file is ``network_bytes`` in all, and
    the score is PSNR plus GRID_DB_PER_OCTAVE per doubling of the bytes the section leaves the
    network (a section of half the file or more is never chosen). The candidates are ranked on the
    error their normal equations predict; the best of them, ``also`` and no filter at all are then
    scored on the images they really make. None when no filter pays for its bytes."""
    if network_bytes < 1:
        raise ValueError("network_bytes must be positive")

    def score(post_filter: PostFilter | None, mse: float) -> float:
        section = len(post_filter_section(post_filter)) if post_filter else 0
        if fixed_total and section >= network_bytes / 2:
            return -math.inf
        if max_bytes is not None and not fixed_total and network_bytes + section > max_bytes:
            return -math.inf
        quality = psnr_from_mse(max(mse, 1e-10) / 255**2)
        if fixed_total:
            return quality + GRID_DB_PER_OCTAVE * math.log2(network_bytes - section)
        return quality - GRID_DB_PER_OCTAVE * math.log2(network_bytes + section)

    def measured(post_filter: PostFilter | None) -> float:
        return score(post_filter, pixel_mse(post_filter.apply(decoded) if post_filter else decoded, original))

    if candidates is None:
        candidates = post_filter_candidates(decoded, original)
    ranked, _ = max(candidates, key=lambda candidate: score(*candidate))
    return max([None, ranked, *also], key=measured)  # ties, and a file over max_bytes in any case, keep None


def post_filter_candidates(decoded: np.ndarray, original: np.ndarray) -> list[tuple[PostFilter, float]]:
    """Every filter of POST_FILTER_TAPS and POST_FILTER_CLASSES that ``decoded`` has the pixels for,
    with the mean squared error (in levels) its normal equations predict, the decoder's rounding
    (1/12 of a level squared) included."""
    widest = max(POST_FILTER_TAPS)
    ordered = np.sort(activity(decoded).ravel())
    quartiles = tuple(int(ordered[len(ordered) * q // 4]) for q in (1, 2, 3))
    finest = normal_equations(decoded, original, widest, classify(decoded, 4, quartiles), 4 * 4)
    candidates = []
    for phases, bands in POST_FILTER_CLASSES:
        step = 4 // bands
        thresholds = quartiles[step - 1 :: step][: bands - 1]
        if thresholds and (thresholds[0] < 1 or len(set(thresholds)) < len(thresholds)):
            continue  # ties in the activity: these bands would not split the pixels
        groups = [(phase if phases == 4 else 0) * bands + band // step for phase in range(4) for band in range(4)]
        systems = finest.merged(np.array(groups), phases * bands)
        for taps in POST_FILTER_TAPS:
            if phases * bands > 1 and systems.pixels().min() < MIN_CLASS_PIXELS * (taps * taps + 1):
                continue
            post_filter = solve_post_filter(systems, taps, POST_FILTER_PRECISION, phases=phases, thresholds=thresholds)
            candidates.append((post_filter, systems.squared_error(post_filter) / decoded.size + 1 / 12))
    return candidates


def tuning_filter_for(post_filter: PostFilter | None,
                   candidates: list[tuple[PostFilter, float]]) -> PostFilter | None:
    """The filter the quantization-aware phase tunes the network through: the post-filter itself, or
    for one with activity bands, the candidate of its size and phases without them (the bands would
    change with the image at every step)."""
    if post_filter is None or not post_filter.thresholds:
        return post_filter
    return next(f for f, _ in candidates if not f.thresholds and f.taps == post_filter.taps
                and f.phases == post_filter.phases)


def fit_filter_for(image: np.ndarray, original: np.ndarray) -> PostFilter | None:
    """The filter of FIT_FILTER_TAPS the float fit trains through, solved for its image: with 4
    phases, or one where the image is too small for them, or None where it is too small for one."""
    pixels_per_filter = MIN_CLASS_PIXELS * (FIT_FILTER_TAPS**2 + 1)
    if min(image.shape[:2]) <= FIT_FILTER_TAPS // 2 or image.shape[0] * image.shape[1] < pixels_per_filter:
        return None
    systems = normal_equations(image, original, FIT_FILTER_TAPS, classify(image, 4, ()), 4)
    phases = 4 if systems.pixels().min() >= pixels_per_filter else 1
    if phases == 1:
        systems = systems.merged(np.zeros(4, np.int64), 1)
    return solve_post_filter(systems, FIT_FILTER_TAPS, POST_FILTER_PRECISION, phases=phases)


def pixel_mse(image: np.ndarray, original: np.ndarray) -> float:
    """Mean squared error of two uint8 images, on 0-255."""
    return float(np.mean((image.astype(np.float64) - original) ** 2))
