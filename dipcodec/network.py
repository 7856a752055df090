"""The generator network: fixed seeded noise -> upsampling stages -> image.

A Deep Decoder-style stack sized for compression. Each stage is conv -> per-channel normalization ->
activation (ReLU or sine), with a 2x upsampling between stages; the last stage runs at ``1/shuffle``
of the image size and a 1x1 convolution emits ``shuffle**2`` sub-pixels per output pixel (pixel
shuffle). Compression networks keep every hidden tensor below full resolution, which is what makes
a fit affordable on a CPU; super-resolution and denoising networks (shuffle 1) need a full-size
last stage. Normalization uses the statistics
of the current image only (no running averages), so encoder and decoder compute the same function.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .noise import INPUT_STREAM, uniform, weight_stream

__all__ = ["NetworkConfig", "Generator", "full_float32", "UPSAMPLE_MODES", "upsample2x", "ACTIVATIONS",
           "NetworkPurpose", "fixed_input", "reference_weights", "padded_size", "decode_cost",
           "CanvasOffset", "roll_canvas", "NORMALIZATION_EPS"]

Upsample = Literal["bilinear", "nearest", "bicubic"]
UPSAMPLE_MODES: tuple[Upsample, ...] = ("bilinear", "nearest", "bicubic")
"""How a stage doubles its input's size. Bicubic is Keys' cubic convolution (a = -0.75, torch's
``bicubic``) with the border samples repeated: sharper than bilinear where a network must draw
detail finer than its coarse stages (super-resolution)."""
NetworkPurpose = Literal["compress", "restore", "upscale", "denoise"]
"""What a network is for, which decides its layout (``layout.choose_network``)."""
Activation = Literal["relu", "sine"]
NORMALIZATION_EPS = 1e-5
"""The epsilon of every stage's normalization (``F.group_norm``'s default), decoder and fit alike."""
ACTIVATIONS: tuple[Activation, ...] = ("relu", "sine")
"""What follows each normalization: max(x, 0), or sin(x). With sines a stage mixes the frequencies
of its input maps (sums and differences), which ReLUs can only approximate with kinks."""


@dataclass(frozen=True)
class NetworkConfig:
    """Everything the decoder needs to rebuild the network; serialized into the file header (bicubic
    upsampling only in files of format version 4 on)."""

    channels: tuple[int, ...]
    """Width of each stage, coarsest first."""
    kernel_sizes: tuple[int, ...]
    """Convolution kernel of each stage (odd)."""
    input_channels: int
    out_channels: Literal[1, 3]
    shuffle: int = 2
    upsample: Upsample = "bilinear"
    activation: Activation = "relu"

    def __post_init__(self) -> None:
        if not self.channels or len(self.channels) != len(self.kernel_sizes):
            raise ValueError("channels and kernel_sizes must be non-empty and of equal length")
        if any(c < 1 for c in self.channels) or self.input_channels < 1:
            raise ValueError("channel counts must be positive")
        if any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError("kernel sizes must be odd and positive")
        if self.out_channels not in (1, 3) or self.shuffle not in (1, 2, 4):
            raise ValueError("out_channels must be 1 or 3 and shuffle 1, 2 or 4")
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}")

    @property
    def stride(self) -> int:
        """Image pixels per input pixel along each axis."""
        return self.shuffle * 2 ** (len(self.channels) - 1)

    def tensor_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the network's tensors in their fixed order: per stage (conv weight, norm gain, norm
        bias), then the output convolution's weight and bias. Stage convolutions have no bias: the
        normalization after them would subtract it."""
        shapes: list[tuple[int, ...]] = []
        c_in = self.input_channels
        for c, k in zip(self.channels, self.kernel_sizes):
            shapes += [(c, c_in, k, k), (c,), (c,)]
            c_in = c
        c_out = self.out_channels * self.shuffle**2
        shapes += [(c_out, c_in, 1, 1), (c_out,)]
        return shapes

    def parameter_count(self) -> int:
        return sum(math.prod(s) for s in self.tensor_shapes())


_PRECISION_LOCK = threading.Lock()
_precision_users = 0
_callers_precision: list[tuple[object, str, object]] = []


