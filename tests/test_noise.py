"""The seeded generator is part of the file format: its values are pinned bit for bit."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest

import dipcodec.noise as noise
from dipcodec.noise import INPUT_STREAM, splitmix64, uniform, weight_stream


def test_splitmix64_pinned_values():
    out = splitmix64(0, 0, 3)
    assert out.dtype == np.uint64
    assert [int(v) for v in out] == [0xA706DD2F4D197E6F, 0xB382A305F4414F5E, 0x631A9154FBABF717]


def test_uniform_pinned_values():
    out = uniform(0, 0, (4,))
    assert out.dtype == np.float32
    expected = np.array(
        [np.float32(0.6524485), np.float32(0.7012121), np.float32(0.38712412), np.float32(0.6564137)],
        dtype=np.float32,
    )
    assert np.array_equal(out, expected)
    # The same values, spelled exactly: 24 random bits times 2**-24.
    assert [float(v) for v in out] == [
        float.fromhex("0x1.4e0dbap-1"),
        float.fromhex("0x1.670546p-1"),
        float.fromhex("0x1.8c6a44p-2"),
        float.fromhex("0x1.501574p-1"),
    ]


def test_uniform_is_the_top_24_bits_of_splitmix64():
    bits = splitmix64(7, 3, 100) >> np.uint64(40)
    assert np.array_equal(uniform(7, 3, (10, 10)).ravel(), bits.astype(np.float64) / 2**24)


def test_counter_mode_prefix_property():
    # Value i depends only on (seed, stream, i): a longer draw extends a shorter one.
    assert np.array_equal(splitmix64(5, 2, 1000)[:10], splitmix64(5, 2, 10))


def test_same_call_twice_gives_same_result():
    assert np.array_equal(splitmix64(123, 4, 50), splitmix64(123, 4, 50))
    a, b = uniform(99, 1, (3, 5, 7), -0.25, 0.75), uniform(99, 1, (3, 5, 7), -0.25, 0.75)
    assert a.shape == (3, 5, 7)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("other", [(1, 0), (0, 1), (2**32, 0), (0, weight_stream(5))])
def test_different_seeds_and_streams_differ(other):
    base = splitmix64(0, 0, 64)
    alt = splitmix64(*other, 64)
    assert not np.any(base == alt)  # 64-bit values: a single collision would be astonishing


def test_streams_of_one_seed_do_not_overlap():
    # Stream k is not a shifted copy of stream j (a classic counter-mode mistake).
    a = set(splitmix64(3, 0, 2000).tolist())
    b = set(splitmix64(3, 1, 2000).tolist())
    assert not a & b


def test_weight_streams_are_distinct_from_the_input_stream():
    ids = [INPUT_STREAM] + [weight_stream(k) for k in range(20)]
    assert len(set(ids)) == len(ids)


def test_largest_seed_and_stream_accepted():
    top = 2**64 - 1
    assert splitmix64(top, top, 2).shape == (2,)


@pytest.mark.parametrize("seed,stream", [(-1, 0), (0, -1), (2**64, 0), (0, 2**64)])
def test_out_of_range_seed_or_stream_rejected(seed, stream):
    with pytest.raises(ValueError):
        splitmix64(seed, stream, 1)


@pytest.mark.parametrize("low,high", [(0.0, 1.0), (-0.5, 0.5), (-3.0, 7.0), (2.0, 2.5)])
def test_uniform_values_in_half_open_range(low, high):
    out = uniform(11, 2, (20000,), low, high)
    assert out.dtype == np.float32
    assert out.min() >= np.float32(low)
    assert out.max() < np.float32(high)
    # and it is spread over the range, not stuck in a corner
    assert out.min() < low + 0.01 * (high - low)
    assert out.max() > high - 0.01 * (high - low)
    assert abs(float(out.mean()) - (low + high) / 2) < 0.02 * (high - low)


def _all_ones(seed, stream, start, count):
    return np.full(count, np.uint64(2**64 - 1), dtype=np.uint64)


def test_uniform_extreme_draw_stays_below_high_for_the_codecs_ranges():
    # The largest possible draw (all random bits set) must still be < high for every range the codec
    # uses: [0, 1) for the input and +-1/sqrt(fan_in) (rounded to float32) for the weights.
    with mock.patch.object(noise, "_stream_values", _all_ones):
        assert uniform(0, 0, (1,))[0] < np.float32(1.0)
        for fan_in in range(1, 3000):
            bound = float(np.float32(1.0 / math.sqrt(fan_in)))
            assert uniform(0, 0, (1,), -bound, bound)[0] < np.float32(bound), fan_in


def test_uniform_smallest_draw_is_low():
    with mock.patch.object(noise, "_stream_values", lambda s, t, start, n: np.zeros(n, dtype=np.uint64)):
        assert uniform(0, 0, (2,), -0.3, 0.7)[0] == np.float32(-0.3)


def test_empty_shape():
    assert uniform(0, 0, (0, 3)).shape == (0, 3)
    assert splitmix64(0, 0, 0).shape == (0,)


def test_chunked_generation_matches_the_stream_across_chunk_boundaries():
    from dipcodec.noise import _CHUNK

    count = _CHUNK + 5
    values = uniform(3, 2, (count,))
    expected = (splitmix64(3, 2, count) >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
    assert np.array_equal(values, expected)
