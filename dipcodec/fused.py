"""A fit's busiest steps compiled, where a C compiler is at hand.

Every stage of the network normalizes its maps and applies a sine (or a ReLU), the narrowing ones
right after a bilinear (restoration's networks: bicubic) upsampling. PyTorch does that in four to
six passes over the full-size maps each way, and on a CPU an iteration is bound by such passes:
``fused.c`` makes two each way, and never stores the upsampled maps. It also filters the
unshuffled planes of a fit through a post-filter (``fit.FilteredMSE``) without the dense
convolution's work on its kernel's zeros. The library is
compiled on first use with the machine's C compiler (``$CC``, else ``cc``) into
``$XDG_CACHE_HOME/dipcodec`` (``~/.cache`` without it) and called through ctypes. Where it cannot be
built, or with ``DIPCODEC_FUSED=0`` in the environment, fits use PyTorch's operations: the same
functions up to float32 rounding, which a fit carries into slightly different weights, as another
machine's arithmetic would. Decoding never uses it (it runs no gradient)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["norm_activation", "upsample2x", "accepts", "block_filter", "available", "disabled"]

_SOURCE = Path(__file__).with_name("fused.c")
_FLAG_SETS = (
    # Vector sines need the compiler free to reorder sums, and the machine's widest vectors: gcc tunes
    # some AMD processors to half-width ones unless told otherwise. With OpenMP the rows are shared
    # among PyTorch's own threads (its libgomp is the one loaded; a second pool would fight it for
    # the cores); without it, one thread does them all.
    ("-O3", "-march=native", "-mprefer-vector-width=256", "-ffast-math", "-fopenmp"),
    ("-O3", "-march=native", "-ffast-math", "-fopenmp"),
    ("-O3", "-ffast-math", "-fopenmp-simd"),
    ("-O2",),
)
_ACTIVATIONS = {"relu": 0, "sine": 1}
_UPSAMPLINGS = {None: -1, "bilinear": 0, "bicubic": 1}  # -1: none; else fused.c's `cubic` flag
_switch = threading.local()


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "dipcodec"


def _build(compiler: str, flags: tuple[str, ...]) -> Path | None:
    """The compiled library for these flags, built once per machine and source (its name hashes both)."""
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), *map(str.encode, flags),
                                     sys.platform.encode(), platform.machine().encode()])).hexdigest()[:16]
    target = _cache_dir() / f"fused-{key}.so"
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            built = Path(scratch) / target.name
            subprocess.run([compiler, *flags, "-fPIC", "-shared", str(_SOURCE), "-o", str(built), "-lm"],
                           check=True, capture_output=True, timeout=120)
            os.replace(built, target)  # atomic: a process beside this one loads a whole file or none
    except (OSError, subprocess.SubprocessError):
        return None
    return target


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    if os.environ.get("DIPCODEC_FUSED", "1") == "0":
        return None
    compiler = os.environ.get("CC", "cc")
    for flags in _FLAG_SETS:
        path = _build(compiler, flags)
        if path is None:
            continue
        try:
            library = ctypes.CDLL(str(path))
        except OSError:
            continue
        pointer, count, number, flag = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
        for name, arguments in (
                ("norm_activation_forward", [pointer] * 6 + [count] * 3 + [number, flag, flag]),
                ("norm_activation_backward", [pointer] * 9 + [count] * 3 + [flag, flag]),
                ("upsample_norm_activation_forward", [pointer] * 7 + [count] * 4 + [number, flag, flag, flag]),
                ("upsample_norm_activation_backward", [pointer] * 11 + [count] * 4 + [flag, flag, flag]),
                ("upsample_forward", [pointer] * 3 + [count] * 3 + [flag, flag]),
                ("upsample_backward", [pointer] * 3 + [count] * 3 + [flag, flag]),
                ("block_filter", [pointer] * 4 + [count] * 5 + [flag])):
            function = getattr(library, name)
            function.argtypes, function.restype = arguments, None
        library.row_buffer_floats.argtypes, library.row_buffer_floats.restype = [count], count
        return library
    return None


def available() -> bool:
    """Whether fits on a CPU use the compiled step (it built, and ``disabled`` is not in force)."""
    return not getattr(_switch, "off", False) and _library() is not None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Fits in this thread use PyTorch's operations while inside (to compare the two)."""
    before = getattr(_switch, "off", False)
    _switch.off = True
    try:
        yield
    finally:
        _switch.off = before


