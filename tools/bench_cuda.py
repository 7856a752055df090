#!/usr/bin/env python3
"""GPU checks: iteration time with and without TF32, encode time per preset, and whether a file
decodes to the same pixels on CUDA as on the CPU.

    python tools/bench_cuda.py [--image kodim05] [--bpp 0.5] [--presets fast,default,best]

Needs a CUDA device. Prints, for a 768x512 image, the median milliseconds per fitting iteration
at 0.25 / 0.5 / 0.75 bpp as the codec runs it (``network.full_float32``) and with TF32 allowed
(PyTorch's default for cuDNN convolutions); then, for a file coded on the CPU at ``fast`` and one
coded on CUDA per preset, the encode seconds, the PSNR of the CPU decode, and the share of pixels
whose CUDA decode differs from the CPU decode, both ways. The first CUDA encode includes CUDA's
start.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import iteration_ms  # noqa: E402

import dipcodec.network as network  # noqa: E402
from dipcodec import decode  # noqa: E402
from dipcodec.encoder import encode_detailed  # noqa: E402
from dipcodec.evaluation.metrics import psnr  # noqa: E402
from dipcodec.images import read_image  # noqa: E402

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


@contextlib.contextmanager
def tf32_allowed() -> Iterator[None]:
    """PyTorch's defaults on a recent GPU (TF32 convolutions and products), the codec's switch off."""
    switches = network._tf32_switches()
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in switches]
    tf32 = "tf32" if switches[0][1] == "fp32_precision" else True
    original = network._tf32_switches
    network._tf32_switches = lambda: []
    for owner, name, _ in switches:
        setattr(owner, name, tf32)
    try:
        yield
    finally:
        network._tf32_switches = original
        for owner, name, value in saved:
            setattr(owner, name, value)


def differing(data: bytes) -> str:
    """Share of pixels whose CUDA decode differs from the CPU decode, as the codec runs and with TF32."""
    on_cpu = decode(data, device="cpu").astype(np.int16)
    shares = []
    for label, mode in (("float32", contextlib.nullcontext()), ("tf32", tf32_allowed())):
        with mode:
            on_gpu = decode(data, device="cuda").astype(np.int16)
        d = np.abs(on_gpu - on_cpu)
        shares.append(f"{label} {100 * np.mean(d > 0):.4f}% (max {d.max()})")
    return ", ".join(shares)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default="kodim05")
    p.add_argument("--bpp", type=float, default=0.5)
    p.add_argument("--presets", default="fast,default,best")
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--kodak", type=Path, default=KODAK)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_cuda: CUDA is not available", file=sys.stderr)
        return 1
    print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    for bpp in (0.25, 0.5, 0.75):
        times = {}
        for label, mode in (("float32", contextlib.nullcontext()), ("tf32", tf32_allowed())):
            with mode:
                _, t = iteration_ms(768, 512, bpp, args.repeats, "cuda")
            times[label] = statistics.median(t)
        print(f"{bpp} bpp: ms per iteration, median: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))

    pixels = read_image(args.kodak / f"{args.image}.png")
    coded = [("cpu", "fast")] + [("cuda", preset) for preset in args.presets.split(",")]
    for device, preset in coded:
        start = time.perf_counter()
        data = encode_detailed(pixels, bpp=args.bpp, preset=preset, device=device).data
        seconds = time.perf_counter() - start
        bpp = 8 * len(data) / (pixels.shape[0] * pixels.shape[1])
        print(f"{args.image} {preset} on {device}: {seconds:.1f} s, {bpp:.3f} bpp, "
              f"{psnr(pixels, decode(data)):.3f} dB; CUDA decode differs from the CPU's: {differing(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
