"""Reading images into uint8 arrays, and writing files atomically."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dipcodec import DipcodecWarning, InputError
from dipcodec.images import as_array, read_image, write_atomic, write_image

from conftest import make_image


def save(path: Path, image: Image.Image, **kw) -> Path:
    image.save(path, **kw)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_rgb16(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-sample RGB PNG written by hand (Pillow cannot write one)."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # depth 16, colour type 2 (RGB)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def read_without_warnings(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DipcodecWarning)
        return read_image(path)


# ---------------------------------------------------------------- images that are read as they are


def test_rgb_png(tmp_path):
    img = make_image(24, 40)
    out = read_without_warnings(save(tmp_path / "a.png", Image.fromarray(img)))
    assert out.dtype == np.uint8 and out.shape == (24, 40, 3)
    assert np.array_equal(out, img)
    assert out.flags.writeable and out.flags.c_contiguous


def test_gray_png(tmp_path):
    img = make_image(24, 40, gray=True)
    out = read_without_warnings(save(tmp_path / "g.png", Image.fromarray(img)))
    assert out.shape == (24, 40)
    assert np.array_equal(out, img)


def test_str_path_and_other_formats(tmp_path):
    img = make_image(16, 16)
    save(tmp_path / "a.bmp", Image.fromarray(img))
    assert np.array_equal(read_without_warnings(str(tmp_path / "a.bmp")), img)
    save(tmp_path / "a.tiff", Image.fromarray(img))
    assert np.array_equal(read_without_warnings(tmp_path / "a.tiff"), img)


def test_palette_png(tmp_path):
    img = make_image(16, 24)
    pal = Image.fromarray(img).quantize(colors=16)
    assert pal.mode == "P"
    path = save(tmp_path / "p.png", pal)
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" not in check.info
    out = read_without_warnings(path)
    assert out.shape == (16, 24, 3)
    assert np.array_equal(out, np.asarray(pal.convert("RGB")))


def test_palette_png_with_transparency_warns(tmp_path):
    pal = Image.fromarray(make_image(16, 24)).quantize(colors=8)
    path = save(tmp_path / "pt.png", pal, transparency=0)
    with pytest.warns(DipcodecWarning, match="alpha"):
        out = read_image(path)
    assert out.shape == (16, 24, 3)
    assert np.array_equal(out, np.asarray(pal.convert("RGB")))


# ---------------------------------------------------------------- images that are converted, with a warning


def test_rgba_png_warns_and_drops_alpha(tmp_path):
    img = make_image(16, 16)
    rgba = np.concatenate([img, np.full((16, 16, 1), 77, np.uint8)], axis=2)
    with pytest.warns(DipcodecWarning, match="alpha"):
        out = read_image(save(tmp_path / "rgba.png", Image.fromarray(rgba)))
    assert np.array_equal(out, img)


def test_la_image_warns_and_reads_gray(tmp_path):
    gray = make_image(16, 20, gray=True)
    la = Image.merge("LA", [Image.fromarray(gray), Image.new("L", (20, 16), 200)])
    with pytest.warns(DipcodecWarning, match="alpha"):
        out = read_image(save(tmp_path / "la.png", la))
    assert out.shape == (16, 20)
    assert np.array_equal(out, gray)


def test_16_bit_gray_png_warns_and_scales(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (12, 20), dtype=np.uint16)
    values[0, :3] = [0, 65535, 257 * 100]
    path = save(tmp_path / "g16.png", Image.fromarray(values))
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    with pytest.warns(DipcodecWarning, match="16-bit"):
        out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (12, 20)
    assert np.array_equal(out, np.rint(values / 257.0).astype(np.uint8))
    assert out[0, :3].tolist() == [0, 255, 100]
    assert np.max(np.abs(out.astype(int) - (values >> 8))) <= 1  # about >> 8


def test_dark_16_bit_gray_png_is_still_scaled(tmp_path):
    # All values below 256: still a 16-bit image, so it must come out nearly black, not as is.
    values = np.arange(12 * 20, dtype=np.uint16).reshape(12, 20)
    with pytest.warns(DipcodecWarning, match="16-bit"):
        out = read_image(save(tmp_path / "dark16.png", Image.fromarray(values)))
    assert out.max() <= 1


def test_16_bit_rgb_png_warns_and_scales(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.integers(0, 65536, (10, 14, 3), dtype=np.uint16)
    values[0, 0] = [0, 65535, 257 * 200]
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_rgb16(values))
    with Image.open(path) as check:  # Pillow reduces it to RGB itself; only the tile tells
        assert check.mode == "RGB"
        assert any("RGB;16" in str(t.args) for t in check.tile)
    with pytest.warns(DipcodecWarning, match="16-bit"):
        out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (10, 14, 3)
    assert np.max(np.abs(out.astype(float) - values / 257.0)) <= 1.0
    assert out[0, 0].tolist() == [0, 255, 200]


def test_one_bit_image_reads_as_gray(tmp_path):
    bits = (make_image(16, 16, gray=True) > 128).astype(np.uint8) * 255
    out = read_without_warnings(save(tmp_path / "bw.png", Image.fromarray(bits).convert("1")))
    assert out.shape == (16, 16)
    assert np.array_equal(out, bits)


# ---------------------------------------------------------------- files that are refused


def valid_png_bytes() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(2)  # noise: a PNG whose halves both hold pixel data
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello, this is a text file\nwith two lines\n",
        "truncated",
        "header-only",
        b"\x89PNG\r\n\x1a\n",
    ],
    ids=["empty", "text", "truncated", "header-only", "signature-only"],
)
def test_bad_files_raise_one_line_input_error(tmp_path, content):
    if content == "truncated":
        data = valid_png_bytes()
        content = data[: len(data) // 2]
    elif content == "header-only":
        content = valid_png_bytes()[:33]
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(InputError) as exc:
        read_image(path)
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message and message
    assert str(path) in message


def test_missing_path_raises_input_error(tmp_path):
    path = tmp_path / "no-such-file.png"
    with pytest.raises(InputError) as exc:
        read_image(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_directory_raises_input_error(tmp_path):
    with pytest.raises(InputError) as exc:
        read_image(tmp_path)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("size", [(7, 7), (7, 32), (32, 7), (4097, 8), (8, 4097)])
def test_image_of_unsupported_size_raises_input_error(tmp_path, size):
    path = save(tmp_path / "s.png", Image.new("L", size, 9))
    with pytest.raises(InputError, match=r"\d+x\d+") as exc:
        read_image(path)
    assert "\n" not in str(exc.value)


def test_smallest_and_a_long_thin_image_are_accepted(tmp_path):
    assert read_image(save(tmp_path / "min.png", Image.new("L", (8, 8), 1))).shape == (8, 8)
    assert read_image(save(tmp_path / "wide.png", Image.new("L", (4096, 8), 1))).shape == (8, 4096)


# ---------------------------------------------------------------- write_atomic, write_image


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_write_atomic_writes_new_file(tmp_path):
    target = tmp_path / "out.bin"
    write_atomic(target, b"payload")
    assert target.read_bytes() == b"payload"
    assert listing(tmp_path) == ["out.bin"]


def test_write_atomic_refuses_existing_file_without_force(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"original")
    with pytest.raises(InputError, match="exists"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"original"
    assert listing(tmp_path) == ["out.bin"]


def test_write_atomic_overwrites_with_force(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"original, longer than the new content")
    write_atomic(target, b"new", force=True)
    assert target.read_bytes() == b"new"
    assert listing(tmp_path) == ["out.bin"]


def test_write_atomic_file_mode_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "m.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "m.bin").stat().st_mode & 0o777 == 0o640


@pytest.fixture
def full_disk(monkeypatch):
    """Every rename fails, as on a full disk: the last step of an atomic write."""

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)


def test_write_atomic_cleans_up_when_the_rename_fails(tmp_path, monkeypatch, full_disk):
    target = tmp_path / "out.bin"
    target.write_bytes(b"original")
    with pytest.raises(InputError, match="No space left on device") as caught:
        write_atomic(target, b"new", force=True)
    assert "\n" not in str(caught.value)  # one line, for the CLI
    monkeypatch.undo()
    assert target.read_bytes() == b"original"
    assert listing(tmp_path) == ["out.bin"]


def test_write_atomic_cleans_up_when_the_write_fails(tmp_path):
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "out.bin", "not bytes")  # type: ignore[arg-type]
    assert listing(tmp_path) == []


def test_write_atomic_refuses_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError):
        write_atomic(tmp_path / "d", b"x", force=True)
    assert listing(tmp_path) == ["d"] and listing(tmp_path / "d") == []


def test_write_atomic_into_missing_directory_raises_input_error(tmp_path):
    with pytest.raises(InputError):
        write_atomic(tmp_path / "missing" / "out.bin", b"x")
    assert listing(tmp_path) == []


def test_write_image_png_roundtrip(tmp_path):
    img = make_image(12, 18)
    write_image(tmp_path / "o.png", img)
    with Image.open(tmp_path / "o.png") as im:
        assert im.format == "PNG"
        assert np.array_equal(np.asarray(im), img)
    assert listing(tmp_path) == ["o.png"]


@pytest.mark.parametrize("name", ["o.xyz", "o", "o.dip"])
def test_write_image_refuses_unknown_extensions(tmp_path, name):
    with pytest.raises(InputError):
        write_image(tmp_path / name, make_image(8, 8))
    assert listing(tmp_path) == []


def test_write_image_refuses_existing_file_without_force(tmp_path):
    target = tmp_path / "o.png"
    target.write_bytes(b"keep me")
    with pytest.raises(InputError):
        write_image(target, make_image(8, 8))
    assert target.read_bytes() == b"keep me"
    write_image(target, make_image(8, 8), force=True)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mode_i_image_in_8_bit_range_is_clipped_not_wrapped():
    from dipcodec.images import as_array

    im = Image.fromarray(np.array([[-5, 0, 200, 255]] * 8 * 2, dtype=np.int32).reshape(8, 8))
    assert im.mode == "I"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = as_array(im)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert out[0, 0] == 0  # -5 clipped, not wrapped to 251


# ---------------------------------------------------------------- pipes, links, devices, formats Pillow cannot write


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_read_image_from_a_pipe(tmp_path):
    """`dipcodec encode /dev/stdin` or `<(cat x.png)`: a pipe's size reads 0, and is no reason to refuse it."""
    img = make_image(12, 18)
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, png_bytes(img))
        os.close(write_end)
        out = read_without_warnings(f"/dev/fd/{read_end}")
    finally:
        os.close(read_end)
    assert np.array_equal(out, img)


