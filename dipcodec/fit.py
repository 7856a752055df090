"""Fitting the generator to one image: Adam on MSE, then a quantization-aware phase.

The float phase follows a cosine learning-rate schedule and keeps its best iterate. Between the two,
each tensor's rounding sensitivity is measured: it sets the tensor's quantization step. The
quantization-aware phase trains through the rounding with a straight-through estimator, so the
weights settle where rounding costs little, and it keeps the best *quantized* iterate: what the
decoder will see.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import fused
from .network import CanvasOffset, Generator, full_float32, padded_size, roll_canvas
from .postfilter import PostFilter
from .quantize import step_from_code

__all__ = ["FitSchedule", "DEFAULT_BETA2", "IterationCallback", "Loss", "fit", "rounding_sensitivities",
           "quantization_aware_fit", "psnr_from_mse", "image_mse", "CanvasMSE", "FilteredMSE", "Objective",
           "objective"]

IterationCallback = Callable[[int, float], None]
"""Called after each iteration with (iterations done, current PSNR in dB)."""
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(network output of the padded size, target) -> mean squared error. Restoration modes bring their
own: known pixels only (inpainting), through a downsampler (super-resolution)."""


DEFAULT_BETA2 = 0.999
"""PyTorch's Adam default."""


@dataclass(frozen=True)
class FitSchedule:
    """Iteration budget and learning rates of one fit."""

    iterations: int
    qat_iterations: int
    learning_rate: float = 0.02
    qat_learning_rate: float = 0.0005
    adam_beta2: float = DEFAULT_BETA2
    """Adam's second-moment decay in the float fit. A shorter memory (0.95) lets each weight's step
    follow its gradients sooner, which a short fit needs (BENCHMARKS.md, "Adam's memory")."""
    input_jitter: float = 0.0
    """Standard deviation of fresh Gaussian noise added to the fixed input at each iteration: a
    regularizer (the Deep Image Prior's denoising recipe), zero for compression."""
    average_decay: float = 0.0
    """When above zero, the fit returns an exponential moving average of its iterates (this decay per
    iteration) instead of the best one: for denoising, where the best fit to the noisy target is the
    noisiest."""
    stop_mse: float | None = None
    """Stop as soon as the loss falls to this (a noise variance: a fit closer than that fits noise).
    Only the plain loss counts, before any share trained through a post-filter: the filtered loss is
    lower for the same image."""
    sized_for_cost: float | None = None
    """The cost per pixel of an iteration (``encoder.iteration_cost``) that ``iterations`` were sized
    for: the encoder gives a cheaper network proportionally more (``encoder.stretched_schedule``).
    None: exactly ``iterations``."""
    min_stretch: float = 1.0
    """The least a dearer network's count is scaled by (before the price of the quantization-aware
    phase is taken off): 1, it keeps the count; below 1 where the preset's time must hold at high
    rates (``fast``, ``default``)."""
    filtered_share: float = 0.0
    """The last share of the float fit that trains through a post-filter solved for the network's
    image of the moment (``fit``'s ``filter_loss``), so that the network spends itself on what a
    filter cannot correct."""
    refilter_every: int = 100
    """Iterations between two solves of that filter: the image it was solved for moves on."""

    def __post_init__(self) -> None:
        if not 0 <= self.filtered_share <= 1 or self.refilter_every < 1:
            raise ValueError("filtered_share must be within 0..1 and refilter_every positive")


def psnr_from_mse(mse: float) -> float:
    return 10 * math.log10(1 / mse) if mse > 0 else float("inf")


def image_mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The plain loss: the output cropped from its padded size to the target's, against every pixel."""
    h, w = target.shape[-2:]
    return F.mse_loss(output[..., :h, :w], target)


@dataclass(frozen=True)
class CanvasMSE:
    """The plain loss of a canvas the decoder rolls by ``offset`` before it crops the image
    (``network.roll_canvas``: a sequence frame that follows the camera)."""

    offset: CanvasOffset

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return image_mse(roll_canvas(output, self.offset), target)


