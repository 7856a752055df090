"""The post-filter: its integer arithmetic and classes as FORMAT.md §6.2 defines them, the encoder's
least-squares solve, its section in the container, and the encoder's choice of it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import dipcodec
from dipcodec.container import Bitstream, _section, pack, post_filter_section, unpack, zigzag
from dipcodec.encoder import encode_detailed
from dipcodec.errors import DecodeError
from dipcodec.postfilter import MAX_BANDS, MAX_CODE, MAX_THRESHOLD, PostFilter, activity, classify
from dipcodec.postfilter_fit import (POST_FILTER_PRECISION, choose_post_filter, normal_equations,
                                     post_filter_candidates, solve_post_filter)

from conftest import make_image, with_crc


def _mirror(i: int, n: int) -> int:
    return -i if i < 0 else 2 * (n - 1) - i if i >= n else i


def _activity_by_the_letter(planes: np.ndarray, y: int, x: int) -> int:
    """FORMAT.md §6.2's activity of one pixel, in plain Python integers."""
    height, width = planes.shape[:2]
    level = lambda i, j: int(planes[_mirror(i, height), _mirror(j, width)].astype(int).sum())  # noqa: E731
    total = 0
    for i in range(y - 2, y + 3):
        for j in range(x - 2, x + 3):
            i, j = _mirror(i, height), _mirror(j, width)
            total += abs(level(i, j + 1) - level(i, j - 1)) + abs(level(i + 1, j) - level(i - 1, j))
    return total


