"""The Python API end to end: encode -> bytes -> decode, on tiny images with the fast preset."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dipcodec
from dipcodec import DecodeError, DipcodecError, DipcodecWarning, InputError
from dipcodec.container import VERSION
from dipcodec.network import NetworkConfig

from conftest import make_image, psnr

pytestmark = pytest.mark.usefixtures("single_thread")

# Floors measured on this suite's synthetic images (measured value in brackets), with margin.
RGB_PSNR_FLOOR = 19.0  # 32x32 RGB at 2 bpp [21.9 dB]
GRAY_PSNR_FLOOR = 23.0  # 32x32 gray at 2 bpp [26.2 dB]
ODD_PSNR_FLOOR = 12.0  # 37x23 and 13x61 RGB at 2 bpp [15.1, 15.0 dB]


def encode(image, **kw):
    kw.setdefault("preset", "fast")
    return dipcodec.encode(image, **kw)


# ---------------------------------------------------------------- round trips


def test_rgb_roundtrip(rgb_image, encoded_rgb, decoded_rgb):
    assert encoded_rgb[:4] == b"DIPC"
    assert decoded_rgb.shape == (32, 32, 3)
    assert decoded_rgb.dtype == np.uint8
    assert psnr(rgb_image, decoded_rgb) > RGB_PSNR_FLOOR


def test_rgb_roundtrip_beats_a_flat_image_by_far(rgb_image, decoded_rgb):
    flat = np.broadcast_to(np.rint(rgb_image.reshape(-1, 3).mean(0)).astype(np.uint8), rgb_image.shape)
    assert psnr(rgb_image, decoded_rgb) > psnr(rgb_image, flat) + 5


def test_grayscale_roundtrip(gray_image):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DipcodecWarning)
        data = encode(gray_image, bpp=2.0)
    out = dipcodec.decode(data)
    assert out.shape == (32, 32)
    assert out.dtype == np.uint8
    assert psnr(gray_image, out) > GRAY_PSNR_FLOOR
    assert dipcodec.info(data)["channels"] == 1


def test_hxwx1_array_is_coded_as_grayscale(gray_image):
    data = encode(gray_image[:, :, None], bpp=2.0)
    assert data == encode(gray_image, bpp=2.0)


def png_image(pixels: np.ndarray) -> Image.Image:
    """A PIL image as Pillow returns it from a file (an ImageFile)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_pil_image_from_a_file_equals_array_input(rgb_image, encoded_rgb):
    assert encode(png_image(rgb_image), bpp=2.0) == encoded_rgb


# An in-memory PIL image (Image.fromarray, Image.new, im.convert(...)) has no `tile` attribute, which the
# 16-bit check reads on file-read images: it must still be coded like the array.
def test_in_memory_pil_image_input_equals_array_input(rgb_image, encoded_rgb):
    assert encode(Image.fromarray(rgb_image), bpp=2.0) == encoded_rgb


def test_encode_is_deterministic(rgb_image, encoded_rgb):
    assert encode(rgb_image, bpp=2.0) == encoded_rgb


def test_decode_twice_gives_identical_pixels(encoded_rgb, decoded_rgb):
    again = dipcodec.decode(encoded_rgb)
    assert np.array_equal(again, decoded_rgb)
    assert np.array_equal(dipcodec.decode(bytearray(encoded_rgb)), decoded_rgb)


def test_encode_detailed_reports_the_decoded_pixels(rgb_image, encoded_rgb, decoded_rgb):
    from dipcodec.encoder import encode_detailed

    result = encode_detailed(rgb_image, bpp=2.0, preset="fast")
    assert result.data == encoded_rgb
    assert np.array_equal(result.pixels, decoded_rgb)  # what the encoder measured is what the decoder gives
    assert result.psnr == pytest.approx(psnr(rgb_image, decoded_rgb), abs=1e-9)


@pytest.mark.parametrize("height,width", [(37, 23), (13, 61), (23, 37)])
def test_odd_sizes_roundtrip(height, width):
    img = make_image(height, width)
    data = encode(img, bpp=2.0)
    out = dipcodec.decode(data)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    info = dipcodec.info(data)
    assert (info["width"], info["height"]) == (width, height)
    assert psnr(img, out) > ODD_PSNR_FLOOR


