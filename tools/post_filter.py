#!/usr/bin/env python3
"""What would a post-filter add to files coded without one? For issue #4: measured on eval units.

    python tools/post_filter.py docs/eval/kodak6-fast [--taps 5] [--precision 6] [--json OUT]

For every dipcodec unit of a ``dipcodec eval`` output folder, the file is decoded and, per colour
channel, the ``taps`` x ``taps`` least-squares filter (plus an offset) is fitted to it and applied,
exactly as the encoder and decoder of format version 5 do for a filter of one class (the encoder
of version 6 also tries classes; ``dipcodec.postfilter``; FORMAT.md §3.5, §6.2); its bytes are the ``F`` section's. The tool prints each file's PSNR before and after, the
bytes added, the mean PSNR per target, and the BD-rate against the folder's JPEG curve (its quality
sweeps read at the targets, as the eval's report reads them) before and after, with the bpp
counting the added bytes. On files made since version 5 (which already carry a filter, fitted
after rate control left room for it) it measures a second filter on top; its use is the units coded
before, which it upgrades after the fact, without the room rate control would have left.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

import numpy as np

import dipcodec
from dipcodec.container import post_filter_section
from dipcodec.evaluation import psnr
from dipcodec.evaluation.bdrate import bd_rate
from dipcodec.evaluation.curves import mean_curve
from dipcodec.evaluation.run import load_rgb
from dipcodec.postfilter_fit import POST_FILTER_PRECISION, normal_equations, solve_post_filter

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def filtered(decoded: np.ndarray, original: np.ndarray, taps: int, precision: int) -> tuple[np.ndarray, int]:
    """The decoded image through the codec's least-squares post-filter, and the bytes of its section."""
    post_filter = solve_post_filter(normal_equations(decoded, original, taps), taps, precision)
    return post_filter.apply(decoded), len(post_filter_section(post_filter))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a dipcodec eval output folder (its cache/ and jpeg.json)")
    p.add_argument("--taps", type=int, default=5, help="filter side, odd (default 5)")
    p.add_argument("--precision", type=int, default=POST_FILTER_PRECISION,
                   help=f"coefficient step 2^-P (default {POST_FILTER_PRECISION}, the encoder's)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.taps < 1 or args.taps % 2 == 0:
        p.error("--taps must be odd and positive")
    units = sorted(args.folder.glob("cache/*/dipcodec-*.json"))
    if not units:
        p.error(f"no dipcodec units under {args.folder / 'cache'}")
    rows = []
    for path in units:
        unit = json.loads(path.read_text())
        original = load_rgb(DATA / "kodak" / f"{unit['image']}.png")
        decoded = dipcodec.decode(base64.b64decode(unit["file_base64"]))
        start = time.perf_counter()
        after, extra = filtered(decoded, original, args.taps, args.precision)
        row = dict(image=unit["image"], target=unit["target_bpp"], bytes=unit["bytes"], extra_bytes=extra,
                   psnr=psnr(original, decoded), filtered_psnr=psnr(original, after),
                   seconds=time.perf_counter() - start)
        row["bpp"] = 8 * row["bytes"] / original.shape[0] / original.shape[1]
        row["filtered_bpp"] = 8 * (row["bytes"] + extra) / original.shape[0] / original.shape[1]
        rows.append(row)
        print(f"{row['image']} {row['target']} bpp: {row['psnr']:.2f} -> {row['filtered_psnr']:.2f} dB "
              f"({row['filtered_psnr'] - row['psnr']:+.2f}), +{extra} bytes on {row['bytes']}", flush=True)
    targets = sorted({r["target"] for r in rows})
    mean = {k: [float(np.mean([r[k] for r in rows if r["target"] == t])) for t in targets]
            for k in ("bpp", "psnr", "filtered_bpp", "filtered_psnr")}
    # JPEG's anchor as the eval report reads it: each image's quality sweep, averaged at the targets
    sweeps = [json.loads(path.read_text())["points"] for path in sorted(args.folder.glob("cache/*/jpeg-sweep.json"))]
    jpeg = [float(v) for v in mean_curve([([q["bpp"] for q in s], [q["psnr"] for q in s]) for s in sweeps], targets)]
    if not all(np.isfinite(jpeg)):
        p.error("JPEG's sweeps do not reach every target: no BD-rate on this folder")
    summary = dict(targets=targets, **mean, jpeg_psnr=jpeg,
                   bd_rate_before=bd_rate(targets, jpeg, mean["bpp"], mean["psnr"]),
                   bd_rate_after=bd_rate(targets, jpeg, mean["filtered_bpp"], mean["filtered_psnr"]))
    for i, t in enumerate(targets):
        print(f"mean at {t} bpp: {mean['psnr'][i]:.2f} -> {mean['filtered_psnr'][i]:.2f} dB, "
              f"{mean['bpp'][i]:.4f} -> {mean['filtered_bpp'][i]:.4f} bpp")
    print(f"BD-rate against JPEG: {summary['bd_rate_before']:+.1f}% -> {summary['bd_rate_after']:+.1f}%")
    if args.json:
        args.json.write_text(json.dumps(dict(argv=sys.argv[1:], date=time.strftime("%Y-%m-%d"), taps=args.taps,
                                             precision=args.precision, rows=rows, summary=summary), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
