"""The command line, through ``dipcodec.cli.main`` (which returns the exit status)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dipcodec
from dipcodec.cli import main

from conftest import make_image

pytestmark = pytest.mark.usefixtures("single_thread")

FAST = ["--preset", "fast"]


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


def test_progress_bar_and_summary_without_quiet(capsys, png, tmp_path):
    code, out, err = run(capsys, "encode", png, tmp_path / "x.dip", "--bpp", "2", *FAST)
    assert code == 0 and out == ""
    assert "fitting" in err  # the progress bar
    assert "PSNR" in err
    summary = err.replace("\r", "\n").strip().splitlines()[-1]
    size = (tmp_path / "x.dip").stat().st_size
    assert summary.startswith(f"{tmp_path / 'x.dip'}: {size} bytes")
    assert "PSNR" in summary and "dB" in summary


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
    one_error_line(err)
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.dip"]


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
