"""The command line, through ``dipcodec.cli.main`` (which returns the exit status)."""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import dipcodec
from dipcodec.cli import main

from conftest import make_image, psnr
from test_images import full_disk  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("single_thread")

FAST = ["--preset", "fast"]
DATA = Path(__file__).parent / "data"
SEQUENCE, SEQUENCE_BASE = DATA / "golden-seq-v2.dips", DATA / "golden-base-v1.dipbase"
"""A 3-frame 64x64 clip that decodes in a moment, and the base model its key frame needs."""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop anything printed before
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dipcodec: error: "), err
    return lines[0]


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


@pytest.fixture
def png(tmp_path) -> Path:
    path = tmp_path / "in.png"
    Image.fromarray(make_image(24, 32)).save(path)
    return path


@pytest.fixture(scope="module")
def dip_file(tmp_path_factory) -> Path:
    """A .dip file of a 24x32 image, written by the CLI."""
    directory = tmp_path_factory.mktemp("cli")
    src = directory / "in.png"
    Image.fromarray(make_image(24, 32)).save(src)
    dst = directory / "in.dip"
    assert main(["encode", str(src), str(dst), "--bpp", "2", "--quiet", *FAST]) == 0
    return dst


@pytest.fixture
def no_slow_work(monkeypatch):
    """Every fit, training and decode replaced by a failure (an internal error, exit 1): a command
    that still ends with exit 2 refused its input up front."""

    def slow(*args, **kwargs):
        raise AssertionError("slow work started")

    for module, name in [("dipcodec.encoder", "encode_detailed"), ("dipcodec.restoration.restore", "restore"),
                         ("dipcodec.transfer.warmstart", "encode_sequence"), ("dipcodec.transfer.meta", "train_base"),
                         ("dipcodec.decoder", "decode"), ("dipcodec.transfer.sequence", "decode_sequence")]:
        monkeypatch.setattr(importlib.import_module(module), name, slow)


@pytest.fixture
def fake_fit(monkeypatch) -> list[np.ndarray]:
    """The encoder's fit replaced by a stand-in that reports progress twice (0.15 s apart, so that a
    progress bar draws the first report) and returns at once: for the CLI around the fit. Returns
    the images it was given."""
    import dipcodec.encoder

    images = []

    def encode_detailed(pixels, *, progress=None, **settings):
        images.append(pixels)
        if progress is not None:
            progress(10, 20, 31.5)
            time.sleep(0.15)
            progress(20, 20, 31.5)
        return SimpleNamespace(data=b"DIPC fake", pixels=pixels, psnr=31.5)

    monkeypatch.setattr(dipcodec.encoder, "encode_detailed", encode_detailed)
    return images


# ---------------------------------------------------------------- the happy path


def test_encode_then_decode(capsys, png, tmp_path):
    before = snapshot(png)
    dip = tmp_path / "x.dip"
    code, out, err = run(capsys, "encode", png, dip, "--bpp", "2", "--quiet", *FAST)
    assert (code, out, err) == (0, "", "")
    data = dip.read_bytes()
    assert data[:4] == b"DIPC"
    assert 0.95 * 2 <= 8 * len(data) / (24 * 32) <= 2

    decoded = tmp_path / "x.png"
    code, out, err = run(capsys, "decode", dip, decoded)
    assert (code, out, err) == (0, "", "")
    with Image.open(decoded) as im:
        assert im.format == "PNG"
        assert im.size == (32, 24) and im.mode == "RGB"
        assert np.array_equal(np.asarray(im), dipcodec.decode(data))
    assert snapshot(png) == before  # IN is never modified
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "x.dip", "x.png"]  # no temp files left


def test_cli_encode_equals_api_encode(capsys, png, tmp_path):
    dip = tmp_path / "x.dip"
    assert run(capsys, "encode", png, dip, "--quality", "60", "--seed", "3", "--quiet", *FAST)[0] == 0
    assert dip.read_bytes() == dipcodec.encode(make_image(24, 32), quality=60, seed=3, preset="fast")


