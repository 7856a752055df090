"""Restoration modes: inpainting, super-resolution and denoising, in files and in one step."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import dipcodec
from conftest import make_image, psnr
from dipcodec.cli import main
from dipcodec.container import MAX_SIDE, unpack
from dipcodec.downsample import downsample
from dipcodec.encoder import PRESETS
from dipcodec.errors import DecodeError, InputError
from dipcodec.restoration.back_projection import back_project
from dipcodec.restoration.modes import Restoration, noise_level

pytestmark = pytest.mark.usefixtures("single_thread")


def _hole(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[height // 2 - 3 : height // 2 + 3, width // 4 : 3 * width // 4] = True
    return mask


@pytest.fixture(scope="module")
def sr_result():
    from dipcodec.encoder import encode_detailed

    return encode_detailed(make_image(12, 16), quality=75, preset="fast", restoration=Restoration("super-resolution", scale=4))


@pytest.fixture(scope="module")
def sr_file(sr_result) -> bytes:
    return sr_result.data


@pytest.fixture(scope="module")
def sr_psnr(sr_result) -> float:
    return sr_result.psnr


# ---------------------------------------------------------------- building blocks


def test_back_projection_makes_the_downscale_match_with_the_least_change():
    rng = np.random.default_rng(1)
    large = torch.from_numpy(rng.random((1, 3, 40, 56)))
    small = torch.from_numpy(rng.random((1, 3, 10, 14)))
    projected = back_project(large, small)
    assert torch.max(torch.abs(downsample(projected, 4) - small)).item() < 1e-9
    assert torch.max(torch.abs(projected - large)).item() > 0.05
    # an image whose downscale already matches is left as it is
    assert torch.max(torch.abs(back_project(projected, small) - projected)).item() < 1e-9
    # the change is the least one: any other consistent image is further away
    other = back_project(large + torch.from_numpy(rng.normal(0, 0.1, large.shape)), small)
    assert torch.linalg.norm(projected - large) < torch.linalg.norm(other - large)


@pytest.mark.parametrize("size", [(64, 96), (48, 20)])
def test_downsampler_is_pillows_lanczos(size):
    rng = np.random.default_rng(0)
    h, w = size
    # Content that never rings outside 0..255 (Pillow clips between its passes, the float map does not).
    image = np.clip(make_image(h, w).astype(int) + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)
    pillow = np.asarray(Image.fromarray(image).resize((-(-w // 4), -(-h // 4)), Image.LANCZOS)).astype(float)
    ours = downsample(torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float64)), 4)[0].numpy()
    difference = np.abs(np.clip(np.round(ours.transpose(1, 2, 0)), 0, 255) - pillow)
    assert difference.max() <= 1  # Pillow rounds to 8 bits between its two passes
    assert difference.mean() < 0.2


@pytest.mark.parametrize("sigma", [10, 25])
def test_noise_level_estimate(sigma):
    clean = make_image(96, 128).astype(float)
    noisy = np.clip(np.round(clean + np.random.default_rng(1).normal(0, sigma, clean.shape)), 0, 255)
    assert 255 * noise_level(noisy.astype(np.uint8)) == pytest.approx(sigma, rel=0.1)
    assert 255 * noise_level(make_image(96, 128)) < 2


def test_restoration_settings_are_checked():
    with pytest.raises(InputError, match="mask"):
        Restoration("inpaint")
    with pytest.raises(InputError, match="scale"):
        Restoration("super-resolution", scale=1)
    with pytest.raises(InputError, match="scale"):
        Restoration("denoise", scale=2)
    with pytest.raises(InputError, match="whole image"):
        Restoration("inpaint", mask=np.ones((16, 16), bool)).check(make_image(16, 16))
    with pytest.raises(InputError, match="mask is 8x8"):
        Restoration("inpaint", mask=np.ones((8, 8), bool)).check(make_image(16, 16))
    with pytest.raises(InputError, match="exceeds"):
        Restoration("super-resolution", scale=8).check(make_image(16, MAX_SIDE // 4))
    with pytest.raises(InputError, match="one restoration"):
        dipcodec.encode(make_image(16, 16), sr=2, denoise=True)


def test_the_encoder_knows_restorations_only_by_what_it_asks_of_them():
    from dipcodec.encoder import RestorationSpec

    for restoration in (Restoration("inpaint", mask=_hole(16, 16)), Restoration("super-resolution", scale=2),
                        Restoration("denoise")):
        assert isinstance(restoration, RestorationSpec)
    code = "import dipcodec.encoder, sys; print(sorted(m for m in sys.modules if m.startswith('dipcodec.restoration')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # plain coding loads no restoration code


# ---------------------------------------------------------------- inpainting


def test_inpainting_ignores_the_missing_pixels():
    image, mask = make_image(24, 32), _hole(24, 32)
    scribbled = image.copy()
    scribbled[mask] = [255, 255, 255]
    first = dipcodec.encode(image, mask=mask, quality=75, preset="fast")
    assert dipcodec.encode(scribbled, mask=mask, quality=75, preset="fast") == first
    assert dipcodec.info(first)["mode"] == "inpaint"
    assert dipcodec.encode(scribbled, quality=75, preset="fast") != first


def test_restore_inpaint_keeps_known_pixels_and_fills_the_hole():
    clean, mask = make_image(32, 48), _hole(32, 48)
    damaged = clean.copy()
    damaged[mask] = [255, 255, 255]
    restored = dipcodec.restore(damaged, "inpaint", mask=mask, preset="fast")
    assert np.array_equal(restored[~mask], damaged[~mask])
    # The fill is near the true content (a smooth gradient there), far from what was painted over it.
    assert psnr(clean[mask], restored[mask]) > psnr(clean[mask], damaged[mask]) + 10


def test_restore_inpaint_fits_a_window_around_the_holes():
    from dipcodec.restoration.restore import INPAINT_MIN_SIDE, hole_window

    mask = np.zeros((480, 854), bool)
    mask[100:110, 200:300] = True
    rows, cols = hole_window(mask, 16)
    assert (rows.start, rows.stop) == (73, 73 + INPAINT_MIN_SIDE) and (cols.start, cols.stop) == (184, 316)
    corner = np.zeros((480, 854), bool)
    corner[475:, 850:] = True  # grown to the minimum side, shifted back inside the image
    assert hole_window(corner, 16) == (slice(416, 480), slice(790, 854))
    assert hole_window(np.ones((20, 30), bool), 16) == (slice(0, 20), slice(0, 30))

    clean, hole = make_image(96, 160), np.zeros((96, 160), bool)
    hole[40:48, 100:120] = True
    far = clean.copy()
    far[:, :40] = 0  # outside the window: cannot change the fill
    first = dipcodec.restore(clean, "inpaint", mask=hole, preset="fast")
    assert np.array_equal(dipcodec.restore(far, "inpaint", mask=hole, preset="fast")[hole], first[hole])
    assert np.array_equal(first[~hole], clean[~hole])
    assert psnr(clean[hole], first[hole]) > 25
    # nothing to fill: the image comes back as it was, without a fit
    assert np.array_equal(dipcodec.restore(clean, "inpaint", mask=np.zeros_like(hole), preset="fast"), clean)


def test_restore_averages_the_fits_of_successive_seeds(monkeypatch):
    from dipcodec.restoration import restore as restore_module

    monkeypatch.setattr(restore_module, "RESTORE_WIDTH", 16)  # what is averaged matters here, not how wide
    monkeypatch.setattr(restore_module, "back_project", lambda large, small: large)  # tested on its own
    small = make_image(12, 16)
    singles = [dipcodec.restore(small, "super-resolution", preset="fast", seed=s).astype(int) for s in (7, 8)]
    monkeypatch.setitem(restore_module.RESTORE_FITS, "fast", 2)
    calls = []
    both = dipcodec.restore(small, "super-resolution", preset="fast", seed=7,
                            progress=lambda done, total, _: calls.append((done, total)))
    n = PRESETS["fast"].iterations
    assert calls[n - 1] == (n, 2 * n) and calls[-1] == (2 * n, 2 * n)  # one bar over both fits
    assert not np.array_equal(*singles)
    # the mean of the two images, up to each one's rounding to uint8
    assert np.abs(both - (singles[0] + singles[1]) / 2).max() <= 1
    # fits that stop at the noise level early: the bar counts the iterations they ran
    calls.clear()
    flat = np.clip(np.round(128 + np.random.default_rng(0).normal(0, 25, (32, 32, 3))), 0, 255).astype(np.uint8)
    dipcodec.restore(flat, "denoise", preset="fast", progress=lambda done, total, _: calls.append(done))
    assert len(calls) < 2 * n and calls == list(range(1, len(calls) + 1))


@pytest.mark.parametrize("height, width, gray, factor", [(12, 16, False, 4), (13, 17, True, 3)])
def test_restored_super_resolution_downscales_to_its_input(monkeypatch, height, width, gray, factor):
    from dipcodec.restoration import restore as restore_module

    monkeypatch.setattr(restore_module, "RESTORE_WIDTH", 16)
    small = make_image(height, width, gray=gray)

    def seen(factor_: int) -> np.ndarray:  # restore's image brought back down to the input's size
        large = dipcodec.restore(small, "super-resolution", factor=factor_, preset="fast")
        assert large.shape == (factor * height, factor * width) + (() if gray else (3,))
        planes = large.reshape(large.shape[0], large.shape[1], -1).transpose(2, 0, 1)[None].astype(np.float64)
        return downsample(torch.from_numpy(planes), factor)[0].numpy().transpose(1, 2, 0).reshape(small.shape)

    projected = np.abs(seen(factor) - small).mean()
    monkeypatch.setattr(restore_module, "back_project", lambda large, small: large)
    unprojected = np.abs(seen(factor) - small).mean()
    # back-projected, only the clamp to 0..255 and the rounding to 8 bits keep them apart
    assert projected < 0.5 and unprojected > 4 * projected


# ---------------------------------------------------------------- super-resolution


def test_super_resolution_file_decodes_large_or_native(sr_result, sr_file, sr_psnr):
    small = make_image(12, 16)
    details = dipcodec.info(sr_file)
    assert (details["mode"], details["scale"], details["width"], details["height"]) == ("super-resolution", 4, 64, 48)
    # So small an image keeps the bilinear network of format version 3 (the bicubic one, of version 4,
    # is the full-size layout's, on images of 64 pixels or more a side: the golden version-4 file).
    assert details["architecture"]["upsample"] == "bilinear" and details["format_version"] == 3
    assert details["bpp"] == pytest.approx(8 * len(sr_file) / (64 * 48), abs=1e-6)
    large = dipcodec.decode(sr_file)
    assert np.array_equal(large, sr_result.pixels)
    native = dipcodec.decode(sr_file, scale="native")
    assert large.shape == (48, 64, 3) and native.shape == (12, 16, 3)
    # Native decoding goes through the fit's own downsampler: it sees what the encoder measured.
    assert psnr(small, native) == pytest.approx(sr_psnr, abs=0.2)
    # And it resembles the input better than its 4x3 thumbnail blown up (17.0 dB). A fit this small
    # plateaus between 18.8 and 21.5 dB, by chance of its iteration count (450 to 800 at `fast`).
    assert psnr(small, native) > 18
    with pytest.raises(InputError, match="scale"):
        dipcodec.decode(sr_file, scale="half")


def test_plain_file_decodes_the_same_at_either_scale(encoded_rgb, decoded_rgb):
    assert np.array_equal(dipcodec.decode(encoded_rgb, scale="native"), decoded_rgb)


def test_super_resolution_scale_byte_is_validated(sr_file):
    from dipcodec.container import pack

    stream = unpack(sr_file)
    assert stream.scale == 4
    header_end = 4 + 1 + 1 + 1 + 1 + 1 + 1 + 1  # magic, version, width, height, channels, mode, reference, seed
    assert sr_file[header_end] == 4
    for bad in (0, 1, 9, 255):
        forged = pack(stream.__class__(**{**stream.__dict__, "scale": bad}))
        with pytest.raises(DecodeError, match="scale"):
            dipcodec.decode(forged)


def test_decoding_super_resolution_natively_imports_no_fitting_code(sr_file, tmp_path):
    path = tmp_path / "x.dip"
    path.write_bytes(sr_file)
    code = ("import dipcodec, sys; dipcodec.decode(open(sys.argv[1], 'rb').read(), scale='native'); "
            "print('dipcodec.fit' in sys.modules, 'dipcodec.encoder' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------- denoising


def test_fit_stops_at_the_given_mse_and_can_return_an_average():
    from dipcodec.fit import FitSchedule, fit
    from dipcodec.network import Generator, NetworkConfig, fixed_input, reference_weights

    config = NetworkConfig(channels=(8, 8), kernel_sizes=(1, 1), input_channels=8, out_channels=3)
    target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    noise = fixed_input(config, 0, 16, 16)

    def run(schedule: FitSchedule) -> tuple[list[float], Generator]:
        net, losses = Generator(config).load(reference_weights(config, 0)), []
        fit(net, noise, target, schedule, lambda i, p: losses.append(10 ** (-p / 10)))
        return losses, net

    losses, _ = run(FitSchedule(100, 0))
    halfway = (losses[0] + losses[-1]) / 2
    stopped, _ = run(FitSchedule(100, 0, stop_mse=halfway))
    assert stopped == losses[: len(stopped)] and len(stopped) < 100
    assert min(stopped) > halfway >= losses[len(stopped)]  # it ran exactly until the loss reached the mark
    # A slow average (decay 0.99 over 20 iterations) stays near the start; the best iterate moves on.
    start = reference_weights(config, 0)
    distance = lambda net: sum(float(np.abs(p.detach().numpy() - s).sum()) for p, s in zip(net.parameters(), start))
    averaged = distance(run(FitSchedule(20, 0, average_decay=0.99, input_jitter=0.1))[1])
    best = distance(run(FitSchedule(20, 0, input_jitter=0.1))[1])
    assert 0 < averaged < 0.3 * best


@pytest.mark.parametrize("mode, height, width", [
    ("denoise", 256, 256), ("denoise", 512, 768), ("denoise", 100, 100), ("denoise", 333, 500), ("denoise", 64, 208),
    ("super-resolution", 64, 64), ("super-resolution", 25, 25), ("super-resolution", 100, 150)])
def test_denoiser_and_upscaler_draw_every_pixel_at_a_fixed_width(mode, height, width):
    from dipcodec.container import check_network_limits
    from dipcodec.layout import BITS_PER_WEIGHT, choose_network
    from dipcodec.restoration.restore import RESTORE_WIDTH, restore_network

    restoration = Restoration(mode, scale=4 if mode == "super-resolution" else 1)
    big_h, big_w = restoration.output_size(height, width)
    config = restore_network(restoration, height, width, 3)
    bits = config.parameter_count() * BITS_PER_WEIGHT
    # restore's network is as wide whatever the image's size, padded or not; its last stage is full
    # size (no shuffle) and as wide as the decoder's limits allow once padding is counted
    assert config.input_channels == RESTORE_WIDTH and config.shuffle == 1
    assert config.upsample == "bicubic"
    assert config.channels[:3] == (RESTORE_WIDTH,) * 3 and 8 <= config.channels[-1] <= 16
    check_network_limits(config, big_h, big_w, InputError)
    if big_h % 16 == 0 and big_w % 16 == 0:
        assert config.channels[3:] == (64, 16)
    # a file's network is sized by its rate like any other
    coded = choose_network(big_h, big_w, 3, 0.1 * bits, purpose=restoration.purpose)
    assert coded.input_channels < RESTORE_WIDTH / 2 and coded.upsample == "bicubic"


def test_denoising_removes_noise(monkeypatch):
    from dipcodec.restoration import restore as restore_module

    clean = make_image(48, 64)
    noisy = np.clip(np.round(clean + np.random.default_rng(2).normal(0, 25, clean.shape)), 0, 255).astype(np.uint8)
    guides, refine = [], restore_module.wiener_refine
    monkeypatch.setattr(restore_module, "wiener_refine",
                        lambda image, estimate, sigma: guides.append((estimate, sigma)) or refine(image, estimate, sigma))
    restored = dipcodec.restore(noisy, "denoise", preset="fast")
    (networks, sigma), = guides
    assert psnr(clean, networks) > psnr(clean, noisy) + 2.5
    # the Wiener step guided by the networks' image, at a noise level restore estimated itself
    assert 20 < sigma < 30 and psnr(clean, restored) > psnr(clean, networks) + 2
    data = dipcodec.encode(noisy, denoise=True, quality=90, preset="fast")
    assert dipcodec.info(data)["mode"] == "denoise"
    assert psnr(clean, dipcodec.decode(data)) > psnr(clean, noisy) + 2


# ---------------------------------------------------------------- command line


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(make_image(24, 32)).save(path)
    return path


def test_cli_encode_with_a_mask_file(capsys, png, tmp_path):
    mask_path = tmp_path / "mask.png"
    Image.fromarray(np.where(_hole(24, 32), 255, 0).astype(np.uint8)).save(mask_path)
    out = tmp_path / "x.dip"
    assert main(["encode", str(png), str(out), "--mask", str(mask_path), "--preset", "fast", "--quiet"]) == 0
    assert dipcodec.info(out.read_bytes())["mode"] == "inpaint"
    assert main(["info", str(out)]) == 0
    assert "mode inpaint" in capsys.readouterr().out


def test_cli_super_resolution_round_trip(capsys, png, tmp_path):
    out = tmp_path / "x.dip"
    assert main(["encode", str(png), str(out), "--sr", "2", "--preset", "fast", "--quiet"]) == 0
    assert main(["decode", str(out), str(tmp_path / "big.png")]) == 0
    assert main(["decode", str(out), str(tmp_path / "small.png"), "--scale", "native"]) == 0
    assert Image.open(tmp_path / "big.png").size == (64, 48)
    assert Image.open(tmp_path / "small.png").size == (32, 24)
    assert main(["info", str(out)]) == 0
    assert "fitted at 1/2 size" in capsys.readouterr().out


@pytest.mark.parametrize("mode, extra, size", [("sr", ["--factor", "2"], (64, 48)), ("denoise", [], (32, 24))])
def test_cli_restore_writes_only_the_image(capsys, png, tmp_path, mode, extra, size):
    out = tmp_path / "out.png"
    assert main(["restore", mode, str(png), str(out), "--preset", "fast", "--quiet", *extra]) == 0
    assert Image.open(out).size == size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "out.png"]


@pytest.mark.parametrize("argv, message", [
    (["restore", "inpaint", "IN", "OUT.png"], "--mask goes with inpaint"),
    (["restore", "denoise", "IN", "OUT.png", "--mask", "subtitles"], "--mask goes with inpaint"),
    (["encode", "IN", "OUT.dip", "--mask", "MASK"], "mask is 8x8"),
    (["encode", "IN", "OUT.dip", "--sr", "1"], "scale must be an integer from 2"),
    (["restore", "sr", "IN", "OUT.dip"], "restore writes an image"),
    (["restore", "sr", "IN", "OUT.xyz"], "restore writes an image"),
    (["restore", "denoise", "IN", "OUT.png", "--factor", "2"], "--factor goes with sr only"),
])
def test_cli_restoration_errors_are_one_line(capsys, png, tmp_path, argv, message):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "mask.png")
    paths = {"IN": str(png), "OUT.png": str(tmp_path / "o.png"), "OUT.dip": str(tmp_path / "o.dip"), "OUT.xyz": str(tmp_path / "o.xyz"),
             "MASK": str(tmp_path / "mask.png")}
    assert main([paths.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "o.dip").exists()


def test_cli_restoration_flags_are_exclusive(capsys, png, tmp_path):
    assert main(["encode", str(png), str(tmp_path / "o.dip"), "--sr", "2", "--denoise"]) == 2
    assert "not allowed with" in capsys.readouterr().err
