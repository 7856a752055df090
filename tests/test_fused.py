"""The compiled normalization and activation of a fit (dipcodec.fused) against PyTorch's operations."""

import contextlib
import functools
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dipcodec import fused, network
from dipcodec.network import NORMALIZATION_EPS, Generator, NetworkConfig, fixed_input, reference_weights

needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                                    reason="no C compiler: fits use PyTorch's operations")


def _reference(z: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor, activation: str,
               upsample: str | None = None) -> torch.Tensor:
    if upsample:
        z = F.interpolate(z, scale_factor=2, mode=upsample, align_corners=False)
    y = F.group_norm(z, z.shape[1], gain, bias, eps=NORMALIZATION_EPS)
    return torch.sin(y) if activation == "sine" else F.relu(y)


def _run(step, z, gain, bias, activation, grad, upsample=None):
    leaves = [t.detach().clone().requires_grad_() for t in (z, gain, bias)]
    out = step(*leaves, activation, upsample)
    out.backward(grad.to(out.dtype))
    return [out.detach().double()] + [t.grad.double() for t in leaves]


@needs_compiler
def test_the_step_builds_where_there_is_a_compiler():
    assert fused.available()
    with fused.disabled():
        assert not fused.available()
    assert fused.available()


@needs_compiler
@pytest.mark.parametrize("upsample", [None, "bilinear", "bicubic"])
@pytest.mark.parametrize("activation", ["sine", "relu"])
@pytest.mark.parametrize("shape, offset", [((2, 3, 5, 7), 0.0), ((1, 29, 48, 64), 0.0), ((1, 4, 33, 40), 50.0),
                                           ((1, 2, 1, 6), 0.0), ((1, 2, 6, 1), 0.0)])
def test_values_and_gradients_match_pytorchs(upsample, activation, shape, offset):
    """Two samples (gains shared across them), odd sides and sides of one pixel (the upsampling's
    borders), maps whose mean is far from zero (the variance must keep its digits): within float32
    rounding of a float64 reference, upsampled by ``F.interpolate``."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(shape, generator=g) * 0.7 + offset
    gain = torch.rand(shape[1], generator=g) + 0.5
    bias = torch.randn(shape[1], generator=g)
    size = (shape[0], shape[1], shape[2] * 2, shape[3] * 2) if upsample else shape
    grad = torch.randn(size, generator=g)
    ours = _run(functools.partial(fused.norm_activation, eps=NORMALIZATION_EPS), z, gain, bias, activation, grad,
                upsample)
    theirs = _run(_reference, z.double(), gain.double(), bias.double(), activation, grad, upsample)
    for name, a, b in zip(("output", "input's gradient", "gain's gradient", "bias's gradient"), ours, theirs):
        scale = b.abs().max().item()
        assert (a - b).abs().max().item() <= 2e-5 * max(scale, 1.0), name


@needs_compiler
@pytest.mark.parametrize("upsample", ["bilinear", "bicubic"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 6), (1, 4, 6, 1), (1, 3, 40, 70)])
def test_the_upsampling_alone_matches_pytorchs(upsample, shape):
    """The step for stages that upsample before their convolution, values and gradient, borders and
    sides of one pixel included, against ``F.interpolate`` in float64."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g)
    grad = torch.randn(shape[0], shape[1], 2 * shape[2], 2 * shape[3], generator=g)
    results = []
    for step, dtype in ((fused.upsample2x, torch.float32),
                        (lambda t, mode: F.interpolate(t, scale_factor=2, mode=mode, align_corners=False),
                         torch.float64)):
        leaf = x.detach().to(dtype).requires_grad_()
        out = step(leaf, upsample)
        out.backward(grad.to(dtype))
        results.append((out.detach().double(), leaf.grad.double()))
    for a, b in zip(*results):
        assert (a - b).abs().max().item() <= 2e-5 * max(b.abs().max().item(), 1.0)


def test_a_bicubic_fit_upsamples_with_the_step_and_the_decoder_does_not():
    x = torch.randn(1, 2, 6, 5)
    fitted = network.upsample2x(x.clone().requires_grad_(), "bicubic")
    decoded = network.upsample2x(x, "bicubic")
    assert (type(fitted.grad_fn).__name__ == "_Upsample2xBackward") == fused.available()
    assert (fitted.detach() - decoded).abs().max().item() < 1e-5


