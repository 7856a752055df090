#!/usr/bin/env python3
"""Cost of one fitting iteration (forward, backward, Adam step) of the network the encoder picks.

    python tools/bench_speed.py [--size 768x512] [--bpp 0.25,0.5] [--repeats 15] [--device cpu]
                                [--compare-loss] [--compare-filtered [--filter-taps T]] [--compare-upsampling]
                                [--compare-adam] [--compare-fused] [--offset DY,DX]
                                [--purpose denoise|upscale|restore]

Prints, per target rate, the network and the median milliseconds per iteration over ``--repeats``
timed iterations after 3 warm-up ones, with the interquartile range: what a user waits for, times
the preset's iteration count, which this also prints (cheaper networks get more: the encoder's
``stretched_schedule``, whose cost model ``iteration_cost`` the timings should follow linearly). Run
it on a quiet machine; the timings of a busy one mean little.

``--compare-loss`` also times the loss the fit used before ``fit.objective`` (on the pixel-shuffled
image), one iteration of each in turn (which goes first alternates) on the same input, and prints
the median of the paired ratios: on a machine whose speed drifts, alternating is what makes the two
comparable. ``--offset DY,DX`` times the loss of a canvas rolled by that offset instead (a sequence
frame that follows the camera, ``fit.CanvasMSE``), both ways. ``--compare-filtered`` times, the
same way, an iteration that trains through the post-filter (``postfilter_fit.FIT_FILTER_TAPS`` taps, 4
phases, on the unshuffled planes: the second half of a ``fast`` or ``default`` fit) and prints
what it adds, the measurement behind ``encoder.FILTERED_COST``. ``--filter-taps 7`` times a 7x7
filter with 4 phases instead: what the quantization-aware phase tunes through when the file's
filter is 7x7, the measurement behind ``encoder.TUNING_FILTER_COST``. ``--compare-upsampling`` times,
the same way, the fit's iteration with PyTorch's own gradient of the bilinear upsampling, which the
network replaced with its own (``network._Bilinear2x``), and prints the paired ratio;
``--compare-adam`` the same with PyTorch's default Adam step (one tensor at a time) instead of the
fit's fused one; ``--compare-fused`` the same with PyTorch's normalization and activation
instead of the compiled step of ``dipcodec.fused``.

``--purpose`` times the restoration network of that purpose instead (``dipcodec.restore``'s, at
``RESTORE_WIDTH``, whose output is ``--size``; ``--bpp`` is then ignored).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from dipcodec import fused, network
from dipcodec.decoder import resolve_device
from dipcodec.encoder import PRESETS, iteration_cost, stretched_schedule
from dipcodec.fit import CanvasMSE, FilteredMSE, Objective, image_mse, objective
from dipcodec.layout import choose_network, network_layout
from dipcodec.network import Generator, NetworkConfig, NetworkPurpose, fixed_input, full_float32, reference_weights
from dipcodec.postfilter import PostFilter
from dipcodec.postfilter_fit import FIT_FILTER_TAPS
from dipcodec.restoration.restore import INPAINT_ITERATIONS, RESTORE_FITS, RESTORE_WIDTH


LossKind = Literal["objective", "shuffled", "filtered", "torch_upsampling", "unfused_adam", "unfused_norm"]
BASELINES: dict[LossKind, str] = {
    "shuffled": "loss on the shuffled image",
    "torch_upsampling": "with PyTorch's gradient of the upsampling",
    "unfused_adam": "with PyTorch's default Adam step",
    "unfused_norm": "with PyTorch's normalization and activation",
}
"""The iterations the fit's own is compared with as a paired ratio, and how the printout names them."""


