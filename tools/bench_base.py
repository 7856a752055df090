#!/usr/bin/env python3
r"""Kodak BD-rate of coding from a base model against coding from the seed, same preset (so the same
time budget: the iterations are the same when the base has the seed's width), side by side in one
run (BENCHMARKS.md, "Base models").

    python tools/bench_base.py --images kodak6 --bpp 0.25,0.5,0.75 --preset fast --base default \
        --json docs/results/base-bdrate.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dipcodec.encoder import encode_detailed
from dipcodec.evaluation import psnr
from dipcodec.evaluation.bdrate import bd_psnr, bd_rate
from dipcodec.evaluation.run import parse_images, provenance
from dipcodec.images import read_image

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default="kodak6")
    p.add_argument("--bpp", default="0.25,0.5,0.75")
    p.add_argument("--preset", default="fast")
    p.add_argument("--base", default="default", help="'default' or a .dipbase path")
    p.add_argument("--kodak", type=Path, default=KODAK)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    names = parse_images(args.images)
    rates = [float(b) for b in args.bpp.split(",")]
    report = provenance(sys.argv) | {"images": {}}
    print("| image | bpp | seed: bpp, PSNR, s | base: bpp, PSNR, s |")
    print("|---|---|---|---|")
    for name in names:
        pixels = read_image(args.kodak / f"{name}.png")
        points = {"seed": [], "base": []}
        for bpp in rates:
            row = []
            for kind, base in (("seed", "none"), ("base", args.base)):
                t0 = time.perf_counter()
                result = encode_detailed(pixels, bpp=bpp, preset=args.preset, base=base)
                seconds = time.perf_counter() - t0
                point = {"bpp": 8 * len(result.data) / pixels[..., 0].size, "psnr": psnr(pixels, result.pixels),
                         "seconds": seconds, "width": result.network.input_channels}
                points[kind].append(point)
                row.append(f"{point['bpp']:.4f}, {point['psnr']:.2f} dB, {seconds:.0f} s (width {point['width']})")
            print(f"| {name} | {bpp} | {row[0]} | {row[1]} |", flush=True)
        report["images"][name] = points
        points["bd_rate"] = points["bd_psnr"] = None  # stays None with one rate, or a curve that does not rise
        if len(rates) >= 2:
            curves = [[q[key] for q in points[kind]] for kind in ("seed", "base") for key in ("bpp", "psnr")]
            try:
                points["bd_rate"], points["bd_psnr"] = bd_rate(*curves), bd_psnr(*curves)
                print(f"| {name} | BD-rate of base against seed | {points['bd_rate']:+.1f}% | "
                      f"BD-PSNR {points['bd_psnr']:+.2f} dB |", flush=True)
            except ValueError as exc:
                print(f"| {name} | no BD-rate: {exc} | | |", flush=True)
    bd = [v["bd_rate"] for v in report["images"].values() if v["bd_rate"] is not None]
    report["mean_bd_rate"] = float(np.mean(bd)) if bd else None
    if bd:
        print(f"mean BD-rate of base against seed over {len(bd)} images: {np.mean(bd):+.1f}% "
              f"(median {np.median(bd):+.1f}%)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
