"""Encoding: choose a network for the bit budget, fit it, quantize, entropy-code, and hit the rate.

``--bpp`` is met by bisecting the quantization fineness against the real packed size (header
included). ``--quality`` maps to a bit budget that sizes the network, with a fixed fineness, so the
rate follows the image's content the way JPEG's quality does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch

from .container import Bitstream, Mode, Reference, check_network_limits, pack, post_filter_section
from .decoder import render, resolve_device
from .entropy import encode_symbols, fit_model
from .errors import InputError, warn
from .fit import (CanvasMSE, FilteredMSE, FitSchedule, IterationCallback, Loss, fit, image_mse, psnr_from_mse,
                  quantization_aware_fit, rounding_sensitivities)
from .images import ImageLike, as_array
from .layout import choose_network, network_layout
from .network import (CanvasOffset, Generator, NetworkConfig, NetworkPurpose, decode_cost, fixed_input, full_float32,
                      reference_weights, roll_canvas)
from .postfilter import PostFilter
from .presets import Preset
from .postfilter_fit import (GRID_DB_PER_OCTAVE, choose_post_filter, fit_filter_for, pixel_mse, post_filter_candidates,
                             tuning_filter_for)
from .quantize import dequantize, quantize, step_codes_for, step_scales
from .transfer.basefile import BaseChoice

if TYPE_CHECKING:
    from .restoration.modes import MaskLike
    from .transfer.basefile import BaseModel

__all__ = ["Preset", "PRESETS", "DEFAULT_QUALITY", "encode", "encode_detailed", "quality_to_bpp", "iteration_cost",
           "stretched_schedule", "sensitive_step_scales", "EncodeResult", "FittedNetwork", "Start", "base_start",
           "code_image", "check_settings", "DEFAULT_BASE", "PRESET_BASES", "resolve_base", "RestorationSpec"]

PRESET_COST = 726.6
"""``iteration_cost`` of the network the presets were sized for: a 768x512 RGB image at the default
quality (width 95; a test keeps the two in step)."""
PRESETS: dict[Preset, FitSchedule] = {
    # Iterations, not seconds, so that a file depends only on its inputs: sized on the 2-core
    # reference machine for a 768x512 image at the default quality (fast < 1 minute, default < 5,
    # best < 10; BENCHMARKS.md has the measurements behind every count). stretched_schedule gives a
    # cheaper network more iterations and, at fast and default, a dearer one fewer, and charges the
    # iterations that train through a post-filter (FILTERED_COST) and the quantization-aware ones,
    # which tune through the file's filter (TUNING_FILTER_COST): fast fits 936 / 733 / 600 float
    # iterations at 0.25 / 0.5 / 0.75 bpp on 768x512, default 2994 / 2344 / 1919.
    # fast is sized for a network a third dearer than the default quality's, and spends little on
    # its quantization-aware phase (a sixteenth of the float iterations: BENCHMARKS.md, "fast: fewer
    # quantization-aware iterations, more float ones"). fast and default forget old gradients sooner
    # (Adam's beta2 0.95: "Adam's memory") and fit their second half through a post-filter ("Fitting
    # through the post-filter"); best keeps PyTorch's beta2 0.999 until it is measured on a GPU.
    # Restorations, sized for no network, fit the preset's own count.
    "fast": FitSchedule(iterations=640, qat_iterations=40, sized_for_cost=PRESET_COST * 4 / 3, min_stretch=0.5,
                        adam_beta2=0.95, filtered_share=0.5),
    "default": FitSchedule(iterations=2860, qat_iterations=390, sized_for_cost=PRESET_COST, min_stretch=0.5,
                           adam_beta2=0.95, filtered_share=0.5),
    "best": FitSchedule(iterations=4500, qat_iterations=500, sized_for_cost=PRESET_COST),
}
DEFAULT_QUALITY = 75
ELEMENTWISE_COST = 344.0
"""An iteration's work per pixel besides its multiply-adds (normalizations, sines, upsampling), in
multiply-add equivalents: fitted to the sine network's iteration times on 768x512 on the reference
machine (51.8, 68.2 and 86.2 ms at widths 67, 95 and 117; BENCHMARKS.md, "Iteration budgets"). With
1x1 convolutions as matrix products (33.7, 47.7 and 56.8 ms) the same fit gives 339. Not re-fitted
since the upsampling's gradient took 12 to 18% off an iteration at every rate (BENCHMARKS.md, "The
upsampling's gradient, and a fused Adam"), nor since the compiled normalization and activation
(``dipcodec.fused``) took another 23 to 30% off (37.2, 53.4 and 65.5 ms; BENCHMARKS.md, "The fit's
normalization and activation compiled"). Left at 344 on purpose: a new value would move every
preset's iteration counts, and so every file; the speed-ups made encodes shorter instead."""
FIT_FILTER_MIN_BYTES = 8192
"""The smallest budget whose fit trains through a post-filter. A network trained through a filter
draws a worse image without it, and in a small file the filter's section (some 400 bytes for 5x5
taps and 4 phases) may not pay for itself: a guess, not measured below Kodak's 12 kB at 0.25 bpp."""
FILTERED_COST = 200.0
"""What training through the post-filter (``postfilter_fit.FIT_FILTER_TAPS`` on the unshuffled planes) adds
to an iteration's cost per pixel, in the units of ``iteration_cost``: 132 / 155 / 114 on 768x512 at 0.25 /
0.5 / 0.75 bpp (``tools/bench_speed.py --compare-filtered``, reference machine) when the planes' borders
were repeated, about 20 more since they are mirrored, and the rest pays for the filter's solves
(0.2 s each, four or five a ``fast`` fit). Measured again with the compiled steps of
``dipcodec.fused`` (filter and network both cheaper): 191 / 212 / 164 (241 / 266 / 236 without them)."""
TUNING_FILTER_COST = 360.0
"""What tuning the rounded network through the file's post-filter adds to a quantization-aware
iteration, in the same units, for the widest filter the encoder tunes through (7x7 taps, 4 phases,
what every kodak6 file at ``fast`` but one keeps): 365 / 349 / 350 on 768x512 at 0.25 / 0.5 / 0.75
bpp (``tools/bench_speed.py --compare-filtered --filter-taps 7``). The float fit pays for it with
fewer iterations (``stretched_schedule``), in full even where the file ends with a smaller filter or
none, or is grey; rate control's shorter passes on a coarser grid are not charged."""
MAX_STRETCH = 2.0
"""The most a preset's iterations are multiplied by for a network cheaper than the one it was sized for."""
QUALITY_FINENESS = 6.0
"""Quantization fineness (log2 of steps per unit of each tensor's step scale) used by ``--quality``:
at this fineness a weight costs about ``layout.BITS_PER_WEIGHT`` bits, so a quality's file lands near its budget."""
FINENESS_RANGE = (0.0, 12.0)
QUALITY_OVERSHOOT = 2.0
"""A ``--quality`` file this many times its budget or more gets a warning: on small images the
header, the quantization table and the post-filter's section outweigh the weights (a 32x32 image at
the default quality: 883 bytes, 6.9 bpp, for a budget of 64 bytes)."""
RATE_HEADROOM = 0.99
"""``--bpp`` first aims this far below the target: the quantization-aware phase may raise the rate a
little, and a file pushed over the target must move to a coarser grid its weights were not tuned for."""
MAX_REGRIDS = 2
"""How many coarser grids rate control may still move to, each with a short tuning of its own."""

Progress = Callable[[int, int, float], None]
"""Called with (iterations done, iterations in all, current PSNR in dB)."""


@runtime_checkable
class RestorationSpec(Protocol):
    """What the encoder asks of a restoration (``restoration.modes.Restoration`` is one), so that it
    needs to know nothing of the modes themselves: the network it fits (``purpose``) at what output
    size, under which loss and schedule, and the ``mode`` and ``scale`` its file records."""

    @property
    def mode(self) -> Mode: ...

    @property
    def scale(self) -> int: ...

    @property
    def purpose(self) -> NetworkPurpose: ...

    def check(self, pixels: np.ndarray) -> None:
        """Refuse, with a one-line reason, an image the restoration cannot apply to."""

    def output_size(self, height: int, width: int) -> tuple[int, int]: ...

    def loss(self, target: torch.Tensor) -> Loss:
        """The fit's loss against ``target`` (the input image as an N x C x H x W tensor)."""

    def schedule(self, base: FitSchedule, pixels: np.ndarray) -> FitSchedule:
        """The fit's schedule, given the preset's."""


def _purpose(restoration: RestorationSpec | None) -> NetworkPurpose:
    """The network a fit with this restoration (or None: plain coding) needs."""
    return restoration.purpose if restoration else "compress"


@dataclass(frozen=True)
class EncodeResult:
    """The file and what the encoder measured on the way."""

    data: bytes
    psnr: float
    float_psnr: float
    pixels: np.ndarray
    weights: tuple[np.ndarray, ...]
    """The decoded (dequantized) weights: what a sequence's next frame starts from."""
    step_codes: tuple[int, ...]
    network: NetworkConfig


def quality_to_bpp(quality: float) -> float:
    """The bit budget a quality stands for: 0.25 bpp at 50, doubling every 25 steps (1.0 at 100)."""
    return 0.25 * 2.0 ** ((quality - 50) / 25)


def iteration_cost(config: NetworkConfig, height: int, width: int) -> float:
    """Relative cost per pixel of one fitting iteration (its time on the reference machine is linear in it)."""
    return decode_cost(config, height, width)[1] + ELEMENTWISE_COST


def stretched_schedule(schedule: FitSchedule, config: NetworkConfig, height: int, width: int) -> FitSchedule:
    """The schedule with its iterations scaled by how much cheaper ``config`` is than the network they
    were sized for (``FitSchedule.sized_for_cost``; at most MAX_STRETCH times as many, and at least
    ``FitSchedule.min_stretch`` times, before the tuning's price), so that every rate takes about
    the time the preset promises:
    low rates get more (narrow networks underfit most: kodim07 at 0.25 bpp gains 0.57 dB from 450
    to 900 iterations), and at ``fast`` and ``default`` high rates fewer. The iterations a schedule
    trains through the post-filter cost FILTERED_COST more, and its quantization-aware ones
    TUNING_FILTER_COST more, paid for with float iterations. A schedule sized for no network keeps
    its count."""
    if schedule.sized_for_cost is None:
        return schedule
    cost = iteration_cost(config, height, width) + schedule.filtered_share * FILTERED_COST
    factor = min(max(schedule.sized_for_cost / cost, schedule.min_stretch), MAX_STRETCH)
    tuning = schedule.qat_iterations * TUNING_FILTER_COST / cost
    return dataclasses.replace(schedule, iterations=max(round(schedule.iterations * factor - tuning), 1))


class _Coder:
    """Quantizes and packs one set of fitted weights at a given fineness."""

    def __init__(self, weights: list[np.ndarray], reference: list[np.ndarray], header: dict,
                 scales: list[float]) -> None:
        self.weights, self.reference, self.header, self.scales = weights, reference, header, scales
        self.post_filter: PostFilter | None = None
        """Packed with every file, so that rate control counts its section."""
        self.tuning_filter: PostFilter | None = None
        """The post-filter less its activity bands, which the quantization-aware phase tunes through."""

    def pack(self, fineness: float) -> tuple[bytes, list[int]]:
        codes = step_codes_for(self.scales, fineness)
        return self.pack_codes(codes), codes

    def pack_codes(self, codes: list[int]) -> bytes:
        symbols = quantize(self.weights, self.reference, codes)
        models = [fit_model(s) for s in symbols]
        stream = Bitstream(step_codes=tuple(codes), models=tuple(models),
                           weights=encode_symbols(symbols, models), post_filter=self.post_filter, **self.header)
        return pack(stream)

    def dequantized(self, codes: list[int]) -> list[np.ndarray]:
        return dequantize(quantize(self.weights, self.reference, codes), self.reference, codes)

    def largest_under(self, target_bytes: int) -> tuple[bytes, list[int]]:
        """The finest quantization whose file fits ``target_bytes`` (bisection on 1/16-octave steps)."""
        lo, hi = (round(16 * f) for f in FINENESS_RANGE)
        best = self.pack(lo / 16)
        if len(best[0]) > target_bytes:
            return best
        while hi - lo > 1:
            mid = (lo + hi) // 2
            candidate = self.pack(mid / 16)
            if len(candidate[0]) <= target_bytes:
                lo, best = mid, candidate
            else:
                hi = mid
        return best


def _weights_of(net: Generator) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().astype(np.float32) for p in net.parameters()]


