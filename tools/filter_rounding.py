#!/usr/bin/env python3
"""How should the post-filter's coefficients be rounded, and how finely? For issue #4, on eval units.

    python tools/filter_rounding.py docs/eval/kodak6-fast [--precisions 5,6,7,8] [--json OUT]

For every dipcodec unit with a post-filter, the network's own image is rendered from the file (its
filter left off) and the file's filter layout (taps, phases, activity thresholds) is solved again
for it at each precision, its coefficients rounded two ways: all at once (each least-squares
coefficient to its nearest step, as the encoder did before commit eb8961e) and one at a time
(``postfilter_fit.solve_post_filter``: each rounding's error re-solved into the coefficients not yet
rounded). Per file it prints the PSNR and ``F`` section bytes of each, and the mean change of the
encoder's own score (PSNR less ``GRID_DB_PER_OCTAVE`` dB per doubling of the file's bytes, as
``choose_post_filter`` weighs a section in its final choice; rate control's byte limits are left
out) against the file as coded. The layout is the file's, so what a cheaper section would let the
encoder choose instead is not in these figures.
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

from dipcodec.container import post_filter_section, unpack
from dipcodec.decoder import decoded_weights, reference_of, render
from dipcodec.evaluation import psnr
from dipcodec.evaluation.run import load_rgb
from dipcodec.postfilter import PostFilter, classify
from dipcodec.postfilter_fit import GRID_DB_PER_OCTAVE, NormalEquations, normal_equations, solve_post_filter

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def rounded_at_once(systems: NormalEquations, like: PostFilter, precision: int) -> PostFilter:
    """``like``'s layout solved from ``systems`` (summed for its taps), each coefficient rounded to
    its nearest step."""
    identity = np.eye(like.taps**2 + 1)[like.taps**2 // 2]
    codes = []
    for c in range(systems.grams.shape[0]):
        for k in range(systems.grams.shape[1]):
            solution = np.linalg.lstsq(systems.grams[c, k], systems.rhs[c, k], rcond=None)[0]
            codes.append(tuple(int(v) for v in np.round((solution - identity) * 2.0**precision)))
    return PostFilter(like.taps, precision, tuple(codes), like.phases, like.thresholds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a dipcodec eval output folder (its cache/)")
    p.add_argument("--precisions", default="5,6,7,8", help="coefficient steps 2^-P to try (default 5,6,7,8)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    precisions = [int(v) for v in args.precisions.split(",")]
    units = sorted(args.folder.glob("cache/*/dipcodec-*.json"))
    rows = []
    for path in units:
        unit = json.loads(path.read_text())
        data = base64.b64decode(unit["file_base64"])
        stream = unpack(data)
        coded = stream.post_filter
        if coded is None:
            continue
        original = load_rgb(DATA / "kodak" / f"{unit['image']}.png")
        image = render(stream.network, decoded_weights(stream, reference_of(stream)), stream.seed, stream.height,
                       stream.width)
        rest = len(data) - len(post_filter_section(coded))
        systems = normal_equations(image, original, coded.taps, classify(image, coded.phases, coded.thresholds),
                                   coded.classes)

        def measured(post_filter: PostFilter) -> dict:
            quality = psnr(original, post_filter.apply(image))
            section = len(post_filter_section(post_filter))
            return {"psnr": quality, "section_bytes": section,
                    "score": quality - GRID_DB_PER_OCTAVE * math.log2(rest + section)}

        row = {"image": unit["image"], "target_bpp": unit["target_bpp"], "taps": coded.taps,
               "classes": coded.classes, "as_coded": measured(coded)}
        for precision in precisions:
            row[f"at_once_{precision}"] = measured(rounded_at_once(systems, coded, precision))
            row[f"one_at_a_time_{precision}"] = measured(solve_post_filter(
                systems, coded.taps, precision, phases=coded.phases, thresholds=coded.thresholds))
        rows.append(row)
        cells = [f"2^-{q}: {row[f'at_once_{q}']['psnr']:.3f} dB {row[f'at_once_{q}']['section_bytes']} B at once, "
                 f"{row[f'one_at_a_time_{q}']['psnr']:.3f} dB {row[f'one_at_a_time_{q}']['section_bytes']} B one by one"
                 for q in precisions]
        print(f"{unit['image']} {unit['target_bpp']} (coded: {row['as_coded']['psnr']:.3f} dB, "
              f"{row['as_coded']['section_bytes']} B, 2^-{coded.precision})\n  " + "\n  ".join(cells), flush=True)
    if not rows:
        p.error(f"no dipcodec units with a post-filter under {args.folder / 'cache'}")
    print("\nmean change of the encoder's score against the file as coded (dB; PSNR and bytes):")
    for key in [k for k in rows[0] if k.startswith(("at_once", "one_at"))]:
        change = statistics.mean(r[key]["score"] - r["as_coded"]["score"] for r in rows)
        dpsnr = statistics.mean(r[key]["psnr"] - r["as_coded"]["psnr"] for r in rows)
        dbytes = statistics.mean(r[key]["section_bytes"] - r["as_coded"]["section_bytes"] for r in rows)
        print(f"  {key:18s} score {change:+.3f}  PSNR {dpsnr:+.3f} dB  section {dbytes:+.0f} bytes")
    if args.json:
        args.json.write_text(json.dumps({"folder": str(args.folder), "units": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
