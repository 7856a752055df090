"""What an evaluation leaves in its output folder, made from the cached units alone.

- ``CODEC.json`` per codec in CompressAI's layout: the mean over images at each target rate.
- ``curves/CODEC.json`` per classic codec, same layout: the mean sweep curve at common rates.
- ``images/IMAGE.json``: every codec's result at each target on that image, with the setting used.
- ``rd.png``: mean PSNR against bpp for every codec.
- ``crops/IMAGE-Rbpp.png``: original | dipcodec | JPEG | WebP at the same target rate.
- ``report.md``: method, machine, versions, the command, the tables, the BD-rates and the crops.
"""

from __future__ import annotations

import base64
import io
import json
import math
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from ..images import write_atomic
from .bdrate import bd_psnr, bd_rate
from .classic import SPECS, decode_classic, encode_classic
from .curves import mean_curve
from .metrics import MS_SSIM_MIN_SIDE
from .plots import COLORS, Series, plot_rd
from .run import EvalConfig, Results, command_line, load_rgb, machine

__all__ = ["KODAK_REFERENCE", "CROP_SIDE", "CROPS_PER_TARGET", "write_outputs"]

KODAK_REFERENCE = {
    # ../shared/data/README.md: Pillow 13 on all 24 Kodak images, mean of per-image RGB PSNR interpolated
    # at each rate, measured on the project's machine kind. The eval must reproduce them within 0.3 dB.
    "jpeg": {0.5: 29.36, 0.75: 31.39, 1.0: 32.87},
    "webp": {0.25: 28.99, 0.5: 31.89, 0.75: 33.88, 1.0: 35.42},
    "avif": {0.25: 30.06, 0.5: 32.94, 0.75: 34.91, 1.0: 36.37},
}
KODAK_TOLERANCE_DB = 0.3
CROP_SIDE = 192
CROPS_PER_TARGET = 2
LABELS = {"dipcodec": "dipcodec", **{name: spec.label for name, spec in SPECS.items()}}
_JSON_KEYS = {"psnr": "psnr-rgb", "ms_ssim": "ms-ssim-rgb", "bpp": "bpp", "encode_s": "encoding_time",
              "decode_s": "decoding_time"}


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(value, indent=2) + "\n").encode(), force=True)


def _mean(values: list) -> float | None:
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


# ---------------------------------------------------------------- aggregates


@dataclass(frozen=True)
class TargetRow:
    """One codec at one target rate, over all images; the means are None unless every file fits."""

    codec: str
    target: float
    images: int
    over: int
    means: dict
    times_by_device: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    """dipcodec's mean encode and decode seconds per device, where its files came from more than one
    (the means then leave times out: a mean over a CPU and a GPU says nothing)."""


def _target_rows(config: EvalConfig, results: Results) -> dict[str, list[TargetRow]]:
    rows: dict[str, list[TargetRow]] = {}
    for codec in config.codecs:
        rows[codec] = []
        for target in config.targets:
            records = [results.points[(im.name, codec, target)] for im in results.images]
            over = sum(not r["fits"] for r in records)
            means = {} if over else {k: _mean([r[k] for r in records])
                                     for k in ("bpp", "psnr", "ssim", "ms_ssim", "encode_s", "decode_s")}
            devices = sorted({r["computed"]["device"] for r in records}) if codec == "dipcodec" else []
            times = {}
            if len(devices) > 1 and means:
                on = {d: [r for r in records if r["computed"]["device"] == d] for d in devices}
                times = {d: (_mean([r["encode_s"] for r in rs]), _mean([r["decode_s"] for r in rs]))
                         for d, rs in on.items()}
                means["encode_s"] = means["decode_s"] = None
            rows[codec].append(TargetRow(codec, target, len(records), over, means, times))
    return rows


def _grid(targets: tuple[float, ...]) -> np.ndarray:
    """Common rates for the mean curves: 48 steps even in log-rate around the targets, and the targets."""
    dense = np.geomspace(0.8 * min(targets), 1.25 * max(targets), 48)
    return np.unique(np.round(np.concatenate([dense, targets]), 6))