def sensitive_step_scales(net: Generator, noise: torch.Tensor, target: torch.Tensor,
                          reference: list[np.ndarray], loss_fn: Loss = image_mse) -> list[float]:
    """Each tensor's step scale: its delta RMS, made finer where rounding it costs more (probed on the
    grid that ``--quality`` would use)."""
    weights = _weights_of(net)
    probe = step_codes_for(step_scales(weights, reference), QUALITY_FINENESS)
    return step_scales(weights, reference, rounding_sensitivities(net, noise, target, reference, probe, loss_fn))


DEFAULT_BASE = "auto"
"""What ``encode`` starts from when no base is named: the preset's choice (PRESET_BASES)."""
PRESET_BASES: dict[Preset, str] = {"fast": "default", "default": "none", "best": "none"}
"""The base each preset codes plain images against under ``"auto"``. A shipped base speeds up short
fits (kodak6 at ``fast``, 863 / 650 / 519 iterations: +0.24, +0.22 and +0.12 dB at 0.25, 0.5 and
0.75 bpp) but has hurt a long one (a ReLU base on kodim07 at ``default``: -0.58 dB at 0.5 bpp), so
only ``fast`` takes one (BENCHMARKS.md, "Every rate gets the preset's time")."""


BASE_MIN_WIDTH_SHARE = 0.9
"""``--base default`` takes a shipped base only if its network is at least this share of the width
the rate affords: a much narrower network would lose more than the base gains."""


