"""``dipcodec eval`` end to end through ``dipcodec.cli.main``, on tiny generated images."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dipcodec
from dipcodec import encoder
from dipcodec.cli import main
from dipcodec.evaluation import classic, run
from dipcodec.evaluation.classic import decode_classic, encode_classic
from dipcodec.fit import FitSchedule

from conftest import make_image
from conftest import psnr as independent_psnr
from test_cli import one_error_line
from test_eval import textured

pytestmark = pytest.mark.usefixtures("single_thread")

COMPRESSAI_KEYS = {"psnr-rgb", "ms-ssim-rgb", "bpp", "encoding_time", "decoding_time"}
CLASSIC = ["--codecs", "jpeg,webp", "--bpp", "0.5,1.0", "--quiet"]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cache_state(out: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted((out / "cache").rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Two images big enough for MS-SSIM (161 pixels a side), one with an odd side."""
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(textured(176, 192)).save(folder / "alpha.png")
    Image.fromarray(textured(171, 165)).save(folder / "beta.png")
    (folder / "notes.txt").write_text("not an image; ignored\n")
    return folder


@pytest.fixture(scope="module")
def classic_run(images, tmp_path_factory) -> Path:
    """One finished JPEG + WebP evaluation; tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("eval") / "out"
    assert main(["eval", str(images), "--out", str(out), *CLASSIC]) == 0
    return out


def copy_of(out: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "out"
    shutil.copytree(out, dst)
    return dst


# ---------------------------------------------------------------- outputs


def test_results_json_in_compressai_layout(classic_run):
    for codec in ("jpeg", "webp"):
        doc = json.loads((classic_run / f"{codec}.json").read_text())
        assert set(doc) == {"name", "description", "results"}
        assert set(doc["results"]) == COMPRESSAI_KEYS
        res = doc["results"]
        assert all(len(v) == 2 for v in res.values())
        assert res["bpp"][0] <= 0.5 < res["bpp"][1] <= 1.0
        assert 20 < res["psnr-rgb"][0] < res["psnr-rgb"][1]
        assert 0 < res["ms-ssim-rgb"][0] < res["ms-ssim-rgb"][1] <= 1
        assert all(t >= 0 for t in res["encoding_time"] + res["decoding_time"])
        curve = json.loads((classic_run / "curves" / f"{codec}.json").read_text())
        assert len(curve["results"]["bpp"]) == len(curve["results"]["psnr-rgb"]) > 10
        assert curve["results"]["bpp"] == sorted(curve["results"]["bpp"])


def test_per_image_results_record_the_setting_and_are_true(classic_run, images):
    means = json.loads((classic_run / "jpeg.json").read_text())["results"]
    per_image = {name: json.loads((classic_run / "images" / f"{name}.json").read_text()) for name in ("alpha", "beta")}
    for name, doc in per_image.items():
        assert doc["width"] * doc["height"] == (192 * 176 if name == "alpha" else 165 * 171)
        original = np.asarray(Image.open(images / f"{name}.png").convert("RGB"))
        for r in doc["results"]["jpeg"]:
            assert r["setting_name"] == "quality" and r["fits"]
            # Re-encode at the recorded quality: the same file, the same PSNR by an independent formula.
            data = encode_classic("jpeg", original, r["setting"])
            assert len(data) == r["bytes"] <= r["target_bpp"] * original.shape[0] * original.shape[1] / 8
            assert len(encode_classic("jpeg", original, r["setting"] + 1)) > r["bytes"]  # the largest within
            assert r["bpp"] == pytest.approx(8 * len(data) / (original.shape[0] * original.shape[1]))
            assert r["psnr"] == pytest.approx(independent_psnr(original, decode_classic(data)))
    for i in range(2):  # the codec JSON is the mean of the per-image values
        mean = np.mean([d["results"]["jpeg"][i]["psnr"] for d in per_image.values()])
        assert means["psnr-rgb"][i] == pytest.approx(mean)


def test_rd_plot_and_report(classic_run):
    with Image.open(classic_run / "rd.png") as im:
        assert im.format == "PNG" and im.size[0] >= 800
    report = (classic_run / "report.md").read_text()
    assert "per image and then averaged over images" in report
    assert "whole file" in report
    assert f"Pillow {Image.__version__}" in report and "torch " in report and "Machine:" in report
    assert "Command: `dipcodec eval " in report and "--codecs jpeg,webp --bpp 0.5,1" in report
    assert "![PSNR against bpp](rd.png)" in report
    assert "| JPEG | 0.5 | 2 |" in report and "| WebP | 1 | 2 |" in report
    assert "BD-rate of dipcodec" not in report  # no dipcodec in this run


# ---------------------------------------------------------------- the cache


def test_second_run_reads_the_cache(classic_run, images, tmp_path, monkeypatch, capsys):
    out = copy_of(classic_run, tmp_path)
    before = cache_state(out)
    results_before = (out / "jpeg.json").read_text()

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded although everything was cached")

    monkeypatch.setattr(classic, "encode_classic", no_encoding)
    code, _, err = run_cli(capsys, "eval", images, "--out", out, *CLASSIC[:-1])
    assert code == 0
    assert "0 results computed, 12 from the cache" in err
    assert cache_state(out) == before
    assert (out / "jpeg.json").read_text() == results_before


def test_an_interrupted_run_continues_where_it_stopped(images, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    real = classic.encode_classic

    def interrupt_webp(codec, pixels, setting):
        if codec == "webp":
            raise KeyboardInterrupt
        return real(codec, pixels, setting)

    monkeypatch.setattr(classic, "encode_classic", interrupt_webp)
    code, _, err = run_cli(capsys, "eval", images, "--out", out, *CLASSIC)
    assert code == 130 and "interrupted" in err
    done = sorted(p.name for p in (out / "cache" / "alpha").iterdir())
    assert done == ["jpeg-0.5bpp.json", "jpeg-1bpp.json", "jpeg-sweep.json"]  # alpha's JPEG, stored at once

    calls = []

    def counting(codec, pixels, setting):
        calls.append(codec)
        return real(codec, pixels, setting)

    monkeypatch.setattr(classic, "encode_classic", counting)
    code, _, err = run_cli(capsys, "eval", images, "--out", out, *CLASSIC[:-1])
    assert code == 0 and "9 results computed, 3 from the cache" in err
    assert "tasks" in err and "ETA" in err  # the progress bar
    assert calls.count("jpeg") > 0 and set(calls) == {"jpeg", "webp"}  # beta's JPEG and all WebP, nothing else
    assert json.loads((out / "webp.json").read_text())["results"]["bpp"][1] <= 1.0


def test_a_changed_image_is_measured_again(classic_run, images, tmp_path, capsys):
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    Image.fromarray(textured(176, 192)[::-1].copy()).save(folder / "alpha.png")
    out = copy_of(classic_run, tmp_path)
    code, _, err = run_cli(capsys, "eval", folder, "--out", out, *CLASSIC[:-1])
    assert code == 0 and "6 results computed, 6 from the cache" in err


def test_parallel_jobs_give_the_same_results(classic_run, images, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, "eval", images, "--out", out, "--jobs", "2", "--codecs", "jpeg", *CLASSIC[2:])
    assert code == 0
    assert sorted(p.name for p in (out / "cache").iterdir()) == ["alpha", "beta"]
    for codec in ("jpeg",):
        parallel = json.loads((out / f"{codec}.json").read_text())["results"]
        serial = json.loads((classic_run / f"{codec}.json").read_text())["results"]
        for key in ("psnr-rgb", "ms-ssim-rgb", "bpp"):
            assert parallel[key] == pytest.approx(serial[key], abs=1e-12)


def test_images_and_limit_select(images, tmp_path, capsys):
    code, _, err = run_cli(capsys, "eval", images, "--out", tmp_path / "a", "--images", "beta", "--codecs", "jpeg",
                           "--bpp", "1")
    assert code == 0 and "1 images" in err
    assert [p.name for p in (tmp_path / "a" / "images").iterdir()] == ["beta.json"]
    code, _, _ = run_cli(capsys, "eval", images, "--out", tmp_path / "b", "--limit", "1", "--codecs", "jpeg",
                         "--bpp", "1", "--quiet")
    assert code == 0
    assert [p.name for p in (tmp_path / "b" / "images").iterdir()] == ["alpha.json"]
    assert "--limit 1" in (tmp_path / "b" / "report.md").read_text()


def test_collect_fills_the_cache_and_leaves_the_report_alone(classic_run, images, tmp_path):
    out = copy_of(classic_run, tmp_path)
    report = (out / "report.md").read_bytes()
    config = run.EvalConfig(source=images, out=out, codecs=("jpeg",), targets=(1.0, 1.5), quiet=True)
    results = run.collect(config)
    assert results.cached == 4 and results.computed == 2  # 1 bpp and the sweep cached; 1.5 bpp new
    assert (out / "cache" / "alpha" / "jpeg-1.5bpp.json").is_file()
    assert (out / "report.md").read_bytes() == report


# ---------------------------------------------------------------- with dipcodec


@pytest.fixture
def tiny_fast_preset(monkeypatch):
    """The fast preset cut to 70 iterations: these tests check the plumbing, not the fit."""
    monkeypatch.setitem(encoder.PRESETS, "fast", FitSchedule(iterations=60, qat_iterations=10))


def test_dipcodec_against_jpeg(tmp_path, tiny_fast_preset, monkeypatch, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(make_image(48, 64)).save(folder / "a.png")
    Image.fromarray(make_image(40, 40, gray=True)).save(folder / "b.png")
    out = tmp_path / "out"
    argv = ["eval", folder, "--out", out, "--codecs", "dipcodec,jpeg", "--bpp", "3,4,6", "--preset", "fast"]
    code, _, err = run_cli(capsys, *argv, "--quiet")
    assert code == 0, err

    doc = json.loads((out / "dipcodec.json").read_text())
    assert doc["name"] == "dipcodec (fast)" and set(doc["results"]) == COMPRESSAI_KEYS
    assert doc["results"]["ms-ssim-rgb"] == [None, None, None]  # images under 161 pixels a side
    for name, shape in (("a", (48, 64, 3)), ("b", (40, 40, 3))):
        record = json.loads((out / "cache" / name / "dipcodec-fast-3bpp.json").read_text())
        data = base64.b64decode(record["file_base64"])
        assert len(data) == record["bytes"] and record["fits"]
        decoded = dipcodec.decode(data)
        assert decoded.shape == shape  # the eval works in RGB: the grayscale image is coded as three channels
        original = np.asarray(Image.open(folder / f"{name}.png").convert("RGB"))
        assert record["psnr"] == pytest.approx(independent_psnr(original, decoded))
        assert record["computed"]["commit"] is None or len(record["computed"]["commit"]) >= 7
    report = (out / "report.md").read_text()
    assert "## BD-rate of dipcodec" in report and "| JPEG |" in report
    assert "preset `fast`" in report and "dipcodec results: commit" in report
    crops = sorted(p.name for p in (out / "crops").iterdir())
    assert crops == ["a-3bpp.png", "a-4bpp.png", "a-6bpp.png", "b-3bpp.png", "b-4bpp.png", "b-6bpp.png"]
    assert "![a at 4 bpp](crops/a-4bpp.png)" in report

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted although the result was cached")

    real_encode = encoder.encode_detailed
    monkeypatch.setattr(encoder, "encode_detailed", no_fit)
    code, _, err = run_cli(capsys, *argv)
    assert code == 0 and "0 results computed, 14 from the cache" in err
    with Image.open(out / "crops" / "a-4bpp.png") as im:  # crops are made again from the cached file
        assert im.size[1] > 48

    # Files from two devices: the report gives dipcodec's times per device, not one mean over both.
    unit = out / "cache" / "a" / "dipcodec-fast-4bpp.json"
    record = json.loads(unit.read_text())
    record["computed"]["device"], record["encode_s"] = "cuda", 99.0
    unit.write_text(json.dumps(record))
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    rows = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| dipcodec |")]
    on_cpu = json.loads((out / "cache" / "b" / "dipcodec-fast-4bpp.json").read_text())["encode_s"]
    assert f"cpu {on_cpu:.3f}, cuda 99.000" in rows[1] and "cuda" not in rows[0] + rows[2]
    assert json.loads((out / "dipcodec.json").read_text())["results"]["encoding_time"][1] is None

    # Once the codec's source changes, its cached results no longer stand for it (the classic ones do).
    monkeypatch.setattr(encoder, "encode_detailed", real_encode)
    monkeypatch.setattr(run, "codec_source", lambda: "another codec")
    code, _, err = run_cli(capsys, *argv)
    assert code == 0 and "6 results computed, 8 from the cache" in err


def test_source_hash_follows_the_codec_files_only(tmp_path):
    package = tmp_path / "dipcodec"
    (package / "evaluation").mkdir(parents=True)
    (package / "__pycache__").mkdir()
    for name in ("encoder.py", "cli.py", "evaluation/report.py", "__pycache__/encoder.pyc"):
        (package / name).write_text("x = 1\n")
    first = run.source_hash(package)
    for name in ("cli.py", "evaluation/report.py", "__pycache__/encoder.pyc"):
        (package / name).write_text("x = 2\n")
    assert run.source_hash(package) == first
    (package / "encoder.py").write_text("x = 2\n")
    assert run.source_hash(package) != first
    (package / "encoder.py").write_text("x = 1\n")
    (package / "base.bin").write_bytes(b"weights")  # a data file the codec ships counts too
    assert run.source_hash(package) != first


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "options, message",
    [(["--codecs", "jpeg,gif"], "unknown codec 'gif'"),
     (["--codecs", ","], "empty"),
     (["--codecs", "jpeg,jpeg"], "twice"),
     (["--bpp", "0.5,lots"], "not a number"),
     (["--bpp", "0"], "outside"),
     (["--bpp", "-1"], "outside"),
     (["--bpp", "nan"], "outside"),
     (["--bpp", ""], "empty"),
     (["--bpp", "0.5,0.50"], "twice"),
     (["--images", "gamma"], "no image named gamma"),
     (["--jobs", "0"], "--jobs"),
     (["--limit", "0"], "--limit"),
     (["--device", "tpu"], "device")],
)
def test_bad_options_fail_with_one_line(images, tmp_path, capsys, options, message):
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "eval", images, "--out", out, *options)
    assert code == 2 and stdout == ""
    assert message in one_error_line(err)
    assert not out.exists()


def test_bad_folders_fail_with_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.txt").write_text("hello\n")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_text("not a png\n")
    (tmp_path / "file.png").write_bytes(b"")
    cases = {tmp_path / "missing": "no such folder", empty: "no images", tmp_path / "text": "no images",
             tmp_path / "broken": "not an image", tmp_path / "file.png": "not a folder"}
    for folder, message in cases.items():
        code, stdout, err = run_cli(capsys, "eval", folder, "--out", tmp_path / "out", "--codecs", "jpeg")
        assert code == 2 and stdout == ""
        assert message in one_error_line(err), folder
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_is_refused(images, tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("precious\n")
    code, _, err = run_cli(capsys, "eval", images, "--out", out, "--codecs", "jpeg")
    assert code == 2 and "not a folder" in one_error_line(err)
    assert out.read_text() == "precious\n"


def test_bad_usage_returns_2(capsys, tmp_path):
    for argv in (["eval"], ["eval", str(tmp_path), "--limit", "two"], ["eval", str(tmp_path), "--preset", "turbo"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and "usage:" in err


# ---------------------------------------------------------------- wiring


def test_eta_counts_each_codec_at_its_own_pace():
    from types import SimpleNamespace

    eta = run._Eta([SimpleNamespace(codec=c) for c in ("jpeg", "jpeg", "jpeg", "dipcodec", "dipcodec")], jobs=1)
    assert eta.text() == "ETA ?"
    eta.finish("jpeg", 2.0)
    assert eta.text() == "ETA ?"  # no dipcodec task has finished yet
    eta.finish("dipcodec", 100.0)
    assert eta.text() == "ETA 0:01:44"  # two JPEG tasks at 2 s and one dipcodec task at 100 s
    eta.jobs = 2
    assert eta.text() == "ETA 0:00:52"


def test_command_line_repeats_the_run():
    config = run.EvalConfig(source=Path("kodak"), out=Path("out dir"), codecs=("dipcodec", "jpeg"),
                            targets=(0.25, 0.5), images=run.parse_images("kodak6"), jobs=2)
    assert run.command_line(config) == ("dipcodec eval kodak --out 'out dir' --codecs dipcodec,jpeg --bpp 0.25,0.5 "
                                        "--preset default --images kodak6 --jobs 2")


def test_cli_defaults_match_the_runner():
    from dipcodec.cli import _parser

    eval_parser = _parser()._subparsers._group_actions[0].choices["eval"]
    options = {a.dest: a for a in eval_parser._actions}
    assert run.parse_codecs(options["codecs"].default) == run.DEFAULT_CODECS
    assert run.parse_targets(options["bpp"].default) == run.DEFAULT_TARGETS
    assert tuple(options["preset"].choices) == run.PRESET_NAMES == tuple(encoder.PRESETS)


def test_importing_dipcodec_loads_no_evaluation_code():
    code = ("import sys, dipcodec; dipcodec.decode; "
            "assert not [m for m in sys.modules if m.startswith(('matplotlib', 'dipcodec.evaluation', 'scipy'))]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)


def test_eval_logs_a_line_per_task_when_stderr_is_not_a_terminal(tmp_path, capsys):
    """Redirected to a log, eval writes plain lines, not a progress bar's carriage-return frames."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a", "b"):
        Image.fromarray(make_image(32, 48)).save(images / f"{name}.png")
    code, _, err = run_cli(capsys, "eval", images, "--out", tmp_path / "out", "--codecs", "jpeg", "--bpp", "1")
    assert code == 0 and "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("eval: ")]
    assert [line.split(",")[0] for line in lines] == ["eval: 1/2 tasks", "eval: 2/2 tasks"]
    assert "done a jpeg" in lines[0] and "done b jpeg" in lines[1]