@dataclass(frozen=True, eq=False)
class FilteredMSE:
    """The MSE of the image put through a post-filter as the decoder applies it (in float: the
    decoder's rounding to whole levels aside), to fit the network through the filter. A filter with
    4 phases gives each pixel its phase's taps; one with activity bands is refused (its classes
    would move with the image).

    A call filters the full-size image, borders mirrored, one strided convolution per phase. On
    2x2-unshuffled planes (:meth:`packed`, the network's output before its pixel shuffle) the filter
    is one convolution whose kernel maps every phase's neighbourhood to every phase, from planes
    padded as the mirrored image would be (one gather), so a fit never builds the full-size image
    (``objective``): the same loss, and for 7x7 taps about 30% less time added to an iteration
    (BENCHMARKS.md, "The quantization-aware phase charged")."""

    phase_taps: torch.Tensor
    """phases x C x 1 x taps x taps, in levels per level."""
    phase_offsets: torch.Tensor
    """phases x 1 x C x 1 x 1, on [0, 1]."""
    kernel: torch.Tensor
    """4C x 4C x K x K over the planes of ``F.pixel_unshuffle(image, 2)``."""
    offset: torch.Tensor
    """1 x 4C x 1 x 1."""

    @classmethod
    def of(cls, post_filter: PostFilter) -> "FilteredMSE":
        """The loss through ``post_filter``, its integer taps and offsets as floats."""
        if len(post_filter.thresholds):
            raise ValueError("a fit can filter by phase, not by activity band")
        unit, radius, phases = 2.0**post_filter.precision, post_filter.taps // 2, post_filter.phases
        channels = len(post_filter.codes) // phases
        index = lambda c, phase: c * phases + (phase if phases == 4 else 0)  # noqa: E731
        taps = np.stack([np.stack([post_filter.weights(index(c, phase)) for c in range(channels)])
                         for phase in range(phases)]) / unit
        offsets = np.array([[post_filter.codes[index(c, phase)][-1] for c in range(channels)]
                            for phase in range(phases)]) / unit / 255
        reach = (radius + 1) // 2  # planes a tap reaches either way
        kernel = np.zeros((4 * channels, 4 * channels, 2 * reach + 1, 2 * reach + 1))
        for c, row, column in np.ndindex(channels, 2, 2):
            phase = 2 * row + column
            for dy, dx in np.ndindex(post_filter.taps, post_filter.taps):
                y, x = row + dy - radius, column + dx - radius  # the tap's full-size offset from the plane's pixel
                source = 4 * c + 2 * (y % 2) + x % 2
                kernel[4 * c + phase, source, y // 2 + reach, x // 2 + reach] += taps[phase % phases, c, dy, dx]
        packed_offset = np.repeat(offsets.T, 4 // phases, axis=1)  # plane c * 4 + phase
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float()  # noqa: E731
        return cls(as_tensor(taps[:, :, None]), as_tensor(offsets[:, None, :, None, None]), as_tensor(kernel),
                   as_tensor(packed_offset.reshape(1, -1, 1, 1)))

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of the full-size ``output`` (of the padded size: cropped to ``target``'s)."""
        (h, w), radius = target.shape[-2:], self.phase_taps.shape[-1] // 2
        image = _mirrored(output[..., :h, :w], radius)
        phase_taps, phase_offsets = self.phase_taps.to(output.device), self.phase_offsets.to(output.device)
        squared = output.new_zeros(())
        for phase in range(4):
            row, column = divmod(phase, 2)
            which = phase % len(phase_taps)
            # Every second pixel from (row, column) on: exactly this phase's pixels of the image.
            filtered = F.conv2d(image[..., row:, column:], phase_taps[which], stride=2, groups=image.shape[1])
            difference = filtered + phase_offsets[which]
            squared = squared + (difference - target[..., row::2, column::2]).square().sum()
        return squared / target.numel()

    @property
    def reach(self) -> int:
        """How many planes' pixels either way a filtered plane's pixel reads."""
        return self.kernel.shape[-1] // 2

    def filtered_planes(self, planes: torch.Tensor) -> torch.Tensor:
        """``F.pixel_unshuffle`` of the filtered image of even sides, from the image's own planes."""
        padded = _mirrored_planes(planes, self.reach)
        kernel, offset = self.kernel.to(planes.device), self.offset.to(planes.device)
        if padded.requires_grad and padded.shape[0] == 1 and fused.accepts(padded):
            return fused.block_filter(padded, kernel, offset, 4)  # each colour's 4 planes read only its own
        return F.conv2d(padded, kernel) + offset

    def packed(self, planes: torch.Tensor, target_planes: torch.Tensor) -> torch.Tensor:
        """The loss of an image of even sides given as ``F.pixel_unshuffle(image, 2)``, against the
        target's planes."""
        return F.mse_loss(self.filtered_planes(planes), target_planes)


def _mirrored(image: torch.Tensor, radius: int) -> torch.Tensor:
    """The image's borders mirrored without repeating the edge, as the decoder's post-filter does
    (``np.pad``'s "reflect", which also folds again when the image is narrower than the border)."""
    if radius == 0:
        return image
    rows, columns = (_reflected(n, radius, image.device) for n in image.shape[-2:])
    return image.index_select(-2, rows).index_select(-1, columns)


@functools.lru_cache(maxsize=64)
def _reflected(length: int, radius: int, device: torch.device) -> torch.Tensor:
    """Source index of each sample of an axis of ``length`` padded by ``radius`` with "reflect"."""
    with torch.inference_mode(False):
        return torch.from_numpy(np.pad(np.arange(length), radius, mode="reflect")).to(device)


def _mirrored_planes(planes: torch.Tensor, reach: int) -> torch.Tensor:
    """``F.pixel_unshuffle(image, 2)`` of an image given as its planes, padded by ``reach`` planes on
    every side as the image's borders mirrored by ``2 * reach`` pixels would make them."""
    n, count, height, width = planes.shape
    sources = _plane_sources(count, height, width, reach, planes.device)
    return planes.reshape(n, -1).index_select(1, sources).view(n, count, height + 2 * reach, width + 2 * reach)


@functools.lru_cache(maxsize=8)
def _plane_sources(count: int, height: int, width: int, reach: int, device: torch.device) -> torch.Tensor:
    """Flat source index of each sample of :func:`_mirrored_planes`. Plane ``4c + 2a + b`` holds the
    pixels of row parity a and column parity b; a mirror by an even number of pixels keeps a pixel's
    parity, so each padded plane reads its own plane only."""
    # Padded plane row i of parity a is the mirrored image's row 2i + a: its source row, halved.
    rows, columns = (np.pad(np.arange(2 * n), 2 * reach, mode="reflect").reshape(-1, 2).T // 2 for n in (height, width))
    index = np.stack([plane * height * width + rows[plane // 2 % 2][:, None] * width + columns[plane % 2][None, :]
                      for plane in range(count)])
    with torch.inference_mode(False):  # a cached inference tensor could never enter a fit again
        return torch.from_numpy(index.reshape(-1)).to(device)


Objective = Callable[[list[torch.Tensor] | None, torch.Tensor], torch.Tensor]
"""(weights or None for the network's own, network input) -> loss."""


def objective(net: Generator, target: torch.Tensor, loss_fn: Loss = image_mse) -> Objective:
    """The loss of the network's output on an input. The plain loss skips the pixel shuffle where
    it can (image sides multiples of the shuffle): it compares the packed output with the target
    unshuffled once, the same differences permuted, and saves two passes over the full-size image
    each iteration; so does a loss through a post-filter (:class:`FilteredMSE`). A rolled canvas's
    loss (:class:`CanvasMSE`) does the same with the target rolled back onto the canvas, the pixels
    the crop drops weighed zero."""
    s = net.config.shuffle
    h, w = target.shape[-2:]
    if isinstance(loss_fn, CanvasMSE) and s > 1:
        return _canvas_objective(net, target, loss_fn.offset)
    if isinstance(loss_fn, FilteredMSE) and s == 2 and h % s == 0 and w % s == 0:
        planes = F.pixel_unshuffle(target, s)
        return lambda weights, net_input: loss_fn.packed(
            net(net_input, weights, packed=True)[..., : h // s, : w // s], planes)
    if loss_fn is not image_mse or s == 1 or h % s or w % s:
        return lambda weights, net_input: loss_fn(net(net_input, weights), target)
    packed = F.pixel_unshuffle(target, s)
    return lambda weights, net_input: F.mse_loss(net(net_input, weights, packed=True)[..., : h // s, : w // s],
                                                 packed)


def _canvas_objective(net: Generator, target: torch.Tensor, offset: CanvasOffset) -> Objective:
    """``objective`` of ``CanvasMSE(offset)``: the image's pixel (y, x) is the canvas's
    ((y - dy) mod H, (x - dx) mod W), so the target padded to the canvas and rolled by (-dy, -dx)
    lines up with the canvas, and a 0/1 weight keeps only the pixels the decoder shows."""
    s, (n, c, h, w) = net.config.shuffle, target.shape
    ph, pw = padded_size(net.config, h, w)
    back = (-offset[0], -offset[1])
    to_canvas = lambda image: F.pixel_unshuffle(torch.roll(F.pad(image, (0, pw - w, 0, ph - h)), back, (-2, -1)), s)
    packed = to_canvas(target)
    shown = to_canvas(torch.ones_like(target))
    return lambda weights, net_input: ((net(net_input, weights, packed=True) - packed) * shown).square().sum() / (
        n * c * h * w)


@full_float32()
def fit(net: Generator, noise: torch.Tensor, target: torch.Tensor, schedule: FitSchedule,
        progress: IterationCallback | None = None, loss_fn: Loss = image_mse,
        filter_loss: Callable[[], Loss] | None = None) -> float:
    """Fit in float; leaves the best iterate in ``net`` and returns its PSNR. With
    ``FitSchedule.average_decay`` it leaves the average instead, and returns the last iterate's PSNR.

    ``filter_loss`` makes the loss of the network's image of the moment through the post-filter
    solved for it. It is called at the start of the schedule's ``filtered_share`` and every
    ``refilter_every`` iterations after, and its loss replaces ``loss_fn`` from there (the best
    iterate so far is weighed again under it, and ``progress`` reports it); the PSNR returned is
    still under ``loss_fn``."""
    params = list(net.parameters())
    # One fused kernel for all tensors: the same steps up to rounding, a millisecond less an iteration
    # than PyTorch's per-tensor default on a CPU (BENCHMARKS.md, "The upsampling's gradient, and a
    # fused Adam"; torch 2.4 or later).
    opt = torch.optim.Adam(params, lr=schedule.learning_rate, betas=(0.9, schedule.adam_beta2), fused=True)
    total = max(schedule.iterations, 1)
    lr_at = lambda i: schedule.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * i / total)))
    averaging = schedule.average_decay > 0
    best = [p.detach().clone() for p in params]
    loss_of = objective(net, target, loss_fn)
    with torch.no_grad():
        best_mse = loss_of(None, noise).item()  # the starting point counts as an iterate
    jitter = torch.Generator(noise.device).manual_seed(0) if schedule.input_jitter else None
    filtered_from = schedule.iterations - round(schedule.filtered_share * schedule.iterations)
    for i in range(schedule.iterations):
        if filter_loss is not None and i >= filtered_from and (i - filtered_from) % schedule.refilter_every == 0:
            loss_of = objective(net, target, filter_loss())
            with torch.no_grad():
                best_mse = loss_of(best, noise).item()
        for group in opt.param_groups:
            group["lr"] = lr_at(i)
        opt.zero_grad(set_to_none=True)
        net_input = noise
        if jitter is not None:
            net_input = noise + schedule.input_jitter * torch.randn(noise.shape, generator=jitter, device=noise.device)
        loss = loss_of(None, net_input)
        loss.backward()
        mse = loss.item()  # the loss of the weights *before* this step
        if averaging:  # from the first iterate on, so that the random start weighs nothing
            with torch.no_grad():
                for b, p in zip(best, params):
                    b.lerp_(p, 1 - schedule.average_decay if i else 1.0)
            best_mse = mse
        elif mse < best_mse:
            best_mse = mse
            best = [p.detach().clone() for p in params]
        if schedule.stop_mse is not None and i < filtered_from and mse <= schedule.stop_mse:
            break
        opt.step()
        if progress:
            progress(i + 1, psnr_from_mse(mse))
    with torch.no_grad():
        for p, b in zip(params, best):
            p.copy_(b)
        if filter_loss is not None and filtered_from < schedule.iterations and not averaging:
            best_mse = objective(net, target, loss_fn)(None, noise).item()
    return psnr_from_mse(best_mse)


@full_float32()
def rounding_sensitivities(net: Generator, noise: torch.Tensor, target: torch.Tensor,
                           reference: list[np.ndarray], step_codes: list[int],
                           loss_fn: Loss = image_mse) -> list[float]:
    """Per tensor, the MSE that rounding it alone (to its step) adds, per weight and per squared step.

    One forward pass per tensor. Rounding errors are near-uniform and independent, so the added MSE
    grows with the number of weights times the squared step, times this sensitivity; tensors with a
    larger one deserve finer steps (:func:`dipcodec.quantize.step_scales`).
    """
    params = [p.detach() for p in net.parameters()]
    device = params[0].device
    # The shuffled image's loss, not ``objective``'s: a difference of two near-equal losses depends
    # on their summation order, and one forward pass per tensor gains nothing from the packed loss.
    with torch.no_grad():
        base = loss_fn(net(noise), target).item()
        out = []
        for i, (p, ref, code) in enumerate(zip(params, reference, step_codes, strict=True)):
            step = float(step_from_code(code))
            r = torch.from_numpy(ref).to(device)
            rounded = params[:i] + [r + torch.round((p - r) / step) * step] + params[i + 1 :]
            added = loss_fn(net(noise, rounded), target).item() - base
            # Rounding can help by chance: floor the estimate at a small share of the error.
            out.append(max(added, 1e-4 * base) / (p.numel() * step * step))
    return out


@full_float32()
def quantization_aware_fit(net: Generator, noise: torch.Tensor, target: torch.Tensor,
                           reference: list[np.ndarray], step_codes: list[int], schedule: FitSchedule,
                           progress: IterationCallback | None = None, progress_offset: int = 0,
                           loss_fn: Loss = image_mse) -> float:
    """Fine-tune through the quantizer (straight-through); leaves the weights whose *rounded* version
    fit best in ``net`` and returns the PSNR of that rounded network (under ``loss_fn``)."""
    device = next(net.parameters()).device
    refs = [torch.from_numpy(r).to(device) for r in reference]
    steps = [torch.tensor(float(step_from_code(c)), device=device) for c in step_codes]

    def rounded(params: list[torch.Tensor]) -> list[torch.Tensor]:
        return [r + torch.round((p - r) / s) * s for p, r, s in zip(params, refs, steps)]

    params = list(net.parameters())
    loss_of = objective(net, target, loss_fn)
    opt = torch.optim.Adam(params, lr=schedule.qat_learning_rate, fused=True)
    best_mse, best = float("inf"), [p.detach().clone() for p in params]
    for i in range(schedule.qat_iterations + 1):
        opt.zero_grad(set_to_none=True)
        q = rounded([p.detach() for p in params])
        ste = [p + (qp - p).detach() for p, qp in zip(params, q)]
        loss = loss_of(ste, noise)
        mse = loss.item()
        if mse < best_mse:
            best_mse = mse
            best = [p.detach().clone() for p in params]
        if i == schedule.qat_iterations:
            break
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = schedule.qat_learning_rate * (1 - i / max(schedule.qat_iterations, 1))
        opt.step()
        if progress:
            progress(progress_offset + i + 1, psnr_from_mse(mse))
    with torch.no_grad():
        for p, b in zip(params, best):
            p.copy_(b)
    return psnr_from_mse(best_mse)