@full_float32()  # as the encoder's fit runs
def iteration_ms(width: int, height: int, bpp: float, repeats: int, device: str,
                 losses: tuple[LossKind, ...] = ("objective",), offset: tuple[int, int] = (0, 0),
                 filter_taps: int = FIT_FILTER_TAPS,
                 purpose: NetworkPurpose = "compress") -> tuple[NetworkConfig, dict[str, list[float]]]:
    """The network for this size and rate, and per loss (``objective``: the fit's; ``shuffled``: the
    plain MSE of the shuffled image, rolled by ``offset`` first; ``filtered``: the fit's through a
    post-filter; ``torch_upsampling``: the fit's with PyTorch's gradient of the upsampling;
    ``unfused_adam``: the fit's, stepped by PyTorch's default Adam; ``unfused_norm``: the fit's with
    PyTorch's normalization and activation instead of ``dipcodec.fused``) the milliseconds of each timed
    iteration, the losses in turn. A ``purpose`` other than compression times restoration's network
    (``bpp`` unused)."""
    dev = resolve_device(device)
    if purpose == "compress":
        config = choose_network(height, width, 3, bpp * width * height)
    else:
        config = network_layout(height, width, 3, purpose=purpose)(RESTORE_WIDTH)
    noise = fixed_input(config, 0, height, width).to(dev)
    target = torch.rand((1, 3, height, width), generator=torch.Generator().manual_seed(0)).to(dev)
    if not set(losses) <= set(get_args(LossKind)):
        raise ValueError(f"unknown loss in {losses}")
    runs = []
    loss_fn = CanvasMSE(offset) if any(offset) else image_mse
    identity = PostFilter(filter_taps, 8, ((0,) * (filter_taps**2 + 1),) * 12, phases=4)
    for name in losses:
        net = Generator(config).load(reference_weights(config, 0)).to(dev)
        if name == "filtered":
            loss_of = objective(net, target, FilteredMSE.of(identity))  # any coefficients cost the same
        elif name in ("objective", "unfused_adam"):
            loss_of = objective(net, target, loss_fn)
        elif name == "torch_upsampling":
            loss_of = _with_torchs_upsampling(objective(net, target, loss_fn))
        elif name == "unfused_norm":
            loss_of = _without_fused(objective(net, target, loss_fn))
        else:
            loss_of = lambda weights, net_input, net=net: loss_fn(net(net_input, weights), target)  # noqa: E731
        runs.append((net, loss_of, torch.optim.Adam(net.parameters(), lr=0.02, fused=name != "unfused_adam")))
    times: dict[str, list[float]] = {name: [] for name in losses}
    for i in range(3 + repeats):
        order = list(zip(losses, runs))
        for name, (net, loss_of, opt) in order if i % 2 == 0 else order[::-1]:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = loss_of(None, noise)
            loss.backward()
            loss.item()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times[name].append(1000 * (time.perf_counter() - start))
    return config, times


def _with_torchs_upsampling(loss_of: Objective) -> Objective:
    """``loss_of`` with the network's bilinear upsampling done by ``F.interpolate`` in its forward pass,
    so that the backward pass takes PyTorch's own gradient of it."""
    def run(weights: list[torch.Tensor] | None, net_input: torch.Tensor) -> torch.Tensor:
        ours = network.upsample2x
        network.upsample2x = lambda x, mode: (
            F.interpolate(x, scale_factor=2, mode=mode, align_corners=False) if mode == "bilinear" else ours(x, mode))
        try:
            return loss_of(weights, net_input)
        finally:
            network.upsample2x = ours
    return run