def test_smallest_image_roundtrip_and_unreachable_rate_warns():
    img = make_image(8, 8)
    # 2 bpp of 8x8 is 16 bytes: less than the header and tables, so the encoder warns and does its best.
    with pytest.warns(DipcodecWarning, match="cannot reach"):
        data = encode(img, bpp=2.0)
    out = dipcodec.decode(data)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    gray = dipcodec.decode(encode(make_image(8, 8, gray=True), quality=90))
    assert gray.shape == (8, 8)


# ---------------------------------------------------------------- info


def test_info_fields(encoded_rgb):
    info = dipcodec.info(encoded_rgb)
    # The oldest version that holds the file: 6 with a post-filter of classes, 5 with one of one
    # class, 3 for a sine or ReLU network without.
    post_filter = info["post_filter"]
    assert info["format_version"] == (3 if not post_filter else 6 if post_filter["phases"] > 1 or post_filter["thresholds"]
                                      else 5)
    assert (info["width"], info["height"], info["channels"]) == (32, 32, 3)
    assert info["file_bytes"] == len(encoded_rgb)
    assert sum(info["section_bytes"].values()) == len(encoded_rgb)
    sections = {"header", "network", "quantization", "weights", "crc"}
    assert set(info["section_bytes"]) == sections | ({"post_filter"} if info["post_filter"] else set())
    assert info["section_bytes"]["crc"] == 4
    assert info["bpp"] == pytest.approx(8 * len(encoded_rgb) / (32 * 32), abs=1e-6)
    assert info["mode"] == "plain" and info["reference"] == "seed" and info["base_id"] is None
    assert info["seed"] == 0
    arch = info["architecture"]
    cfg = NetworkConfig(tuple(arch["channels"]), tuple(arch["kernel_sizes"]), arch["input_channels"], 3,
                        arch["shuffle"], arch["upsample"])
    assert info["parameters"] == cfg.parameter_count() > 0
    weights_payload = info["section_bytes"]["weights"]
    assert 0 < info["bits_per_weight"] <= 8 * weights_payload / info["parameters"] + 1e-3


# ---------------------------------------------------------------- inputs that are converted, with a warning


def test_rgba_input_warns_and_codes_rgb(rgb_image, encoded_rgb):
    alpha = np.linspace(0, 255, 32 * 32).reshape(32, 32, 1).astype(np.uint8)
    rgba = np.concatenate([rgb_image, alpha], axis=2)
    with pytest.warns(DipcodecWarning, match="alpha"):
        data = encode(rgba, bpp=2.0)
    assert dipcodec.info(data)["channels"] == 3
    assert dipcodec.decode(data).shape == (32, 32, 3)
    assert data == encoded_rgb  # the alpha channel is dropped, nothing else changes


def test_rgba_pil_input_warns(rgb_image, encoded_rgb):
    rgba = np.concatenate([rgb_image, np.full((32, 32, 1), 128, np.uint8)], axis=2)
    with pytest.warns(DipcodecWarning, match="alpha"):
        data = encode(png_image(rgba), bpp=2.0)
    assert data == encoded_rgb


# The same for an RGBA image made in memory.
def test_in_memory_rgba_pil_input_warns(rgb_image, encoded_rgb):
    im = Image.fromarray(rgb_image).convert("RGBA")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = encode(im, bpp=2.0)
    assert any(issubclass(w.category, DipcodecWarning) and "alpha" in str(w.message) for w in caught)
    assert data == encoded_rgb


def test_uint16_array_warns_and_is_scaled(gray_image):
    wide = gray_image.astype(np.uint16) * 257  # exactly the 8-bit values, stretched to 16 bits
    with pytest.warns(DipcodecWarning, match="16-bit"):
        data = encode(wide, bpp=2.0)
    assert data == encode(gray_image, bpp=2.0)


def test_plain_uint8_input_does_not_warn(rgb_image):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dipcodec.info(encode(rgb_image, bpp=4.0))  # at a --quality, a 32x32 file is far over its budget