def _tf32_switches() -> list[tuple[object, str, object]]:
    """(owner, attribute, float32 value) of each flag that lets CUDA round float32 products to TF32."""
    conv, matmul = getattr(torch.backends.cudnn, "conv", None), torch.backends.cuda.matmul
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9: per-operator flags
        return [(conv, "fp32_precision", "ieee"), (matmul, "fp32_precision", "ieee")]
    return [(torch.backends.cudnn, "allow_tf32", False), (matmul, "allow_tf32", False)]


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """Convolutions and matrix products in full float32 on CUDA while inside (TF32 off: PyTorch
    rounds cuDNN's convolutions to it by default on recent GPUs).

    The encoder's fit and every decoder then compute the same function: a file coded or decoded on
    a GPU decodes to the same pixels as on a CPU but for rare rounding ties (0.005% of them, against
    3 to 7% with TF32), at no measured cost (BENCHMARKS.md, "On a GPU"). Usable as a decorator. The
    flags are global: the first thread in sets them and the last one out restores the caller's.
    On torch 2.9 and later, code run inside (a progress callback) must not read the legacy
    ``torch.backends.cudnn.allow_tf32``, which raises while the per-operator flags disagree.
    """
    global _precision_users
    with _PRECISION_LOCK:
        if _precision_users == 0:
            switches = _tf32_switches()
            _callers_precision[:] = [(owner, name, getattr(owner, name)) for owner, name, _ in switches]
            for owner, name, value in switches:
                setattr(owner, name, value)
        _precision_users += 1
    try:
        yield
    finally:
        with _PRECISION_LOCK:
            _precision_users -= 1
            if _precision_users == 0:
                for owner, name, value in _callers_precision:
                    setattr(owner, name, value)


