#!/usr/bin/env python3
"""Where the quantization gap comes from, on one image: float fit, rounding, quantization-aware phase.

    python tools/quantization_gap.py kodim07 0.5 --iterations 2200 --qat 300@0.0005 300@0.002 600@0.001

Fits the network the encoder picks for the rate (``--iterations`` float iterations, the default
preset's count before 2026-11-24 unless told), then, on the grid rate control would choose (1% under the target):
prints the float PSNR, the PSNR right after rounding with steps from the delta RMS alone and with
the sensitivity-allotted steps the encoder uses, and the PSNR after each quantization-aware
variant given as ITERATIONS@LEARNING_RATE (each starts again from the float weights; ``noise`` as a
prefix, ``noise150+300@0.0005``, first trains 150 iterations under uniform noise of one step).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dipcodec.encoder import RATE_HEADROOM, FittedNetwork, _Coder, _weights_of, sensitive_step_scales
from dipcodec.fit import FitSchedule, image_mse, psnr_from_mse, quantization_aware_fit
from dipcodec.images import read_image
from dipcodec.network import Generator
from dipcodec.quantize import dequantize, quantize, step_from_code, step_scales

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="a Kodak name (kodim07) or a path")
    p.add_argument("bpp", type=float)
    p.add_argument("--iterations", type=int, default=2200)
    p.add_argument("--qat", nargs="*", default=["300@0.0005"])
    args = p.parse_args(argv)

    path = Path(args.image) if Path(args.image).exists() else KODAK / f"{args.image}.png"
    pixels = read_image(path)
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else 3
    fitted = FittedNetwork.fit(pixels, args.bpp, FitSchedule(args.iterations, 0), 0, torch.device("cpu"))
    config, reference, net, noise, target = fitted.config, fitted.reference, fitted.net, fitted.noise, fitted.target
    float_psnr = fitted.float_psnr
    weights = _weights_of(net)
    print(f"{path.stem} at {args.bpp} bpp, widths {config.channels}, {args.iterations} iterations: "
          f"float {float_psnr:.2f} dB", flush=True)

    def rounded_psnr(codes: list[int]) -> float:
        rounded = dequantize(quantize(weights, reference, codes), reference, codes)
        with torch.no_grad():
            return psnr_from_mse(image_mse(net(noise, [torch.from_numpy(w) for w in rounded]), target).item())

    header = dict(width=width, height=height, channels=channels, seed=0, network=config)
    aim = int(RATE_HEADROOM * args.bpp * height * width / 8)
    plain = step_scales(weights, reference)
    sensitive = sensitive_step_scales(net, noise, target, reference)
    grids = {}
    for label, scales in (("delta-RMS steps", plain), ("sensitivity steps", sensitive)):
        data, grids[label] = _Coder(weights, reference, header, scales).largest_under(aim)
        print(f"rounded, {label}: {rounded_psnr(grids[label]):.2f} dB ({len(data)} bytes)", flush=True)
    codes = grids["sensitivity steps"]  # the grid the encoder would tune

    for spec in args.qat:
        tuned = Generator(config).load(weights)
        noisy, _, main_phase = spec.rpartition("+")
        iterations, lr = main_phase.split("@")
        if noisy:
            _noise_phase(tuned, noise, target, codes, int(noisy.removeprefix("noise")), float(lr))
        q = quantization_aware_fit(tuned, noise, target, reference, codes,
                                   FitSchedule(0, int(iterations), qat_learning_rate=float(lr)))
        print(f"quantization-aware {spec}: {q:.2f} dB (gap {float_psnr - q:.2f} dB)", flush=True)
    return 0


def _noise_phase(net: Generator, noise: torch.Tensor, target: torch.Tensor, codes: list[int], iterations: int,
                 lr: float) -> None:
    """Train under additive uniform noise of one quantization step (a soft stand-in for rounding)."""
    params = list(net.parameters())
    steps = [float(step_from_code(c)) for c in codes]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(iterations):
        opt.zero_grad(set_to_none=True)
        noisy = [p + (torch.rand(p.shape, generator=gen) - 0.5) * s for p, s in zip(params, steps)]
        image_mse(net(noise, noisy), target).backward()
        opt.step()


if __name__ == "__main__":
    sys.exit(main())