# ---------------------------------------------------------------- inputs and settings that are refused


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((32, 32), np.float32),
        np.zeros((32, 32, 3), np.float64),
        np.zeros((32, 32), np.int32),
        np.zeros((32, 32), bool),
        np.zeros((32, 32, 2), np.uint8),
        np.zeros((32, 32, 5), np.uint8),
        np.zeros((32,), np.uint8),
        np.zeros((1, 32, 32, 3), np.uint8),
        np.zeros((7, 7), np.uint8),
        np.zeros((7, 32, 3), np.uint8),
        np.zeros((32, 7), np.uint8),
        [[0] * 32] * 32,
        "image.png",
        None,
    ],
    ids=lambda v: f"{type(v).__name__}-{getattr(v, 'shape', '')}-{getattr(v, 'dtype', '')}",
)
def test_bad_images_raise_input_error(image):
    with pytest.raises(InputError) as exc:
        encode(image, bpp=2.0)
    assert "\n" not in str(exc.value)


def test_too_large_images_raise_input_error_without_allocating():
    # a read-only zero-stride view: no pixel memory behind it
    with pytest.raises(InputError, match="4097"):
        encode(np.broadcast_to(np.uint8(0), (8, 4097)), bpp=1.0)
    with pytest.raises(InputError, match="4097"):
        encode(np.broadcast_to(np.uint8(0), (4097, 8, 3)), bpp=1.0)
    # a PIL image read from a file: the size is known before any pixel is decoded
    with pytest.raises(InputError, match="4097"):
        encode(png_image(np.zeros((8, 4097), np.uint8)), bpp=1.0)
    with pytest.raises(InputError, match="7x8"):
        encode(png_image(np.zeros((8, 7, 3), np.uint8)), bpp=1.0)


def test_largest_side_is_accepted_by_the_input_check():
    from dipcodec.images import as_array

    assert as_array(np.broadcast_to(np.uint8(5), (8, 4096))).shape == (8, 4096)


# In-memory PIL images reach the size check too (they have no `tile` attribute).
def test_too_large_in_memory_pil_image_raises_input_error():
    with pytest.raises(InputError, match="4097"):
        encode(Image.new("L", (4097, 8)), bpp=1.0)


def test_bpp_and_quality_together_raise_input_error(rgb_image):
    with pytest.raises(InputError):
        encode(rgb_image, bpp=1.0, quality=50)


@pytest.mark.parametrize("quality", [0, 0.5, 101, -5, math.nan, math.inf])
def test_quality_out_of_range_raises_input_error(rgb_image, quality):
    with pytest.raises(InputError):
        encode(rgb_image, quality=quality)


@pytest.mark.parametrize("bpp", [0, -1, 25, math.nan, math.inf])
def test_bpp_out_of_range_raises_input_error(rgb_image, bpp):
    with pytest.raises(InputError):
        encode(rgb_image, bpp=bpp)


@pytest.mark.parametrize("preset", ["turbo", "", "FAST", None])
def test_unknown_preset_raises_input_error(rgb_image, preset):
    with pytest.raises(InputError):
        dipcodec.encode(rgb_image, bpp=1.0, preset=preset)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "0"])
def test_bad_seed_raises_input_error(rgb_image, seed):
    with pytest.raises(InputError):
        encode(rgb_image, bpp=1.0, seed=seed)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_device_without_cuda_raises_input_error(rgb_image, encoded_rgb):
    with pytest.raises(InputError, match="CUDA"):
        encode(rgb_image, bpp=1.0, device="cuda")
    with pytest.raises(InputError, match="CUDA"):
        dipcodec.decode(encoded_rgb, device="cuda")


@pytest.mark.parametrize("device", ["tpu", "banana", "cuda:x", ""])
def test_unknown_device_raises_input_error(rgb_image, encoded_rgb, device):
    with pytest.raises(InputError):
        encode(rgb_image, bpp=1.0, device=device)
    with pytest.raises(InputError):
        dipcodec.decode(encoded_rgb, device=device)


def test_input_error_is_catchable_as_dipcodec_error_and_value_error():
    assert issubclass(InputError, DipcodecError) and issubclass(InputError, ValueError)


# ---------------------------------------------------------------- rate