def padded_size(config: NetworkConfig, height: int, width: int) -> tuple[int, int]:
    """The image size rounded up to the network's stride; the decoder crops back to the true size."""
    s = config.stride
    return -(-height // s) * s, -(-width // s) * s


CanvasOffset = tuple[int, int]
"""(rows, columns) by which a network's output (its canvas, of the padded size) is rolled, with
wrap-around, before it is cropped to the image: a sequence's frames follow a camera's pan this way."""


def roll_canvas(canvas: torch.Tensor, offset: CanvasOffset) -> torch.Tensor:
    """``canvas`` (... x H x W) rolled so that its pixel (0, 0) lands at ``offset``: out[y, x] =
    canvas[(y - dy) mod H, (x - dx) mod W]."""
    return torch.roll(canvas, offset, dims=(-2, -1)) if any(offset) else canvas


def decode_cost(config: NetworkConfig, height: int, width: int) -> tuple[float, float]:
    """(largest activation tensor, multiply-adds) per image pixel of one forward pass.

    The decoder bounds both before running a network from a file, so a forged header cannot make it
    allocate or compute more than a fixed multiple of what the declared image itself needs.
    """
    ph, pw = padded_size(config, height, width)
    pixels = height * width
    largest, macs = 0, 0
    c_in = config.input_channels
    for stage, (c, k) in enumerate(zip(config.channels, config.kernel_sizes)):
        area = ph * pw // (config.stride // 2**stage) ** 2
        if _conv_first(stage, k, c, c_in):  # convolved at the previous resolution, then upsampled
            largest = max(largest, c * area)
            macs += c_in * c * area // 4
        else:
            largest = max(largest, c_in * area, c * area)
            macs += c_in * c * k * k * area
        c_in = c
    out = config.out_channels * config.shuffle**2
    largest = max(largest, out * ph * pw // config.shuffle**2)
    macs += c_in * out * ph * pw // config.shuffle**2
    return largest / pixels, macs / pixels


def fixed_input(config: NetworkConfig, seed: int, height: int, width: int) -> torch.Tensor:
    """The network's input for an image of this size: uniform noise on [0, 1), regenerated from the seed."""
    ph, pw = padded_size(config, height, width)
    shape = (1, config.input_channels, ph // config.stride, pw // config.stride)
    return torch.from_numpy(uniform(seed, INPUT_STREAM, shape))


def reference_weights(config: NetworkConfig, seed: int) -> list[np.ndarray]:
    """The seeded initialization: convolutions uniform in +-1/sqrt(fan_in) (torch's default bound),
    normalization gains 1 and biases 0. It is both the fit's start and the reference of the coded deltas."""
    tensors = []
    for index, shape in enumerate(config.tensor_shapes()):
        kind = _tensor_kind(index, len(config.channels))
        if kind in ("conv_weight", "conv_bias"):
            fan_in = _fan_in(config, index)
            bound = float(np.float32(1.0 / math.sqrt(fan_in)))
            tensors.append(uniform(seed, weight_stream(index), shape, -bound, bound))
        elif kind == "norm_gain":
            tensors.append(np.ones(shape, np.float32))
        else:
            tensors.append(np.zeros(shape, np.float32))
    return tensors


def _tensor_kind(index: int, stages: int) -> str:
    if index >= 3 * stages:
        return ("conv_weight", "conv_bias")[index - 3 * stages]
    return ("conv_weight", "norm_gain", "norm_bias")[index % 3]


def _fan_in(config: NetworkConfig, index: int) -> int:
    stage = index // 3
    if stage >= len(config.channels):
        return config.channels[-1]
    c_in = config.input_channels if stage == 0 else config.channels[stage - 1]
    return c_in * config.kernel_sizes[stage] ** 2


class Generator(nn.Module):
    """The network described by a :class:`NetworkConfig`; its tensors follow ``config.tensor_shapes()``."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.weights = nn.ParameterList(nn.Parameter(torch.zeros(s)) for s in config.tensor_shapes())

    def load(self, tensors: list[np.ndarray]) -> "Generator":
        """Copy numpy tensors (in ``tensor_shapes`` order) into the network."""
        with torch.no_grad():
            for p, t in zip(self.weights, tensors, strict=True):
                p.copy_(torch.from_numpy(np.asarray(t, np.float32)))
        return self

    def forward(self, noise: torch.Tensor, weights: list[torch.Tensor] | None = None, *,
                packed: bool = False) -> torch.Tensor:
        """Image in [0, 1] of the padded size. ``weights`` replaces the parameters (quantization-aware
        fit). ``packed``: skip the pixel shuffle and return what ``F.pixel_unshuffle`` would make of
        that image (``shuffle**2`` maps per channel at the padded size divided by the shuffle), which
        a loss can compare with a target unshuffled once."""
        w = list(self.weights) if weights is None else weights
        cfg = self.config
        x = noise
        for stage, k in enumerate(cfg.kernel_sizes):
            conv_w, gain, bias = w[3 * stage : 3 * stage + 3]
            # A 1x1 convolution commutes with the (linear, per-channel) upsampling: when the stage
            # narrows, convolving first at the lower resolution computes the same thing for less.
            conv_first = _conv_first(stage, k, conv_w.shape[0], conv_w.shape[1])
            if conv_first:  # then upsampled, in the normalization's step
                x = _convolve(x, conv_w)
            elif stage > 0:
                x = upsample2x(x, cfg.upsample)
            if k > 1:
                x = F.pad(x, (k // 2,) * 4, mode="reflect" if min(x.shape[-2:]) > k // 2 else "replicate")
            if not conv_first:
                x = _convolve(x, conv_w)
            x = _norm_activation(x, gain, bias, cfg.activation, cfg.upsample if conv_first else None)
        x = _convolve(x, w[-2], w[-1])
        if cfg.shuffle > 1 and not packed:
            x = F.pixel_shuffle(x, cfg.shuffle)
        return torch.sigmoid(x)


def _norm_activation(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor, activation: Activation,
                     upsample: Upsample | None = None) -> torch.Tensor:
    """The activation of ``F.group_norm(x, channels, gain, bias)``, of ``x`` upsampled 2x first if
    ``upsample`` says how. A fit on a CPU takes the compiled step of ``dipcodec.fused`` where it is
    built (imported only then: decoding never loads fitting code), the same function in two passes
    over the full-size maps each way where PyTorch makes four to six (BENCHMARKS.md, "The fit's
    normalization and activation compiled")."""
    if x.requires_grad and x.device.type == "cpu":
        from . import fused
        if fused.accepts(x, upsample):
            return fused.norm_activation(x, gain, bias, activation, upsample, eps=NORMALIZATION_EPS)
    if upsample is not None:
        x = upsample2x(x, upsample)
    x = F.group_norm(x, x.shape[1], gain, bias, eps=NORMALIZATION_EPS)
    return torch.sin(x) if activation == "sine" else F.relu(x)


def _convolve(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)``; a 1x1 kernel as one matrix product. On a CPU that takes a
    quarter off a fitting iteration (BENCHMARKS.md, "1x1 convolutions as matrix products"). The two
    differ only in float32 rounding (docs/FORMAT.md §6). One sample (every fit and decode) takes a
    plain 2-D product: the same numbers as the batched one, whose gradient transposes and copies
    each stage's maps (BENCHMARKS.md, "Restoration's upsampling compiled")."""
    if weight.shape[-2:] != (1, 1):
        return F.conv2d(x, weight, bias)
    n, c, h, w = x.shape
    if n == 1:
        y = torch.mm(weight.flatten(1), x.reshape(c, h * w))
    else:
        y = weight.flatten(1) @ x.reshape(n, c, h * w)
    if bias is not None:
        y = y + bias[:, None]
    return y.reshape(n, weight.shape[0], h, w)


def _conv_first(stage: int, kernel: int, c_out: int, c_in: int) -> bool:
    """Whether a stage convolves before upsampling: same result (1x1 convolution and upsampling
    commute), less work when the stage narrows."""
    return stage > 0 and kernel == 1 and c_out < c_in


def _align(mode: str) -> dict:
    return {"align_corners": False} if mode == "bilinear" else {}


_BICUBIC_EVEN = (-9 / 256, 67 / 256, 225 / 256, -27 / 256)
"""Keys' cubic kernel (a = -0.75) at distances 1.75, 0.75, 0.25, 1.25: the weights of input samples
i - 2 .. i + 1 for output sample 2i (a quarter sample before input i); output 2i + 1 takes them
mirrored, from samples i - 1 .. i + 2. Dyadic, so exact in float32."""
_BICUBIC_BLOCK = 64
"""Input samples per matrix product along an axis: the map is banded (4 taps), so a long axis is
done in blocks, each with its 2 neighbours either side, instead of as one dense product."""


def upsample2x(x: torch.Tensor, mode: Upsample) -> torch.Tensor:
    """Double the last two dimensions of an ``N x C x H x W`` tensor (align_corners=False geometry).
    A fit on a CPU takes a faster gradient: bilinearly ``_Bilinear2x``'s, bicubically the compiled
    step of ``dipcodec.fused`` where it is built (the matrix products below, with their gradient,
    cost a restoration fit more than its convolutions)."""
    if x.requires_grad and x.device.type == "cpu":
        if mode == "bilinear":
            return _Bilinear2x.apply(x)
        if mode == "bicubic":
            from . import fused
            if fused.accepts(x, mode):
                return fused.upsample2x(x, mode)
    if mode != "bicubic":
        return F.interpolate(x, scale_factor=2, mode=mode, **_align(mode))
    return _bicubic_columns(_bicubic_columns(x.transpose(-1, -2)).transpose(-1, -2))


class _Bilinear2x(torch.autograd.Function):
    """Bilinear 2x upsampling (``F.interpolate``, so the same image) with a faster gradient on a CPU:
    PyTorch's own takes about three times as long as these slices of the gradient, and a fit pays
    for it at every stage but the first, every iteration (BENCHMARKS.md, "The upsampling's gradient,
    and a fused Adam")."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        return _bilinear_adjoint(_bilinear_adjoint(grad.contiguous(), -1), -2)


def _bilinear_adjoint(grad: torch.Tensor, dim: int) -> torch.Tensor:
    """The transpose of bilinear 2x along ``dim`` (-1 or -2): output samples 2i and 2i + 1 are 3/4
    of input i plus 1/4 of input i - 1 or i + 1 (the end sample standing in past either end), so
    input i collects 3/4 of both and 1/4 of samples 2i - 1 and 2i + 2."""
    n = grad.shape[dim] // 2
    pairs = grad.unflatten(dim, (n, 2))
    even, odd = pairs.select(dim, 0), pairs.select(dim, 1)
    out = torch.add(even, odd).mul_(0.75)
    out.narrow(dim, 0, n - 1).add_(even.narrow(dim, 1, n - 1), alpha=0.25)
    out.narrow(dim, 1, n - 1).add_(odd.narrow(dim, 0, n - 1), alpha=0.25)
    out.narrow(dim, 0, 1).add_(even.narrow(dim, 0, 1), alpha=0.25)
    out.narrow(dim, n - 1, 1).add_(odd.narrow(dim, n - 1, 1), alpha=0.25)
    return out


def _bicubic_columns(x: torch.Tensor) -> torch.Tensor:
    """Bicubic 2x along the last dimension, as matrix products of at most _BICUBIC_BLOCK inputs."""
    n = x.shape[-1]
    parts = []
    for first in range(0, n, _BICUBIC_BLOCK):
        stop = min(first + _BICUBIC_BLOCK, n)
        before, after = min(first, 2), min(n - stop, 2)
        block = _bicubic_block(before, stop - first, after, x.device, x.dtype)
        parts.append(x[..., first - before : stop + after] @ block)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


@functools.lru_cache(maxsize=32)
def _bicubic_block(before: int, length: int, after: int, device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
    """The ``(before + length + after) x 2 length`` matrix taking a block of ``length`` input samples,
    with the ``before`` and ``after`` neighbours the axis has (up to 2; fewer at its ends, where the
    border sample repeats), to the block's 2 ``length`` output samples. Every block in an axis's
    interior is the same matrix, so a few are cached per device and dtype."""
    matrix = np.zeros((before + length + after, 2 * length), np.float32)
    for i in range(length):
        for j, weight in enumerate(_BICUBIC_EVEN):
            matrix[min(max(i - 2 + j, -before), length + after - 1) + before, 2 * i] += weight
            matrix[min(max(i + 2 - j, -before), length + after - 1) + before, 2 * i + 1] += weight
    with torch.inference_mode(False):  # a cached inference tensor could never enter a fit again
        return torch.from_numpy(matrix).to(device=device, dtype=dtype)