def test_write_atomic_writes_through_a_symlink(tmp_path):
    target = tmp_path / "real.bin"
    target.write_bytes(b"original")
    (tmp_path / "link.bin").symlink_to(target)
    with pytest.raises(InputError, match="exists"):
        write_atomic(tmp_path / "link.bin", b"new")
    write_atomic(tmp_path / "link.bin", b"new", force=True)
    assert (tmp_path / "link.bin").is_symlink() and target.read_bytes() == b"new"
    assert listing(tmp_path) == ["link.bin", "real.bin"]


def test_write_atomic_through_a_symlink_into_another_folder(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link.bin").symlink_to(tmp_path / "elsewhere" / "real.bin")  # dangling: names a file to make
    with pytest.raises(InputError, match="exists"):  # the name is taken, by the link
        write_atomic(tmp_path / "link.bin", b"new")
    write_atomic(tmp_path / "link.bin", b"new", force=True)
    assert (tmp_path / "link.bin").is_symlink() and (tmp_path / "link.bin").read_bytes() == b"new"
    assert listing(tmp_path / "elsewhere") == ["real.bin"]


def test_write_atomic_refuses_a_fifo_even_with_force(tmp_path):
    fifo = tmp_path / "out.bin"
    os.mkfifo(fifo)
    (tmp_path / "link.bin").symlink_to(fifo)
    for path in (fifo, tmp_path / "link.bin"):
        with pytest.raises(InputError, match="not a regular file") as caught:
            write_atomic(path, b"new", force=True)
        assert "\n" not in str(caught.value)
    assert fifo.is_fifo() and listing(tmp_path) == ["link.bin", "out.bin"]


def test_write_atomic_refuses_a_pipe_behind_a_proc_link():
    """/dev/stdout when stdout is a pipe: a link to /proc/self/fd/1, a link realpath cannot follow."""
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(InputError, match="not a regular file"):
            write_atomic(f"/dev/fd/{write_end}", b"new", force=True)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_write_atomic_refuses_a_directory_without_asking_for_force(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="is a directory") as caught:
        write_atomic(tmp_path / "d", b"x")
    assert "--force" not in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_write_atomic_into_a_read_only_folder_raises_input_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(InputError, match="permission denied"):
            write_atomic(folder / "out.bin", b"x")
    finally:
        folder.chmod(0o755)
    assert listing(folder) == []


@pytest.mark.parametrize("name, pillow_says", [("o.fits", "cannot write them"), ("o.h5", "not installed"),
                                               ("o.xbm", "cannot write mode RGB")])
def test_write_image_to_a_format_pillow_cannot_write_is_a_readable_error(tmp_path, name, pillow_says):
    with pytest.raises(InputError, match=pillow_says) as caught:
        write_image(tmp_path / name, make_image(8, 8))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / name}: Pillow") and "'" not in message  # no KeyError repr
    assert listing(tmp_path) == []