@pytest.mark.parametrize("bpp", [1.0, 2.0])
def test_bpp_target_is_met_within_five_percent(bpp):
    img = make_image(64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DipcodecWarning)  # a reachable target: no warning
        data = encode(img, bpp=bpp)
    real = 8 * len(data) / (64 * 64)
    assert 0.95 * bpp <= real <= bpp
    assert dipcodec.info(data)["bpp"] == pytest.approx(real, abs=1e-6)


def test_more_bits_give_better_quality():
    img = make_image(64, 64)
    low, high = dipcodec.decode(encode(img, bpp=1.0)), dipcodec.decode(encode(img, bpp=2.0))
    assert psnr(img, high) > psnr(img, low)


def test_quality_is_monotone_in_rate_and_distortion():
    # 128x128: on smaller images qualities 20 and 60 both get the smallest network, hence the same file.
    img = make_image(128, 128)
    sizes, psnrs = [], []
    for quality in (20, 60, 95):
        data = encode(img, quality=quality)
        sizes.append(len(data))
        psnrs.append(psnr(img, dipcodec.decode(data)))
    assert sizes[0] < sizes[1] < sizes[2], sizes
    assert psnrs[0] <= psnrs[1] <= psnrs[2], psnrs


def test_default_quality_is_used_when_nothing_is_given(rgb_image):
    assert encode(rgb_image) == encode(rgb_image, quality=75)


def test_seed_changes_the_file(rgb_image, encoded_rgb, decoded_rgb):
    other = encode(rgb_image, bpp=2.0, seed=1)
    assert other != encoded_rgb
    assert dipcodec.info(other)["seed"] == 1
    pixels = dipcodec.decode(other)
    assert pixels.shape == (32, 32, 3)
    assert not np.array_equal(pixels, decoded_rgb)
    assert psnr(rgb_image, pixels) > RGB_PSNR_FLOOR - 3


# ---------------------------------------------------------------- damaged files


def test_every_truncation_raises_decode_error(encoded_rgb):
    for n in range(len(encoded_rgb)):
        with pytest.raises(DecodeError):
            dipcodec.decode(encoded_rgb[:n])


def test_every_single_bit_flip_raises_decode_error(encoded_rgb):
    for i in range(len(encoded_rgb)):
        for bit in (0, 7):
            bad = bytearray(encoded_rgb)
            bad[i] ^= 1 << bit
            with pytest.raises(DecodeError) as exc:
                dipcodec.decode(bytes(bad))
            assert "\n" not in str(exc.value)


@pytest.mark.parametrize("data", [b"", b"DIPC", b"hello world, not a dip file", b"\x89PNG\r\n\x1a\n" + bytes(40)])
def test_not_a_dip_file_raises_decode_error(data):
    with pytest.raises(DecodeError):
        dipcodec.decode(data)
    with pytest.raises(DecodeError):
        dipcodec.info(data)


def test_unknown_version_raises_decode_error(encoded_rgb):
    bad = bytearray(encoded_rgb)
    bad[4] = VERSION + 1
    with pytest.raises(DecodeError, match="version"):
        dipcodec.decode(bytes(bad))


# ---------------------------------------------------------------- decode-only use, Pillow


DECODE_MODULES = frozenset({
    "dipcodec", "dipcodec.errors", "dipcodec.noise", "dipcodec.network", "dipcodec.quantize", "dipcodec.entropy",
    "dipcodec.postfilter", "dipcodec.container", "dipcodec.downsample", "dipcodec.decoder", "dipcodec.pillow_plugin",
    "dipcodec.transfer", "dipcodec.transfer.basefile", "dipcodec.transfer.sequence"})
"""Every dipcodec module that decoding may load: the format's core, the Pillow plugin, and the readers
of sequences and base models that ``import dipcodec`` and a file coded from a base need. Never the
fitting code (fit, fused, encoder, layout, postfilter_fit), restoration, or what trains base models
and encodes sequences."""


