"""The network: shapes, the seeded reference, its activation, and the computation order the format leaves free."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dipcodec
from dipcodec import network
from dipcodec.container import VERSION, Bitstream, network_bytes, pack, parse_network
from dipcodec.entropy import encode_symbols, fit_model
from dipcodec.errors import DecodeError
from dipcodec.network import (Generator, NetworkConfig, _tf32_switches, fixed_input, full_float32, padded_size,
                              reference_weights, upsample2x)
from dipcodec.quantize import quantize

from conftest import with_crc

TAPERED = NetworkConfig(channels=(12, 12, 6), kernel_sizes=(1, 1, 1), input_channels=12, out_channels=3, shuffle=2)


SINE = dataclasses.replace(TAPERED, activation="sine")
BICUBIC = dataclasses.replace(TAPERED, upsample="bicubic")


def _upsample_then_convolve(config: NetworkConfig, weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The forward pass exactly as docs/FORMAT.md defines it, without the convolve-first shortcut."""
    activation = torch.sin if config.activation == "sine" else F.relu
    for stage, k in enumerate(config.kernel_sizes):
        conv_w, gain, bias = weights[3 * stage : 3 * stage + 3]
        if stage > 0:
            x = F.interpolate(x, scale_factor=2, mode=config.upsample, align_corners=False)
        x = activation(F.group_norm(F.conv2d(x, conv_w), conv_w.shape[0], gain, bias, eps=1e-5))
    x = F.pixel_shuffle(F.conv2d(x, weights[-2], weights[-1]), config.shuffle)
    return torch.sigmoid(x)


@pytest.mark.parametrize("config", [TAPERED, SINE, BICUBIC], ids=["relu", "sine", "bicubic"])
def test_convolve_first_equals_upsample_then_convolve(config):
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.5, s).astype(np.float32) for s in config.tensor_shapes()]
    net = Generator(config).load(weights)
    noise = fixed_input(config, 3, 32, 48)
    with torch.no_grad():
        fast = net(noise)
        reference = _upsample_then_convolve(config, [torch.from_numpy(w) for w in weights], noise)
    assert fast.shape == reference.shape == (1, 3, 32, 48)
    assert torch.max(torch.abs(fast - reference)).item() < 1e-5


@pytest.mark.parametrize("height, width", [(1, 3), (5, 7), (64, 65), (130, 200)])
def test_bicubic_upsampling_is_torchs_in_blocks(height, width):
    # Done as banded matrix products of 64 inputs at a time; the blocks must meet without a seam.
    x = torch.from_numpy(np.random.default_rng(height).random((2, 3, height, width)))
    reference = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    assert torch.max(torch.abs(upsample2x(x, "bicubic") - reference)).item() < 1e-12
    assert torch.max(torch.abs(upsample2x(x, "bicubic") - upsample2x(x, "bilinear"))).item() > 1e-3


@pytest.mark.parametrize("height, width", [(1, 1), (1, 5), (4, 1), (7, 9), (32, 48)])
def test_bilinear_upsampling_has_torchs_image_and_gradient(height, width):
    # The fit's upsampling computes its own gradient (PyTorch's is slow on a CPU): the same image,
    # bit for bit, and the same gradient up to rounding, sides of 1 (both ends one sample) included.
    rng = np.random.default_rng(height * 100 + width)
    x = torch.from_numpy(rng.normal(size=(2, 3, height, width))).requires_grad_()
    ours, torchs = upsample2x(x, "bilinear"), F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert ours.grad_fn is not None and "Bilinear2x" in type(ours.grad_fn).__name__
    assert torch.equal(ours, torchs)
    grad = torch.from_numpy(rng.normal(size=ours.shape))
    (mine,), (reference,) = torch.autograd.grad(ours, x, grad), torch.autograd.grad(torchs, x, grad)
    assert torch.allclose(mine, reference, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: upsample2x(t, "bilinear"), (x[:1, :1, :3, :4].detach().requires_grad_(),))


@pytest.mark.parametrize("kernel, bias", [(1, False), (1, True), (3, True)])
def test_convolve_is_conv2d_forward_and_backward(kernel, bias):
    # 1x1 kernels run as matrix products: the same function and the same gradients, up to rounding.
    rng = np.random.default_rng(kernel)
    x = torch.from_numpy(rng.normal(size=(2, 5, 6, 7))).requires_grad_()
    w = torch.from_numpy(rng.normal(size=(4, 5, kernel, kernel))).requires_grad_()
    b = torch.from_numpy(rng.normal(size=4)).requires_grad_() if bias else None
    ours, torchs = network._convolve(x, w, b), F.conv2d(x, w, b)
    assert ours.shape == torchs.shape == (2, 4, 7 - kernel, 8 - kernel)
    assert torch.allclose(ours, torchs, rtol=0, atol=1e-12)
    grad = torch.from_numpy(rng.normal(size=ours.shape))
    inputs = [x, w] + ([b] if bias else [])
    for mine, reference in zip(torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(torchs, inputs, grad)):
        assert torch.allclose(mine, reference, rtol=0, atol=1e-12)

