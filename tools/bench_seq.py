#!/usr/bin/env python3
r"""Warm-started frames against independently coded ones, per frame of a clip (BENCHMARKS.md, "Sequences").

Codes the first FRAMES frames of each clip twice at the same quality and preset: each frame on its own
(``dipcodec.encode``), and as one sequence (``dipcodec.encode_sequence``: the first frame on its own,
each later one warm-started from the frame before and coded as deltas from it). Prints, per frame,
bytes, PSNR and fitting iterations of both, and writes everything to --json.

A warm-started frame lands at another PSNR than the same frame coded alone, so its bytes are only
comparable at equal PSNR: ``--rd-qualities`` also codes each later frame alone at those qualities,
and the "bits at equal PSNR" column divides the warm frame's bytes by what the frame's own
independent curve (log bytes linear in PSNR between the two points around it) needs for the warm
frame's PSNR. A value outside the curve's range is extrapolated from its two end points and marked
with a star (and ``"extrapolated": true`` in the JSON).

    python tools/bench_seq.py --clips camel,dog --frames 8 --quality 75 --rd-qualities 40,55 --preset fast \
        --json docs/results/seq.json

``--average``, ``--warm-beta2``, ``--warm-lr`` (the warm fits' Adam beta2 and learning rate,
``warmstart.WARM_BETA2`` and ``WARM_LEARNING_RATE``) and ``--motion`` (``on``: canvas offsets that
follow the camera, the default; ``off``: none) take lists: every combination codes the clip once
more as a sequence, against the same independent frames. ``--independent`` takes those frames and
their curves from an earlier run's JSON (same frames, quality, preset and base) instead of coding
them again: a warm-side comparison then costs minutes, not half an hour a clip.
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
from dipcodec.transfer import warmstart
from dipcodec.transfer.warmstart import encode_sequence

SEQ = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "seq"


class Counter:
    """Counts fitting iterations through the progress callback (float and quantization-aware)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, done: int, total: int, psnr: float) -> None:
        self.calls += 1


def bytes_at_psnr(curve: list[tuple[int, float]], target: float) -> tuple[float, bool]:
    """Bytes an independent frame needs for ``target`` dB, from its (bytes, PSNR) points: log bytes
    interpolated linearly in PSNR between the two points around it (or the two nearest, extrapolating:
    then the flag is True)."""
    points = sorted(curve, key=lambda p: p[1])
    if len(points) < 2:
        raise ValueError("an independent curve needs two points")
    inside = points[0][1] <= target <= points[-1][1]
    above = next((i for i, p in enumerate(points) if p[1] >= target), len(points) - 1)
    low, high = points[max(above - 1, 0)], points[max(above, 1)]
    if high[1] == low[1]:
        return float(min(low[0], high[0])), not inside
    share = (target - low[1]) / (high[1] - low[1])
    return float(np.exp(np.log(low[0]) + share * (np.log(high[0]) - np.log(low[0])))), not inside