@needs_compiler
@pytest.mark.parametrize("upsample", [None, "bilinear", "bicubic"])
def test_the_result_does_not_depend_on_the_number_of_threads(upsample):
    g = torch.Generator().manual_seed(2)
    z, grad = torch.randn(1, 7, 15, 10, generator=g), torch.randn(1, 7, 30, 20, generator=g)
    if upsample is None:
        z = torch.randn(1, 7, 30, 20, generator=g)
    gain, bias = torch.rand(7, generator=g), torch.randn(7, generator=g)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            results.append(_run(functools.partial(fused.norm_activation, eps=NORMALIZATION_EPS), z, gain, bias, "sine",
                                grad, upsample))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@needs_compiler
@pytest.mark.parametrize("upsample", ["bilinear", "bicubic"])
def test_a_fit_takes_the_step_and_a_forward_pass_without_gradient_does_not(upsample):
    config = NetworkConfig((8, 8, 4, 4), (1,) * 4, 8, 3, 2, upsample=upsample, activation="sine")
    net = Generator(config).load(reference_weights(config, 0))
    noise = fixed_input(config, 0, 32, 32)

    def steps(node, seen):
        if node is None or node in seen:
            return set()
        seen.add(node)
        return {type(node).__name__}.union(*(steps(child, seen) for child, _ in node.next_functions))

    assert "_NormActivationBackward" in steps(net(noise).grad_fn, set())
    with fused.disabled():
        assert "_NormActivationBackward" not in steps(net(noise).grad_fn, set())
        unfused = net(noise)
    with torch.no_grad():
        plain = net(noise)
    assert torch.equal(plain, unfused.detach())  # what the decoder computes
    assert (net(noise).detach() - plain).abs().max().item() < 1e-5


def test_the_environment_can_turn_it_off():
    code = "from dipcodec import fused; print(fused.available())"
    env = {**os.environ, "DIPCODEC_FUSED": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"]


@needs_compiler
@pytest.mark.parametrize("taps, planes", [(3, 12), (5, 12), (3, 4)])
def test_the_block_filter_matches_a_dense_convolution(taps, planes):
    """A kernel that is block-diagonal in blocks of 4 planes (a post-filter on the unshuffled planes):
    the same output and input gradient as ``F.conv2d`` with the whole kernel."""
    g = torch.Generator().manual_seed(3)
    kernel = torch.zeros(planes, planes, taps, taps)
    for first in range(0, planes, 4):
        kernel[first:first + 4, first:first + 4] = torch.randn(4, 4, taps, taps, generator=g)
    offset = torch.randn(1, planes, 1, 1, generator=g)
    x = torch.randn(1, planes, 9 + taps, 14 + taps, generator=g)
    grad = torch.randn(1, planes, 10, 15, generator=g)
    results = []
    for step, dtype in ((lambda t: fused.block_filter(t, kernel, offset, 4), torch.float32),
                        (lambda t: F.conv2d(t, kernel.double()) + offset.double(), torch.float64)):
        leaf = x.to(dtype).clone().requires_grad_()
        out = step(leaf)
        out.backward(grad.to(dtype))
        results.append((out.detach().double(), leaf.grad.double()))
    for ours, theirs in zip(*results):
        assert (ours - theirs).abs().max().item() < 1e-4 * theirs.abs().max().item()


@needs_compiler
def test_a_fit_through_a_post_filter_takes_the_block_filter_with_pytorchs_gradient():
    from dipcodec.fit import FilteredMSE
    from dipcodec.postfilter import PostFilter

    g = torch.Generator().manual_seed(4)
    codes = tuple(tuple(int(v) for v in torch.randint(-20, 21, (26,), generator=g)) for _ in range(12))
    loss = FilteredMSE.of(PostFilter(5, 8, codes, phases=4))
    planes = torch.rand(1, 12, 16, 20, generator=g)
    target = torch.rand(1, 12, 16, 20, generator=g)
    values, gradients = [], []
    for off in (False, True):
        leaf = planes.clone().requires_grad_()
        with fused.disabled() if off else contextlib.nullcontext():
            value = loss.packed(leaf, target)
        value.backward()
        values.append(value.item())
        gradients.append(leaf.grad)
    assert values[0] == pytest.approx(values[1], rel=1e-5)
    assert (gradients[0] - gradients[1]).abs().max().item() < 1e-5 * gradients[1].abs().max().item()
