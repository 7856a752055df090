#!/usr/bin/env python3
"""Reproduce one row of BENCHMARKS.md's ablation table: encode one Kodak image with a given network
layout and learning rates, and print the decoded and float PSNR, the rate and the time.

    python tools/ablate.py kodim05 0.25 800 --network taper --input-fraction 16 --bits-per-weight 6
    python tools/ablate.py kodim23 0.25 800 --network shuffle4 --lr 0.01 --qat-lr 0.002 --bits-per-weight 6
    python tools/ablate.py kodim20 0.75 --like fast --lr 0.03
    python tools/ablate.py kodim05 0.75 --like fast --preset-iterations 380 --qat-iterations 51

``--like PRESET`` fits exactly as ``encode --preset PRESET`` does (its iterations, stretched for the
network as the encoder stretches them, its base and its Adam settings), changing only the options
given: ITERATIONS replaces its float iterations (unstretched), ``--preset-iterations`` the preset's own
count (stretched as the encoder stretches it), and a named ``--network`` starts from the seed (the
shipped bases are the encoder's networks). Without it the fit runs ITERATIONS float iterations and
max(ITERATIONS / 8, 50) quantization-aware ones from the seed; rows measured before 2026-11-23 ran
with Adam's beta2 at 0.999 (``--adam-beta2 0.999``).

Layouts (all 1x1 convolutions unless named otherwise; widths chosen for ~BITS bits per weight):
  default   what the encoder picks now (choose_network)
  shuffle4  stages at 1/4 size from an input at 1/INPUT, then a 4x pixel shuffle
  taper     stages at 1/4 size from an input at 1/INPUT, a half-width stage at 1/2 size, 2x shuffle
  taper2    taper whose 1/4-size stage is half width and 1/2-size stage quarter width (the encoder's at 1/16)
  k3        shuffle4 with 3x3 kernels in the first two stages
  six       shuffle4 with one more stage (input at 1/128)
  nearest   shuffle4 with nearest-neighbour upsampling
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import dipcodec
import dipcodec.encoder as encoder
import dipcodec.layout as layout_policy
from dipcodec.fit import DEFAULT_BETA2, FitSchedule
from dipcodec.images import read_image
from dipcodec.network import NetworkConfig

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"
ADAM_BETA2 = encoder.PRESETS["fast"].adam_beta2
"""Adam's beta2 without ``--like``: the one ``fast`` and ``default`` fit with."""