def test_write_image_turns_a_save_handler_key_error_into_a_readable_error(tmp_path, monkeypatch):
    def broken(im, fp, filename):
        raise KeyError(im.mode)  # what a plugin's table of modes raises for a mode it lacks

    monkeypatch.setitem(Image.SAVE, "PNG", broken)
    with pytest.raises(InputError, match="Pillow cannot write RGB images as PNG$"):
        write_image(tmp_path / "o.png", make_image(8, 8))
    assert listing(tmp_path) == []


def test_image_format_checks_the_kind_of_pixels():
    from dipcodec.images import image_format

    assert image_format("o.qoi") == image_format("o.qoi", 3) == "QOI"
    with pytest.raises(InputError, match="grayscale images as QOI"):
        image_format("o.qoi", 1)
    assert image_format("o.PNG", 1) == "PNG"


# ---------------------------------------------------------------- base model files are written atomically too


GOLDEN_BASE = Path(__file__).parent / "data" / "golden-base-v1.dipbase"


def test_save_base_failing_leaves_the_old_file_and_no_temporary(tmp_path, full_disk):
    from dipcodec.transfer.basefile import load_base, save_base

    target = tmp_path / "b.dipbase"
    target.write_bytes(b"original")
    with pytest.raises(InputError, match="No space left on device"):
        save_base(load_base(GOLDEN_BASE), target)
    assert target.read_bytes() == b"original" and listing(tmp_path) == ["b.dipbase"]