def test_decode_loads_only_the_decoders_modules():
    """Decoding never imports fitting code, nor anything beside the core that it does not need: in a
    fresh interpreter, decoding every golden file (at native size too, which super-resolution files
    bring down through the downsampler) and the golden sequences leaves only DECODE_MODULES loaded."""
    data = Path(__file__).resolve().parent / "data"
    code = (
        "import dipcodec, glob, json, sys\n"
        "files = sorted(glob.glob(sys.argv[1] + '/golden-v*.dip'))\n"
        "for path in files:\n"
        "    stream = open(path, 'rb').read()\n"
        "    dipcodec.decode(stream), dipcodec.decode(stream, scale='native'), dipcodec.info(stream)\n"
        "sequences = sorted(glob.glob(sys.argv[1] + '/golden-seq-v*.dips'))\n"
        "for path in sequences:\n"
        "    dipcodec.decode_sequence(open(path, 'rb').read(), base=sys.argv[1] + '/golden-base-v1.dipbase')\n"
        "print(json.dumps([len(files), len(sequences), sorted(m for m in sys.modules if m.split('.')[0] == 'dipcodec')]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    files, sequences, loaded = json.loads(out.stdout)
    assert files >= 6 and sequences >= 2  # the golden files were found
    assert set(loaded) <= DECODE_MODULES, sorted(set(loaded) - DECODE_MODULES)


def test_pillow_opens_dip_bytes(encoded_rgb, decoded_rgb):
    with Image.open(io.BytesIO(encoded_rgb)) as im:
        assert im.format == "DIPCODEC"
        assert im.mode == "RGB" and im.size == (32, 32)
        assert np.array_equal(np.asarray(im), decoded_rgb)


def test_pillow_opens_dip_path(encoded_rgb, decoded_rgb, tmp_path):
    path = tmp_path / "image.dip"
    path.write_bytes(encoded_rgb)
    with Image.open(path) as im:
        assert im.format == "DIPCODEC"
        assert np.array_equal(np.asarray(im.convert("RGB")), decoded_rgb)
    with Image.open(str(path)) as im:
        assert np.array_equal(np.asarray(im), decoded_rgb)


def test_pillow_opens_grayscale_dip(gray_image):
    data = encode(gray_image, quality=60)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "L"
        assert np.array_equal(np.asarray(im), dipcodec.decode(data))


def test_pillow_refuses_a_damaged_dip(encoded_rgb):
    bad = bytearray(encoded_rgb)
    bad[20] ^= 0xFF
    with pytest.raises(Exception) as exc:  # Pillow reports it as UnidentifiedImageError
        Image.open(io.BytesIO(bytes(bad))).load()
    assert isinstance(exc.value, (OSError, SyntaxError))


# Warnings name the caller's line (not a line inside dipcodec), so users can filter them by module,
# also through `encode`, which adds a frame on top of `encode_detailed`.
def test_encode_warnings_point_at_the_caller():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encode(np.zeros((16, 16, 4), np.uint8), quality=50)
    alpha = [w for w in caught if issubclass(w.category, DipcodecWarning)]
    assert alpha and all(w.filename == __file__ for w in alpha), [w.filename for w in alpha]


def test_importing_the_package_loads_no_torch_and_registers_the_plugin():
    """The command line's start-up (and --help) pays for torch only when a command needs it."""
    import subprocess
    import sys

    script = ("import sys, dipcodec; from PIL import Image; from dipcodec.pillow_plugin import MAGIC; "
              "print('torch' in sys.modules, 'DIPCODEC' in Image.OPEN, MAGIC.hex())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    from dipcodec.container import MAGIC

    assert out == ["False", "True", MAGIC.hex()]
    assert callable(dipcodec.decode) and callable(dipcodec.decode_sequence) and callable(dipcodec.encode)


def test_a_quality_file_far_over_its_budget_warns():
    """On a small image the side data outweighs the network; --quality says so instead of landing
    silently at several times its nominal rate."""
    from dipcodec.encoder import QUALITY_OVERSHOOT

    with pytest.warns(DipcodecWarning, match="this quality aims at") as caught:
        data = dipcodec.encode(make_image(32, 32), quality=75, preset="fast")
    assert 8 * len(data) >= QUALITY_OVERSHOOT * 0.5 * 32 * 32
    assert len([w for w in caught if issubclass(w.category, DipcodecWarning)]) == 1