def _by_the_letter(post_filter: PostFilter, pixels: np.ndarray) -> np.ndarray:
    """FORMAT.md §6.2 in plain Python integers: the pixel's class, mirrored neighbours, weights, offset,
    round half up, clamp."""
    planes = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
    height, width, channels = planes.shape
    radius, unit = post_filter.taps // 2, 1 << post_filter.precision
    bands = len(post_filter.thresholds) + 1

    out = np.empty(planes.shape, np.uint8)
    for c in range(channels):
        for y in range(height):
            for x in range(width):
                band = sum(_activity_by_the_letter(planes, y, x) >= t for t in post_filter.thresholds)
                phase = 2 * (y % 2) + x % 2 if post_filter.phases == 4 else 0
                codes = post_filter.codes[c * post_filter.classes + phase * bands + band]
                total = codes[-1]
                for dy in range(-radius, radius + 1):
                    for dx in range(-radius, radius + 1):
                        index = (dy + radius) * post_filter.taps + dx + radius
                        weight = codes[index] + (unit if dy == dx == 0 else 0)
                        total += weight * int(planes[_mirror(y + dy, height), _mirror(x + dx, width), c])
                out[y, x, c] = min(max((total + unit // 2) // unit, 0), 255)
    return out.reshape(pixels.shape)


@pytest.mark.parametrize("taps, precision, phases, thresholds",
                         [(1, 0, 1, ()), (3, 8, 1, ()), (5, 6, 1, ()), (9, 16, 1, ()),
                          (3, 8, 4, ()), (3, 8, 1, (900, 1500, 2100)), (5, 7, 4, (1400,))])
def test_apply_is_the_integer_rule_of_the_format(taps, precision, phases, thresholds):
    rng = np.random.default_rng(taps)
    pixels = rng.integers(0, 256, (11, 13, 3), dtype=np.uint8)
    pixels[:5] //= 8  # a quiet top, so that every activity band has pixels
    spread = 1 << max(precision - 2, 0)
    classes = phases * (len(thresholds) + 1)
    codes = tuple(tuple(int(v) for v in rng.integers(-spread, spread + 1, taps * taps + 1)) for _ in range(3 * classes))
    post_filter = PostFilter(taps, precision, codes, phases, thresholds)
    if thresholds:
        assert set(np.unique(classify(pixels, phases, thresholds) % (len(thresholds) + 1))) == set(range(len(thresholds) + 1))
    np.testing.assert_array_equal(post_filter.apply(pixels), _by_the_letter(post_filter, pixels))


@pytest.mark.parametrize("shape", [(8, 9), (8, 8, 3), (12, 10, 1)])
def test_activity_is_the_rule_of_the_format(shape):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    planes = pixels.reshape(shape[0], shape[1], -1)
    expected = [[_activity_by_the_letter(planes, y, x) for x in range(shape[1])] for y in range(shape[0])]
    np.testing.assert_array_equal(activity(pixels), expected)
    assert activity(np.full(shape, 77, np.uint8)).max() == 0


def test_classes_are_phase_then_band():
    pixels = np.zeros((6, 8), np.uint8)
    pixels[:, 4:] = 200  # a vertical edge: active columns around it, quiet far from it
    act = activity(pixels)
    assert act[0, 0] == 0 and act[0, 4] > 0
    np.testing.assert_array_equal(classify(pixels, 1, ()), np.zeros((6, 8)))
    np.testing.assert_array_equal(classify(pixels, 4, ())[:2, :2], [[0, 1], [2, 3]])
    band = classify(pixels, 1, (1,))
    np.testing.assert_array_equal(band, act >= 1)
    np.testing.assert_array_equal(classify(pixels, 4, (1,)), 2 * classify(pixels, 4, ()) + band)


def test_apply_rounds_halves_up_and_clamps():
    # A 1x1 filter at 2^-1: weight 1/2 + offset. 3 * 1/2 = 1.5 rounds to 2; 1 * 1/2 = 0.5 to 1.
    halve = PostFilter(1, 1, ((-1, 0),))
    assert halve.apply(np.array([[3, 1], [0, 255]], np.uint8)).tolist() == [[2, 1], [0, 128]]
    brighten = PostFilter(1, 0, ((0, 100),))
    assert brighten.apply(np.array([[3, 200]], np.uint8)).tolist() == [[103, 255]]


def test_the_identity_filter_changes_nothing():
    pixels = make_image(20, 17)
    for taps in (1, 3, 7):
        identity = PostFilter(taps, 8, ((0,) * (taps * taps + 1),) * 3)
        np.testing.assert_array_equal(identity.apply(pixels), pixels)


def test_least_squares_finds_a_filter_that_made_the_image():
    """An image blurred by a known 3x3 filter (and brightened by 2 levels) is un-done by nothing
    better than that filter's inverse problem: the solver finds the filter that maps the blurred
    image back, and it beats the blurred image by far."""
    rng = np.random.default_rng(3)
    original = np.clip(make_image(48, 40).astype(int) + rng.integers(-20, 21, (48, 40, 3)), 0, 255).astype(np.uint8)
    blur = PostFilter(3, 8, ((16, 16, 16, 16, -128, 16, 16, 16, 16, 2 * 256),) * 3)
    blurred = blur.apply(original)
    solved = solve_post_filter(normal_equations(blurred, original, 5), 5, 8)
    before = np.mean((blurred.astype(float) - original) ** 2)
    after = np.mean((solved.apply(blurred).astype(float) - original) ** 2)
    assert after < 0.5 * before


def test_coefficients_rounded_one_at_a_time_beat_rounding_them_all_at_once():
    """The inverse of a blur has large taps that cancel one another, so rounding its least-squares
    solution all at once throws much of it away at a coarse precision; rounding the taps one at a
    time, each rounding's error re-solved into the taps not yet rounded, keeps most of it."""
    rng = np.random.default_rng(5)
    original = np.clip(make_image(48, 64).astype(int) + rng.integers(-40, 41, (48, 64, 3)), 0, 255).astype(np.uint8)
    decoded = PostFilter(3, 4, ((1, 2, 1, 2, -12, 2, 1, 2, 1, 0),) * 3).apply(original)
    systems = normal_equations(decoded, original, 5)
    identity = np.eye(26)[12]
    solutions = [np.linalg.lstsq(systems.grams[c, 0], systems.rhs[c, 0], rcond=None)[0] for c in range(3)]
    unrounded = sum(systems.energy[c, 0] - systems.rhs[c, 0] @ solutions[c] for c in range(3))
    for precision in (3, 4):
        at_once = PostFilter(5, precision, tuple(tuple(int(v) for v in np.round((s - identity) * 2**precision))
                                                 for s in solutions))
        one_at_a_time = solve_post_filter(systems, 5, precision)
        lost_at_once = systems.squared_error(at_once) - unrounded
        lost_one_at_a_time = systems.squared_error(one_at_a_time) - unrounded
        assert 0 <= lost_one_at_a_time < 0.1 * lost_at_once


def test_smaller_filters_solved_from_a_wider_system_equal_their_own_solve():
    decoded, original = make_image(30, 26), make_image(30, 26)[::-1].copy()
    wide = normal_equations(decoded, original, 7)
    for taps in (1, 3, 5):
        assert solve_post_filter(wide, taps, 8) == solve_post_filter(normal_equations(decoded, original, taps), taps, 8)


def test_normal_equations_do_not_depend_on_the_bands(monkeypatch):
    import dipcodec.postfilter_fit as postfilter_fit

    decoded, original = make_image(33, 21), make_image(33, 21, gray=False)[:, ::-1].copy()
    cells = classify(decoded, 4, (300,))
    whole = normal_equations(decoded, original, 5, cells, 8)
    monkeypatch.setattr(postfilter_fit, "_BAND_PIXELS", 50)  # bands of two rows
    banded = normal_equations(decoded, original, 5, cells, 8)
    for name in ("grams", "rhs", "energy"):  # integer sums: exact in float64
        np.testing.assert_array_equal(getattr(whole, name), getattr(banded, name))


def test_per_class_systems_are_each_class_on_its_own():
    """A class's system is the one-class system of its pixels alone: merging cells, solving, and the
    predicted error all agree with doing it by hand on the class's pixels."""
    rng = np.random.default_rng(8)
    decoded = make_image(30, 28)
    original = np.clip(decoded.astype(int) + rng.integers(-9, 10, decoded.shape), 0, 255).astype(np.uint8)
    cells = classify(decoded, 4, (200, 600, 1200))
    finest = normal_equations(decoded, original, 5, cells, 16)
    merged = finest.merged(np.array([phase for phase in range(4) for _ in range(4)]), 4)  # phases alone
    direct = normal_equations(decoded, original, 5, classify(decoded, 4, ()), 4)
    np.testing.assert_allclose(merged.grams, direct.grams, rtol=0, atol=0)
    post_filter = solve_post_filter(merged, 3, 8, phases=4)
    assert post_filter.classes == 4 and len(post_filter.codes) == 12
    # The predicted error is the float filter's: no rounding to levels, no clamping.
    features = np.lib.stride_tricks.sliding_window_view(np.pad(decoded, ((1, 1), (1, 1), (0, 0)), mode="reflect"),
                                                        (3, 3), axis=(0, 1))
    classes = classify(decoded, 4, ())
    total = 0.0
    for index in range(12):
        c, k = divmod(index, 4)
        w = post_filter.weights(index).ravel() / 256
        mask = classes == k
        predicted = features[..., c, :, :][mask].reshape(-1, 9) @ w + post_filter.codes[index][-1] / 256
        total += np.sum((predicted - original[..., c][mask]) ** 2)
    assert merged.squared_error(post_filter) == pytest.approx(total, rel=1e-9)


def test_a_stream_with_a_post_filter_packs_as_version_5_and_round_trips(encoded_rgb):
    plain = dataclasses.replace(unpack(encoded_rgb), post_filter=None, version=None)
    unfiltered = pack(plain)
    assert unfiltered[4] == 3  # a sine network without a filter: still version 3
    post_filter = PostFilter(3, 8, tuple(tuple(range(-5, 5)) for _ in range(3)))
    filtered = dataclasses.replace(plain, post_filter=post_filter)
    data = pack(filtered)
    assert data[4] == 5 and len(data) == len(unfiltered) + len(post_filter_section(post_filter))
    assert unpack(data).post_filter == post_filter
    np.testing.assert_array_equal(dipcodec.decode(data), post_filter.apply(dipcodec.decode(unfiltered)))
    with pytest.raises(ValueError, match="only plain files"):
        pack(dataclasses.replace(filtered, mode="denoise"))


@pytest.mark.parametrize("channels", [3, 1])
def test_a_stream_with_classes_packs_as_version_6_and_round_trips(encoded_rgb, channels):
    """Every class field survives the container, multi-byte thresholds up to the limit included, and
    the decoder filters by class; a version-6 section of one class (never written) is read too."""
    stream = dataclasses.replace(unpack(encoded_rgb), post_filter=None, version=None)
    if channels == 1:
        stream = unpack(dipcodec.encode(make_image(32, 32, gray=True), bpp=2.0, preset="fast"))
        stream = dataclasses.replace(stream, post_filter=None, version=None)
    thresholds = (1, 127, 128, 300, 5000, 2**14, MAX_THRESHOLD)
    codes = tuple(tuple(int(v) for v in np.random.default_rng(i).integers(-300, 301, 10)) for i in range(channels * 32))
    post_filter = PostFilter(3, 8, codes, 4, thresholds)
    data = pack(dataclasses.replace(stream, post_filter=post_filter))
    assert data[4] == 6 and unpack(data).post_filter == post_filter
    unfiltered = dipcodec.decode(pack(stream))
    np.testing.assert_array_equal(dipcodec.decode(data), post_filter.apply(unfiltered))
    # One class in a version-6 section: phases 1, bands 1, no thresholds.
    plain = pack(stream)
    body = bytearray(plain[:-4])
    body[4] = 6
    one = PostFilter(3, 8, codes[:channels])
    body += _section(b"F", bytes([3, 8, 1, 1]) + b"".join(zigzag(v) for c in one.codes for v in c))
    forged = with_crc(body)
    assert unpack(forged).post_filter == one
    np.testing.assert_array_equal(dipcodec.decode(forged), one.apply(unfiltered))


def test_the_encoder_weighs_the_classes_it_can_split():
    """A flat image has no activity to split: only one-band candidates. On a textured one every
    classification is tried, and each predicted error is the measured one but for rounding."""
    flat = np.full((32, 32, 3), 90, np.uint8)
    assert {len(f.thresholds) for f, _ in post_filter_candidates(flat, flat)} == {0}
    original = make_image(48, 64)
    decoded = np.clip(original.astype(int) + np.random.default_rng(2).integers(-15, 16, original.shape), 0, 255
                      ).astype(np.uint8)
    candidates = post_filter_candidates(decoded, original)
    assert {(f.phases, len(f.thresholds) + 1) for f, _ in candidates} == {(1, 1), (1, 2), (1, 4), (4, 1), (4, 2), (4, 4)}
    for post_filter, predicted in candidates:
        measured = np.mean((post_filter.apply(decoded).astype(float) - original) ** 2)
        assert measured == pytest.approx(predicted, abs=0.05 + 0.01 * predicted)


def test_validation_limits():
    PostFilter(9, 16, ((MAX_CODE,) * 82,)).validate(1)
    PostFilter(1, 8, ((0, 0),) * 4 * MAX_BANDS, 4, tuple(range(1, MAX_BANDS))).validate(1)
    for bad, reason in [(PostFilter(3, 8, ((0,) * 10,) * 2), "one filter per channel"),
                        (PostFilter(3, 8, ((0,) * 9,)), "one filter per channel"),
                        (PostFilter(1, 8, ((0, 0),) * 2, 4), "one filter per channel and class"),
                        (PostFilter(1, 8, ((0, 0),) * 2, 2), "phases 2"),
                        (PostFilter(1, 8, ((0, 0),) * 3, 1, (5, 5)), "rise strictly"),
                        (PostFilter(1, 8, ((0, 0),) * 2, 1, (0,)), "rise strictly"),
                        (PostFilter(1, 8, ((0, 0),) * 2, 1, (MAX_THRESHOLD + 1,)), "rise strictly"),
                        (PostFilter(1, 8, ((0, 0),) * (MAX_BANDS + 1), 1, tuple(range(1, MAX_BANDS + 1))), "bands"),
                        (PostFilter(3, 8, ((MAX_CODE + 1,) + (0,) * 9,)), "out of range"),
                        (PostFilter(-1, 8, ((0,),)), "taps -1"), (PostFilter(1, -1, ((0, 0),)), "precision -1")]:
        with pytest.raises(DecodeError, match=reason):
            bad.validate(1)


def test_a_filter_is_chosen_only_where_it_pays():
    original = make_image(48, 40)
    blur = PostFilter(3, 8, ((16, 16, 16, 16, -128, 16, 16, 16, 16, 0),) * 3)
    blurred = blur.apply(original)
    assert choose_post_filter(original, original, 2000) is None  # nothing to gain
    chosen = choose_post_filter(blurred, original, 2000)
    assert chosen is not None and chosen.taps in (3, 5, 7) and chosen.precision == POST_FILTER_PRECISION
    # No section fits in 10 bytes more; in a file of 60 bytes in all, none may take half of it.
    assert choose_post_filter(blurred, original, 2000, max_bytes=2010) is None
    assert choose_post_filter(blurred, original, 60, fixed_total=True) is None
    assert choose_post_filter(blurred, original, 20000, fixed_total=True) is not None
    with pytest.raises(ValueError, match="positive"):
        choose_post_filter(blurred, original, 0)


def test_classes_are_chosen_where_the_error_differs_by_class():
    """A network image off by a different level in each phase of the pixel shuffle: only filters of
    4 phases can take the four offsets out, and the encoder picks one; told one class, it cannot."""
    original = make_image(64, 64)
    rows, columns = np.indices((64, 64)) % 2
    shift = np.array([[12, -12], [6, -6]])[rows, columns][..., None]
    decoded = np.clip(original.astype(int) + shift, 0, 255).astype(np.uint8)
    chosen = choose_post_filter(decoded, original, 20000)
    assert chosen is not None and chosen.phases == 4 and chosen.classes == 4 * (len(chosen.thresholds) + 1)
    candidates = [c for c in post_filter_candidates(decoded, original) if c[0].classes == 1]
    one_class = choose_post_filter(decoded, original, 20000, candidates=candidates)
    assert one_class is None or one_class.classes == 1
    error = lambda f: np.mean((f.apply(decoded).astype(float) - original) ** 2) if f else np.mean((decoded.astype(float) - original) ** 2)  # noqa: E731
    assert error(chosen) < 0.1 * error(one_class)


@pytest.mark.parametrize("gray", [False, True], ids=["rgb", "gray"])
def test_the_encoder_files_a_filter_that_lifts_its_image(gray):
    """At 64x64 and quality 75 the section pays for itself: the file holds one filter per channel and
    class, decodes
    to what the encoder measured, and its image is closer to the source than the network's own."""
    pixels = make_image(64, 64, gray=gray)
    result = encode_detailed(pixels, quality=75, preset="fast")
    stream = unpack(result.data)
    assert stream.post_filter is not None and result.data[4] == (6 if stream.post_filter.classes > 1 else 5)
    assert len(stream.post_filter.codes) == (1 if gray else 3) * stream.post_filter.classes
    decoded = dipcodec.decode(result.data)
    np.testing.assert_array_equal(decoded, result.pixels)
    unfiltered = dipcodec.decode(pack(dataclasses.replace(stream, post_filter=None, version=None)))
    error = lambda image: np.mean((image.astype(float) - pixels) ** 2)  # noqa: E731
    assert error(decoded) < error(unfiltered)


def test_rate_control_counts_the_filter():
    """A 96x64 image at 1.5 bpp: the filter's section is inside the budget, and the file within 5% of it."""
    pixels = make_image(64, 96)
    data = dipcodec.encode(pixels, bpp=1.5, preset="fast")
    budget = int(1.5 * 96 * 64 / 8)
    assert unpack(data).post_filter is not None
    assert 0.95 * budget <= len(data) <= budget


@pytest.mark.parametrize("phases", [1, 4])
@pytest.mark.parametrize("taps", [3, 5, 7])
@pytest.mark.parametrize("size", [(12, 10), (13, 9), (4, 6)])
def test_the_encoder_fits_through_the_filter_the_decoder_applies(size, taps, phases):
    """The fit's float filter is the decoder's, but for its rounding: against the decoder's own output
    its loss is rounding noise, on the full-size image and on the unshuffled planes alike (even
    sides), while the same taps the other way round, or no filter, are far off."""
    import torch
    import torch.nn.functional as F

    from dipcodec.fit import FilteredMSE

    rng = np.random.default_rng(taps * phases)
    pixels = rng.integers(80, 176, (*size, 3), dtype=np.uint8)  # mid-grey: nothing clips
    codes = []
    for _ in range(3 * phases):
        tap_codes = rng.integers(-30, 31, taps * taps)
        tap_codes[taps * taps // 2] -= tap_codes.sum()  # the taps sum to one: nothing brightens into a clip
        codes.append(tuple(int(v) for v in tap_codes) + (int(rng.integers(-300, 301)),))
    codes = tuple(codes)
    post_filter = PostFilter(taps, 8, codes, phases)
    decoded = post_filter.apply(pixels)
    assert 0 < decoded.min() and decoded.max() < 255
    as_tensor = lambda image: torch.from_numpy(image.transpose(2, 0, 1).copy()).float()[None] / 255  # noqa: E731
    padded_output = F.pad(as_tensor(pixels), (0, 6, 0, 4))  # the network's padded size
    rounding = (0.5 / 255) ** 2
    flipped = PostFilter(taps, 8, tuple(c[:-1][::-1] + c[-1:] for c in codes), phases)
    identity = PostFilter(taps, 8, ((0,) * (taps * taps + 1),) * 3)
    loss = lambda f: FilteredMSE.of(f)(padded_output, as_tensor(decoded)).item()  # noqa: E731
    assert loss(post_filter) <= rounding
    assert loss(flipped) > 20 * rounding and loss(identity) > 20 * rounding
    if size[0] % 2 == 0 and size[1] % 2 == 0:
        # On the planes: the same image, borders included (its planes are padded as a mirror would).
        planes = FilteredMSE.of(post_filter).filtered_planes(F.pixel_unshuffle(as_tensor(pixels), 2))
        assert (F.pixel_shuffle(planes, 2) - as_tensor(decoded)).abs().max() <= 0.5 / 255 + 1e-6


def test_the_fit_refuses_a_filter_by_activity():
    """Activity bands would move with the image at every step of a fit."""
    from dipcodec.fit import FilteredMSE

    with pytest.raises(ValueError, match="activity"):
        FilteredMSE.of(PostFilter(3, 8, ((0,) * 10,) * 2, 1, (5,)))