def test_save_base_overwrites_unless_told_not_to(tmp_path):
    from dipcodec.transfer.basefile import load_base, save_base

    target = tmp_path / "b.dipbase"
    target.write_bytes(b"original")
    with pytest.raises(InputError, match="exists"):
        save_base(load_base(GOLDEN_BASE), target, force=False)
    save_base(load_base(GOLDEN_BASE), target)
    assert target.read_bytes() == GOLDEN_BASE.read_bytes() and listing(tmp_path) == ["b.dipbase"]


def test_a_floating_point_image_in_0_1_is_scaled_and_one_that_is_not_finite_refused(tmp_path):
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    path = tmp_path / "f.tif"
    Image.fromarray(ramp, "F").save(path)
    with pytest.warns(DipcodecWarning, match=r"\[0, 1\]"):
        pixels = read_image(path)
    np.testing.assert_array_equal(pixels, np.rint(ramp.astype(np.float64) * 255).astype(np.uint8))
    wide = ramp * np.float32(200)  # a float image on 0-255 is taken as it is
    np.testing.assert_array_equal(as_array(Image.fromarray(wide, "F")), np.rint(wide).astype(np.uint8))
    ramp[3, 3] = np.nan
    with pytest.raises(InputError, match="not finite"):
        as_array(Image.fromarray(ramp, "F"))
