"""The subtitle detector on frames drawn here: outlined text found, bright scenery left alone."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

from dipcodec.restoration.subtitles import subtitle_mask

H, W = 240, 427


def _text(text: str, row: float, scale: int = 3) -> np.ndarray:
    """Where ``text`` in Pillow's default font, scaled ``scale`` times, covers an H x W frame."""
    small = Image.new("L", (W // scale, H // scale), 0)
    draw = ImageDraw.Draw(small)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (small.width - (right - left)) // 2 - left
    y = int(row * small.height) - (bottom - top) // 2 - top
    draw.text((x, y), text, fill=255, font=font)
    big = np.asarray(small.resize((small.width * scale, small.height * scale), Image.NEAREST)) > 127
    out = np.zeros((H, W), bool)
    out[: big.shape[0], : big.shape[1]] = big
    return out


def _background(seed: int) -> np.ndarray:
    """A float H x W x 3 scene: a dark-to-light sandy ramp with smooth noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(60, 210, W)[None, :, None] * np.array([1.0, 0.9, 0.7])
    texture = ndi.gaussian_filter(rng.normal(0, 25, (H, W, 1)), 2)
    return np.clip(ramp + texture, 0, 255)


def _composite(scene: np.ndarray, alpha: np.ndarray, value: float) -> np.ndarray:
    return scene * (1 - alpha[..., None]) + value * alpha[..., None]


def _subtitled(seed: int = 0, row: float = 0.8, text: str = "Where are we going?"):
    """A frame with white, black-outlined, anti-aliased text, and the text's true mask."""
    fill = _text(text, row)
    glyphs = ndi.gaussian_filter(ndi.binary_dilation(fill, iterations=2).astype(float), 0.6)
    frame = _composite(_background(seed), glyphs, 15)
    frame = _composite(frame, ndi.gaussian_filter(fill.astype(float), 0.6), 245)
    return frame.round().astype(np.uint8), glyphs > 0.5


def _scores(mask: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hits = (mask & truth).sum()
    return hits / truth.sum(), hits / max(mask.sum(), 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_finds_outlined_text(seed):
    frame, truth = _subtitled(seed)
    mask = subtitle_mask(frame)
    assert mask.shape == truth.shape and mask.dtype == bool
    recall, precision = _scores(mask, truth)
    assert recall >= 0.95
    assert precision >= 0.75


def test_frame_without_subtitles_gives_empty_mask():
    frame = _background(0).round().astype(np.uint8)
    assert subtitle_mask(frame).sum() <= 0.001 * H * W


def test_bright_objects_without_outline_are_left_alone():
    scene = _background(3)
    scene[: H // 3] = [250, 250, 248]  # overexposed sky
    yy, xx = np.mgrid[:H, :W]
    scene[(yy - 180) ** 2 + (xx - 300) ** 2 < 15**2] = 245  # white ball on the sand
    scene[200:204, 150:] = 240  # painted line
    scene = _composite(scene, _text("no outline here", 0.6), 245)  # white text, no outline
    assert subtitle_mask(scene.round().astype(np.uint8)).sum() <= 0.001 * H * W


def test_gray_input():
    frame, truth = _subtitled(2)
    gray = frame.mean(axis=2).round().astype(np.uint8)
    recall, precision = _scores(subtitle_mask(gray), truth)
    assert recall >= 0.95 and precision >= 0.75


def test_lower_frame_prior():
    frame, truth = _subtitled(0, row=0.2)
    assert not subtitle_mask(frame).any()
    recall, _ = _scores(subtitle_mask(frame, search_from=0.0), truth)
    assert recall >= 0.95


def test_pure_and_deterministic():
    frame, _ = _subtitled(0)
    before = frame.copy()
    first, second = subtitle_mask(frame), subtitle_mask(frame)
    assert np.array_equal(frame, before)
    assert np.array_equal(first, second)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((8, 8, 1), np.uint8),
        np.zeros(8, np.uint8),
        np.zeros((2, 8, 8, 3), np.uint8),
        np.zeros((8, 8, 3), np.float32),
    ],
)
def test_bad_input_raises(image):
    with pytest.raises(ValueError):
        subtitle_mask(image)


# ---------------------------------------------------------------- through the command line


@pytest.fixture
def subtitled_png(tmp_path):
    """The lower half of a subtitled frame, with the clean scene under it."""
    frame, _ = _subtitled(3)
    rows, cols = slice(128, 240), slice(0, W)
    path = tmp_path / "frame.png"
    Image.fromarray(frame[rows, cols]).save(path)
    return path, frame[rows, cols], _background(3).round().astype(np.uint8)[rows, cols]


def test_cli_mask_writes_the_detected_subtitles(subtitled_png, tmp_path):
    from dipcodec.cli import main

    path, frame, _ = subtitled_png
    out = tmp_path / "mask.png"
    assert main(["mask", "--subtitles", str(path), "-o", str(out)]) == 0
    written = np.asarray(Image.open(out))
    assert subtitle_mask(frame).sum() > 500
    assert np.array_equal(written, np.where(subtitle_mask(frame), 255, 0))
    assert main(["mask", "--subtitles", str(path), "-o", str(out)]) == 2  # exists: needs --force


def test_cli_restore_removes_subtitles(subtitled_png, tmp_path, capsys):
    from dipcodec.cli import main

    path, frame, clean = subtitled_png
    out = tmp_path / "restored.png"
    assert main(["restore", "inpaint", str(path), str(out), "--mask", "subtitles", "--preset", "fast", "--quiet"]) == 0
    restored = np.asarray(Image.open(out))
    mask = subtitle_mask(frame)
    assert np.array_equal(restored[~mask], frame[~mask])
    error = lambda image: float(np.mean((image[mask].astype(float) - clean[mask]) ** 2))
    assert error(restored) < error(frame) / 20
