#!/usr/bin/env python3
"""Warm-started frames against independently coded ones, per frame of a clip (BENCHMARKS.md, "Sequences").

Codes the first FRAMES frames of each clip twice at the same quality and preset: each frame on its own
(``dipcodec.encode``), and as one sequence (``dipcodec.encode_sequence``: the first frame on its own,
each later one warm-started from the frame before and coded as deltas from it). Prints, per frame,
bytes, PSNR and fitting iterations of both, and writes everything to --json.

    python tools/bench_seq.py --clips camel,dog --frames 8 --quality 75 --preset fast --json docs/results/seq.json
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
from dipcodec.evaluation.run import provenance
from dipcodec.images import read_image
from dipcodec.transfer.warmstart import encode_sequence

SEQ = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "seq"


class Counter:
    """Counts fitting iterations through the progress callback (float and quantization-aware)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, done: int, total: int, psnr: float) -> None:
        self.calls += 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", default="camel,dog")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--quality", type=float, default=75)
    p.add_argument("--preset", default="fast")
    p.add_argument("--average", default="1", help="averaging windows to compare, comma-separated (e.g. 1,2,4)")
    p.add_argument("--seq", type=Path, default=SEQ)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    report = provenance(sys.argv) | {"clips": {}}
    for clip in args.clips.split(","):
        paths = sorted((args.seq / clip / "clean").glob("*.png"))[: args.frames]
        frames = [read_image(f) for f in paths]
        rows = []
        for frame in frames:
            counter, t0 = Counter(), time.perf_counter()
            result = encode_detailed(frame, quality=args.quality, preset=args.preset, progress=counter)
            rows.append({"independent": {"bytes": len(result.data), "psnr": psnr(frame, result.pixels),
                                         "iterations": counter.calls, "seconds": time.perf_counter() - t0}})
        sizes = {}
        for average in [int(a) for a in args.average.split(",")]:
            counter, warm = Counter(), f"warm-average{average}" if average > 1 else "warm"

            def on_frame(index: int, result, seconds: float) -> None:
                rows[index][warm] = {"bytes": len(result.data), "psnr": psnr(frames[index], result.pixels),
                                     "iterations": counter.calls, "seconds": seconds}
                counter.calls = 0

            data = encode_sequence(frames, quality=args.quality, preset=args.preset, average=average,
                                   progress=counter, on_frame=on_frame)
            sizes[warm] = len(data)
            print(f"\n{clip}, {warm}: {len(frames)} frames, sequence file {len(data)} bytes, "
                  f"independent files {sum(r['independent']['bytes'] for r in rows)} bytes")
            print("| frame | independent: bytes, PSNR, iterations | warm-started: bytes, PSNR, iterations | bits | iterations |")
            print("|---|---|---|---|---|")
            for i, r in enumerate(rows):
                a, b = r["independent"], r[warm]
                print(f"| {i} | {a['bytes']}, {a['psnr']:.2f} dB, {a['iterations']} | {b['bytes']}, {b['psnr']:.2f} dB, "
                      f"{b['iterations']} | {b['bytes'] / a['bytes']:.2f} | {b['iterations'] / a['iterations']:.2f} |")
            later = rows[1:]
            if later:
                print(f"frames 1-{len(rows) - 1}, medians: bits ratio "
                      f"{np.median([r[warm]['bytes'] / r['independent']['bytes'] for r in later]):.3f}, "
                      f"iterations ratio {np.median([r[warm]['iterations'] / r['independent']['iterations'] for r in later]):.3f}, "
                      f"PSNR difference {np.median([r[warm]['psnr'] - r['independent']['psnr'] for r in later]):+.2f} dB",
                      flush=True)
        report["clips"][clip] = {"sequence_bytes": sizes, "frames": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