@dataclass(frozen=True)
class Start:
    """Where a fit starts and what its deltas are coded against, when not the seeded initialization
    of the network its rate affords: a base model, the decoded weights of a sequence's earlier frames,
    or the seeded initialization of a network chosen otherwise (``restore``'s, sized for no rate)."""

    network: NetworkConfig
    weights: tuple[np.ndarray, ...]
    kind: Reference
    base_id: bytes | None = None
    grids: tuple[tuple[int, ...], ...] = ()
    """Fixed quantization grids (step codes) to choose from instead of rate control (a sequence's later
    frames: their key frame's grid and coarser copies): the one whose rounding trades best at
    GRID_DB_PER_OCTAVE."""
    offset: CanvasOffset = (0, 0)
    """Where the network's canvas lands in the image (``network.roll_canvas``): a sequence frame's
    camera motion, so that the start's image already lines up with the frame."""

    @classmethod
    def of_base(cls, base: BaseModel) -> "Start":
        return cls(base.network, base.weights, "base", base.id)

    @classmethod
    def of_seed(cls, network: NetworkConfig, seed: int) -> "Start":
        return cls(network, tuple(reference_weights(network, seed)), "seed")


def resolve_base(base: BaseChoice, preset: Preset, *, purpose: NetworkPurpose = "compress") -> BaseChoice:
    """``"auto"`` made concrete: the preset's base for plain coding (PRESET_BASES), the seed for a
    restoration (no base was measured with one); any other choice as it is."""
    if isinstance(base, str) and base == "auto":
        # A preset of a tool's own (not in PRESET_BASES) starts from the seed.
        return PRESET_BASES.get(preset, "none") if purpose == "compress" else "none"
    return base


