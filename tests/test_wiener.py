"""The sliding-DCT Wiener refinement that ends ``restore denoise`` (whose use there test_restoration
checks), and the classic denoiser built on it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from conftest import make_image, psnr
from dipcodec.restoration.wiener import BLOCK, sliding_dct_denoise, wiener_refine


def _noisy(clean: np.ndarray, sigma: float, seed: int = 2) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, clean.shape)
    return np.clip(np.round(clean + noise), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("gray", [False, True])
def test_refinement_keeps_what_the_guide_knows_and_recovers_what_it_blurred(gray):
    clean = make_image(48, 64, gray)
    noisy = _noisy(clean, 20)
    # guided by the clean image itself (an oracle), nearly all the noise goes
    oracle = wiener_refine(noisy, clean, 20)
    assert oracle.dtype == np.uint8 and oracle.shape == clean.shape
    assert psnr(clean, oracle) > psnr(clean, noisy) + 10
    # guided by a blur of the noisy image, it beats the blur: the edges come back from the noisy image
    blurred = gaussian_filter(noisy.astype(np.float64), 1.5 if gray else (1.5, 1.5, 0))
    assert psnr(clean, wiener_refine(noisy, blurred, 20)) > psnr(clean, np.round(blurred).astype(np.uint8)) + 1.5
    # a second pass, guided by the first, improves on one
    assert psnr(clean, wiener_refine(noisy, blurred, 20, passes=2)) > psnr(clean, wiener_refine(noisy, blurred, 20,
                                                                                                passes=1))


def test_classic_denoiser_removes_noise_in_colour_and_gray():
    for gray in (False, True):
        clean = make_image(48, 64, gray)
        noisy = _noisy(clean, 20)
        denoised = sliding_dct_denoise(noisy, 20)
        assert denoised.shape == clean.shape and denoised.dtype == np.uint8
        assert psnr(clean, denoised) > psnr(clean, noisy) + 8


def test_no_noise_or_no_whole_block_leaves_the_best_answer_at_hand():
    clean = make_image(24, 32)
    guide = np.full(clean.shape, 100.4)
    assert np.array_equal(wiener_refine(clean, guide, 0.0), clean)  # nothing to remove
    assert np.array_equal(sliding_dct_denoise(clean, 0.0), clean)
    tiny = clean[: BLOCK - 1]
    assert np.array_equal(wiener_refine(tiny, guide[: BLOCK - 1], 20), np.full(tiny.shape, 100, np.uint8))
    assert np.array_equal(sliding_dct_denoise(tiny, 20), tiny)
    with pytest.raises(ValueError, match="shape"):
        wiener_refine(clean, clean[..., 0], 20)


def test_rows_are_filtered_in_bands_without_seams(monkeypatch):
    from dipcodec.restoration import wiener

    clean = make_image(40, 24)
    noisy = _noisy(clean, 15)
    whole = wiener_refine(noisy, clean, 15)
    monkeypatch.setattr(wiener, "_BAND_BLOCKS", 5 * 24)  # 5 block rows a band: 33 in 7 bands
    assert np.abs(wiener_refine(noisy, clean, 15).astype(int) - whole).max() <= 1
