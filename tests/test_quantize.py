"""Uniform quantization of weight deltas."""

from __future__ import annotations

import numpy as np
import pytest

from dipcodec.quantize import (MAX_SENSITIVITY_SHIFT, MAX_SYMBOL, STEP_CODE_RANGE, dequantize, quantize, step_codes_for,
                               step_from_code, step_scales)


@pytest.mark.parametrize(
    "code,step",
    [(0, 1.0), (16, 2.0), (32, 4.0), (-16, 0.5), (-32, 0.25), (STEP_CODE_RANGE[0], 2.0**-32), (STEP_CODE_RANGE[1], 256.0)],
)
def test_step_from_code_exact_powers_of_two(code, step):
    s = step_from_code(code)
    assert isinstance(s, np.float32)
    assert s == np.float32(step)  # exact, not approximately


def test_step_from_code_is_monotone_and_16_codes_per_octave():
    steps = [float(step_from_code(c)) for c in range(-64, 65)]
    assert all(a < b for a, b in zip(steps, steps[1:]))
    assert float(step_from_code(8)) == pytest.approx(2**0.5, rel=1e-6)
    assert float(step_from_code(1)) / float(step_from_code(0)) == pytest.approx(2 ** (1 / 16), rel=1e-6)


def _tensors(seed: int):
    rng = np.random.default_rng(seed)
    shapes = [(8, 4, 3, 3), (8,), (12, 8, 1, 1), (12,)]
    reference = [rng.uniform(-0.3, 0.3, s).astype(np.float32) for s in shapes]
    weights = [(r + rng.normal(0, 0.05, r.shape)).astype(np.float32) for r in reference]
    return weights, reference


@pytest.mark.parametrize("codes", [[0, 0, 0, 0], [-48, -64, -40, -80], [-100, -20, -70, -55]])
def test_quantization_error_is_at_most_half_a_step(codes):
    weights, reference = _tensors(1)
    symbols = quantize(weights, reference, codes)
    restored = dequantize(symbols, reference, codes)
    for w, r, q, code in zip(weights, restored, symbols, codes):
        assert q.dtype == np.int32 and q.shape == w.shape
        assert r.dtype == np.float32 and r.shape == w.shape
        step = float(step_from_code(code))
        # half a step, plus float32 rounding of the values themselves
        assert np.max(np.abs(r.astype(np.float64) - w)) <= step / 2 + 1e-6


def test_fine_steps_give_small_errors_and_coarse_steps_give_zero_deltas():
    weights, reference = _tensors(2)
    fine = dequantize(quantize(weights, reference, [-160] * 4), reference, [-160] * 4)
    assert max(float(np.max(np.abs(f - w))) for f, w in zip(fine, weights)) < 2**-10
    coarse = quantize(weights, reference, [STEP_CODE_RANGE[1]] * 4)
    assert all(not q.any() for q in coarse)
    # zero deltas dequantize to the reference exactly
    assert all(np.array_equal(d, r) for d, r in zip(dequantize(coarse, reference, [STEP_CODE_RANGE[1]] * 4), reference))


def test_values_on_the_grid_roundtrip_exactly():
    rng = np.random.default_rng(3)
    reference = [np.zeros(50, np.float32)]
    q = rng.integers(-1000, 1000, 50).astype(np.int32)
    weights = dequantize([q], reference, [-40])
    assert np.array_equal(quantize(weights, reference, [-40])[0], q)


def test_quantize_clips_to_max_symbol():
    reference = [np.zeros(3, np.float32)]
    weights = [np.array([1e9, -1e9, 3.0], np.float32)]
    q = quantize(weights, reference, [0])[0]
    assert q.tolist() == [MAX_SYMBOL, -MAX_SYMBOL, 3]


def test_quantize_rounds_to_nearest():
    reference = [np.zeros(6, np.float32)]
    weights = [np.array([0.4, 0.6, -0.4, -0.6, 1.49, -2.51], np.float32)]
    assert quantize(weights, reference, [0])[0].tolist() == [0, 1, 0, -1, 1, -3]


def test_mismatched_lists_are_rejected():
    weights, reference = _tensors(4)
    with pytest.raises(ValueError):
        quantize(weights, reference, [0, 0, 0])
    with pytest.raises(ValueError):
        dequantize(quantize(weights, reference, [0] * 4), reference[:3], [0] * 4)


@pytest.mark.parametrize("fineness", [0.0, 3.0, 4.5, 8.0])
def test_step_codes_put_about_2_to_the_fineness_steps_in_the_delta_rms(fineness):
    weights, reference = _tensors(5)
    codes = step_codes_for(step_scales(weights, reference), fineness)
    assert len(codes) == len(weights) and all(isinstance(c, int) for c in codes)
    for w, r, code in zip(weights, reference, codes):
        rms = float(np.sqrt(np.mean(np.square(w.astype(np.float64) - r))))
        steps_per_rms = rms / float(step_from_code(code))
        assert steps_per_rms == pytest.approx(2**fineness, rel=2 ** (1 / 32) - 1 + 1e-9)


def test_step_scales_follow_the_delta_not_the_weight():
    # A normalization gain: weights near their reference 1, moved by about 0.01.
    reference = [np.ones(64, np.float32)]
    weights = [reference[0] + np.float32(0.01) * np.sign(np.arange(64) - 31.5).astype(np.float32)]
    assert step_scales(weights, reference)[0] == pytest.approx(np.log2(0.01), abs=1e-4)


def test_step_scales_give_sensitive_tensors_finer_steps():
    weights, reference = _tensors(6)
    plain = step_scales(weights, reference)
    # Tensor 0 four times as sensitive as the others: its step is half theirs (1/sqrt(4)), whatever the
    # tensors' own scales; equally sensitive tensors get equal steps.
    tuned = step_scales(weights, reference, [4.0, 1.0, 1.0, 1.0])
    assert tuned[0] - tuned[1] == pytest.approx(-1.0)
    assert tuned[1] == pytest.approx(tuned[2]) and tuned[2] == pytest.approx(tuned[3])
    counts = np.array([w.size for w in weights])
    shift = np.array(tuned) - np.array(plain)
    assert float(np.sum(counts * shift)) == pytest.approx(0.0, abs=1e-9)  # centred over weights


def test_step_scales_bound_the_sensitivity_shift():
    weights, reference = _tensors(7)
    plain = step_scales(weights, reference)
    tuned = step_scales(weights, reference, [1e12, 1e-12, 1.0, 1.0])
    assert all(abs(t - p) <= MAX_SENSITIVITY_SHIFT + 1e-9 for t, p in zip(tuned, plain))
    assert tuned[0] - plain[0] == pytest.approx(-MAX_SENSITIVITY_SHIFT)


def test_step_codes_are_clipped_and_zero_deltas_get_unit_scale():
    zeros = [np.zeros(4, np.float32)] * 3
    scales = step_scales([np.zeros(4, np.float32), np.full(4, 1e30, np.float32), np.full(4, 1e-30, np.float32)],
                         zeros)
    assert scales[0] == 0.0  # an unmoved tensor is treated as RMS 1
    codes = step_codes_for(scales, 4.0)
    assert all(STEP_CODE_RANGE[0] <= c <= STEP_CODE_RANGE[1] for c in codes)
    assert codes[1] == STEP_CODE_RANGE[1] and codes[2] == STEP_CODE_RANGE[0]
    assert codes[0] == round(16 * (0 - 4.0))