def base_start(base: BaseChoice, height: int, width: int, channels: int, budget_bits: float, *,
               purpose: NetworkPurpose = "compress", preset: Preset = "default") -> Start | None:
    """Resolve ``base`` for an image of this (output) size and a fit at ``preset``: ``"auto"``
    (:func:`resolve_base`), ``"none"``/None, ``"default"`` (the widest shipped base no wider than the
    network the budget affords and at least BASE_MIN_WIDTH_SHARE of it, else None: the seed), a path
    to a ``.dipbase`` file, or a :class:`BaseModel`."""
    from .transfer.basefile import BaseModel, load_base, shipped_bases

    base = resolve_base(base, preset, purpose=purpose)
    if base is None or base == "none":
        return None
    if isinstance(base, str) and base == "default":
        layout = network_layout(height, width, channels, purpose=purpose)
        widest = choose_network(height, width, channels, budget_bits, purpose=purpose).input_channels
        fitting = [b for b in shipped_bases() if b.network == layout(b.network.input_channels)
                   and BASE_MIN_WIDTH_SHARE * widest <= b.network.input_channels <= widest]
        return Start.of_base(fitting[-1]) if fitting else None
    chosen = base if isinstance(base, BaseModel) else load_base(base)
    if chosen.network.out_channels != channels:
        raise InputError(f"base model {chosen.name} is for {chosen.network.out_channels}-channel images, "
                         f"this one has {channels}")
    try:
        check_network_limits(chosen.network, height, width, InputError)
    except InputError as exc:
        raise InputError(f"base model {chosen.name} does not fit this image: {exc}") from None
    return Start.of_base(chosen)


def encode_detailed(image: ImageLike, *, bpp: float | None = None, quality: float | None = None, preset: Preset = "default",
                    seed: int = 0, device: str = "cpu", progress: Progress | None = None,
                    restoration: RestorationSpec | None = None, base: BaseChoice = DEFAULT_BASE) -> EncodeResult:
    """:func:`encode`, also returning the decoded pixels and weights and the PSNRs measured on the way.

    With a ``restoration`` the network is fitted under its loss (known pixels, or through the
    downsampler) and the file codes the restored image; ``psnr`` and ``float_psnr`` are then measured
    the way the fit sees the input, and ``pixels`` is the restored image.
    """
    pixels = as_array(image)
    check_settings(bpp, quality, preset, seed)
    if restoration is not None:
        restoration.check(pixels)
    network_bpp = bpp if bpp is not None else quality_to_bpp(quality if quality is not None else DEFAULT_QUALITY)
    height, width = restoration.output_size(*pixels.shape[:2]) if restoration else pixels.shape[:2]
    start = base_start(base, height, width, 1 if pixels.ndim == 2 else 3, network_bpp * height * width,
                       purpose=_purpose(restoration), preset=preset)
    return code_image(pixels, network_bpp=network_bpp, target_bpp=bpp, schedule=PRESETS[preset], seed=seed,
                      device=resolve_device(device), progress=progress, restoration=restoration, start=start)