def test_decode_to_other_formats(capsys, dip_file, tmp_path):
    pixels = dipcodec.decode(dip_file.read_bytes())
    for name, fmt in [("o.bmp", "BMP"), ("o.tiff", "TIFF")]:
        assert run(capsys, "decode", dip_file, tmp_path / name)[0] == 0
        with Image.open(tmp_path / name) as im:
            assert im.format == fmt
            assert np.array_equal(np.asarray(im), pixels)


def test_info(capsys, dip_file):
    code, out, err = run(capsys, "info", dip_file)
    assert code == 0 and err == ""
    # So small a file leaves no room for a post-filter: version 3.
    assert out.startswith(f"{dip_file}: dipcodec format 3, {dip_file.stat().st_size} bytes")
    assert "32x24" in out and "parameters" in out and "bpp" in out and "post-filter  none" in out
    golden = Path(__file__).parent / "data" / "golden-v5.dip"
    code, out, err = run(capsys, "info", golden)
    assert code == 0 and out.startswith(f"{golden}: dipcodec format 5, 1143 bytes")
    assert "post-filter  5x5 taps per channel, coefficients in units of 2^-8" in out
    assert "post_filter 112 B" in out
    golden = Path(__file__).parent / "data" / "golden-v6.dip"
    code, out, err = run(capsys, "info", golden)
    assert code == 0 and out.startswith(f"{golden}: dipcodec format 6, 1540 bytes")
    assert ("post-filter  3x3 taps per channel and class (4 phases x 2 activity bands, thresholds 444), "
            "coefficients in units of 2^-8") in out


def test_info_json(capsys, dip_file):
    code, out, err = run(capsys, "info", "--json", dip_file)
    assert code == 0 and err == ""
    details = json.loads(out)
    assert {"format_version", "file_bytes", "width", "height", "channels", "architecture", "parameters",
            "section_bytes", "bits_per_weight", "bpp", "seed"} <= set(details)
    assert (details["width"], details["height"], details["channels"]) == (32, 24, 3)
    assert details["file_bytes"] == dip_file.stat().st_size == sum(details["section_bytes"].values())
    assert details == dipcodec.info(dip_file.read_bytes())


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"dipcodec {dipcodec.__version__}"


def test_summary_without_quiet_and_no_bar_when_stderr_is_not_a_terminal(capsys, png, tmp_path):
    """`dipcodec encode ... 2> log`: the log gets the summary line, not the bar's \\r frames."""
    code, out, err = run(capsys, "encode", png, tmp_path / "x.dip", "--bpp", "2", *FAST)
    assert code == 0 and out == ""
    assert "\r" not in err and "fitting" not in err
    size = (tmp_path / "x.dip").stat().st_size
    assert len(err.splitlines()) == 1 and err.startswith(f"{tmp_path / 'x.dip'}: {size} bytes")
    assert "PSNR" in err and "dB" in err


def test_rgba_input_warns_once_and_succeeds(capsys, tmp_path):
    src = tmp_path / "rgba.png"
    rgba = np.concatenate([make_image(24, 32), np.full((24, 32, 1), 100, np.uint8)], axis=2)
    Image.fromarray(rgba).save(src)
    code, out, err = run(capsys, "encode", src, tmp_path / "x.dip", "--bpp", "2", "--quiet", *FAST)
    assert code == 0 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dipcodec: warning: ") and "alpha" in lines[0]
    assert dipcodec.info((tmp_path / "x.dip").read_bytes())["channels"] == 3


def test_unreachable_rate_warns_and_succeeds(capsys, tmp_path):
    src = tmp_path / "tiny.png"
    Image.fromarray(make_image(8, 8)).save(src)
    code, _, err = run(capsys, "encode", src, tmp_path / "x.dip", "--bpp", "1", "--quiet", *FAST)
    assert code == 0
    assert err.startswith("dipcodec: warning: cannot reach") and len(err.splitlines()) == 1
    assert (tmp_path / "x.dip").exists()


