#!/usr/bin/env python3
"""A rate term in the float fit: the experiment behind BENCHMARKS.md's "A rate term in the fit" rows.

Adds to the fit's MSE an estimate of the file's bits, weighted so that one octave of bits is worth
``--mult`` times ``encoder.GRID_DB_PER_OCTAVE`` dB: loss = mse + kappa * mse' * bits / (R * ln 2),
with kappa = mult * ln(10) / 10, mse' the MSE held constant and R the bits expected at the operating
point. Adam moves every weight by about its learning rate a step, useful or not, and every move
costs bits; the term pulls the weights whose gradients are weak back to the reference.

    seq:   bits of each tensor's deltas from the previous frame under a Laplace model on the key
           frame's grid made 2x coarser, n * log2(1 + 2e * mean|delta| / step); R is 0.65 of the key
           frame's bits. Codes frames 1.. of a clip warm-started (as ``encode_sequence`` does, at
           ``fast``, quality 75) and reads bits at equal PSNR off the independent curves of a
           ``tools/bench_seq.py --rd-qualities`` JSON.
    image: n * log2(mean|delta| + 0.01) per tensor (the step is not known before rate control); R
           is the target's bits. One ``fast`` encode at a target rate.

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
from pathlib import Path

import numpy as np
import torch

import dipcodec.encoder as encoder
from dipcodec.evaluation import psnr
from dipcodec.fit import fit as shipped_fit
from dipcodec.fit import image_mse, objective, psnr_from_mse
from dipcodec.images import read_image
from dipcodec.quantize import step_from_code
from dipcodec.restoration.modes import PURPOSES
from dipcodec.transfer.sequence import mean_weights
from dipcodec.transfer.warmstart import warm_grids, warm_schedule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_seq import SEQ, bytes_at_psnr  # noqa: E402

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


def fit_with_rate_term(bits_of, kappa: float, operating_bits: float):
    """``fit`` (float phase, best iterate by MSE alone) with ``kappa * mse * bits / (R ln 2)`` added."""

    def fit(net, noise, target, schedule, progress=None, loss_fn=image_mse):
        params = list(net.parameters())
        start = [p.detach().clone() for p in params]
        opt = torch.optim.Adam(params, lr=schedule.learning_rate, betas=(0.9, schedule.adam_beta2))
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


def run_sequence(args: argparse.Namespace, kappa: float) -> None:
    paths = sorted((args.seq / args.clip / "clean").glob("*.png"))[: args.frames]
    frames = [read_image(p) for p in paths]
    height, width = frames[0].shape[:2]
    bpp, device, schedule = encoder.quality_to_bpp(75), torch.device("cpu"), encoder.PRESETS["fast"]
    curves = json.loads(args.curves.read_text())["clips"][args.clip]["frames"]
    key_start = encoder.base_start("auto", height, width, 3, bpp * height * width, purpose=PURPOSES[None],
                                   preset="fast")
    key = encoder.code_image(frames[0], network_bpp=bpp, target_bpp=None, schedule=schedule, seed=0,
                             device=device, start=key_start)
    history, ratios = [key.weights], []
    for index in range(1, len(frames)):
        began = time.perf_counter()
        start = encoder.Start(key.network, tuple(mean_weights(history[-1:])), "previous-frame",
                              grids=warm_grids(key.step_codes))
        steps = [float(step_from_code(code + 16)) for code in key.step_codes]

        def bits_of(params, reference, steps=steps):
            return sum(p.numel() * torch.log2(1 + 2 * math.e * (p - r).abs().mean() / s)
                       for p, r, s in zip(params, reference, steps))

        encoder.fit = fit_with_rate_term(bits_of, kappa, 8 * 0.65 * len(key.data)) if kappa else shipped_fit
        try:
            result = encoder.code_image(frames[index], network_bpp=bpp, target_bpp=None,
                                        schedule=warm_schedule(schedule, key.float_psnr), seed=0, device=device,
                                        start=start)
        finally:
            encoder.fit = shipped_fit
        history.append(result.weights)
        quality = psnr(frames[index], result.pixels)
        needed, extrapolated = bytes_at_psnr([tuple(c) for c in curves[index]["curve"]], quality)
        ratios.append(len(result.data) / needed)
        print(f"frame {index}: {len(result.data)} bytes, {quality:.2f} dB, bits at equal PSNR {ratios[-1]:.3f}"
              f"{'*' if extrapolated else ''} ({time.perf_counter() - began:.0f} s)", flush=True)
    print(f"{args.clip}, mult {args.mult:g}: median bits at equal PSNR {np.median(ratios):.3f}")


def run_image(args: argparse.Namespace, kappa: float) -> None:
    pixels = read_image(args.kodak / f"{args.image}.png")

    def bits_of(params, reference):
        return sum(p.numel() * torch.log2((p - r).abs().mean() + 0.01) for p, r in zip(params, reference))

    encoder.fit = fit_with_rate_term(bits_of, kappa, args.bpp * pixels.shape[0] * pixels.shape[1]) if kappa \
        else shipped_fit
    try:
        began = time.perf_counter()
        result = encoder.encode_detailed(pixels, bpp=args.bpp, preset="fast")
    finally:
        encoder.fit = shipped_fit
    print(f"{args.image} at {args.bpp} bpp, mult {args.mult:g}: {len(result.data)} bytes, "
          f"{psnr(pixels, result.pixels):.2f} dB (float {result.float_psnr:.2f}), {time.perf_counter() - began:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    seq = sub.add_parser("seq", help="warm-started frames of a clip")
    seq.add_argument("clip")
    seq.add_argument("--frames", type=int, default=8)
    seq.add_argument("--curves", type=Path, required=True, help="a bench_seq.py --rd-qualities JSON of this clip")
    seq.add_argument("--seq", type=Path, default=SEQ)
    image = sub.add_parser("image", help="one fast encode of a Kodak image")
    image.add_argument("image")
    image.add_argument("bpp", type=float)
    image.add_argument("--kodak", type=Path, default=KODAK)
    for parser in (seq, image):
        parser.add_argument("--mult", type=float, default=1.0, help="octaves of bits worth mult x GRID_DB_PER_OCTAVE dB")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    kappa = args.mult * encoder.GRID_DB_PER_OCTAVE * math.log(10) / 10
    (run_sequence if args.what == "seq" else run_image)(args, kappa)
    return 0


if __name__ == "__main__":
    sys.exit(main())
