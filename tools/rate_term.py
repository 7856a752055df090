#!/usr/bin/env python3
"""A rate term in the float fit: the experiment behind BENCHMARKS.md's "A rate term in the warm fit".

Adds to the fit's MSE an estimate of the file's bits, weighted so that one octave of bits is worth
``--mult`` times ``postfilter_fit.GRID_DB_PER_OCTAVE`` dB: loss = mse + kappa * mse' * bits / (R * ln 2),
with kappa = mult * GRID_DB_PER_OCTAVE * ln(10) / 10, mse' the MSE held constant and R the bits
expected at the operating point. Adam moves every weight by about its learning rate a step, useful
or not, and every move costs bits; the term pulls the weights whose gradients are weak back to the
reference.

    seq:   ``encode_sequence`` at ``fast``, quality 75, with the term in every warm-started frame's
           fit: per tensor, the bits of its deltas from the previous frame under a Laplace model on
           the key frame's grid made 2x coarser, n * log2(1 + 2e * mean|delta| / step); R is 0.65 of
           the key frame's bits (about what a warm frame costs: "Warm frames with a short Adam
           memory"). Bits at equal PSNR are read off the independent curves of a
           ``tools/bench_seq.py --rd-qualities`` JSON of the same clip, quality and preset.
    image: per tensor n * log2(mean|delta| + 0.01) (the steps are not known before rate control);
           R is the target's bits. One ``fast`` encode of a Kodak image at a target rate.

    python tools/rate_term.py seq dog --mult 1 --curves docs/results/seq-dog-fast-q75-warm-beta2.json
    python tools/rate_term.py image kodim05 0.25 --mult 1

The monkeypatch of ``dipcodec.encoder.fit`` keeps the experiment out of the codec; ``--mult 0``
runs the shipped fit.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import dipcodec.encoder as encoder
from dipcodec.evaluation import psnr
from dipcodec.evaluation.run import provenance
from dipcodec.fit import fit as shipped_fit
from dipcodec.fit import image_mse, objective, psnr_from_mse
from dipcodec.images import read_image
from dipcodec.postfilter_fit import GRID_DB_PER_OCTAVE
from dipcodec.quantize import step_from_code
from dipcodec.transfer.warmstart import encode_sequence, warm_grids

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_seq import SEQ, bytes_at_psnr  # noqa: E402

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"
WARM_BITS_SHARE = 0.65
"""A warm-started frame's bits as a share of its key frame's, about ("Warm frames with a short Adam memory")."""

BitsOf = Callable[[list[torch.Tensor], list[torch.Tensor]], torch.Tensor]
"""(weights, the weights the fit started from) -> estimated bits of the deltas."""


def fit_with_rate_term(bits_of: BitsOf, kappa: float, operating_bits: float) -> Callable[..., float]:
    """``fit`` (float phase) with ``kappa * mse * bits / (R ln 2)`` added. A copy of ``fit.fit``'s loop, not
    a ``loss_fn`` handed to it: its best iterate and its stopping rule must read the MSE alone, and a
    ``loss_fn`` would also send the loss through the slower shuffled path of ``fit.objective``."""

    def fit(net, noise, target, schedule, progress=None, loss_fn=image_mse) -> float:
        params = list(net.parameters())
        start = [p.detach().clone() for p in params]
        opt = torch.optim.Adam(params, lr=schedule.learning_rate, betas=(0.9, schedule.adam_beta2), fused=True)
        total = max(schedule.iterations, 1)
        loss_of = objective(net, target, loss_fn)
        best = [p.detach().clone() for p in params]
        with torch.no_grad():
            best_mse = loss_of(None, noise).item()
        for i in range(schedule.iterations):
            for group in opt.param_groups:
                group["lr"] = schedule.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * i / total)))
            opt.zero_grad(set_to_none=True)
            mse = loss_of(None, noise)
            loss = mse + kappa * mse.detach() * bits_of(params, start) / (operating_bits * math.log(2))
            loss.backward()
            value = mse.item()
            if value < best_mse:
                best_mse, best = value, [p.detach().clone() for p in params]
            if schedule.stop_mse is not None and value <= schedule.stop_mse:
                break
            opt.step()
            if progress:
                progress(i + 1, psnr_from_mse(value))
        with torch.no_grad():
            for p, b in zip(params, best):
                p.copy_(b)
        return psnr_from_mse(best_mse)

    return fit


def run_sequence(args: argparse.Namespace, kappa: float) -> dict:
    """Code the clip with ``encode_sequence``; the term enters once the key frame is coded."""
    paths = sorted((args.seq / args.clip / "clean").glob("*.png"))[: args.frames]
    frames = [read_image(p) for p in paths]
    curves = json.loads(args.curves.read_text())["clips"][args.clip]["frames"]
    if len(curves) < len(frames) or any("curve" not in c for c in curves[1 : len(frames)]):
        raise SystemExit(f"{args.curves} has no independent curves for {len(frames) - 1} later frames of {args.clip}")
    rows: list[dict] = []
    key_codes: list[int] = []

    def on_frame(index: int, result: encoder.EncodeResult, seconds: float) -> None:
        if index == 0:
            key_codes[:] = result.step_codes
            steps = [float(step_from_code(c)) for c in warm_grids(result.step_codes)[1]]  # 2x coarser

            def bits_of(params: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
                return sum(p.numel() * torch.log2(1 + 2 * math.e * (p - r).abs().mean() / s)
                           for p, r, s in zip(params, reference, steps))

            if kappa:
                encoder.fit = fit_with_rate_term(bits_of, kappa, 8 * WARM_BITS_SHARE * len(result.data))
            return
        quality = psnr(frames[index], result.pixels)
        needed, extrapolated = bytes_at_psnr([tuple(c) for c in curves[index]["curve"]], quality)
        coarser = result.step_codes[0] - key_codes[0]
        rows.append({"frame": index, "bytes": len(result.data), "psnr": quality,
                     "bits_at_equal_psnr": len(result.data) / needed, "extrapolated": extrapolated,
                     "grid_coarser_by": coarser, "seconds": seconds})
        print(f"frame {index}: {len(result.data)} bytes, {quality:.2f} dB, bits at equal PSNR "
              f"{rows[-1]['bits_at_equal_psnr']:.3f}{'*' if extrapolated else ''}, grid {coarser} step codes "
              f"coarser ({seconds:.0f} s)", flush=True)

    try:
        encode_sequence(frames, quality=75, preset="fast", on_frame=on_frame)
    finally:
        encoder.fit = shipped_fit
    median = float(np.median([r["bits_at_equal_psnr"] for r in rows]))
    print(f"{args.clip}, mult {args.mult:g}: median bits at equal PSNR {median:.3f}")
    return {"clip": args.clip, "frames": rows, "median_bits_at_equal_psnr": median}


def run_image(args: argparse.Namespace, kappa: float) -> dict:
    """One ``fast`` encode at ``args.bpp`` with the term in its float fit."""
    pixels = read_image(args.kodak / f"{args.image}.png")

    def bits_of(params: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
        return sum(p.numel() * torch.log2((p - r).abs().mean() + 0.01) for p, r in zip(params, reference))

    if kappa:
        encoder.fit = fit_with_rate_term(bits_of, kappa, args.bpp * pixels.shape[0] * pixels.shape[1])
    try:
        began = time.perf_counter()
        result = encoder.encode_detailed(pixels, bpp=args.bpp, preset="fast")
        seconds = time.perf_counter() - began
    finally:
        encoder.fit = shipped_fit
    quality = psnr(pixels, result.pixels)
    print(f"{args.image} at {args.bpp} bpp, mult {args.mult:g}: {len(result.data)} bytes, {quality:.2f} dB "
          f"(float {result.float_psnr:.2f}), {seconds:.0f} s")
    return {"image": args.image, "bpp": args.bpp, "bytes": len(result.data), "psnr": quality,
            "float_psnr": result.float_psnr, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    seq = sub.add_parser("seq", help="warm-started frames of a clip")
    seq.add_argument("clip")
    seq.add_argument("--frames", type=int, default=8)
    seq.add_argument("--curves", type=Path, required=True,
                     help="a bench_seq.py --rd-qualities JSON of this clip at quality 75, fast")
    seq.add_argument("--seq", type=Path, default=SEQ)
    image = sub.add_parser("image", help="one fast encode of a Kodak image")
    image.add_argument("image")
    image.add_argument("bpp", type=float)
    image.add_argument("--kodak", type=Path, default=KODAK)
    for parser in (seq, image):
        parser.add_argument("--mult", type=float, default=1.0,
                            help="an octave of bits is worth MULT x GRID_DB_PER_OCTAVE dB (0: the shipped fit)")
        parser.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    kappa = args.mult * GRID_DB_PER_OCTAVE * math.log(10) / 10
    results = (run_sequence if args.what == "seq" else run_image)(args, kappa)
    if args.json:
        args.json.write_text(json.dumps(provenance(sys.argv) | {"mult": args.mult} | results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