def _without_fused(loss_of: Objective) -> Objective:
    """``loss_of`` with PyTorch's normalization and activation, whose backward pass then follows."""
    def run(weights: list[torch.Tensor] | None, net_input: torch.Tensor) -> torch.Tensor:
        with fused.disabled():
            return loss_of(weights, net_input)
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="768x512", help="WIDTHxHEIGHT")
    p.add_argument("--bpp", default="0.25,0.5")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compare-loss", action="store_true",
                   help="also time the loss on the shuffled image, alternating, and print the paired ratio")
    p.add_argument("--compare-filtered", action="store_true",
                   help="also time an iteration through the post-filter, alternating, and print what it adds")
    p.add_argument("--filter-taps", type=int, default=FIT_FILTER_TAPS,
                   help=f"the filter --compare-filtered trains through (default {FIT_FILTER_TAPS}, the float fit's)")
    p.add_argument("--compare-upsampling", action="store_true",
                   help="also time the fit's iteration with PyTorch's gradient of the upsampling, alternating")
    p.add_argument("--compare-adam", action="store_true",
                   help="also time the fit's iteration with PyTorch's default (unfused) Adam step, alternating")
    p.add_argument("--compare-fused", action="store_true",
                   help="also time the fit's iteration with PyTorch's normalization and activation, alternating")
    p.add_argument("--offset", default=(0, 0), type=lambda text: tuple(int(v) for v in text.split(",")),
                   help="DY,DX: time the loss of a canvas rolled this far")
    p.add_argument("--purpose", default="compress", choices=get_args(NetworkPurpose),
                   help="time restoration's network of this purpose (output --size; --bpp ignored)")
    args = p.parse_args(argv)
    if args.compare_upsampling and args.device != "cpu":
        p.error("--compare-upsampling compares CPU gradients (other devices use PyTorch's own)")
    offset = args.offset
    losses = ("objective",) + (("shuffled",) if args.compare_loss else ()) + (
        ("filtered",) if args.compare_filtered else ()) + (("torch_upsampling",) if args.compare_upsampling else ()) + (
        ("unfused_adam",) if args.compare_adam else ()) + (("unfused_norm",) if args.compare_fused else ())
    width, height = (int(v) for v in args.size.lower().split("x"))
    print(f"# {args.size}, torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"canvas offset {offset[0]},{offset[1]}")
    rates = [float(b) for b in args.bpp.split(",")] if args.purpose == "compress" else [0.0]
    for bpp in rates:
        config, runs = iteration_ms(width, height, bpp, args.repeats, args.device, losses, offset, args.filter_taps,
                                    args.purpose)
        times = runs["objective"]
        q1, _, q3 = statistics.quantiles(times, n=4)
        if args.purpose == "compress":
            iterations = "/".join(str(stretched_schedule(s, config, height, width).iterations)
                                  for s in PRESETS.values())
        else:  # what `dipcodec restore` fits: iterations x networks
            iterations = "/".join(f"{INPAINT_ITERATIONS[p] if args.purpose == 'restore' else s.iterations}x"
                                  f"{RESTORE_FITS[p]}" for p, s in PRESETS.items())
        print(f"{f'{bpp:g} bpp' if args.purpose == 'compress' else args.purpose}: widths {config.channels}, "
              f"upsampling {config.upsample}, {config.parameter_count()} weights, cost "
              f"{iteration_cost(config, height, width):.0f}: median {statistics.median(times):.1f} ms per iteration "
              f"(IQR {q1:.1f}-{q3:.1f}); {'/'.join(PRESETS)} iterations {iterations}", flush=True)
        for name in (name for name in losses if name in BASELINES):
            ratio = statistics.median(new / old for new, old in zip(times, runs[name]))
            print(f"  {BASELINES[name]}: median {statistics.median(runs[name]):.1f} ms; "
                  f"the fit's over it, median of paired ratios: {ratio:.3f}", flush=True)
        if args.compare_filtered:
            added = statistics.median(new - old for new, old in zip(runs["filtered"], times))
            ratio = statistics.median(new / old for new, old in zip(runs["filtered"], times))
            taps = f"{args.filter_taps}x{args.filter_taps}"
            print(f"  through a {taps} post-filter: median {statistics.median(runs['filtered']):.1f} ms; it adds "
                  f"{added:.1f} ms (median of paired differences), ratio {ratio:.3f}, that is "
                  f"{added / statistics.median(times) * iteration_cost(config, height, width):.0f} in the units "
                  f"of the cost", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