def code_alone(frames: list[np.ndarray], quality: float, preset: str, base: str,
               rd_qualities: list[float]) -> list[dict]:
    """Each frame coded on its own; each later frame also at ``rd_qualities``, for its curve."""
    rows: list[dict] = []
    for frame in frames:
        counter, t0 = Counter(), time.perf_counter()
        result = encode_detailed(frame, quality=quality, preset=preset, base=base, progress=counter)
        rows.append({"independent": {"bytes": len(result.data), "psnr": psnr(frame, result.pixels),
                                     "iterations": counter.calls, "seconds": time.perf_counter() - t0}})
        if len(rows) > 1:  # the key frame is coded alone either way
            rows[-1]["curve"] = [[rows[-1]["independent"]["bytes"], rows[-1]["independent"]["psnr"]]]
            for other_quality in rd_qualities:
                other = encode_detailed(frame, quality=other_quality, preset=preset, base=base)
                rows[-1]["curve"].append([len(other.data), psnr(frame, other.pixels)])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", default="camel,dog")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--quality", type=float, default=75)
    p.add_argument("--preset", default="fast")
    p.add_argument("--base", default="auto",
                   help="what frames coded alone and key frames start from, as encode's --base (default: %(default)s, "
                        "a shipped base at fast)")
    p.add_argument("--rd-qualities", default="",
                   help="more qualities to code each later frame at alone, for bits at equal PSNR (e.g. 40,55)")
    p.add_argument("--average", default="1", help="averaging windows to compare, comma-separated (e.g. 1,2,4)")
    p.add_argument("--warm-beta2", default="",
                   help="Adam beta2 values of the warm-started fits to compare, comma-separated (default: "
                        "warmstart.WARM_BETA2 alone)")
    p.add_argument("--warm-lr", default="",
                   help="learning rates of the warm-started fits to compare, comma-separated (default: "
                        "warmstart.WARM_LEARNING_RATE alone)")
    p.add_argument("--motion", default="on", help="canvas offsets that follow the camera: on, off or on,off")
    p.add_argument("--independent", type=Path, metavar="JSON",
                   help="an earlier run's JSON whose frames coded alone (and curves) to reuse")
    p.add_argument("--seq", type=Path, default=SEQ)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    earlier = json.loads(args.independent.read_text())["clips"] if args.independent else None
    torch.set_num_threads(2)
    rd_qualities = [float(q) for q in args.rd_qualities.split(",") if q]
    report = provenance(sys.argv) | {"base": args.base, "clips": {}}
    if args.independent:
        report["independent_from"] = str(args.independent)
    for clip in args.clips.split(","):
        paths = sorted((args.seq / clip / "clean").glob("*.png"))[: args.frames]
        frames = [read_image(f) for f in paths]
        if earlier is None:
            rows = code_alone(frames, args.quality, args.preset, args.base, rd_qualities)
        elif clip in earlier and len(earlier[clip]["frames"]) >= len(frames):
            rows = [{k: v for k, v in r.items() if k in ("independent", "curve")}
                    for r in earlier[clip]["frames"][: len(frames)]]
        else:
            raise SystemExit(f"{args.independent} holds no {len(frames)} frames of {clip}")
        sizes = {}
        betas = [float(b) for b in args.warm_beta2.split(",") if b] or [warmstart.WARM_BETA2]
        rates = [float(r) for r in args.warm_lr.split(",") if r] or [warmstart.WARM_LEARNING_RATE]
        shipped_beta2, shipped_rate = warmstart.WARM_BETA2, warmstart.WARM_LEARNING_RATE
        motions = [{"on": True, "off": False}[m] for m in args.motion.split(",")]
        for average, beta2, rate, motion in [(int(a), b, r, m) for a in args.average.split(",") for b in betas
                                             for r in rates for m in motions]:
            counter, warm = Counter(), f"warm-average{average}" if average > 1 else "warm"
            if beta2 != shipped_beta2:
                warm += f"-beta2-{beta2:g}"
            if rate != shipped_rate:
                warm += f"-lr-{rate:g}"
            if not motion:
                warm += "-no-motion"
            warmstart.WARM_BETA2, warmstart.WARM_LEARNING_RATE = beta2, rate

            def on_frame(index: int, result, seconds: float) -> None:
                rows[index][warm] = {"bytes": len(result.data), "psnr": psnr(frames[index], result.pixels),
                                     "iterations": counter.calls, "seconds": seconds}
                counter.calls = 0

            try:
                data = encode_sequence(frames, quality=args.quality, preset=args.preset, average=average,
                                       base=args.base, motion=motion, progress=counter, on_frame=on_frame)
            finally:
                warmstart.WARM_BETA2, warmstart.WARM_LEARNING_RATE = shipped_beta2, shipped_rate
            sizes[warm] = len(data)
            print(f"\n{clip}, {warm}: {len(frames)} frames, sequence file {len(data)} bytes, "
                  f"independent files {sum(r['independent']['bytes'] for r in rows)} bytes")
            print("| frame | independent: bytes, PSNR, iterations | warm-started: bytes, PSNR, iterations | bits "
                  "| bits at equal PSNR | iterations |")
            print("|---|---|---|---|---|---|")
            for i, r in enumerate(rows):
                a, b = r["independent"], r[warm]
                equal = "-"
                if len(r.get("curve", [])) >= 2:
                    needed, extrapolated = bytes_at_psnr([tuple(c) for c in r["curve"]], b["psnr"])
                    b["bits_at_equal_psnr"], b["extrapolated"] = b["bytes"] / needed, extrapolated
                    equal = f"{b['bits_at_equal_psnr']:.2f}" + ("*" if extrapolated else "")
                print(f"| {i} | {a['bytes']}, {a['psnr']:.2f} dB, {a['iterations']} | {b['bytes']}, {b['psnr']:.2f} dB, "
                      f"{b['iterations']} | {b['bytes'] / a['bytes']:.2f} | {equal} | "
                      f"{b['iterations'] / a['iterations']:.2f} |")
            later = rows[1:]
            if later:
                equal_psnr = [r[warm]["bits_at_equal_psnr"] for r in later if "bits_at_equal_psnr" in r[warm]]
                print(f"frames 1-{len(rows) - 1}, medians: bits ratio "
                      f"{np.median([r[warm]['bytes'] / r['independent']['bytes'] for r in later]):.3f}"
                      + (f" ({np.median(equal_psnr):.3f} at equal PSNR)" if equal_psnr else "") + ", "
                      f"iterations ratio {np.median([r[warm]['iterations'] / r['independent']['iterations'] for r in later]):.3f}, "
                      f"PSNR difference {np.median([r[warm]['psnr'] - r['independent']['psnr'] for r in later]):+.2f} dB",
                      flush=True)
        report["clips"][clip] = {"sequence_bytes": sizes, "frames": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