def layout(name: str, input_fraction: int, channels: int, k: int, activation: str = "relu",
           upsample: str = "bilinear") -> NetworkConfig:
    if name == "taper2":  # (k, k, k/2, k/4) from an input at 1/16; one k-wide stage fewer or more per halving
        stages = int(math.log2(input_fraction // 2)) + 1
        widths = (k,) * (stages - 2) + (max(k // 2, 4), max(k // 4, 4))
        return NetworkConfig(widths, (1,) * stages, k, channels, 2, upsample, activation)
    quarter = int(math.log2(input_fraction // 4)) + 1  # stages at 1/4 size, the first one on the input
    if name == "taper":
        return NetworkConfig((k,) * quarter + (max(k // 2, 4),), (1,) * (quarter + 1), k, channels, 2,
                             upsample, activation)
    if name == "six":
        quarter += 1
    kernels = (3, 3) + (1,) * (quarter - 2) if name == "k3" else (1,) * quarter
    upsample = "nearest" if name == "nearest" else upsample
    return NetworkConfig((k,) * quarter, kernels, k, channels, 4, upsample, activation)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="Kodak image name, e.g. kodim05")
    p.add_argument("bpp", type=float)
    p.add_argument("iterations", type=int, nargs="?", help="float iterations (required without --like)")
    p.add_argument("--like", choices=tuple(encoder.PRESETS),
                   help="fit as this preset does, but for the options given")
    p.add_argument("--network", default="default", choices=("default", "shuffle4", "taper", "taper2", "k3", "six", "nearest"))
    p.add_argument("--activation", default="relu", choices=("relu", "sine"))
    p.add_argument("--upsample", default="bilinear", choices=("bilinear", "bicubic"),
                   help="how each stage doubles the size (layouts other than nearest)")
    p.add_argument("--input-fraction", type=int, default=64, help="fixed input at 1/N of the image side")
    p.add_argument("--bits-per-weight", type=float, default=layout_policy.BITS_PER_WEIGHT,
                   help="sizes the network for the budget (default: the encoder's, %(default)s)")
    p.add_argument("--lr", type=float, help="float learning rate (default: the preset's, else 0.02)")
    p.add_argument("--qat-lr", type=float,
                   help="quantization-aware learning rate (default: the preset's, else 0.0005)")
    p.add_argument("--adam-beta2", type=float,
                   help=f"Adam's second-moment decay (default: the preset's, else {ADAM_BETA2:g}, the fast and "
                        f"default presets'; {DEFAULT_BETA2:g} before 2026-11-23)")
    p.add_argument("--filtered-share", type=float,
                   help="last share of the float fit trained through a post-filter (default: the preset's, else 0)")
    p.add_argument("--preset-iterations", type=int,
                   help="with --like: the preset's own float count, stretched for the network as the encoder "
                        f"stretches it (fast: {encoder.PRESETS['fast'].iterations})")
    p.add_argument("--qat-iterations", type=int,
                   help="quantization-aware iterations (default: the preset's, else max(ITERATIONS / 8, 50)); "
                        "with --like, fewer also leave more float ones, as the stretch charges their tuning")
    p.add_argument("--kodak", type=Path, default=KODAK)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    if args.input_fraction < 8 or args.input_fraction & (args.input_fraction - 1):
        p.error("--input-fraction must be a power of two, 8 or more")

    layout_policy.BITS_PER_WEIGHT = args.bits_per_weight
    if args.network == "default" and args.activation != "relu":
        p.error("--activation needs a named --network")
    if args.network != "default":
        def choose(height: int, width: int, channels: int, budget_bits: float, *,
                   purpose: str = "compress") -> NetworkConfig:
            config_for_width = lambda k: layout(args.network, args.input_fraction, channels, k, args.activation,
                                                args.upsample)
            return layout_policy.widest_network(config_for_width, height, width, budget_bits / args.bits_per_weight)
        encoder.choose_network = choose  # the name the encoder sizes its fits with
    given = {name: value for name, value in (("learning_rate", args.lr), ("qat_learning_rate", args.qat_lr),
                                             ("adam_beta2", args.adam_beta2),
                                             ("filtered_share", args.filtered_share),
                                             ("qat_iterations", args.qat_iterations)) if value is not None}
    if args.preset_iterations is not None and (not args.like or args.iterations is not None):
        p.error("--preset-iterations needs --like and no ITERATIONS")
    if args.preset_iterations is not None:
        given["iterations"] = args.preset_iterations
    if args.like:
        if args.iterations is not None:
            given.update(iterations=args.iterations, sized_for_cost=None)
        schedule = dataclasses.replace(encoder.PRESETS[args.like], **given)
        base = encoder.resolve_base("auto", args.like) if args.network == "default" else "none"
    elif args.iterations is None:
        p.error("give ITERATIONS or --like PRESET")
    else:
        schedule = FitSchedule(**{"learning_rate": 0.02, "qat_learning_rate": 0.0005,
                                  "adam_beta2": ADAM_BETA2, "qat_iterations": max(args.iterations // 8, 50),
                                  **given}, iterations=args.iterations)
        base = "none"
    encoder.PRESETS["ablation"] = schedule
    pixels = read_image(args.kodak / f"{args.image}.png")
    start = time.perf_counter()
    result = encoder.encode_detailed(pixels, bpp=args.bpp, preset="ablation", base=base, device=args.device)
    seconds = time.perf_counter() - start
    details = dipcodec.info(result.data)
    iterations = (args.iterations if args.iterations is not None else
                  f"preset {schedule.iterations}" if args.preset_iterations is not None else args.like)
    network = args.network if args.network == "default" else f"{args.network} {args.upsample} 1/{args.input_fraction}"
    print(f"{args.image} {network} bpp={details['bpp']:.4f} "
          f"psnr={result.psnr:.2f} float={result.float_psnr:.2f} lr={schedule.learning_rate:g} "
          f"beta2={schedule.adam_beta2:g} filtered={schedule.filtered_share:g} "
          f"it={iterations}+{schedule.qat_iterations} base={base} "
          f"params={details['parameters']} bits/weight={details['bits_per_weight']:.2f} "
          f"widths={details['architecture']['channels']} time={seconds:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
