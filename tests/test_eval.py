"""The measuring tools of ``dipcodec eval``: metrics, Bjontegaard deltas, mean curves, classic codecs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from dipcodec.evaluation import bd_psnr, bd_rate, jpeg_at_size, ms_ssim, psnr, ssim
from dipcodec.evaluation.classic import SPECS, ClassicEncoder, decode_classic, encode_classic
from dipcodec.evaluation.curves import interpolate, mean_curve, pareto_front
from dipcodec.evaluation.metrics import MS_SSIM_MIN_SIDE, measure

from conftest import make_image
from conftest import psnr as independent_psnr


def textured(height: int, width: int) -> np.ndarray:
    """make_image plus integer-only texture at several scales (no RNG, no floating point)."""
    y, x, c = np.mgrid[0:height, 0:width, 0:3]
    texture = (x // 8 * 29 + y // 8 * 53 + c * 40) % 60 + (x * 37 + y * 91 + c * 53) % 41 - 50
    return np.clip(make_image(height, width).astype(np.int64) + texture, 0, 255).astype(np.uint8)


def known_pair(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed case whose MS-SSIM was computed with pytorch_msssim (see test_ms_ssim_known_value)."""
    y, x, c = np.mgrid[0:height, 0:width, 0:3]
    a = (x // 8 * 29 + y // 8 * 53 + c * 40) % 200 + (x * 37 + y * 91 + c * 53) % 41
    b = np.clip(a // 2 + 60 + (x * x + 3 * y + 7 * c) % 61 - 30, 0, 255)
    return a.astype(np.uint8), b.astype(np.uint8)


# ---------------------------------------------------------------- metrics


def test_psnr_of_a_known_error():
    a = np.full((10, 10, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0, 0] = 110  # MSE = 100 / 300
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 * 3))
    assert psnr(a, a) == math.inf


def test_ssim_matches_scikit_image():
    a, b = known_pair(40, 52)
    expected = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255, channel_axis=-1)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-12)
    gray_expected = structural_similarity(a[:, :, 1], b[:, :, 1], gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=255)
    assert ssim(a[:, :, 1], b[:, :, 1]) == pytest.approx(gray_expected, abs=1e-12)


def test_ms_ssim_of_identical_images_is_one():
    a, _ = known_pair(MS_SSIM_MIN_SIDE, 170)
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_ms_ssim_known_value():
    # pytorch_msssim 1.0.0 on this pair as float64 tensors (N=1, C=3), data_range=255, default window and
    # weights: ms_ssim = 0.7727831629415745. Odd sides on purpose: they exercise the padded 2x2 pooling.
    # The last digits differ because pytorch_msssim builds its Gaussian window in float32.
    a, b = known_pair(165, 181)
    assert ms_ssim(a, b) == pytest.approx(0.7727831629415745, abs=2e-6)
    assert ssim(a, b) == pytest.approx(0.593942810069919, abs=2e-6)  # pytorch_msssim's ssim, same pair


def test_ms_ssim_falls_as_noise_grows():
    a = textured(170, 170)
    y, x, c = np.mgrid[0:170, 0:170, 0:3]
    pattern = (x * 7 + y * 13 + c * 5) % 11 - 5  # a fixed zero-mean disturbance
    values = [ms_ssim(a, np.clip(a + k * pattern, 0, 255).astype(np.uint8)) for k in (1, 3, 6)]
    assert 1 > values[0] > values[1] > values[2] > 0


def test_ms_ssim_refuses_small_images_and_measure_reports_none():
    a = textured(MS_SSIM_MIN_SIDE - 1, 200)
    with pytest.raises(ValueError, match="161"):
        ms_ssim(a, a)
    q = measure(a, a[::-1].copy())
    assert q.ms_ssim is None
    assert q.ssim == pytest.approx(ssim(a, a[::-1].copy()))
    assert q.psnr == pytest.approx(independent_psnr(a, a[::-1].copy()))


def test_measure_equals_the_separate_metrics():
    a, b = known_pair(170, 180)
    q = measure(a, b)
    assert (q.psnr, q.ssim, q.ms_ssim) == pytest.approx((psnr(a, b), ssim(a, b), ms_ssim(a, b)), abs=1e-12)


