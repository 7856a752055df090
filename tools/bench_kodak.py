#!/usr/bin/env python3
"""Benchmark: encode and decode Kodak images at target rates, against Pillow JPEG at the same size.

    python tools/bench_kodak.py [--images kodim05,kodim23] [--bpp 0.25,0.5] [--preset default] [--json OUT]

Prints one row per (image, rate): real bpp from the file's bytes, PSNR of the decoded file and of the
float fit before quantization, encode and decode seconds, and the PSNR of the largest Pillow JPEG
(4:2:0) that is no bigger than the dipcodec file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from dipcodec import decode
from dipcodec.encoder import encode_detailed
from dipcodec.evaluation import jpeg_at_size, psnr
from dipcodec.images import read_image

DEFAULT_KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kodak", type=Path, default=DEFAULT_KODAK, help="folder of kodimNN.png")
    p.add_argument("--images", default="all", help="comma-separated names (kodim05,...) or 'all' or 'kodak6'")
    p.add_argument("--bpp", default="0.25,0.5")
    p.add_argument("--preset", default="default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args(argv)

    if args.images == "all":
        names = sorted(f.stem for f in args.kodak.glob("kodim*.png"))
    elif args.images == "kodak6":
        names = ["kodim01", "kodim05", "kodim07", "kodim14", "kodim20", "kodim23"]
    else:
        names = args.images.split(",")
    rates = [float(b) for b in args.bpp.split(",")]
    print(f"# {platform.node() or 'machine'}: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, preset {args.preset}", flush=True)
    header = "| image | target | bpp | PSNR dB | float fit dB | JPEG q | JPEG bpp | JPEG PSNR | encode s | decode s |"
    print(header + "\n" + "|---" * 10 + "|", flush=True)
    rows = []
    for name in names:
        pixels = read_image(args.kodak / f"{name}.png")
        h, w = pixels.shape[:2]
        for target in rates:
            start = time.perf_counter()
            result = encode_detailed(pixels, bpp=target, preset=args.preset, device=args.device)
            encode_s = time.perf_counter() - start
            start = time.perf_counter()
            decoded = decode(result.data, device=args.device)
            decode_s = time.perf_counter() - start
            quality, jpeg, jpeg_pixels = jpeg_at_size(pixels, len(result.data))
            row = dict(image=name, target=target, bpp=8 * len(result.data) / (h * w), psnr=psnr(pixels, decoded),
                       float_psnr=result.float_psnr,
                       jpeg_quality=quality, jpeg_bpp=8 * len(jpeg) / (h * w), jpeg_psnr=psnr(pixels, jpeg_pixels),
                       encode_s=encode_s, decode_s=decode_s)
            rows.append(row)
            print(f"| {name} | {target} | {row['bpp']:.4f} | {row['psnr']:.2f} | {row['float_psnr']:.2f} | {quality} | {row['jpeg_bpp']:.4f} | "
                  f"{row['jpeg_psnr']:.2f} | {encode_s:.1f} | {decode_s:.2f} |", flush=True)
    for target in rates:
        sel = [r for r in rows if r["target"] == target]
        print(f"| **mean** | {target} | {statistics.mean(r['bpp'] for r in sel):.4f} | "
              f"{statistics.mean(r['psnr'] for r in sel):.2f} | {statistics.mean(r['float_psnr'] for r in sel):.2f} | | "
              f"{statistics.mean(r['jpeg_bpp'] for r in sel):.4f} | "
              f"{statistics.mean(r['jpeg_psnr'] for r in sel):.2f} | {statistics.median(r['encode_s'] for r in sel):.1f} (median) | "
              f"{statistics.median(r['decode_s'] for r in sel):.2f} (median) |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
