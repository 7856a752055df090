#!/usr/bin/env python3
"""How much faster a fit goes from a base model than from the seeded initialization.

For each image, fits the same network twice in float for ITERATIONS iterations, from the seed and
from the base, and reports the iteration at which the base run first reaches the seed run's best
PSNR (BENCHMARKS.md, "Base models"). Writes the curves to --json.

    python tools/base_gain.py dipcodec/transfer/bases/rgb-w56.dipbase --images kodak6 --iterations 2200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dipcodec.encoder import PRESETS, FittedNetwork, Start
from dipcodec.evaluation.run import parse_images, provenance
from dipcodec.fit import FitSchedule
from dipcodec.images import read_image
from dipcodec.network import reference_weights
from dipcodec.transfer.basefile import load_base

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


def curve(pixels: np.ndarray, schedule: FitSchedule, start: Start) -> list[float]:
    """Best-so-far PSNR after each iteration."""
    psnrs: list[float] = []
    FittedNetwork.fit(pixels, None, schedule, 0, torch.device("cpu"),
                      progress=lambda i, n, p: psnrs.append(max(p, psnrs[-1]) if psnrs else p), start=start)
    return psnrs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", type=Path, help="a .dipbase file")
    p.add_argument("--images", default="kodak6", help="'kodak6', 'all', or comma-separated names")
    p.add_argument("--iterations", type=int, default=2200)
    p.add_argument("--lr", type=float, default=0.02, help="learning rate of both runs")
    p.add_argument("--adam-beta2", type=float, default=PRESETS["fast"].adam_beta2,
                   help="Adam's beta2 in both runs (default: the fast preset's, %(default)s; the figures "
                        "before 2026-11-23 used 0.999)")
    p.add_argument("--kodak", type=Path, default=KODAK)
    p.add_argument("--json", type=Path, help="write per-image curves and results here")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    base = load_base(args.base)
    names = [f"kodim{i:02d}" for i in range(1, 25)] if args.images == "all" else parse_images(args.images)
    schedule = FitSchedule(iterations=args.iterations, qat_iterations=0, learning_rate=args.lr,
                           adam_beta2=args.adam_beta2)
    rows = []
    print("| image | seed: best PSNR | base: PSNR at the same iteration | base reaches seed's best at | ratio |")
    print("|---|---|---|---|---|")
    for name in names:
        pixels = read_image(args.kodak / f"{name}.png")
        t0 = time.perf_counter()
        # The seed run fits the same network as the base, from its seeded initialization.
        seed_start = Start(base.network, tuple(reference_weights(base.network, 0)), "seed")
        seeded = curve(pixels, schedule, seed_start)
        t1 = time.perf_counter()
        based = curve(pixels, schedule, Start.of_base(base))
        t2 = time.perf_counter()
        reach = next((i + 1 for i, v in enumerate(based) if v >= seeded[-1]), None)
        ratio = reach / len(seeded) if reach else None
        rows.append({"image": name, "seed_best": seeded[-1], "base_best": based[-1], "base_reaches_at": reach,
                     "ratio": ratio, "seconds": [t1 - t0, t2 - t1],
                     "seed_curve": seeded[::10], "base_curve": based[::10]})
        print(f"| {name} | {seeded[-1]:.2f} | {based[-1]:.2f} | {reach if reach else 'never'} | "
              f"{f'{ratio:.2f}' if ratio else '-'} |", flush=True)
    ratios = [r["ratio"] if r["ratio"] else 1.0 for r in rows]
    print(f"median ratio {np.median(ratios):.3f} (iterations from the base / iterations from the seed; "
          f"'never' counted as 1)")
    if args.json:
        record = provenance(sys.argv) | {"base": base.name, "network": list(base.network.channels),
                                         "iterations": args.iterations, "adam_beta2": args.adam_beta2, "rows": rows}
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
