"""The network: shapes, the seeded reference, and the computation order the format leaves free."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dipcodec.network import Generator, NetworkConfig, fixed_input, padded_size, reference_weights

TAPERED = NetworkConfig(channels=(12, 12, 6), kernel_sizes=(1, 1, 1), input_channels=12, out_channels=3, shuffle=2)


def _upsample_then_convolve(config: NetworkConfig, weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The forward pass exactly as docs/FORMAT.md defines it, without the convolve-first shortcut."""
    for stage, k in enumerate(config.kernel_sizes):
        conv_w, gain, bias = weights[3 * stage : 3 * stage + 3]
        if stage > 0:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.relu(F.group_norm(F.conv2d(x, conv_w), conv_w.shape[0], gain, bias, eps=1e-5))
    x = F.pixel_shuffle(F.conv2d(x, weights[-2], weights[-1]), config.shuffle)
    return torch.sigmoid(x)


def test_convolve_first_equals_upsample_then_convolve():
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.5, s).astype(np.float32) for s in TAPERED.tensor_shapes()]
    net = Generator(TAPERED).load(weights)
    noise = fixed_input(TAPERED, 3, 32, 48)
    with torch.no_grad():
        fast = net(noise)
        reference = _upsample_then_convolve(TAPERED, [torch.from_numpy(w) for w in weights], noise)
    assert fast.shape == reference.shape == (1, 3, 32, 48)
    assert torch.max(torch.abs(fast - reference)).item() < 1e-5


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
