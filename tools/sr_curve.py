#!/usr/bin/env python3
"""How a super-resolution fit's large output improves with iterations, against bicubic.

    python tools/sr_curve.py kodim07 [--crop 256] [--iterations 2200] [--bpp 2.0] [--shuffle 1] [--jitter 0]
                             [--activation relu|sine] [--kernels 1,1,1,3,3] [--purpose denoise] [--width K]
                             [--average 0.99] [--upsample bicubic]

Fits a network (``--bpp`` bits per output pixel, or ``--width`` k; ``--shuffle`` 1 for the layout of
``restore``'s super-resolution, 2 for the inpainting network shuffled 2x; or ``--purpose``'s layout)
to the 4x Lanczos-downscaled centred crop, and every 200 iterations prints the luma PSNR gain of the
large output over Pillow's bicubic upscale (4-pixel border cropped), and with ``--average`` that of
a moving average of the weights beside it. One thread. ``restore`` itself
fits ``--purpose denoise --width 128 --jitter 0.033 --upsample bicubic`` (and back-projects its
image, which this curve does not); the defaults are the ablations' starting point, and before
commit 08a81d0 the super-resolution layout was k, k, k, k, min(k/2, 16).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_restore import DATA, _crop, _luma_psnr  # noqa: E402

from dipcodec.encoder import _as_tensor  # noqa: E402
from dipcodec.evaluation.run import load_rgb  # noqa: E402
from dipcodec.fit import FitSchedule, fit  # noqa: E402
from dipcodec.layout import choose_network, network_layout  # noqa: E402
from dipcodec.network import Generator, fixed_input, reference_weights  # noqa: E402
from dipcodec.restoration.modes import Restoration  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--iterations", type=int, default=2200)
    p.add_argument("--bpp", type=float, default=2.0)
    p.add_argument("--shuffle", type=int, choices=(1, 2), default=1,
                   help="1: restore's super-resolution network; 2: the inpainting network, shuffled 2x")
    p.add_argument("--purpose", choices=("upscale", "restore", "denoise"),
                   help="the layout of this network purpose (overrides --shuffle)")
    p.add_argument("--width", type=int, help="this width k instead of the widest that --bpp affords")
    p.add_argument("--jitter", type=float, default=0.0)
    p.add_argument("--average", type=float, default=0.0,
                   help="also report a moving average of the weights with this decay per iteration (e.g. 0.99)")
    p.add_argument("--activation", choices=("relu", "sine"), help="replace the network's activation")
    p.add_argument("--upsample", choices=("bilinear", "bicubic"), help="replace the network's upsampling")
    p.add_argument("--kernels", help="comma-separated kernel size per stage, replacing the 1x1 ones (e.g. 1,1,1,3,3)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    image = _crop(load_rgb(DATA / "kodak" / f"{args.image}.png"), args.crop)
    h, w = image.shape[0] // 4 * 4, image.shape[1] // 4 * 4
    image = image[:h, :w]
    small = np.asarray(Image.fromarray(image).resize((w // 4, h // 4), Image.LANCZOS))
    bicubic = _luma_psnr(image, np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC)))
    target = _as_tensor(small, torch.device("cpu"))
    purpose = args.purpose or ("upscale" if args.shuffle == 1 else "restore")
    if args.width:
        config = network_layout(h, w, 3, purpose=purpose)(args.width)
    else:
        config = choose_network(h, w, 3, args.bpp * h * w, purpose=purpose)
    if args.kernels:
        config = dataclasses.replace(config, kernel_sizes=tuple(int(k) for k in args.kernels.split(",")))
    if args.activation:
        config = dataclasses.replace(config, activation=args.activation)
    if args.upsample:
        config = dataclasses.replace(config, upsample=args.upsample)
    net = Generator(config).load(reference_weights(config, 0))
    noise = fixed_input(config, 0, h, w)
    points = []
    average = [p.detach().clone() for p in net.parameters()]

    def gain(weights=None) -> float:
        with torch.no_grad():
            large = (net(noise, weights)[0, :, :h, :w].clamp(0, 1) * 255).round().byte().numpy().transpose(1, 2, 0)
        return _luma_psnr(image, large) - bicubic

    def report(done: int, _: float) -> None:
        if args.average:
            with torch.no_grad():
                for a, p in zip(average, net.parameters()):
                    a.lerp_(p, 1 - args.average)
        if done % 200 == 0:
            points.append(f"{done}:{gain():+.2f}" + (f"/{gain(average):+.2f}" if args.average else ""))

    fitted = fit(net, noise, target, FitSchedule(args.iterations, 0, input_jitter=args.jitter), report,
                 Restoration("super-resolution", scale=4).loss(target))
    print(f"{args.image} widths {config.channels} kernels {config.kernel_sizes} {config.activation} {config.upsample} shuffle "
          f"{config.shuffle} jitter {args.jitter} average {args.average}: bicubic "
          f"{bicubic:.2f} dB, small image fitted to {fitted:.2f} dB; gain by iteration{' (iterate/average)' if args.average else ''} {' '.join(points)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