def _curves(config: EvalConfig, results: Results, at: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Per classic codec, the mean PSNR and MS-SSIM curves read at rates ``at``."""
    curves = {}
    for codec in config.codecs:
        if codec == "dipcodec":
            continue
        sweeps = [results.sweeps[(im.name, codec)]["points"] for im in results.images]
        psnr = mean_curve([([p["bpp"] for p in s], [p["psnr"] for p in s]) for s in sweeps], at)
        if all(p["ms_ssim"] is not None for s in sweeps for p in s):
            ms = mean_curve([([p["bpp"] for p in s], [p["ms_ssim"] for p in s]) for s in sweeps], at)
        else:
            ms = np.full(at.shape, np.nan)
        at_targets = mean_curve([([p["bpp"] for p in s], [p["psnr"] for p in s]) for s in sweeps], config.targets)
        curves[codec] = {"bpp": at, "psnr": psnr, "ms_ssim": ms, "at_targets": at_targets}
    return curves


def _bd_table(config: EvalConfig, rows: dict[str, list[TargetRow]],
              curves: dict[str, dict[str, np.ndarray]]) -> list[tuple[str, str, str, str]]:
    """(codec, BD-rate %, BD-PSNR dB, points used) of dipcodec against each classic codec."""
    if "dipcodec" not in rows:
        return []
    test = [(r.means["bpp"], r.means["psnr"]) for r in rows["dipcodec"] if r.means.get("psnr") is not None]
    table = []
    for codec, curve in curves.items():
        anchor = [(t, float(p)) for t, p in zip(config.targets, curve["at_targets"]) if math.isfinite(p)]
        used = f"{len(test)} dipcodec, {len(anchor)} {LABELS[codec]}"
        try:
            args = ([b for b, _ in anchor], [p for _, p in anchor], [b for b, _ in test], [p for _, p in test])
            table.append((codec, f"{bd_rate(*args):+.1f} %", f"{bd_psnr(*args):+.2f}", used))
        except ValueError as exc:
            table.append((codec, f"n/a ({exc})", "n/a", used))
    return table


# ---------------------------------------------------------------- files


def _compressai(config: EvalConfig, results: Results, rows: dict[str, list[TargetRow]],
                curves: dict[str, dict[str, np.ndarray]]) -> list[Path]:
    written = []
    n = len(results.images)
    for codec, codec_rows in rows.items():
        usable = [r for r in codec_rows if r.means]
        left_out = [f"{r.target:g}" for r in codec_rows if not r.means]
        if codec == "dipcodec":
            how = f"dipcodec {config.preset} preset, --bpp rate control at each target"
            name = f"dipcodec ({config.preset})"
        else:
            how = f"{SPECS[codec].description}; at each target the largest file within it (bisection)"
            name = LABELS[codec]
        description = (f"{how}. Mean over {n} images of {config.source.name} at target rates "
                       f"{', '.join(f'{r.target:g}' for r in usable)} bpp; PSNR per image, then averaged; bpp from "
                       f"the whole file's bytes; times in seconds per image."
                       + (f" Left out (some file over the target): {', '.join(left_out)} bpp." if left_out else ""))
        out = {"name": name, "description": description,
               "results": {key: [r.means[field] for r in usable] for field, key in _JSON_KEYS.items()}}
        path = config.out / f"{codec}.json"
        _write_json(path, out)
        written.append(path)
    for codec, curve in curves.items():
        ok = np.isfinite(curve["psnr"])
        results_ = {"psnr-rgb": curve["psnr"][ok].tolist(), "bpp": curve["bpp"][ok].tolist()}
        if np.all(np.isfinite(curve["ms_ssim"][ok])):
            results_["ms-ssim-rgb"] = curve["ms_ssim"][ok].tolist()
        path = config.out / "curves" / f"{codec}.json"
        _write_json(path, {"name": LABELS[codec], "description": (
            f"{SPECS[codec].description}. Each image's sweep ({SPECS[codec].setting_name} "
            f"{SPECS[codec].sweep[0]:g} to {SPECS[codec].sweep[-1]:g}, {len(SPECS[codec].sweep)} settings) read at "
            f"common rates by PCHIP in log-rate over its undominated points, then averaged over {n} images of "
            f"{config.source.name}; rates outside any image's sweep are left out."), "results": results_})
        written.append(path)
    return written


def _per_image(config: EvalConfig, results: Results) -> None:
    drop = {"schema", "image", "image_sha256", "codec", "file_base64", "computed", "options"}
    for im in results.images:
        out = {"image": im.name, "file": im.path.name, "sha256": im.sha256, "width": im.width, "height": im.height,
               "results": {codec: [{k: v for k, v in results.points[(im.name, codec, t)].items() if k not in drop}
                                   for t in config.targets] for codec in config.codecs}}
        _write_json(config.out / "images" / f"{im.name}.json", out)


def _plot(config: EvalConfig, results: Results, rows: dict[str, list[TargetRow]],
          curves: dict[str, dict[str, np.ndarray]]) -> Path:
    series = []
    for codec, curve in curves.items():
        series.append(Series(LABELS[codec], tuple(curve["bpp"]), tuple(curve["psnr"]), "curve", COLORS[codec]))
    if "dipcodec" in rows:
        pts = [(r.means["bpp"], r.means["psnr"]) for r in rows["dipcodec"] if r.means.get("psnr") is not None]
        series.insert(0, Series(f"dipcodec ({config.preset})", tuple(b for b, _ in pts), tuple(p for _, p in pts),
                                "points", COLORS["dipcodec"]))
    n = len(results.images)
    title = f"{config.source.name}: {n} image{'s' * (n != 1)}, RGB PSNR averaged over images"
    path = config.out / "rd.png"
    write_atomic(path, plot_rd(series, title, x_max=1.15 * max(config.targets)), force=True)
    return path


def _crop_box(pixels: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left corner of the ``side``-square with the most detail (gradient energy) in the original."""
    gray = pixels.astype(np.float64).mean(axis=2)
    energy = np.zeros_like(gray)
    energy[:, 1:] += np.diff(gray, axis=1) ** 2
    energy[1:, :] += np.diff(gray, axis=0) ** 2
    summed = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = gray.shape
    step = max(1, side // 8)
    best, corner = -1.0, (0, 0)
    for y in range(0, h - side + 1, step):
        for x in range(0, w - side + 1, step):
            total = summed[y + side, x + side] - summed[y, x + side] - summed[y + side, x] + summed[y, x]
            if total > best:
                best, corner = total, (y, x)
    return corner


def _strip(panels: list[tuple[str, str, np.ndarray]]) -> bytes:
    """Panels side by side, each under a two-line label (clipped to the panel), as a PNG.

    Crops narrower than 160 pixels are enlarged by an integer factor (nearest neighbour) to be seen.
    """
    gap, label_h = 6, 32
    side = panels[0][2].shape[0]
    zoom = max(1, math.ceil(160 / side))
    w = side * zoom
    sheet = Image.new("RGB", (len(panels) * w + (len(panels) - 1) * gap, w + label_h), "white")
    try:
        font = ImageFont.load_default(size=12)
    except (TypeError, OSError):
        font = ImageFont.load_default()
    for i, (title, detail, pixels) in enumerate(panels):
        label = Image.new("RGB", (w, label_h), "white")
        draw = ImageDraw.Draw(label)
        draw.text((2, 2), title, fill="black", font=font)
        draw.text((2, 17), detail, fill="black", font=font)
        x = i * (w + gap)
        sheet.paste(label, (x, 0))
        sheet.paste(Image.fromarray(pixels).resize((w, w), Image.Resampling.NEAREST), (x, label_h))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _crops(config: EvalConfig, results: Results) -> list[tuple[str, float, Path, list[str]]]:
    """Crops for the first images with a dipcodec file within each target; (image, target, PNG, captions)."""
    if "dipcodec" not in config.codecs:
        return []
    made = []
    for target in config.targets:
        chosen = [im for im in results.images if results.points[(im.name, "dipcodec", target)]["fits"]]
        for im in chosen[:CROPS_PER_TARGET]:
            original = load_rgb(im.path)
            side = min(CROP_SIDE, im.width, im.height)
            y, x = _crop_box(original, side)
            cut = lambda a: a[y : y + side, x : x + side]  # noqa: E731
            panels, captions = [("original", f"{im.name}, {side}x{side}", cut(original))], ["original"]
            for codec in ("dipcodec", "jpeg", "webp"):
                if codec not in config.codecs:
                    continue
                r = results.points[(im.name, codec, target)]
                if not r["fits"]:
                    captions.append(f"{LABELS[codec]}: no file within {target:g} bpp")
                    continue
                if codec == "dipcodec":
                    from ..decoder import decode

                    decoded = decode(base64.b64decode(r["file_base64"]), device="cpu")
                    setting = ""
                else:
                    data = encode_classic(codec, original, r["setting"])
                    if len(data) != r["bytes"]:
                        captions.append(f"{LABELS[codec]}: re-encoding gave a different file; left out")
                        continue
                    decoded = decode_classic(data)
                    setting = f" q{r['setting']:g}"
                detail = f"{r['bpp']:.3f} bpp, {r['psnr']:.2f} dB"
                panels.append((f"{LABELS[codec]}{setting}", detail, cut(decoded)))
                captions.append(f"{LABELS[codec]}{setting} {detail}")
            path = config.out / "crops" / f"{im.name}-{target:g}bpp.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, _strip(panels), force=True)
            made.append((im.name, target, path, captions))
    return made


# ---------------------------------------------------------------- report.md


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _versions(results: Results, config: EvalConfig) -> list[str]:
    from .. import __version__

    lines = [f"Software (this run): Python {platform.python_version()}, numpy {np.__version__}, "
             f"scipy {_version('scipy')}, Pillow {Image.__version__} (libjpeg-turbo {features.version('jpg')}, "
             f"libwebp {features.version('webp')}, OpenJPEG {features.version('jpg_2000')}, "
             f"libavif {features.version('avif')}), "
             f"torch {_version('torch')}, dipcodec {__version__}."]
    classic = [r for r in [*results.points.values(), *results.sweeps.values()] if r["codec"] != "dipcodec"]
    pillows = sorted({r["computed"]["pillow"] for r in classic})
    if pillows and pillows != [Image.__version__]:
        lines.append(f"Classic results were computed with Pillow {', '.join(pillows)}.")
    fits = [r for (_, c, _), r in results.points.items() if c == "dipcodec"]
    if fits:
        commits = sorted({str(r["computed"]["commit"]) for r in fits})
        threads = sorted({r["computed"]["torch_threads"] for r in fits})
        devices = sorted({r["computed"]["device"] for r in fits})
        torches = sorted({r["computed"]["torch"] for r in fits})
        dirty = " (+dirty: the codec had uncommitted changes)" if any("+dirty" in c for c in commits) else ""
        lines.append(f"dipcodec results: commit {', '.join(commits)}{dirty}, "
                     f"torch {', '.join(torches)}, {', '.join(map(str, threads))} torch thread(s), "
                     f"device {', '.join(devices)}.")
    return lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _kodak_check(results: Results, curves: dict[str, dict[str, np.ndarray]]) -> list[str]:
    """The reference figures of ../shared/data/README.md against this run, when it covers all of Kodak."""
    if sorted(im.name for im in results.images) != [f"kodim{i:02d}" for i in range(1, 25)]:
        return []
    rows = []
    for codec, reference in KODAK_REFERENCE.items():
        if codec not in curves:
            continue
        sweeps = [results.sweeps[(im.name, codec)]["points"] for im in results.images]
        rates = sorted(reference)
        measured = mean_curve([([p["bpp"] for p in s], [p["psnr"] for p in s]) for s in sweeps], rates)
        for rate, value in zip(rates, measured):
            diff = value - reference[rate]
            ok = "yes" if math.isfinite(diff) and abs(diff) <= KODAK_TOLERANCE_DB else "**no**"
            rows.append([LABELS[codec], f"{rate:g}", f"{reference[rate]:.2f}", _fmt(value), f"{diff:+.2f}", ok])
    if not rows:
        return []
    return ["## Reference check: Kodak", "",
            "Mean of per-image PSNR read off each image's sweep at the rate, against the reference figures in "
            f"`../shared/data/README.md` (Pillow 13, all 24 images); the pipeline should agree within "
            f"{KODAK_TOLERANCE_DB} dB.", "",
            *_table(["codec", "bpp", "reference dB", "this run dB", "difference", f"within {KODAK_TOLERANCE_DB} dB"],
                    rows), ""]


def write_outputs(config: EvalConfig, results: Results) -> Path:
    """Write every output of the run from its units; returns the path of report.md."""
    rows = _target_rows(config, results)
    curves = _curves(config, results, _grid(config.targets))
    _compressai(config, results, rows, curves)
    _per_image(config, results)
    _plot(config, results, rows, curves)
    crops = _crops(config, results)
    bd = _bd_table(config, rows, curves)
    n = len(results.images)
    dates = sorted(r["computed"]["date"] for r in [*results.points.values(), *results.sweeps.values()])
    small = [im.name for im in results.images if min(im.width, im.height) < MS_SSIM_MIN_SIDE]
    machines = sorted({r["computed"].get("machine", "not recorded")
                       for r in [*results.points.values(), *results.sweeps.values()]})

    from ..encoder import resolve_base  # here, not at the top: the encoder loads torch

    md = [f"# dipcodec eval: {config.source.name}, {n} image{'s' * (n != 1)}", "",
          f"Command: `{command_line(config)}`", "",
          f"Written {datetime.now(timezone.utc).isoformat(timespec='seconds')}; results computed "
          f"{dates[0]} to {dates[-1]} ({results.computed} units now, {results.cached} from the cache in "
          f"`cache/`).", "",
          f"Machine: {', '.join(machines)}.", "", *(f"{line}" for line in _versions(results, config)), "",
          f"Images ({n}): {', '.join(im.name for im in results.images)}.", "",
          "## Method", "",
          "- **PSNR** is RGB PSNR of the decoded uint8 image, computed per image and then averaged over images "
          "(the mean of per-image PSNRs, not the PSNR of the mean error). SSIM and MS-SSIM likewise: Gaussian "
          "window 11, sigma 1.5, channel mean; MS-SSIM with five scales as `pytorch_msssim` computes it"
          + (f" (n/a on images under {MS_SSIM_MIN_SIDE} pixels a side: {', '.join(small)})" if small else "") + ".",
          "- **bpp** is 8 x the bytes of the whole file / pixels, headers included.",
          "- **Times** are seconds per image on the machine above: for a classic codec, one encode at the chosen "
          "setting; for dipcodec, the whole rate-controlled encode; decoding to pixels for both. Where dipcodec's "
          "files were made on more than one device (`--device`), its times are given per device.",
          "- **Classic codecs** through Pillow: "
          + "; ".join(f"{SPECS[c].label}: {SPECS[c].description}" for c in config.codecs if c != "dipcodec") + ".",
          "  At each target, the file at the highest setting that is no bigger than the target (bisection over the "
          "setting). For the curves, each codec's sweep of settings on every image.",
          "- **Mean curves** of the classic codecs: each image's sweep is reduced to its undominated points, read at "
          "common rates by PCHIP in log-rate, and the readings are averaged over images; a rate outside any "
          "image's sweep is left out, never extrapolated.",
          f"- **dipcodec**: `--bpp` rate control at each target, preset `{config.preset}`, seed 0, "
          + ("coded against a shipped base model where one fits the image's network (`--base auto` at this "
             "preset)." if resolve_base("auto", config.preset) == "default" else "coded from the seed (`--base auto` "
             "at this preset)."),
          "- **BD-rate and BD-PSNR** (Bjontegaard, piecewise cubic: PCHIP in log-rate, integrated exactly over the "
          "range both curves cover) of dipcodec against each classic codec. Anchor: the codec's mean curve read at "
          "the target rates. Test: dipcodec's mean (bpp, PSNR) at each target. Negative BD-rate and positive "
          "BD-PSNR mean dipcodec is better.", ""]

    md += ["## At each target rate", "",
           "Mean over images of the files at each target. n/a: some image has no file within the target "
           "(the codec's smallest file is bigger).", ""]
    table = []
    for codec in config.codecs:
        for r in rows[codec]:
            m = r.means
            if not m:
                table.append([LABELS[codec], f"{r.target:g}", f"{r.images}", f"n/a: {r.over} over", "", "", "", "",
                              ""])
                continue
            times = [_fmt(m["encode_s"], 3), _fmt(m["decode_s"], 3)]
            if r.times_by_device:
                times = [", ".join(f"{d} {_fmt(t[i], 3)}" for d, t in r.times_by_device.items()) for i in (0, 1)]
            table.append([LABELS[codec], f"{r.target:g}", f"{r.images}", _fmt(m["bpp"], 4), _fmt(m["psnr"]),
                          _fmt(m["ms_ssim"], 4), _fmt(m["ssim"], 4), *times])
    md += _table(["codec", "target bpp", "images", "bpp", "PSNR dB", "MS-SSIM", "SSIM", "encode s", "decode s"],
                 table) + [""]

    if curves:
        md += ["## Classic codecs: mean curves at the target rates", "",
               "Mean of per-image PSNR (dB) read off each image's sweep at exactly the target rate.", ""]
        md += _table(["codec", *(f"{t:g} bpp" for t in config.targets)],
                     [[LABELS[c], *(_fmt(float(p)) for p in curve["at_targets"])]
                      for c, curve in curves.items()]) + [""]
    md += _kodak_check(results, curves)
    if bd:
        md += ["## BD-rate of dipcodec", "",
               "Against each codec, on the same images; the curves' points are described under Method.", ""]
        md += _table(["against", "BD-rate", "BD-PSNR dB", "points"], [[LABELS[c], *rest] for c, *rest in bd]) + [""]
    md += ["## Rate-distortion curves", "", "![PSNR against bpp](rd.png)", "",
           "Results in CompressAI's layout: " + ", ".join(f"[`{c}.json`]({c}.json)" for c in config.codecs)
           + (" (means at the targets); mean curves: " + ", ".join(f"[`curves/{c}.json`](curves/{c}.json)"
                                                                  for c in curves) if curves else "")
           + "; per image: `images/`.", ""]
    if crops:
        md += ["## Crops at matched rates", "",
               f"The {CROP_SIDE}x{CROP_SIDE} region (or less, on small images) with the most detail in the original, "
               f"at 1:1 (small images enlarged), for the first "
               f"{CROPS_PER_TARGET} images at each target; every codec at the same target.", ""]
        for name, target, path, captions in crops:
            md += [f"**{name} at {target:g} bpp**: " + " | ".join(captions), "",
                   f"![{name} at {target:g} bpp]({path.relative_to(config.out).as_posix()})", ""]
    notes = sorted({f"{r['image']} at {r['target_bpp']:g} bpp: {w}" for (_, c, _), r in results.points.items()
                    if c == "dipcodec" for w in r["warnings"]})
    if notes:
        md += ["## Warnings from the encoder", "", *(f"- {w}" for w in notes), ""]
    path = config.out / "report.md"
    write_atomic(path, "\n".join(md).encode(), force=True)
    return path