# ---------------------------------------------------------------- existing outputs


def test_encode_onto_existing_output_needs_force(capsys, png, tmp_path):
    dst = tmp_path / "x.dip"
    dst.write_bytes(b"precious")
    before = snapshot(dst)
    code, out, err = run(capsys, "encode", png, dst, "--bpp", "2", "--quiet", *FAST)
    assert code == 2 and out == ""
    assert "exists" in one_error_line(err)
    assert snapshot(dst) == before

    code, _, err = run(capsys, "encode", png, dst, "--bpp", "2", "--quiet", "--force", *FAST)
    assert (code, err) == (0, "")
    assert dst.read_bytes()[:4] == b"DIPC"


def test_decode_onto_existing_output_needs_force(capsys, dip_file, tmp_path):
    dst = tmp_path / "x.png"
    dst.write_bytes(b"precious")
    before = snapshot(dst)
    code, _, err = run(capsys, "decode", dip_file, dst)
    assert code == 2
    one_error_line(err)
    assert snapshot(dst) == before
    assert run(capsys, "decode", dip_file, dst, "--force")[0] == 0
    with Image.open(dst) as im:
        assert im.size == (32, 24)


def test_output_same_as_input_is_refused_even_with_force(capsys, png):
    before = snapshot(png)
    code, _, err = run(capsys, "encode", png, png, "--force", "--quiet", *FAST)
    assert code == 2
    assert "input" in one_error_line(err)
    assert snapshot(png) == before


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("kind", ["text", "empty", "truncated", "missing", "directory"])
def test_encode_bad_input_fails_cleanly(capsys, png, tmp_path, kind):
    src = tmp_path / "bad.png"
    if kind == "text":
        src.write_text("this is not an image\n")
    elif kind == "empty":
        src.write_bytes(b"")
    elif kind == "truncated":
        data = png.read_bytes()
        src.write_bytes(data[: len(data) // 2])
    elif kind == "directory":
        src = tmp_path / "adir"
        src.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    dst = tmp_path / "out.dip"
    code, out, err = run(capsys, "encode", src, dst, "--quiet", *FAST)
    assert code == 2 and out == ""
    one_error_line(err)
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_decode_damaged_file_fails_cleanly(capsys, dip_file, tmp_path):
    data = bytearray(dip_file.read_bytes())
    data[len(data) // 2] ^= 0x10
    bad = tmp_path / "bad.dip"
    bad.write_bytes(bytes(data))
    dst = tmp_path / "out.png"
    code, out, err = run(capsys, "decode", bad, dst)
    assert code == 2 and out == ""
    assert one_error_line(err).startswith(f"dipcodec: error: {bad}: ")  # gzip's style: the file, then what is wrong
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.dip"]
    code, out, err = run(capsys, "info", bad)
    assert code == 2 and out == "" and one_error_line(err).startswith(f"dipcodec: error: {bad}: ")


@pytest.mark.parametrize("content", [b"", b"DIPC", b"not a dip file at all", None])
def test_decode_and_info_of_non_dip_files_fail_cleanly(capsys, tmp_path, content):
    src = tmp_path / "x.dip"
    if content is not None:
        src.write_bytes(content)
    code, out, err = run(capsys, "decode", src, tmp_path / "out.png")
    assert code == 2 and out == ""
    one_error_line(err)
    assert not (tmp_path / "out.png").exists()
    code, out, err = run(capsys, "info", src)
    assert code == 2 and out == ""
    one_error_line(err)


@pytest.mark.parametrize("name", ["out.xyz", "out", "out.dip"])
def test_decode_to_unknown_extension_fails(capsys, dip_file, tmp_path, name):
    code, _, err = run(capsys, "decode", dip_file, tmp_path / name)
    assert code == 2
    one_error_line(err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["encode"],
        ["encode", "in.png"],
        ["encode", "in.png", "out.dip", "--bpp", "1", "--quality", "50"],
        ["encode", "in.png", "out.dip", "--bpp", "lots"],
        ["encode", "in.png", "out.dip", "--preset", "turbo"],
        ["decode", "in.dip"],
        ["info"],
        ["info", "a.dip", "--yaml"],
    ],
)
def test_bad_usage_returns_2(capsys, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "usage:" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "options",
    [["--bpp", "0"], ["--bpp", "-1"], ["--bpp", "nan"], ["--quality", "0"], ["--quality", "101"],
     ["--seed", "-1"], ["--device", "tpu"]],
)
def test_bad_settings_return_2(capsys, png, tmp_path, options):
    dst = tmp_path / "out.dip"
    code, out, err = run(capsys, "encode", png, dst, "--quiet", *FAST, *options)
    assert code == 2 and out == ""
    one_error_line(err)
    assert not dst.exists()


def test_help_returns_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "encode" in out and "decode" in out


def test_cli_preset_choices_match_the_encoder():
    from dipcodec.cli import _parser
    from dipcodec.encoder import PRESETS

    encode_parser = _parser()._subparsers._group_actions[0].choices["encode"]
    preset = next(a for a in encode_parser._actions if a.dest == "preset")
    assert tuple(preset.choices) == tuple(PRESETS)


@pytest.mark.parametrize("command", ["encode", "encode-seq"])
def test_cli_base_default_matches_the_encoder(command):
    from dipcodec.cli import _parser
    from dipcodec.encoder import DEFAULT_BASE

    parser = _parser()._subparsers._group_actions[0].choices[command]
    assert next(a for a in parser._actions if a.dest == "base").default == DEFAULT_BASE


def test_missing_output_folder_fails_before_fitting(capsys, png, tmp_path):
    code, _, err = run(capsys, "encode", png, tmp_path / "no" / "such" / "x.dip", "--quiet", *FAST)
    assert code == 2 and "does not exist" in one_error_line(err)


def test_info_refuses_an_endless_file(capsys):
    code, _, err = run(capsys, "info", "/dev/zero")
    assert code == 2 and "larger than any dipcodec file" in one_error_line(err)


def test_a_reader_that_leaves_early_stops_the_output_quietly(monkeypatch, capsys):
    """`dipcodec info x.dip | head -1`: the pipe closes, and the command stops without an error line."""
    golden = Path(__file__).parent / "data" / "golden-v3.dip"

    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code = main(["info", str(golden)])
    monkeypatch.undo()
    assert code == 141
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- outputs that cannot be written, found before the work

OUTPUT_SUFFIX = {"encode": ".dip", "decode": ".png", "restore": ".png", "mask": ".png", "encode-seq": ".dips",
                 "train-base": ".dipbase"}


def writing(command: str, out: Path, png: Path) -> list:
    """A command line of ``command`` that writes ``out`` (train-base trains on ``png``'s folder)."""
    return {"encode": ["encode", png, out, *FAST, "--quiet"],
            "decode": ["decode", DATA / "golden-v3.dip", out],
            "restore": ["restore", "denoise", png, out, *FAST, "--quiet"],
            "mask": ["mask", "--subtitles", png, "-o", out],
            "encode-seq": ["encode-seq", png, png, "-o", out, *FAST, "--quiet"],
            "train-base": ["train-base", png.parent, "-o", out, "--quiet"]}[command]


@pytest.mark.parametrize("command", OUTPUT_SUFFIX)
def test_an_output_that_is_a_folder_is_refused_up_front(capsys, png, tmp_path, no_slow_work, command):
    out = tmp_path / f"out{OUTPUT_SUFFIX[command]}"
    out.mkdir()
    code, _, err = run(capsys, *writing(command, out, png), "--force")
    assert code == 2
    line = one_error_line(err)
    assert line == f"dipcodec: error: {out} is a directory"  # not "use --force": --force cannot help
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("command", OUTPUT_SUFFIX)
def test_an_output_in_a_missing_folder_is_refused_up_front(capsys, png, tmp_path, no_slow_work, command):
    out = tmp_path / "no" / "such" / f"out{OUTPUT_SUFFIX[command]}"
    code, _, err = run(capsys, *writing(command, out, png))
    assert code == 2 and f"folder {tmp_path / 'no' / 'such'} does not exist" in one_error_line(err)
    assert not (tmp_path / "no").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
@pytest.mark.parametrize("command", OUTPUT_SUFFIX)
def test_an_output_in_a_read_only_folder_is_refused_up_front(capsys, png, tmp_path, no_slow_work, command):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, _, err = run(capsys, *writing(command, folder / f"out{OUTPUT_SUFFIX[command]}", png))
    finally:
        folder.chmod(0o755)
    assert code == 2 and "permission denied" in one_error_line(err)
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("command", ["encode", "decode-seq"])
def test_a_folder_the_system_will_not_let_us_write_is_refused_up_front(capsys, png, tmp_path, monkeypatch,
                                                                       no_slow_work, command):
    """The same through os.access, so that it is checked where the tests run as root too."""
    folder = tmp_path / "ro"
    folder.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: not (Path(path).resolve() == folder.resolve()
                                                                  and mode & os.W_OK) and access(path, mode, **kw))
    argv = writing(command, folder / "out.dip", png) if command == "encode" else ["decode-seq", SEQUENCE, folder / "f"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and f"cannot write in folder {folder.resolve()} (permission denied)" in one_error_line(err)


def test_output_onto_a_fifo_is_refused_up_front_even_with_force(capsys, tmp_path, no_slow_work):
    """A FIFO (like /dev/stdout) would be replaced by a plain file."""
    fifo = tmp_path / "out.png"
    os.mkfifo(fifo)
    code, _, err = run(capsys, "decode", DATA / "golden-v3.dip", fifo, "--force")
    assert code == 2 and "not a regular file" in one_error_line(err)
    assert fifo.is_fifo()


def test_encode_writes_through_a_symlink(capsys, png, tmp_path, fake_fit):
    target = tmp_path / "real.dip"
    target.write_bytes(b"old")
    (tmp_path / "link.dip").symlink_to(target)
    code, _, err = run(capsys, "encode", png, tmp_path / "link.dip", "--quiet", "--force")
    assert (code, err) == (0, "")
    assert (tmp_path / "link.dip").is_symlink() and target.read_bytes() == b"DIPC fake"


def test_a_pipe_is_an_input(capsys, tmp_path, fake_fit):
    """`cat x.png | dipcodec encode /dev/stdin x.dip`: a pipe reports 0 bytes, and is read all the same."""
    src = tmp_path / "in.png"
    Image.fromarray(make_image(24, 32)).save(src)
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, src.read_bytes())
        os.close(write_end)
        code, _, err = run(capsys, "encode", f"/dev/fd/{read_end}", tmp_path / "x.dip", "--quiet")
    finally:
        os.close(read_end)
    assert (code, err) == (0, "")
    assert len(fake_fit) == 1 and np.array_equal(fake_fit[0], make_image(24, 32))


# ---------------------------------------------------------------- image formats Pillow cannot write


@pytest.mark.parametrize("name", ["out.fits", "out.h5", "out.xbm"])
@pytest.mark.parametrize("command", ["restore", "decode"])
def test_an_image_format_pillow_cannot_write_is_refused_up_front(capsys, png, tmp_path, no_slow_work, command, name):
    code, _, err = run(capsys, *writing(command, tmp_path / name, png))
    assert code == 2
    line = one_error_line(err)
    assert line.startswith(f"dipcodec: error: {tmp_path / name}: Pillow") and "'" not in line  # no KeyError repr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


# ---------------------------------------------------------------- decode-seq's folder and frames


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def decode_seq(capsys, outdir: Path, *options: str) -> tuple[int, str, str]:
    return run(capsys, "decode-seq", SEQUENCE, outdir, "--base", SEQUENCE_BASE, *options)


def test_decode_seq_takes_the_format_with_or_without_a_dot(capsys, tmp_path):
    code, _, err = decode_seq(capsys, tmp_path / "f", "--format", ".png")
    assert (code, err) == (0, "")
    assert listing(tmp_path / "f") == ["frame000.png", "frame001.png", "frame002.png"]
    for i, pixels in enumerate(dipcodec.decode_sequence(SEQUENCE.read_bytes(), base=SEQUENCE_BASE)):
        with Image.open(tmp_path / "f" / f"frame{i:03d}.png") as im:
            assert np.array_equal(np.asarray(im), pixels)


@pytest.mark.parametrize("fmt", ["xyz", "dip", "fits", "", "png/x"])
def test_decode_seq_refuses_a_bad_format_before_making_the_folder(capsys, tmp_path, no_slow_work, fmt):
    code, _, err = decode_seq(capsys, tmp_path / "f", "--format", fmt)
    assert code == 2
    one_error_line(err)
    assert listing(tmp_path) == []


def test_decode_seq_into_a_path_through_a_file_is_refused_up_front(capsys, tmp_path, no_slow_work):
    (tmp_path / "file").write_text("x")
    code, _, err = decode_seq(capsys, tmp_path / "file" / "frames")
    assert code == 2 and "is not a folder" in one_error_line(err)


def test_decode_seq_when_the_folder_cannot_be_made(capsys, tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    code, _, err = decode_seq(capsys, tmp_path / "f")
    assert code == 2
    assert one_error_line(err) == f"dipcodec: error: cannot make folder {tmp_path / 'f'}: Permission denied"


@pytest.mark.parametrize("existing", [False, True])
def test_decode_seq_that_fails_mid_clip_leaves_no_frames(capsys, tmp_path, monkeypatch, existing):
    """Frames stream to a hidden folder and move into place only once all have decoded."""
    from dipcodec.errors import DecodeError
    from dipcodec.transfer import sequence

    real = sequence.iter_sequence

    def fails_at_the_third_frame(*args, **kwargs):
        frames = real(*args, **kwargs)
        yield next(frames)
        yield next(frames)
        raise DecodeError("frame 2: damaged")

    monkeypatch.setattr(sequence, "iter_sequence", fails_at_the_third_frame)
    out = tmp_path / "f"
    if existing:
        out.mkdir()
        (out / "notes.txt").write_text("keep")
    code, _, err = decode_seq(capsys, out)
    assert code == 2 and one_error_line(err).endswith("frame 2: damaged")
    assert (listing(out) == ["notes.txt"]) if existing else not out.exists()


def test_decode_seq_replaces_an_older_longer_clip_only_with_force(capsys, tmp_path):
    out = tmp_path / "f"
    out.mkdir()
    (out / "frame007.png").write_bytes(b"an older, longer clip")
    others = ["frame007.jpg", "frame007.png.txt", "frame07.png", "notes.txt"]  # not decode-seq's .png frames
    for name in others:
        (out / name).write_bytes(b"keep")
    code, _, err = decode_seq(capsys, out)
    assert code == 2 and "--force" in one_error_line(err)
    assert listing(out) == sorted(["frame007.png", *others])
    (out / "frame1000.png").write_bytes(b"an even longer clip")
    code, _, err = decode_seq(capsys, out, "--force")
    assert (code, err) == (0, "")
    assert listing(out) == sorted(["frame000.png", "frame001.png", "frame002.png", *others])
    assert all((out / name).read_bytes() == b"keep" for name in others)


# ---------------------------------------------------------------- decode errors name the file


def test_decode_of_a_sequence_says_to_use_decode_seq(capsys, tmp_path, no_slow_work):
    code, _, err = run(capsys, "decode", SEQUENCE, tmp_path / "o.png")
    assert code == 2 and one_error_line(err) == f"dipcodec: error: {SEQUENCE} is a sequence: use decode-seq"
    code, _, err = run(capsys, "decode-seq", DATA / "golden-v3.dip", tmp_path / "f")
    assert code == 2 and "use decode" in one_error_line(err)
    assert listing(tmp_path) == []


def test_a_missing_base_model_names_the_file_and_the_option(capsys, tmp_path):
    code, _, err = run(capsys, "decode-seq", SEQUENCE, tmp_path / "f")
    line = one_error_line(err)
    assert code == 2 and line.startswith(f"dipcodec: error: {SEQUENCE}: ")
    assert "64c9af4c3abcb906" in line and line.endswith("(give it with --base PATH)")
    assert listing(tmp_path) == []  # no empty folder left behind


def test_info_reads_a_sequence_larger_than_any_dip_file(capsys, monkeypatch, tmp_path):
    """A .dips file holds up to MAX_SEQUENCE_BYTES; a .dip file no more than MAX_FILE_BYTES."""
    import dipcodec.container

    size = SEQUENCE.stat().st_size
    monkeypatch.setattr(dipcodec.container, "MAX_FILE_BYTES", size - 1)  # larger than this, smaller than its frames
    code, out, err = run(capsys, "info", SEQUENCE)
    assert code == 0 and "3 frames" in out, err
    big = tmp_path / "big.dip"
    big.write_bytes(b"DIPC" + bytes(size))
    code, _, err = run(capsys, "info", big)
    assert code == 2 and "larger than any dipcodec file" in one_error_line(err)


# ---------------------------------------------------------------- warnings, progress, help


def test_warnings_come_before_the_error(capsys, tmp_path):
    src = tmp_path / "rgba.png"
    Image.fromarray(np.concatenate([make_image(24, 32), np.full((24, 32, 1), 100, np.uint8)], axis=2)).save(src)
    code, _, err = run(capsys, "encode", src, tmp_path / "x.dip", "--device", "tpu", "--quiet", *FAST)
    assert code == 2
    warning, error = err.splitlines()
    assert warning.startswith("dipcodec: warning: dropping the alpha channel")
    assert error.startswith("dipcodec: error: ") and "tpu" in error


def test_progress_bar_on_a_terminal(capsys, monkeypatch, png, tmp_path, fake_fit):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = run(capsys, "encode", png, tmp_path / "x.dip")
    assert code == 0 and "fitting" in err
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, PSNR 31\.50 dB\]", err), err  # tqdm's own ", " inside the brackets
    assert "] ," not in err
    assert err.replace("\r", "\n").strip().splitlines()[-1].startswith(f"{tmp_path / 'x.dip'}: 9 bytes")


def test_encode_to_an_image_extension_warns(capsys, png, tmp_path, fake_fit):
    code, _, err = run(capsys, "encode", png, tmp_path / "x.png")
    assert code == 0 and (tmp_path / "x.png").read_bytes() == b"DIPC fake"
    warning, summary = err.splitlines()  # the warning first: it is issued before the fit
    assert warning == (f"dipcodec: warning: {tmp_path / 'x.png'}: encode writes a .dip file, not a PNG image; "
                       "name it x.dip")
    assert summary.startswith(f"{tmp_path / 'x.png'}: 9 bytes")
    code, _, err = run(capsys, "encode", png, tmp_path / "x.dip", "--quiet")
    assert (code, err) == (0, "")


def test_every_command_says_what_it_does(capsys):
    from dipcodec.cli import _parser

    commands = _parser()._subparsers._group_actions[0].choices
    assert list(commands) == ["encode", "decode", "info", "encode-seq", "decode-seq", "restore", "mask",
                              "train-base", "eval"]
    assert all(parser.description for parser in commands.values())
    code, out, _ = run(capsys, "encode", "--help")
    assert code == 0 and "minutes on a CPU" in " ".join(out.split())
    code, out, _ = run(capsys, "info", "--help")
    assert code == 0 and re.search(r"FILE\s+a \.dip, \.dips or \.dipbase file", out)


# ---------------------------------------------------------------- train-base


def test_train_base_arch_bound_is_the_encoders(capsys, png, tmp_path, monkeypatch, no_slow_work):
    import dipcodec.layout

    monkeypatch.setattr(dipcodec.layout, "MAX_WIDTH", 50)
    code, _, err = run(capsys, "train-base", png.parent, "-o", tmp_path / "b.dipbase", "--arch", "60", "--quiet")
    assert code == 2 and "--arch must be 4 to 50" in one_error_line(err)


def test_train_base_that_cannot_save_fails_cleanly(capsys, png, tmp_path, monkeypatch, full_disk):
    """A failure to write the base is one error line and exit 2, not an internal error; the
    checkpoint survives for --resume."""
    import dipcodec.transfer.meta
    from dipcodec.transfer.basefile import load_base

    def train_base(images, network, schedule, *, checkpoint, **settings):
        checkpoint.write_bytes(b"checkpoint")
        return load_base(SEQUENCE_BASE)

    monkeypatch.setattr(dipcodec.transfer.meta, "train_base", train_base)
    code, _, err = run(capsys, "train-base", png.parent, "-o", tmp_path / "b.dipbase", "--quiet")
    assert code == 2 and "No space left on device" in one_error_line(err)
    assert listing(tmp_path) == ["b.dipbase.partial", "in.png"]


# ---------------------------------------------------------------- - for standard input and output


def _dipcodec(*argv, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dipcodec", *map(str, argv)], input=stdin, capture_output=True,
                          timeout=300)


def test_decode_and_info_read_standard_input_and_decode_writes_png_to_standard_output():
    data = (DATA / "golden-v3.dip").read_bytes()
    done = _dipcodec("decode", "-", "-", stdin=data)
    assert done.returncode == 0 and done.stderr == b""
    with Image.open(io.BytesIO(done.stdout)) as im:
        assert im.format == "PNG"
        np.testing.assert_array_equal(np.asarray(im), dipcodec.decode(data))
    done = _dipcodec("info", "-", "--json", stdin=data)
    assert done.returncode == 0 and json.loads(done.stdout)["width"] == dipcodec.info(data)["width"]
    done = _dipcodec("decode", "-", "-", stdin=data[:-3])  # damaged: one error line, nothing on stdout
    assert done.returncode == 2 and done.stdout == b"" and done.stderr.decode().startswith("dipcodec: error: -: ")


def test_encode_reads_standard_input_and_writes_standard_output(png):
    done = _dipcodec("encode", "-", "-", "--preset", "fast", "--bpp", "4", "--quiet", stdin=png.read_bytes())
    assert done.returncode == 0 and done.stderr == b""
    decoded = dipcodec.decode(done.stdout)
    assert decoded.shape == (24, 32, 3)
    assert psnr(np.asarray(Image.open(png)), decoded) > 20


@pytest.mark.parametrize("command", ["encode", "decode", "restore"])
def test_binary_output_to_a_terminal_is_refused_before_the_work(capsys, monkeypatch, png, no_slow_work, command):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    argv = {"encode": ["encode", png, "-"], "decode": ["decode", DATA / "golden-v3.dip", "-"],
            "restore": ["restore", "denoise", png, "-"]}[command]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert one_error_line(err) == "dipcodec: error: refusing to write binary data to a terminal (redirect standard output)"