def check_settings(bpp: float | None, quality: float | None, preset: str, seed: int) -> None:
    """One-line errors for settings out of range, before any work."""
    if bpp is not None and quality is not None:
        raise InputError("give a target bpp or a quality, not both")
    if bpp is not None and not (math.isfinite(bpp) and 0 < bpp <= 24):
        raise InputError(f"bpp must be in (0, 24], got {bpp}")
    if quality is not None and not 1 <= quality <= 100:
        raise InputError(f"quality must be between 1 and 100, got {quality}")
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r} (use {', '.join(PRESETS)})")
    if not (isinstance(seed, int) and 0 <= seed < 2**32):
        raise InputError("seed must be an integer in [0, 2**32)")


@full_float32()
def code_image(pixels: np.ndarray, *, network_bpp: float, target_bpp: float | None, schedule: FitSchedule,
               seed: int, device: torch.device, progress: Progress | None = None,
               restoration: RestorationSpec | None = None, start: Start | None = None) -> EncodeResult:
    """Fit, quantize and pack one image. ``network_bpp`` sizes the network (unless ``start`` brings
    one); ``target_bpp`` is the rate to meet, or None for the fixed fineness of ``--quality`` (or the
    best of the grids ``start`` offers, :func:`_best_grid`)."""
    fitted = FittedNetwork.fit(pixels, network_bpp, schedule, seed, device, restoration, progress, start)
    net, noise, config, reference = fitted.net, fitted.noise, fitted.config, fitted.reference
    height, width = fitted.size
    schedule = fitted.schedule
    # What the quantization must reproduce: the image itself, or the restored one the float fit made.
    target = fitted.target if restoration is None else fitted.output()

    header = dict(width=pixels.shape[1], height=pixels.shape[0], channels=config.out_channels, seed=seed,
                  network=config, mode="plain" if restoration is None else restoration.mode,
                  scale=1 if restoration is None else restoration.scale,
                  reference=start.kind if start else "seed", base_id=start.base_id if start else None)
    # The quantization's loss: the image as the decoder crops it, against that target.
    quant_loss = fitted.on_canvas(image_mse)
    fixed_grids = start.grids if start else ()
    scales = [] if fixed_grids else sensitive_step_scales(net, noise, target, reference, quant_loss)
    coder = _Coder(_weights_of(net), reference, header, scales)
    target_bytes = None if target_bpp is None else int(target_bpp * height * width / 8)
    tuner = _GridTuner(fitted, coder, pixels, target, quant_loss, choose_filter=restoration is None and target_bytes is None)

    if fixed_grids:
        codes = _best_grid(coder, fixed_grids, net, noise, target, quant_loss)
        data = tuner.train(codes, schedule.qat_iterations)
    elif target_bpp is None:
        codes = step_codes_for(coder.scales, QUALITY_FINENESS)
        data = tuner.train(codes, schedule.qat_iterations)
    else:
        data, codes = _meet_rate(tuner, target_bpp, target_bytes, reserve_filter=restoration is None)
    weights = coder.dequantized(codes)
    decoded = fitted.render(weights)
    if restoration is None:
        data, decoded = _settle_post_filter(coder, codes, data, decoded, pixels, target_bytes)
        mse = pixel_mse(decoded, pixels) / 255**2
    else:
        with torch.no_grad():
            mse = fitted.image_loss(_as_tensor(decoded, device), fitted.target).item()
    if target_bpp is None and not fixed_grids and 8 * len(data) >= QUALITY_OVERSHOOT * network_bpp * height * width:
        warn(f"the file is {8 * len(data) / (height * width):.2f} bpp, over {QUALITY_OVERSHOOT:g} times the "
             f"{network_bpp:.3g} bpp this quality aims at: on an image this small the header and side data "
             "outweigh the network (--bpp sets the size)")
    return EncodeResult(data=data, psnr=psnr_from_mse(mse), float_psnr=fitted.float_psnr, pixels=decoded,
                        weights=tuple(weights), step_codes=tuple(codes), network=config)