def test_bicubic_networks_are_upsample_byte_2_from_version_4_on():
    from dipcodec.container import file_version

    written = network_bytes(BICUBIC)
    assert written[-1] == 2 and network_bytes(TAPERED)[-1] == 0  # ReLU: no activation byte follows
    assert parse_network(written) == BICUBIC
    with pytest.raises(DecodeError, match="not defined before version 4"):
        parse_network(written, bicubic=False)
    with pytest.raises(DecodeError, match="invalid network description"):
        parse_network(written[:-1] + bytes([3]))
    # Only a bicubic network needs version 4: every other file stays readable by version-3 decoders.
    assert (file_version(BICUBIC), file_version(TAPERED), file_version(SINE)) == (4, 3, 3)


def test_the_activation_changes_the_function():
    weights = reference_weights(TAPERED, 0)
    noise = fixed_input(TAPERED, 3, 32, 48)
    with torch.no_grad():
        relu, sine = Generator(TAPERED).load(weights)(noise), Generator(SINE).load(weights)(noise)
    assert torch.mean(torch.abs(relu - sine)).item() > 1e-3


def test_relu_descriptions_are_unchanged_and_sine_adds_one_byte():
    # A ReLU network is written as versions 1 and 2 wrote it (base model ids depend on these bytes).
    assert network_bytes(TAPERED) == bytes([3, 12, 12, 1, 12, 1, 6, 1, 3, 2, 0])
    assert network_bytes(SINE) == network_bytes(TAPERED) + bytes([1])
    assert parse_network(network_bytes(SINE)) == SINE
    assert parse_network(network_bytes(TAPERED)) == TAPERED


@pytest.mark.parametrize("payload, message", [
    (network_bytes(TAPERED) + bytes([0]), "invalid activation"),  # ReLU is never written as a byte
    (network_bytes(TAPERED) + bytes([2]), "invalid activation"),
    (network_bytes(SINE) + bytes([1]), "trailing bytes"),
])
def test_bad_activation_bytes_are_decode_errors(payload, message):
    with pytest.raises(DecodeError, match=message):
        parse_network(payload)


def test_the_activation_byte_is_refused_before_version_3():
    with pytest.raises(DecodeError, match="trailing bytes"):
        parse_network(network_bytes(SINE), activation_byte=False)


def test_a_version_2_file_cannot_carry_a_sine_network():
    weights = reference_weights(SINE, 5)
    symbols = quantize(weights, weights, [0] * len(weights))
    models = [fit_model(s) for s in symbols]
    data = pack(Bitstream(width=48, height=32, channels=3, seed=5, network=SINE, step_codes=(0,) * len(weights),
                          models=tuple(models), weights=encode_symbols(symbols, models)))
    assert data[4] == 3 < VERSION  # the oldest version that holds a sine network
    assert dipcodec.decode(data).shape == (32, 48, 3)
    assert dipcodec.info(data)["architecture"]["activation"] == "sine"
    body = bytearray(data[:-4])
    body[4] = 2
    with pytest.raises(DecodeError, match="trailing bytes"):
        dipcodec.decode(with_crc(body))


def test_tensor_shapes_match_the_parameter_count():
    shapes = TAPERED.tensor_shapes()
    assert len(shapes) == 3 * 3 + 2
    assert TAPERED.parameter_count() == sum(int(np.prod(s)) for s in shapes)
    assert shapes[-2] == (3 * 2 * 2, 6, 1, 1)


def test_reference_weights_are_seeded_and_bounded():
    a, b, c = (reference_weights(TAPERED, seed) for seed in (1, 1, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert np.all(a[1] == 1) and np.all(a[2] == 0)  # normalization gain and bias
    assert np.max(np.abs(a[0])) <= 1 / np.sqrt(12)


@pytest.mark.parametrize("size, expected", [((32, 48), (32, 48)), ((33, 47), (40, 48)), ((8, 8), (8, 8))])
def test_padded_size_rounds_up_to_the_stride(size, expected):
    assert TAPERED.stride == 8
    assert padded_size(TAPERED, *size) == expected


def _tf32_allowed() -> bool:
    return [getattr(owner, name) for owner, name, _ in _tf32_switches()] != [v for _, _, v in _tf32_switches()]


def test_full_float32_turns_tf32_off_and_gives_the_callers_own_setting_back():
    owner, name, _ = _tf32_switches()[1]  # the matrix products' flag, set to a value of the caller's own
    callers, mine = getattr(owner, name), ("tf32" if name == "fp32_precision" else True)
    setattr(owner, name, mine)
    try:
        with pytest.raises(RuntimeError):
            with full_float32():
                with full_float32():  # nested, as fit runs inside code_image
                    assert not _tf32_allowed()
                assert not _tf32_allowed()
                raise RuntimeError("the setting comes back on the way out")
        assert getattr(owner, name) == mine and _tf32_allowed()
    finally:
        setattr(owner, name, callers)


def test_full_float32_holds_until_the_last_thread_leaves():
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with full_float32():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with full_float32():
            second_in.set()
            first_out.wait(5)
            seen["after the first left"] = _tf32_allowed()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"after the first left": False} and _tf32_allowed()


def test_the_fit_and_the_decoder_convolve_in_float32(monkeypatch):
    """On a GPU, TF32 convolutions would make a file decode to other pixels than on a CPU."""
    seen = []
    convolve = network._convolve
    monkeypatch.setattr(network, "_convolve", lambda *a, **k: (seen.append(_tf32_allowed()), convolve(*a, **k))[1])
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    data = dipcodec.encode(image, bpp=8.0, preset="fast")
    coded = len(seen)
    dipcodec.decode(data)
    assert coded > 100 and len(seen) > coded and not any(seen)
