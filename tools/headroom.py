#!/usr/bin/env python3
"""What a file's entropy model and post-filter leave on the table, measured on the dipcodec files of
an eval's cache (``dipcodec eval --out DIR``):

    python tools/headroom.py docs/eval/kodak6-fast [--kodak DIR] [--only entropy|filter] [--bpp 0.25,0.75]

``entropy``: the weights' ideal bits under each file's models (one quantized Laplace per tensor),
against the best quantized Gaussian per tensor, one Laplace per output channel of each
convolution (before the header bytes of its extra models), and the tensors' empirical entropy
(what a model that knew every tensor's histogram for free would spend).

``filter``: least-squares bounds that nothing is paid for (coefficients unrounded, no section in
the file): a second filter of 5x5 taps with 4 phases and up to 4 activity bands on the file's
filtered image, against the file's PSNR; and the file's own filter (its taps and classes) reading
the same neighbourhood of the other two colour channels as well, against that filter unrounded
(so the gain is the other channels' alone). A class with fewer pixels than 4 per coefficient keeps
the image as it is. RGB files of plain compression only.

Bounds, not codecs: a gain below what its coefficients would cost is not worth a format version.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import norm

from dipcodec.container import unpack
from dipcodec.decoder import decoded_weights, reference_of, render
from dipcodec.entropy import decode_symbols, estimate_bits, fit_model
from dipcodec.evaluation.metrics import psnr
from dipcodec.images import read_image
from dipcodec.postfilter import activity, classify
from dipcodec.postfilter_fit import MIN_CLASS_PIXELS

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"
SECOND_TAPS, SECOND_PHASES = 5, 4
ROWS_PER_BAND = 64


def gaussian_bits(symbols: np.ndarray, center: int) -> float:
    """Ideal bits under the best quantized Gaussian about ``center`` (scales on a 1/16-octave grid);
    each bin's mass taken on the side of the centre, where the normal's CDF does not cancel."""
    distance = np.abs(symbols.astype(np.float64) - center)
    spread = max(float(np.sqrt(np.mean(distance**2))), 0.3)

    def bits(scale: float) -> float:
        p = norm.cdf((0.5 - distance) / scale) - norm.cdf((-0.5 - distance) / scale)
        return float(-np.log2(np.maximum(p, 1e-300)).sum())

    return min(bits(spread * 2 ** (k / 16)) for k in range(-16, 17))


def empirical_bits(symbols: np.ndarray) -> float:
    """The symbols' empirical entropy times their count: a model fitted to their own histogram."""
    _, counts = np.unique(symbols, return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


def per_row_bits(symbols: np.ndarray, shape: tuple[int, ...], model) -> float:
    """Ideal bits with one Laplace per output channel of a convolution (its own model otherwise)."""
    if len(shape) < 2 or shape[0] == 1:
        return estimate_bits([symbols], [model])
    rows = symbols.reshape(shape[0], -1)
    return estimate_bits(list(rows), [fit_model(row) for row in rows])


def entropy_headroom(stream) -> tuple[float, float, float, float]:
    """(Laplace, Gaussian, per-row Laplace, empirical) ideal bytes of the file's weights."""
    shapes = stream.network.tensor_shapes()
    symbols = decode_symbols(stream.weights, list(stream.models), [math.prod(s) for s in shapes])
    totals = np.zeros(4)
    for q, model, shape in zip(symbols, stream.models, shapes):
        if model.low < model.high:
            totals += (estimate_bits([q], [model]), gaussian_bits(q, model.center), per_row_bits(q, shape, model),
                       empirical_bits(q))
    return tuple(totals / 8)


def _features(planes: list[np.ndarray], sources: list[int], taps: int, top: int, stop: int) -> np.ndarray:
    """Each pixel's neighbourhood in rows top..stop (borders mirrored) in the ``sources`` channels, and a 1."""
    r = taps // 2
    columns = [sliding_window_view(planes[c][top : stop + 2 * r], (taps, taps)).reshape(-1, taps * taps)
               for c in sources]
    return np.concatenate(columns + [np.ones((columns[0].shape[0], 1))], axis=1)


def least_squares_psnr(decoded: np.ndarray, original: np.ndarray, cells: np.ndarray, count: int, taps: int,
                       cross: bool = False) -> float:
    """PSNR of the best filter per channel and cell (unrounded), its output rounded and clamped as a
    decoder's. ``cross``: every channel's filter reads all channels (one Gram matrix serves them all)."""
    r, (height, width, channels) = taps // 2, decoded.shape
    planes = [np.pad(decoded[..., c].astype(np.float64), r, mode="reflect") for c in range(channels)]
    groups = [list(range(channels))] if cross else [[c] for c in range(channels)]
    out = np.empty(decoded.shape, np.float64)
    for outputs in groups:
        sources, n = outputs, len(outputs) * taps * taps + 1
        grams, rhs = np.zeros((count, n, n)), np.zeros((len(outputs), count, n))
        for top in range(0, height, ROWS_PER_BAND):
            stop = min(top + ROWS_PER_BAND, height)
            cell = cells[top:stop].ravel()
            order = np.argsort(cell, kind="stable")  # one gather per band, then each class is a slice
            bounds = np.searchsorted(cell[order], np.arange(count + 1))
            f = _features(planes, sources, taps, top, stop)[order]
            y = original[top:stop].reshape(-1, channels)[order][:, outputs].astype(np.float64)
            for k in range(count):
                part = f[bounds[k] : bounds[k + 1]]
                grams[k] += part.T @ part
                rhs[:, k] += (part.T @ y[bounds[k] : bounds[k + 1]]).T
        inverse = np.linalg.pinv(grams, hermitian=True)
        scarce = grams[:, -1, -1] < MIN_CLASS_PIXELS * n  # the constant feature's sum: the class's pixels
        solutions = np.einsum("kij,okj->oki", inverse, rhs)
        for i, c in enumerate(outputs):
            solutions[i, scarce] = 0.0
            solutions[i, scarce, sources.index(c) * taps * taps + taps * taps // 2] = 1.0  # the pixel itself
        for top in range(0, height, ROWS_PER_BAND):
            stop = min(top + ROWS_PER_BAND, height)
            f, cell = _features(planes, sources, taps, top, stop), cells[top:stop].ravel()
            for i, c in enumerate(outputs):
                out[top:stop, :, c] = np.einsum("pi,pi->p", f, solutions[i][cell]).reshape(stop - top, width)
    return psnr(np.clip(np.round(out), 0, 255), original)


def filter_headroom(stream, original: np.ndarray) -> tuple[float, float, float, float]:
    """(the file's PSNR, with a second filter, its filter unrounded, the same reading every channel)."""
    height, width = stream.output_size
    raw = render(stream.network, decoded_weights(stream, reference_of(stream)), stream.seed, height, width)
    pf = stream.post_filter
    filtered = pf.apply(raw) if pf else raw
    quartiles = np.quantile(activity(filtered), [0.25, 0.5, 0.75])
    thresholds = tuple(sorted({int(t) for t in quartiles if t >= 1}))
    second = least_squares_psnr(filtered, original, classify(filtered, SECOND_PHASES, thresholds),
                                SECOND_PHASES * (len(thresholds) + 1), SECOND_TAPS)
    taps, cells, count = 7, np.zeros((height, width), np.int64), 1  # no filter in the file: a first one
    if pf is not None:
        taps, cells, count = pf.taps, classify(raw, pf.phases, pf.thresholds), pf.classes
    own = least_squares_psnr(raw, original, cells, count, taps)
    cross = least_squares_psnr(raw, original, cells, count, taps, cross=True)
    return psnr(filtered, original), second, own, cross


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("eval_dir", type=Path)
    p.add_argument("--kodak", type=Path, default=KODAK)
    p.add_argument("--only", choices=("entropy", "filter"))
    p.add_argument("--bpp", type=lambda text: [float(v) for v in text.split(",")],
                   help="only the files of these target rates (the filter bounds take about a minute a file)")
    args = p.parse_args(argv)
    units = sorted((args.eval_dir / "cache").glob("*/dipcodec-*.json"))
    if not units:
        print(f"headroom.py: no dipcodec files in {args.eval_dir / 'cache'}", file=sys.stderr)
        return 1
    rates = {"Gaussian": [], "per-row Laplace": [], "empirical entropy": []}
    gains = {"second filter": [], "cross-channel": []}
    for path in units:
        unit = json.loads(path.read_text())
        if args.bpp and unit["target_bpp"] not in args.bpp:
            continue
        stream = unpack(base64.b64decode(unit["file_base64"]))
        if stream.channels != 3 or stream.mode != "plain" or stream.scale != 1:
            print(f"{path}: not an RGB file of plain compression, skipped", file=sys.stderr)
            continue
        parts = []
        if args.only != "filter":
            laplace, *others = entropy_headroom(stream)
            for name, other in zip(rates, others):
                rates[name].append(other / laplace - 1)
            parts.append(f"weights {len(stream.weights)} B coded, {laplace:.0f} B ideal under the Laplace models, "
                         + ", ".join(f"{name} {other / laplace - 1:+.2%}" for name, other in zip(rates, others)))
        if args.only != "entropy":
            original = read_image(args.kodak / f"{unit['image']}.png")
            file_psnr, second, own, cross = filter_headroom(stream, original)
            if abs(file_psnr - unit["psnr"]) > 1e-6:
                print(f"{path}: decodes to {file_psnr:.4f} dB, the unit says {unit['psnr']:.4f}", file=sys.stderr)
                return 1
            gains["second filter"].append(second - file_psnr)
            gains["cross-channel"].append(cross - own)
            parts.append(f"{file_psnr:.2f} dB, second filter {second - file_psnr:+.2f} dB, "
                         f"cross-channel {cross - own:+.2f} dB (its filter unrounded {own - file_psnr:+.2f})")
        print(f"{unit['image']} {unit['target_bpp']} bpp, {unit['bytes']} B: " + "; ".join(parts), flush=True)
    summary = [f"{name} {statistics.median(v):+.2%} bytes" for name, v in rates.items() if v]
    summary += [f"{name} {statistics.median(v):+.3f} dB" for name, v in gains.items() if v]
    print(f"median over {len(gains['second filter'] or rates['Gaussian'])} files: " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