class _GridTuner:
    """Quantization-aware fine-tuning of a fitted network on one grid after another, counting the
    iterations on from the float fit's for the progress report."""

    def __init__(self, fitted: "FittedNetwork", coder: _Coder, pixels: np.ndarray, target: torch.Tensor,
                 quant_loss: Loss, *, choose_filter: bool) -> None:
        self.fitted, self.coder, self.pixels, self.target, self.quant_loss = fitted, coder, pixels, target, quant_loss
        self.choose_filter = choose_filter
        """No rate to meet (plain coding at a --quality): the filter to tune through is the one the
        float fit's image would get (under --bpp, rate control reserves one first)."""
        self.done = fitted.schedule.iterations

    def train(self, codes: list[int], iterations: int) -> bytes:
        """Fine-tune on the grid of ``codes`` for ``iterations``; returns the packed file."""
        fitted, coder = self.fitted, self.coder
        fitted.total = max(fitted.total, self.done + iterations)
        tuned = dataclasses.replace(fitted.schedule, qat_iterations=iterations)
        if self.choose_filter and coder.post_filter is None:
            image = _as_pixels(fitted.output())
            candidates = post_filter_candidates(image, self.pixels)
            coder.post_filter = choose_post_filter(image, self.pixels, len(coder.pack_codes(codes)),
                                                   candidates=candidates)
            coder.tuning_filter = tuning_filter_for(coder.post_filter, candidates)
        # Tuned through the filter, the rounded network makes the image the filter corrects best
        # (kodak6 at fast: +0.01 to +0.10 dB a file; BENCHMARKS.md, "The post-filter in the codec").
        loss_fn = fitted.on_canvas(FilteredMSE.of(coder.tuning_filter)) if coder.tuning_filter else self.quant_loss
        quantization_aware_fit(fitted.net, fitted.noise, self.target, fitted.reference, codes, tuned, fitted.report,
                               self.done, loss_fn)
        self.done += iterations
        coder.weights = _weights_of(fitted.net)
        return coder.pack_codes(codes)


