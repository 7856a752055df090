"""Entropy coding of quantized weights: round trips, the rate estimate, and damaged streams."""

from __future__ import annotations

import numpy as np
import pytest

from dipcodec.entropy import (
    SCALE_CODE_RANGE,
    TensorModel,
    decode_symbols,
    encode_symbols,
    estimate_bits,
    fit_model,
)
from dipcodec.errors import DecodeError, DipcodecError
from dipcodec.quantize import MAX_SYMBOL


def laplace_tensors(seed: int) -> list[np.ndarray]:
    """Several Laplace-like integer tensors of different scales, a constant one and a single element."""
    rng = np.random.default_rng(seed)
    tensors = [
        np.rint(rng.laplace(0.0, 3.0, (8, 4, 1, 1))).astype(np.int32),
        np.rint(rng.laplace(0.0, 0.3, 200)).astype(np.int32),  # mostly zeros
        np.rint(rng.laplace(-5.0, 40.0, (10, 10, 3, 3))).astype(np.int32),
        np.full((6, 3), 7, np.int32),  # constant: low == high
        np.array([-11], np.int32),  # a single element
        np.rint(rng.laplace(2.0, 1.0, 33)).astype(np.int32),
    ]
    return tensors


def roundtrip(tensors: list[np.ndarray]) -> tuple[bytes, list[np.ndarray], list[TensorModel]]:
    models = [fit_model(t) for t in tensors]
    data = encode_symbols(tensors, models)
    out = decode_symbols(data, models, [t.size for t in tensors])
    return data, out, models


@pytest.mark.parametrize("seed", range(5))
def test_roundtrip_laplace_tensors(seed):
    tensors = laplace_tensors(seed)
    data, out, models = roundtrip(tensors)
    assert isinstance(data, bytes) and len(data) % 4 == 0 and len(data) > 0
    assert len(out) == len(tensors)
    for original, decoded in zip(tensors, out):
        assert decoded.dtype == np.int32
        assert np.array_equal(decoded, original.ravel())


def test_constant_and_single_element_tensors_cost_no_bits():
    tensors = [np.full(5, 3, np.int32), np.array([1], np.int32), np.full((2, 2), -4, np.int32)]
    models = [fit_model(t) for t in tensors]
    assert all(m.low == m.high for m in models)
    assert [m.center for m in models] == [3, 1, -4]
    data = encode_symbols(tensors, models)
    assert data == b""
    out = decode_symbols(data, models, [5, 1, 4])
    assert [o.tolist() for o in out] == [[3] * 5, [1], [-4] * 4]
    assert estimate_bits(tensors, models) == 0


def test_constant_tensors_between_coded_ones():
    rng = np.random.default_rng(7)
    tensors = [np.zeros(10, np.int32), np.rint(rng.laplace(0, 2, 50)).astype(np.int32), np.full(3, -2, np.int32)]
    _, out, _ = roundtrip(tensors)
    assert all(np.array_equal(a, b) for a, b in zip(out, tensors))


def test_roundtrip_extreme_symbols():
    t = np.array([-MAX_SYMBOL, MAX_SYMBOL] + [0] * 300 + [1, -1], np.int32)
    _, out, models = roundtrip([t])
    assert models[0].low == -MAX_SYMBOL and models[0].high == MAX_SYMBOL
    assert np.array_equal(out[0], t)


@pytest.mark.parametrize("scale_code", [SCALE_CODE_RANGE[0], 0, SCALE_CODE_RANGE[1]])
def test_roundtrip_under_any_valid_model(scale_code):
    # Symbols far from the centre under a very narrow model must still be codable (leaky model).
    model = TensorModel(center=0, scale_code=scale_code, low=-MAX_SYMBOL, high=MAX_SYMBOL)
    t = np.array([MAX_SYMBOL, -MAX_SYMBOL, 0, 12345], np.int32)
    data = encode_symbols([t], [model])
    assert np.array_equal(decode_symbols(data, [model], [4])[0], t)


def test_fit_model_describes_the_data():
    rng = np.random.default_rng(3)
    t = np.rint(rng.laplace(4.0, 8.0, 5000)).astype(np.int32)
    m = fit_model(t)
    assert (m.low, m.high) == (int(t.min()), int(t.max()))
    assert m.center == 4
    assert 6.0 < m.scale < 10.0  # near the true scale 8
    m.validate()


def test_estimate_bits_matches_real_size_for_a_large_sample():
    rng = np.random.default_rng(11)
    tensors = [
        np.rint(rng.laplace(2.0, 5.0, 150_000)).astype(np.int32),
        np.rint(rng.laplace(0.0, 0.7, 50_000)).astype(np.int32),
        np.rint(rng.laplace(-3.0, 60.0, 20_000)).astype(np.int32),
    ]
    models = [fit_model(t) for t in tensors]
    real_bits = 8 * len(encode_symbols(tensors, models))
    estimate = estimate_bits(tensors, models)
    assert estimate == pytest.approx(real_bits, rel=0.03)


def test_fit_model_chooses_a_near_optimal_scale():
    rng = np.random.default_rng(5)
    t = np.rint(rng.laplace(0.0, 4.0, 20_000)).astype(np.int32)
    m = fit_model(t)
    best = estimate_bits([t], [m])
    for code in (m.scale_code - 8, m.scale_code + 8):
        other = TensorModel(m.center, code, m.low, m.high)
        assert estimate_bits([t], [other]) >= best


