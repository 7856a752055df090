#!/usr/bin/env python3
"""Benchmark: encode and decode Kodak images at target rates, against Pillow JPEG at the same size.

    python tools/bench_kodak.py [--images kodim05,kodim23|kodak6|all] [--bpp 0.25,0.5] [--preset default]
                                [--eval-out DIR] [--json OUT]

Prints one row per (image, rate): real bpp from the file's bytes, PSNR of the decoded file and of the
float fit before quantization (their difference is what quantization costs), encode and decode
seconds, and the PSNR of the largest Pillow JPEG (4:2:0) that is no bigger than the dipcodec file.

The dipcodec encodes run through ``dipcodec eval``'s runner (dipcodec only), so they land in the
cache of the eval folder ``--eval-out``, whose report is left as it is: an interrupted benchmark
resumes, and a later ``dipcodec eval`` of that folder with the same preset reuses these encodes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from dipcodec.evaluation import jpeg_at_size, psnr
from dipcodec.evaluation.run import EvalConfig, collect, load_rgb, machine, parse_images, parse_targets

DEFAULT_KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"
COLUMNS = ("image", "target", "bpp", "PSNR dB", "float fit dB", "gap dB", "JPEG q", "JPEG bpp", "JPEG PSNR",
           "dB over JPEG", "encode s", "decode s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kodak", type=Path, default=DEFAULT_KODAK, help="folder of kodimNN.png")
    p.add_argument("--images", default="all", help="comma-separated names (kodim05,...), 'kodak6' or 'all'")
    p.add_argument("--bpp", default="0.25,0.5")
    p.add_argument("--preset", default="default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-out", type=Path, help="the eval folder whose cache holds the encodes (default: a "
                                                 "temporary one)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        config = EvalConfig(source=args.kodak, out=args.eval_out or Path(scratch), codecs=("dipcodec",),
                            targets=parse_targets(args.bpp), preset=args.preset,
                            images=None if args.images == "all" else parse_images(args.images), device=args.device)
        results = collect(config)
    rows = []
    for image in results.images:
        pixels = load_rgb(image.path)
        for target in config.targets:
            unit = results.points[(image.name, "dipcodec", target)]
            quality, jpeg, jpeg_pixels = jpeg_at_size(pixels, unit["bytes"])
            rows.append(dict(image=image.name, target=target, bpp=unit["bpp"], psnr=unit["psnr"],
                             float_psnr=unit["float_psnr"], jpeg_quality=quality, jpeg_bpp=8 * len(jpeg) / image.pixels,
                             jpeg_psnr=psnr(pixels, jpeg_pixels), encode_s=unit["encode_s"],
                             decode_s=unit["decode_s"], commit=unit["computed"]["commit"]))
    print(f"# {machine()}; preset {args.preset}; dipcodec commit(s) "
          f"{', '.join(sorted({str(r['commit']) for r in rows}))}")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def table(rows: list[dict]) -> str:
    """The Markdown table of BENCHMARKS.md: one row per (image, rate), then the mean at each rate."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append(f"| {r['image']} | {r['target']:g} | {r['bpp']:.4f} | {r['psnr']:.2f} | {r['float_psnr']:.2f} | "
                     f"{r['float_psnr'] - r['psnr']:.2f} | {r['jpeg_quality']} | {r['jpeg_bpp']:.4f} | "
                     f"{r['jpeg_psnr']:.2f} | {r['psnr'] - r['jpeg_psnr']:+.2f} | {r['encode_s']:.0f} | "
                     f"{r['decode_s']:.2f} |")
    for target in sorted({r["target"] for r in rows}):
        sel = [r for r in rows if r["target"] == target]
        mean = lambda key: statistics.mean(r[key] for r in sel)
        lines.append(f"| **mean of {len(sel)}** | {target:g} | {mean('bpp'):.4f} | **{mean('psnr'):.2f}** | "
                     f"{mean('float_psnr'):.2f} | {mean('float_psnr') - mean('psnr'):.2f} | | {mean('jpeg_bpp'):.4f} | "
                     f"**{mean('jpeg_psnr'):.2f}** | {mean('psnr') - mean('jpeg_psnr'):+.2f} | "
                     f"{statistics.median(r['encode_s'] for r in sel):.0f} (median), "
                     f"{max(r['encode_s'] for r in sel):.0f} (max) | "
                     f"{statistics.median(r['decode_s'] for r in sel):.2f} (median) |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