def accepts(x: torch.Tensor, upsample: str | None = None) -> bool:
    """Whether the compiled steps can take ``x``: float32 maps of more than one pixel on a CPU
    (upsampled bilinearly, bicubically or not at all, for :func:`norm_activation`), and they are
    available."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and upsample in _UPSAMPLINGS
            and (upsample is not None or x[0, 0].numel() > 1) and available())


def norm_activation(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor, activation: str,
                    upsample: str | None = None, *, eps: float) -> torch.Tensor:
    """``activation(F.group_norm(x, channels, gain, bias, eps=eps))`` with its gradient, compiled, for
    ``x`` as :func:`accepts` says; with ``upsample`` ("bilinear" or "bicubic"), of ``x`` upsampled 2x
    first (as ``network.upsample2x`` does), which is then never stored. The network passes its own
    ``eps``: this module imports nothing of it."""
    return _NormActivation.apply(x, gain, bias, _ACTIVATIONS[activation], _UPSAMPLINGS[upsample], eps)


def upsample2x(x: torch.Tensor, upsample: str) -> torch.Tensor:
    """``network.upsample2x(x, upsample)`` with its gradient, compiled, for ``x`` as :func:`accepts`
    says: the stages that upsample before their convolution (restoration's, bicubically, cost a fit
    more there than anything but the matrix products)."""
    return _Upsample2x.apply(x, _UPSAMPLINGS[upsample])


def block_filter(x: torch.Tensor, kernel: torch.Tensor, offset: torch.Tensor, block: int) -> torch.Tensor:
    """``F.conv2d(x, kernel) + offset`` for a ``kernel`` that is block-diagonal in blocks of ``block``
    planes (``fit.FilteredMSE``'s: each colour's planes read only that colour's), compiled, with the
    gradient of ``x`` only; ``x`` one sample of float32 planes on a CPU, as :func:`accepts` says."""
    return _BlockFilter.apply(x, kernel, offset, block)


def _row_buffers(x: torch.Tensor, threads: int, width: int) -> torch.Tensor:
    """Scratch rows for the upsampling steps, as many floats a thread as fused.c asks (OpenMP never gives
    it more threads than asked), allocated here so that an allocation that fails raises in Python."""
    return x.new_empty(threads, _library().row_buffer_floats(width))


def _floats(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous()


class _NormActivation(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, gain: torch.Tensor,
                bias: torch.Tensor, activation: int, upsample: int, eps: float) -> torch.Tensor:
        x, gain, bias = _floats(x), _floats(gain), _floats(bias)
        n, channels, height, width = x.shape
        out = x.new_empty(n, channels, 2 * height, 2 * width) if upsample >= 0 else torch.empty_like(x)
        mean, rstd = x.new_empty(n * channels), x.new_empty(n * channels)
        pointers = (x.data_ptr(), gain.data_ptr(), bias.data_ptr(), out.data_ptr(), mean.data_ptr(), rstd.data_ptr())
        threads = torch.get_num_threads()
        if upsample >= 0:
            buffers = _row_buffers(x, threads, width)
            _library().upsample_norm_activation_forward(*pointers, buffers.data_ptr(), n * channels, channels, height,
                                                        width, eps, activation, upsample, threads)
        else:
            _library().norm_activation_forward(*pointers, n * channels, channels, height * width, eps, activation,
                                               threads)
        ctx.save_for_backward(x, gain, bias, mean, rstd)
        ctx.activation, ctx.upsample = activation, upsample
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None, None, None]:
        x, gain, bias, mean, rstd = ctx.saved_tensors
        grad = _floats(grad)
        n, channels, height, width = x.shape
        grad_x = torch.empty_like(x)
        grad_gain, grad_bias = x.new_empty(n, channels), x.new_empty(n, channels)
        inputs = (grad.data_ptr(), x.data_ptr(), gain.data_ptr(), bias.data_ptr(), mean.data_ptr(), rstd.data_ptr())
        outputs = (grad_x.data_ptr(), grad_gain.data_ptr(), grad_bias.data_ptr())
        if ctx.upsample >= 0:
            scratch = torch.empty_like(grad)  # the activation's gradient at full size, between two passes
            threads = torch.get_num_threads()
            buffers = _row_buffers(x, threads, width)
            _library().upsample_norm_activation_backward(*inputs, scratch.data_ptr(), buffers.data_ptr(), *outputs,
                                                         n * channels, channels, height, width, ctx.activation,
                                                         ctx.upsample, threads)
        else:
            _library().norm_activation_backward(*inputs, *outputs, n * channels, channels, height * width,
                                                ctx.activation, torch.get_num_threads())
        return grad_x, grad_gain.sum(0), grad_bias.sum(0), None, None, None


class _Upsample2x(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, upsample: int) -> torch.Tensor:
        x = _floats(x)
        n, channels, height, width = x.shape
        out = x.new_empty(n, channels, 2 * height, 2 * width)
        threads = torch.get_num_threads()
        buffers = _row_buffers(x, threads, width)
        _library().upsample_forward(x.data_ptr(), out.data_ptr(), buffers.data_ptr(), n * channels, height, width,
                                    upsample, threads)
        ctx.upsample, ctx.size = upsample, (height, width)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = _floats(grad)
        (height, width), threads = ctx.size, torch.get_num_threads()
        grad_x = grad.new_empty(grad.shape[0], grad.shape[1], height, width)
        buffers = _row_buffers(grad, threads, width)
        _library().upsample_backward(grad.data_ptr(), grad_x.data_ptr(), buffers.data_ptr(),
                                     grad.shape[0] * grad.shape[1], height, width, ctx.upsample, threads)
        return grad_x, None


class _BlockFilter(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, kernel: torch.Tensor,
                offset: torch.Tensor, block: int) -> torch.Tensor:
        x, kernel, offset = _floats(x), _floats(kernel), _floats(offset)
        (n, planes, height, width), k = x.shape, kernel.shape[-1]
        if n != 1 or kernel.shape != (planes, planes, k, k) or planes % block or offset.numel() != planes:
            raise ValueError("block_filter takes one sample, a square kernel over its planes and an offset each")
        ctx.save_for_backward(kernel)
        ctx.block = block
        return _block_filter(x, kernel, offset, block)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (kernel,) = ctx.saved_tensors
        k = kernel.shape[-1]
        # The transpose of the filter: the filter of the zero-padded gradient by the kernel with its
        # blocks transposed (input and output planes swap) and its taps flipped.
        padded = torch.nn.functional.pad(_floats(grad), (k - 1,) * 4)
        transposed = kernel.transpose(0, 1).flip(-2, -1).contiguous()
        return _block_filter(padded, transposed, None, ctx.block), None, None, None


def _block_filter(x: torch.Tensor, kernel: torch.Tensor, offset: torch.Tensor | None, block: int) -> torch.Tensor:
    (_, planes, height, width), k = x.shape, kernel.shape[-1]
    out = x.new_empty(1, planes, height - k + 1, width - k + 1)
    _library().block_filter(x.data_ptr(), kernel.data_ptr(), None if offset is None else offset.data_ptr(),
                            out.data_ptr(), planes, block, height - k + 1, width - k + 1, k, torch.get_num_threads())
    return out