# ---------------------------------------------------------------- Bjontegaard


RATES = [0.12, 0.25, 0.5, 0.75, 1.0]
PSNRS = [25.0, 27.6, 30.1, 31.7, 32.8]


def test_bd_of_identical_curves_is_zero():
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0, abs=1e-9)
    assert bd_psnr(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("factor", [0.8, 1.25, 0.5])
def test_bd_rate_of_a_scaled_rate_is_that_factor(factor):
    scaled = [r * factor for r in RATES]
    assert bd_rate(RATES, PSNRS, scaled, PSNRS) == pytest.approx((factor - 1) * 100, abs=1e-9)


def test_bd_psnr_of_a_curve_shifted_up_one_db_is_one():
    assert bd_psnr(RATES, PSNRS, RATES, [p + 1 for p in PSNRS]) == pytest.approx(1.0, abs=1e-9)
    assert bd_psnr(RATES, PSNRS, RATES, [p - 0.5 for p in PSNRS]) == pytest.approx(-0.5, abs=1e-9)


def test_bd_rate_of_a_shift_on_a_log_linear_curve():
    # PSNR = 20 + 3 ln(rate): one more dB costs a factor exp(1/3) in rate, whatever the rate.
    rates = np.geomspace(0.1, 1.5, 6)
    anchor = 20 + 3 * np.log(rates)
    assert bd_rate(rates, anchor, rates, anchor + 1) == pytest.approx((math.exp(-1 / 3) - 1) * 100, abs=1e-9)
    assert bd_psnr(rates, anchor, rates, anchor + 1) == pytest.approx(1.0, abs=1e-9)


def test_bd_ignores_point_order():
    order = [3, 0, 4, 1, 2]
    shuffled = ([RATES[i] * 0.9 for i in order], [PSNRS[i] + 0.3 for i in order])
    in_order = ([r * 0.9 for r in RATES], [p + 0.3 for p in PSNRS])
    assert bd_rate(RATES, PSNRS, *shuffled) == pytest.approx(bd_rate(RATES, PSNRS, *in_order), abs=1e-12)


@pytest.mark.parametrize(
    "test_curve, message",
    [(([4.0, 5.0, 6.0], [40.0, 41.0, 42.0]), "overlap"),
     (([0.25, 0.5, 0.75], [28.0, 27.0, 29.0]), "rise"),
     (([0.5], [30.0]), "two or more"),
     (([0.0, 0.5], [20.0, 30.0]), "positive")],
)
def test_bd_refuses_unusable_curves(test_curve, message):
    with pytest.raises(ValueError, match=message):
        bd_rate(RATES, PSNRS, *test_curve)


# ---------------------------------------------------------------- mean curves


def test_pareto_front_drops_dominated_points():
    bpps = [0.5, 0.3, 0.6, 0.4, 0.6]
    values = [30.0, 28.0, 29.5, 29.0, 31.0]  # 0.6 -> 29.5 is beaten by 0.5 -> 30 and by 0.6 -> 31
    x, y = pareto_front(bpps, values)
    assert x.tolist() == [0.3, 0.4, 0.5, 0.6]
    assert y.tolist() == [28.0, 29.0, 30.0, 31.0]


def test_interpolate_is_exact_at_points_and_undefined_outside():
    at = interpolate([0.2, 0.4, 0.8], [25.0, 28.0, 31.0], [0.1, 0.2, 0.4, 0.6, 0.8, 0.9])
    assert np.isnan(at[0]) and np.isnan(at[-1])
    assert at[1:3].tolist() == [25.0, 28.0] and at[4] == 31.0
    assert 28.0 < at[3] < 31.0


def test_mean_curve_needs_every_image():
    a = ([0.2, 0.4, 0.8], [25.0, 28.0, 31.0])
    b = ([0.3, 0.4, 1.0], [27.0, 30.0, 33.0])
    m = mean_curve([a, b], [0.25, 0.4, 0.8])
    assert np.isnan(m[0])  # below b's sweep
    assert m[1] == pytest.approx(29.0)
    assert m[2] == pytest.approx((31.0 + interpolate(*b, [0.8])[0]) / 2)


# ---------------------------------------------------------------- classic codecs


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return textured(96, 128)


@pytest.fixture(scope="module")
def jpeg_sizes(photo) -> dict[int, int]:
    return {q: len(encode_classic("jpeg", photo, q)) for q in SPECS["jpeg"].settings}


def test_jpeg_sizes_grow_with_quality_on_the_test_image(jpeg_sizes):
    sizes = [jpeg_sizes[q] for q in sorted(jpeg_sizes)]
    assert all(b >= a for a, b in zip(sizes, sizes[1:]))  # the premise of bisection, checked here


@pytest.mark.parametrize("fraction", [0.15, 0.3, 0.5, 0.7, 0.9])
def test_bisection_returns_the_largest_file_within_the_budget(photo, jpeg_sizes, fraction):
    budget = int(fraction * max(jpeg_sizes.values()))
    found, fits = ClassicEncoder("jpeg", photo).largest_within(budget)
    best = max(q for q, n in jpeg_sizes.items() if n <= budget)
    assert fits and found.setting == best
    assert len(found.data) == jpeg_sizes[best] == max(n for n in jpeg_sizes.values() if n <= budget)
    assert best == 95 or jpeg_sizes[best + 1] > budget


def test_bisection_is_monotone_in_the_budget(photo, jpeg_sizes):
    encoder = ClassicEncoder("jpeg", photo)
    budgets = range(min(jpeg_sizes.values()), max(jpeg_sizes.values()) + 200, 150)
    found = [encoder.largest_within(b)[0] for b in budgets]
    assert [f.setting for f in found] == sorted(f.setting for f in found)
    assert [len(f.data) for f in found] == sorted(len(f.data) for f in found)
    assert all(len(f.data) <= b for f, b in zip(found, budgets))


def test_bisection_after_a_sweep_agrees_and_reuses_its_files(photo):
    budget = 2500
    cold, _ = ClassicEncoder("webp", photo).largest_within(budget)
    warm_encoder = ClassicEncoder("webp", photo)
    for s in SPECS["webp"].sweep:
        warm_encoder.at(s)
    before = len(warm_encoder.files)
    warm, _ = warm_encoder.largest_within(budget)
    assert warm.setting == cold.setting and warm.data == cold.data
    assert len(warm_encoder.files) - before <= 2  # a bracket of 4 qualities needs at most 2 more encodes


def test_a_budget_below_the_smallest_file_does_not_fit(photo, jpeg_sizes):
    found, fits = ClassicEncoder("jpeg", photo).largest_within(jpeg_sizes[1] - 1)
    assert not fits and found.setting == 1


@pytest.mark.parametrize("codec", ["jpeg", "webp", "jpeg2000", "avif"])
def test_each_codec_round_trips_and_grows_with_its_setting(photo, codec):
    spec = SPECS[codec]
    low, high = spec.sweep[len(spec.sweep) // 4], spec.sweep[3 * len(spec.sweep) // 4]
    small, big = encode_classic(codec, photo, low), encode_classic(codec, photo, high)
    assert len(small) < len(big)
    for data in (small, big):
        decoded = decode_classic(data)
        assert decoded.shape == photo.shape and decoded.dtype == np.uint8
    assert independent_psnr(photo, decode_classic(small)) < independent_psnr(photo, decode_classic(big))


def test_jpeg2000_lands_near_its_requested_rate(photo):
    pixels = photo.shape[0] * photo.shape[1]
    for requested in (0.5, 1.0, 2.0):
        bpp = 8 * len(encode_classic("jpeg2000", photo, requested)) / pixels
        assert 0.8 * requested <= bpp <= 1.1 * requested


def test_jpeg_at_size_keeps_its_contract(photo, jpeg_sizes):
    quality, data, decoded = jpeg_at_size(photo, jpeg_sizes[40])
    assert quality == 40 and len(data) == jpeg_sizes[40]
    assert np.array_equal(decoded, decode_classic(data))
    gray = photo[:, :, 0].copy()
    _, _, decoded_gray = jpeg_at_size(gray, 10_000)
    assert decoded_gray.shape == gray.shape