# ---------------------------------------------------------------- damaged streams


@pytest.fixture(scope="module")
def coded():
    tensors = laplace_tensors(42)
    models = [fit_model(t) for t in tensors]
    return encode_symbols(tensors, models), models, [t.size for t in tensors]


def _decode_error_or_nothing(data, models, sizes):
    """Decoding damaged data may only raise DecodeError (with a one-line message)."""
    try:
        out = decode_symbols(data, models, sizes)
    except DecodeError as exc:
        assert "\n" not in str(exc)
        return exc
    # If it happens to decode, the output must at least have the declared sizes.
    assert [o.size for o in out] == sizes
    return None


def test_truncated_streams_raise_decode_error(coded):
    data, models, sizes = coded
    assert len(data) > 8
    for words in range(1, len(data) // 4):
        with pytest.raises(DecodeError):
            decode_symbols(data[: 4 * words], models, sizes)


def test_streams_missing_leading_words_never_raise_anything_else(coded):
    data, models, sizes = coded
    errors = sum(_decode_error_or_nothing(data[4 * k :], models, sizes) is not None for k in range(1, len(data) // 4))
    assert errors >= 0.9 * (len(data) // 4 - 1)


def test_garbage_words_never_raise_anything_else(coded):
    _, models, sizes = coded
    errors = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        garbage = rng.integers(0, 256, 4 * int(rng.integers(1, 120)), dtype=np.uint8).tobytes()
        errors += _decode_error_or_nothing(garbage, models, sizes) is not None
    assert errors >= 190  # garbage is almost never accepted


@pytest.mark.parametrize("damage", ["zero_word_appended", "zero_word_at_end", "word_appended", "bit_flip"])
def test_modified_streams_raise_decode_error(coded, damage):
    data, models, sizes = coded
    if damage == "zero_word_appended":
        bad = data + b"\0\0\0\0"
    elif damage == "zero_word_at_end":
        bad = data[:-4] + b"\0\0\0\0"
    elif damage == "word_appended":
        bad = data + b"\x01\0\0\0"
    else:
        bad = bytearray(data)
        bad[-1] ^= 0x40  # the last word is the top of the ANS stack: read first
        bad = bytes(bad)
    with pytest.raises(DecodeError):
        decode_symbols(bad, models, sizes)


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_length_not_multiple_of_four_raises_decode_error(coded, cut):
    data, models, sizes = coded
    with pytest.raises(DecodeError, match="multiple of 4"):
        decode_symbols(data[:-cut], models, sizes)
    with pytest.raises(DecodeError, match="multiple of 4"):
        decode_symbols(data + b"\0" * (4 - cut), models, sizes)


def test_fewer_sizes_than_models_raises_decode_error(coded):
    data, models, sizes = coded
    with pytest.raises(DecodeError):
        decode_symbols(data, models, sizes[:-1])


def test_decode_validates_models():
    with pytest.raises(DecodeError):
        decode_symbols(b"", [TensorModel(center=0, scale_code=0, low=5, high=3)], [1])


def test_decode_error_is_a_dipcodec_error_and_a_value_error():
    assert issubclass(DecodeError, DipcodecError) and issubclass(DecodeError, ValueError)


def test_symbols_at_the_bottom_of_the_range_roundtrip_under_a_given_model():
    # With ANS, symbols at `low` coded first cost nothing (the coder state stays 0): the empty stream is
    # the exact encoding of all-`low` tensors, so decoding it to all-`low` is correct, not a missed error.
    model = TensorModel(center=0, scale_code=16, low=-5, high=5)
    lows = np.full(10, -5, np.int32)
    data = encode_symbols([lows], [model])
    assert data == b""
    assert np.array_equal(decode_symbols(data, [model], [10])[0], lows)
    mixed = np.array([-5, -5, 3, -5], np.int32)
    data = encode_symbols([mixed], [model])
    assert data != b""
    assert np.array_equal(decode_symbols(data, [model], [4])[0], mixed)


# ---------------------------------------------------------------- model validation


@pytest.mark.parametrize(
    "model",
    [
        TensorModel(center=0, scale_code=0, low=3, high=2),  # empty range
        TensorModel(center=0, scale_code=0, low=-MAX_SYMBOL - 1, high=0),
        TensorModel(center=0, scale_code=0, low=0, high=MAX_SYMBOL + 1),
        TensorModel(center=MAX_SYMBOL + 1, scale_code=0, low=0, high=1),
        TensorModel(center=-MAX_SYMBOL - 1, scale_code=0, low=0, high=1),
        TensorModel(center=0, scale_code=SCALE_CODE_RANGE[0] - 1, low=0, high=1),
        TensorModel(center=0, scale_code=SCALE_CODE_RANGE[1] + 1, low=0, high=1),
    ],
)
def test_validate_rejects_out_of_range_models(model):
    with pytest.raises(DecodeError):
        model.validate()


@pytest.mark.parametrize(
    "model",
    [
        TensorModel(center=0, scale_code=0, low=0, high=0),
        TensorModel(center=MAX_SYMBOL, scale_code=SCALE_CODE_RANGE[0], low=-MAX_SYMBOL, high=MAX_SYMBOL),
        TensorModel(center=-MAX_SYMBOL, scale_code=SCALE_CODE_RANGE[1], low=-1, high=1),
    ],
)
def test_validate_accepts_boundary_models(model):
    model.validate()