def _meet_rate(tuner: _GridTuner, target_bpp: float, target_bytes: int, *,
               reserve_filter: bool) -> tuple[bytes, list[int]]:
    """Rate control: the finest grid under RATE_HEADROOM of the target (beside a reserved post-filter
    where one pays), tuned; coarser grids, each with a shorter tuning, while the tuning pushes the
    file past the target; last, the untuned grid that fits. Returns the file and its step codes."""
    coder, schedule = tuner.coder, tuner.fitted.schedule
    aim = int(RATE_HEADROOM * target_bytes)
    if reserve_filter:
        codes = _reserve_post_filter(coder, tuner.fitted, tuner.pixels, aim)
    else:
        _, codes = coder.largest_under(aim)
    data = tuner.train(codes, schedule.qat_iterations)
    for _ in range(MAX_REGRIDS):
        if len(data) <= target_bytes:
            break
        # The tuning raised the rate past the target: a coarser grid fits, but the weights were
        # not trained for it, so they get a shorter quantization-aware phase of their own.
        candidate, codes = coder.largest_under(aim)
        if len(candidate) > target_bytes:
            break
        data = tuner.train(codes, max(schedule.qat_iterations // 4, 1))
    if not 0.95 * target_bytes <= len(data) <= target_bytes:
        data, codes = coder.largest_under(target_bytes)  # last resort: the grid, untuned, that fits
        height, width = tuner.fitted.size
        reached = 8 * len(data) / (height * width)
        if len(data) > target_bytes:
            warn(f"cannot reach {target_bpp} bpp: the smallest file for this image is {reached:.3f} bpp")
        elif len(data) < 0.95 * target_bytes:
            warn(f"reached only {reached:.3f} of {target_bpp} bpp: the network is at its largest for this image")
    return data, codes


def _settle_post_filter(coder: _Coder, codes: list[int], data: bytes, decoded: np.ndarray, pixels: np.ndarray,
                        target_bytes: int | None) -> tuple[bytes, np.ndarray]:
    """The file's post-filter, chosen on the rounded network's image (rate control's reserved one
    among the candidates); returns the file as packed with it and the filtered image."""
    reserved = coder.post_filter
    network_bytes = len(data) - (len(post_filter_section(reserved)) if reserved else 0)
    coder.post_filter = choose_post_filter(decoded, pixels, network_bytes, max_bytes=target_bytes,
                                           also=(reserved,) if reserved else ())
    if coder.post_filter is None and reserved is not None and target_bytes is not None:
        coder.post_filter = reserved  # its bytes are spent: without it the file would fall short of the rate
    if coder.post_filter != reserved:
        data = coder.pack_codes(codes)
    if coder.post_filter is not None:
        decoded = coder.post_filter.apply(decoded)
    return data, decoded


def _best_grid(coder: _Coder, grids: tuple[tuple[int, ...], ...], net: Generator, noise: torch.Tensor,
               target: torch.Tensor, loss_fn: Loss) -> list[int]:
    """The grid whose rounded network scores best in PSNR less GRID_DB_PER_OCTAVE per doubling of bytes."""

    def score(codes: tuple[int, ...]) -> float:
        size = len(coder.pack_codes(list(codes)))
        with torch.no_grad():
            rounded = [torch.from_numpy(w).to(noise.device) for w in coder.dequantized(list(codes))]
            mse = loss_fn(net(noise, rounded), target).item()
        return psnr_from_mse(mse) - GRID_DB_PER_OCTAVE * math.log2(size)

    return list(max(grids, key=score)) if len(grids) > 1 else list(grids[0])


def _reserve_post_filter(coder: _Coder, fitted: "FittedNetwork", pixels: np.ndarray, aim: int) -> list[int]:
    """Decide whether rate control keeps bytes for a post-filter (``coder.post_filter``: a filter
    chosen on the float fit's image, standing in for the one chosen at the end), by measuring each
    option: the rounded network on the grid that fits ``aim``, against the filtered rounded network
    on the coarser grid that fits beside the best filter, and beside the best one-class filter (a
    filter with classes can cost more bytes than the rounded network can spare). Returns the chosen
    grid's step codes."""
    image = _as_pixels(fitted.output())
    candidates = post_filter_candidates(image, pixels)
    one_class = [candidate for candidate in candidates if candidate[0].classes == 1]
    options: dict[PostFilter | None, list[int]] = {}
    for post_filter in (None, *(choose_post_filter(image, pixels, aim, fixed_total=True, candidates=some)
                                for some in (candidates, one_class))):
        if post_filter not in options:
            coder.post_filter = post_filter
            options[post_filter] = coder.largest_under(aim)[1]

    def rounded_mse(post_filter: PostFilter | None) -> float:
        decoded = fitted.render(coder.dequantized(options[post_filter]))
        return pixel_mse(post_filter.apply(decoded) if post_filter else decoded, pixels)

    # Ties keep the first option, no filter; with no other option there is nothing to render.
    coder.post_filter = min(options, key=rounded_mse) if len(options) > 1 else None
    coder.tuning_filter = tuning_filter_for(coder.post_filter, candidates)
    return options[coder.post_filter]


def _as_pixels(image: torch.Tensor) -> np.ndarray:
    """A network's float image (1 x C x H x W on [0, 1]) as the decoder's uint8 pixels."""
    planes = torch.round(image.clamp(0, 1) * 255).to(torch.uint8)[0].cpu().numpy()
    return planes[0] if planes.shape[0] == 1 else np.ascontiguousarray(planes.transpose(1, 2, 0))


def _as_tensor(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 HxW or HxWx3 -> float 1 x C x H x W on [0, 1]."""
    planes = pixels.reshape(pixels.shape[0], pixels.shape[1], -1).transpose(2, 0, 1)
    return (torch.from_numpy(planes.copy()).float() / 255).unsqueeze(0).to(device)


class FittedNetwork:
    """The float fit of a network to an image (or, with a restoration, to what is known of it)."""

    def __init__(self, pixels: np.ndarray, bpp: float | None, schedule: FitSchedule, seed: int, device: torch.device,
                 restoration: RestorationSpec | None, start: Start | None = None) -> None:
        height, width = pixels.shape[:2]
        self.size = restoration.output_size(height, width) if restoration else (height, width)
        channels = 1 if pixels.ndim == 2 else 3
        if start is None:
            if bpp is None:
                raise ValueError("a fit needs a rate to size its network, or a start that brings one")
            self.config = choose_network(*self.size, channels, bpp * self.size[0] * self.size[1],
                                         purpose=_purpose(restoration))
            self.reference = reference_weights(self.config, seed)
        else:
            self.config, self.reference = start.network, [w.copy() for w in start.weights]
        self.net = Generator(self.config).load(self.reference).to(device)
        self.seed = seed
        self.noise = fixed_input(self.config, seed, *self.size).to(device)
        self.pixels = pixels
        self.target = _as_tensor(pixels, device)
        self.device = device
        self.offset = start.offset if start else (0, 0)
        self.image_loss = restoration.loss(self.target) if restoration else image_mse
        """The loss of an output whose top-left corner is the image."""
        self.loss_fn = self.on_canvas(self.image_loss)
        """The fit's loss: of the network's canvas, rolled to the image as the decoder does."""
        schedule = restoration.schedule(schedule, pixels) if restoration else schedule
        if restoration is not None or bpp * self.size[0] * self.size[1] / 8 < FIT_FILTER_MIN_BYTES:
            schedule = dataclasses.replace(schedule, filtered_share=0.0)  # fitted plainly, and stretched so
        self.schedule = stretched_schedule(schedule, self.config, *self.size)
        self.total = self.schedule.iterations + self.schedule.qat_iterations  # rate control may add some
        self.report: IterationCallback | None = None
        self.float_psnr = float("nan")

    @classmethod
    def fit(cls, pixels: np.ndarray, bpp: float | None, schedule: FitSchedule, seed: int, device: torch.device,
            restoration: RestorationSpec | None = None, progress: Progress | None = None,
            start: Start | None = None) -> "FittedNetwork":
        """Size a network for ``bpp`` bits per (output) pixel (or take ``start``'s: then ``bpp`` is
        None) and fit it in float."""
        fitted = cls(pixels, bpp, schedule, seed, device, restoration, start)
        if progress:
            fitted.report = lambda i, p: progress(i, fitted.total, p)
        through_filter = fitted.through_post_filter if fitted.schedule.filtered_share else None
        fitted.float_psnr = fit(fitted.net, fitted.noise, fitted.target, fitted.schedule, fitted.report,
                                fitted.loss_fn, through_filter)
        return fitted

    def through_post_filter(self) -> Loss:
        """The fit's loss through the filter (:func:`~.postfilter_fit.fit_filter_for`) solved for the
        network's image now; the plain loss where the image is too small for one."""
        post_filter = fit_filter_for(_as_pixels(self.output()), self.pixels)
        return self.loss_fn if post_filter is None else self.on_canvas(FilteredMSE.of(post_filter))

    def on_canvas(self, loss_fn: Loss) -> Loss:
        """``loss_fn`` (of an output whose top-left corner is the image) made a loss of the network's
        canvas, for a start with a canvas offset."""
        if not any(self.offset):
            return loss_fn
        if loss_fn is image_mse:  # the fit's objective recognizes it and skips the pixel shuffle
            return CanvasMSE(self.offset)
        return lambda output, target: loss_fn(roll_canvas(output, self.offset), target)

    def output(self) -> torch.Tensor:
        """The network's image at the true (output) size, detached."""
        with torch.no_grad(), full_float32():
            return roll_canvas(self.net(self.noise), self.offset)[..., : self.size[0], : self.size[1]].clone()

    def render(self, weights: list[np.ndarray]) -> np.ndarray:
        """The decoder's uint8 image (before any post-filter) from these weights."""
        return render(self.config, weights, self.seed, *self.size, self.device, self.offset)


def encode(image: ImageLike, *, bpp: float | None = None, quality: float | None = None, preset: Preset = "default",
           seed: int = 0, device: str = "cpu", progress: Progress | None = None, mask: MaskLike | None = None,
           sr: int | None = None,
           denoise: bool = False, base: BaseChoice = DEFAULT_BASE) -> bytes:
    """Compress an image (PIL image, or uint8 array HxW / HxWxC) to the bytes of a ``.dip`` file.

    Give ``bpp`` for a target rate (met within 5%, header included, per pixel of the decoded image)
    or ``quality`` (1-100, default 75). At most one restoration: ``mask`` (an image, non-zero =
    missing, or ``"subtitles"`` to find burned-in subtitles) fills the holes; ``sr=4`` codes a 4x
    super-resolved image; ``denoise=True`` a denoised one. ``base`` is ``"auto"`` (the preset's
    choice: a shipped base at ``fast``, the seed otherwise, :data:`PRESET_BASES`), ``"default"`` (a
    shipped base model, when one fits), ``"none"`` (the seeded initialization), a ``.dipbase`` path
    or a :class:`~dipcodec.transfer.basefile.BaseModel`; a file coded from a base needs it to decode.
    """
    pixels = as_array(image)
    restoration = None
    if mask is not None or sr is not None or denoise:
        # Only a restoration loads the restoration package: plain coding stays within the core.
        from .restoration.modes import restoration_for

        restoration = restoration_for(pixels, mask=mask, sr=sr, denoise=denoise)
    return encode_detailed(pixels, bpp=bpp, quality=quality, preset=preset, seed=seed, device=device,
                           progress=progress, restoration=restoration, base=base).data
