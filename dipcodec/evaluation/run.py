"""``dipcodec eval``: every codec at every target rate on every image of a folder, resumable.

The work is split into units, one (image, codec, target rate) each, plus one sweep per (image,
classic codec) for the curves. Each finished unit is a small JSON file under ``OUT/cache/IMAGE/``,
written atomically as soon as it is done, so an interrupted run continues where it stopped and the
cache can be committed and carried across machines. dipcodec units keep their ``.dip`` file inside
the JSON (base64; at most tens of kilobytes at the usual rates): it is the smallest record of the
decoded image, so the report's crops need no re-encoding. A cached unit is used when its image file
(by SHA-256) and its codec settings are unchanged, and for dipcodec while the codec's source files
hash the same (:func:`codec_source`); the commit is recorded too.
"""

from __future__ import annotations

import base64
import concurrent.futures
import functools
import hashlib
import json
import math
import multiprocessing
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from ..errors import InputError
from ..images import image_files, read_image, write_atomic
from ..presets import PRESET_NAMES, Preset
from .classic import CLASSIC_CODECS, SPECS, ClassicEncoder, decode_classic
from .metrics import measure

__all__ = ["Codec", "CODECS", "DEFAULT_CODECS", "DEFAULT_TARGETS", "IMAGE_SETS", "EvalConfig",
           "SourceImage", "Results", "parse_codecs", "parse_targets", "parse_images", "find_images", "evaluate",
           "collect", "load_rgb", "budget_bytes", "NOT_CODEC", "codec_source", "source_hash", "command_line", "machine",
           "provenance", "run_task"]

Codec = Literal["dipcodec", "jpeg", "webp", "jpeg2000", "avif"]
CODECS: tuple[Codec, ...] = ("dipcodec", *CLASSIC_CODECS)
DEFAULT_CODECS: tuple[Codec, ...] = CODECS
DEFAULT_TARGETS = (0.1, 0.25, 0.5, 0.75, 1.0)
IMAGE_SETS = {
    # ../shared/data/README.md: a fixed subset of Kodak chosen for variety, for runs too slow for all 24.
    "kodak6": ("kodim01", "kodim05", "kodim07", "kodim14", "kodim20", "kodim23"),
}
SCHEMA = 1
SEED = 0


# ---------------------------------------------------------------- configuration


def parse_codecs(text: str) -> tuple[Codec, ...]:
    """``"dipcodec,jpeg"`` -> ("dipcodec", "jpeg"), in the order given; unknown or repeated names are errors."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise InputError("--codecs is empty")
    for n in names:
        if n not in CODECS:
            raise InputError(f"unknown codec {n!r} (choose from {', '.join(CODECS)})")
    if len(set(names)) != len(names):
        raise InputError(f"--codecs names a codec twice: {text}")
    return tuple(names)  # type: ignore[return-value]


def parse_targets(text: str) -> tuple[float, ...]:
    """``"0.5,0.25"`` -> (0.25, 0.5): positive finite rates up to 24 bpp, sorted, no repeats."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise InputError("--bpp is empty")
    rates = []
    for p in parts:
        try:
            r = float(p)
        except ValueError:
            raise InputError(f"--bpp: {p!r} is not a number") from None
        if not (math.isfinite(r) and 0 < r <= 24):
            raise InputError(f"--bpp: {p} is outside (0, 24]")
        rates.append(r)
    if len(set(rates)) != len(rates):
        raise InputError(f"--bpp names a rate twice: {text}")
    return tuple(sorted(rates))


def parse_images(text: str | None) -> tuple[str, ...] | None:
    """``--images``: a named set (``kodak6``), or comma-separated file names without extension."""
    if text is None:
        return None
    if text in IMAGE_SETS:
        return IMAGE_SETS[text]
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise InputError("--images is empty")
    return names


@dataclass(frozen=True)
class EvalConfig:
    """What one ``dipcodec eval`` run measures and where it writes."""

    source: Path
    out: Path
    codecs: tuple[Codec, ...] = DEFAULT_CODECS
    targets: tuple[float, ...] = DEFAULT_TARGETS
    preset: Preset = "default"
    images: tuple[str, ...] | None = None
    limit: int | None = None
    jobs: int = 1
    device: str = "cpu"
    quiet: bool = False

    def __post_init__(self) -> None:
        if not self.codecs or any(c not in CODECS for c in self.codecs):
            raise InputError(f"codecs must be among {', '.join(CODECS)}")
        if not self.targets or any(not (math.isfinite(t) and 0 < t <= 24) for t in self.targets):
            raise InputError("target rates must be in (0, 24] bpp")
        if self.preset not in PRESET_NAMES:
            raise InputError(f"unknown preset {self.preset!r} (use {', '.join(PRESET_NAMES)})")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"--limit must be at least 1, got {self.limit}")
        if self.jobs < 1:
            raise InputError(f"--jobs must be at least 1, got {self.jobs}")


def command_line(config: EvalConfig) -> str:
    """The command that repeats this run (all options spelled out)."""
    import shlex

    parts = ["dipcodec", "eval", str(config.source), "--out", str(config.out), "--codecs", ",".join(config.codecs),
             "--bpp", ",".join(f"{t:g}" for t in config.targets)]
    if "dipcodec" in config.codecs:
        parts += ["--preset", config.preset]
        if config.device != "cpu":
            parts += ["--device", config.device]
    if config.images is not None:
        named = [k for k, v in IMAGE_SETS.items() if v == config.images]
        parts += ["--images", named[0] if named else ",".join(config.images)]
    if config.limit is not None:
        parts += ["--limit", str(config.limit)]
    if config.jobs != 1:
        parts += ["--jobs", str(config.jobs)]
    return shlex.join(parts)


# ---------------------------------------------------------------- images


@dataclass(frozen=True)
class SourceImage:
    """One image of the folder: its name is the file name without extension."""

    name: str
    path: Path
    sha256: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def load_rgb(path: Path) -> np.ndarray:
    """The image as uint8 RGB: grayscale is repeated into three channels, alpha dropped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pixels = read_image(path)
    return np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels


def find_images(config: EvalConfig) -> list[SourceImage]:
    """The images of ``config.source`` (files Pillow knows by extension, sorted by name), selected and checked."""
    source = config.source
    if not source.exists():
        raise InputError(f"{source}: no such folder")
    if not source.is_dir():
        raise InputError(f"{source}: not a folder")
    files = image_files(source)
    by_name: dict[str, Path] = {}
    for p in files:
        if p.stem in by_name:
            raise InputError(f"{source}: two images are named {p.stem} ({by_name[p.stem].name}, {p.name})")
        by_name[p.stem] = p
    if not by_name:
        raise InputError(f"{source}: no images (looked for files such as .png, .jpg, .ppm)")
    if config.images is not None:
        missing = [n for n in config.images if n not in by_name]
        if missing:
            raise InputError(f"{source}: no image named {', '.join(missing)}")
        names = list(dict.fromkeys(config.images))
    else:
        names = list(by_name)
    if config.limit is not None:
        names = names[: config.limit]
    images = []
    for name in names:
        path = by_name[name]
        pixels = read_image(path)  # a clean error now rather than in the middle of the run
        images.append(SourceImage(name, path, hashlib.sha256(path.read_bytes()).hexdigest(),
                                  width=pixels.shape[1], height=pixels.shape[0]))
    return images


# ---------------------------------------------------------------- the cache


@functools.lru_cache(maxsize=1)
def machine() -> str:
    """CPU model, cores, memory and OS of this machine, for the record of each result."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}"


def provenance(argv: Sequence[str]) -> dict:
    """The record a benchmark script writes with its numbers: its command, the date (UTC), the
    machine and torch's thread count."""
    import torch

    return {"command": " ".join(argv), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{machine()}, {torch.get_num_threads()} torch threads"}


def budget_bytes(target: float, pixels: int) -> int:
    """The largest file, in bytes, that is within ``target`` bpp (as dipcodec's rate control counts it)."""
    return int(target * pixels / 8)


def _unit_path(cache: Path, image: str, codec: str, target: float | None, preset: str) -> Path:
    name = codec if codec != "dipcodec" else f"dipcodec-{preset}"
    return cache / image / (f"{name}-sweep.json" if target is None else f"{name}-{target:g}bpp.json")


NOT_CODEC = ("evaluation", "cli.py")
"""Parts of the package that do not change what the codec writes (measuring, the command line)."""


@functools.lru_cache(maxsize=1)
def codec_source() -> str:
    """A hash of the codec's own files: a cached dipcodec result stands only for the code that made it."""
    return source_hash(Path(__file__).resolve().parents[1])


def source_hash(package: Path) -> str:
    """SHA-256 (16 hex digits) of a package's files less NOT_CODEC: the files that decide what the
    codec writes (the same split as the ``+dirty`` mark of ``_git_commit``)."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package).as_posix()
        if not path.is_file() or relative.split("/")[0] in NOT_CODEC or "__pycache__" in relative:
            continue
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _expected(image: SourceImage, codec: str, target: float | None, preset: str) -> dict:
    """The fields a cached unit must carry to be reused."""
    keys = {"schema": SCHEMA, "image": image.name, "image_sha256": image.sha256, "codec": codec}
    if codec == "dipcodec":
        keys.update(preset=preset, seed=SEED, target_bpp=target, codec_source=codec_source())
    else:
        keys["options"] = json.loads(json.dumps(SPECS[codec].options))
        if target is None:
            keys["settings"] = list(SPECS[codec].sweep)
        else:
            keys["target_bpp"] = target
    return keys


def _load_unit(path: Path, expected: dict) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in expected.items()):
        return None
    return record


def _store(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(record, indent=1) + "\n").encode(), force=True)


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ---------------------------------------------------------------- the units of work


@dataclass(frozen=True)
class Task:
    """Work for one process: a classic codec's missing units on one image, or one dipcodec encode."""

    image: SourceImage
    codec: Codec
    cache: Path
    targets: tuple[float, ...]
    sweep: bool = False
    preset: Preset = "default"
    device: str = "cpu"
    threads: int | None = None
    provenance: dict = field(default_factory=dict)


def _point(reference: np.ndarray, data: bytes, pixels: int) -> dict:
    start = time.perf_counter()
    decoded = decode_classic(data)
    decode_s = time.perf_counter() - start
    q = measure(reference, decoded)
    return dict(bytes=len(data), bpp=8 * len(data) / pixels, psnr=_finite(q.psnr), ssim=q.ssim, ms_ssim=q.ms_ssim,
                decode_s=decode_s)


def _classic_task(task: Task) -> list[dict]:
    from PIL import features

    image, spec = task.image, SPECS[task.codec]
    start = time.perf_counter()
    reference = load_rgb(image.path)
    encoder = ClassicEncoder(task.codec, reference)
    library = {"jpeg": "jpg", "webp": "webp", "jpeg2000": "jpg_2000", "avif": "avif"}[task.codec]
    done = []

    def computed(since: float) -> dict:
        return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - since, 3),
                "pillow": Image.__version__, "library": features.version(library), "machine": machine()}

    if task.sweep:
        points = []
        for setting in spec.sweep:
            encoded = encoder.at(setting)
            points.append(dict(setting=setting, **_point(reference, encoded.data, image.pixels),
                               encode_s=encoded.seconds))
        record = _expected(image, task.codec, None, task.preset) | {
            "setting_name": spec.setting_name, "points": points, "computed": computed(start)}
        _store(_unit_path(task.cache, image.name, task.codec, None, task.preset), record)
        done.append(record)
    for target in task.targets:
        since = time.perf_counter()
        encoded, fits = encoder.largest_within(budget_bytes(target, image.pixels))
        record = _expected(image, task.codec, target, task.preset) | {
            "setting_name": spec.setting_name, "setting": encoded.setting, "fits": fits,
            **_point(reference, encoded.data, image.pixels), "encode_s": encoded.seconds,
            "computed": computed(since)}
        _store(_unit_path(task.cache, image.name, task.codec, target, task.preset), record)
        done.append(record)
    return done


def _dipcodec_task(task: Task, progress: Callable[[int, int, float], None] | None = None) -> list[dict]:
    import torch

    from .. import __version__
    from ..decoder import decode
    from ..encoder import encode_detailed

    if task.threads is not None:
        torch.set_num_threads(task.threads)
    image, (target,) = task.image, task.targets
    reference = load_rgb(image.path)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = encode_detailed(reference, bpp=target, preset=task.preset, seed=SEED, device=task.device,
                                 progress=progress)
        encode_s = time.perf_counter() - start
        t = time.perf_counter()
        decoded = decode(result.data, device=task.device)
        decode_s = time.perf_counter() - t
    q = measure(reference, decoded)
    data = result.data
    record = _expected(image, "dipcodec", target, task.preset) | {
        "fits": len(data) <= budget_bytes(target, image.pixels),
        "bytes": len(data), "bpp": 8 * len(data) / image.pixels, "psnr": _finite(q.psnr), "ssim": q.ssim,
        "ms_ssim": q.ms_ssim, "float_psnr": _finite(result.float_psnr), "encode_s": encode_s, "decode_s": decode_s,
        "warnings": sorted({str(w.message) for w in caught}),
        "computed": {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "seconds": round(time.perf_counter() - start, 3), "dipcodec": __version__,
                     "commit": task.provenance.get("commit"), "torch": torch.__version__,
                     "torch_threads": torch.get_num_threads(), "device": task.device, "machine": machine()},
        "file_base64": base64.b64encode(data).decode("ascii"),
    }
    _store(_unit_path(task.cache, image.name, "dipcodec", target, task.preset), record)
    return [record]


def run_task(task: Task, progress: Callable[[int, int, float], None] | None = None) -> list[dict]:
    """Do one task and store its units; the entry point of worker processes."""
    if task.codec == "dipcodec":
        return _dipcodec_task(task, progress)
    return _classic_task(task)


# ---------------------------------------------------------------- planning and running


@dataclass
class Results:
    """Every unit of a run by key: (image, codec, target) for points, (image, codec) for sweeps."""

    images: list[SourceImage]
    points: dict[tuple[str, str, float], dict] = field(default_factory=dict)
    sweeps: dict[tuple[str, str], dict] = field(default_factory=dict)
    computed: int = 0
    cached: int = 0

    def add(self, record: dict) -> None:
        if "points" in record:
            self.sweeps[(record["image"], record["codec"])] = record
        else:
            self.points[(record["image"], record["codec"], record["target_bpp"])] = record


def _git_commit() -> str | None:
    """The checkout's commit, with ``+dirty`` if the codec's tracked files differ from it (the evaluation
    code and the CLI do not count: they do not change what the codec writes)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                "dipcodec", *(f":(exclude)dipcodec/{part}" for part in NOT_CODEC)],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def _plan(config: EvalConfig, images: list[SourceImage], results: Results) -> list[Task]:
    cache = config.out / "cache"
    threads = None if config.jobs == 1 else max(1, (os.cpu_count() or 1) // config.jobs)
    provenance = {"commit": _git_commit()} if "dipcodec" in config.codecs else {}
    classic, fits = [], []
    for image in images:
        for codec in config.codecs:
            missing = []
            targets_and_sweep = [*config.targets] + ([None] if codec != "dipcodec" else [])
            for target in targets_and_sweep:
                path = _unit_path(cache, image.name, codec, target, config.preset)
                record = _load_unit(path, _expected(image, codec, target, config.preset))
                if record is not None and codec == "dipcodec" and "file_base64" not in record:
                    record = None
                if record is None:
                    missing.append(target)
                else:
                    results.add(record)
                    results.cached += 1
            if not missing:
                continue
            common = dict(image=image, codec=codec, cache=cache, preset=config.preset, device=config.device,
                          threads=threads, provenance=provenance)
            if codec == "dipcodec":
                fits += [Task(targets=(t,), **common) for t in missing]
            else:
                classic.append(Task(targets=tuple(t for t in missing if t is not None), sweep=None in missing,
                                    **common))
    return classic + fits  # the quick classic work first, so that partial results appear early


class _Eta:
    """Time left: each pending task is costed at the mean time of finished tasks of its codec."""

    def __init__(self, tasks: Sequence[Task], jobs: int) -> None:
        self.pending = [t.codec for t in tasks]
        self.seconds: dict[str, list[float]] = {}
        self.jobs = jobs

    def finish(self, codec: str, seconds: float) -> None:
        self.pending.remove(codec)
        self.seconds.setdefault(codec, []).append(seconds)

    def text(self) -> str:
        if not self.pending:
            return "ETA 0:00:00"
        known = {c: sum(s) / len(s) for c, s in self.seconds.items()}
        if any(c not in known for c in self.pending):
            return "ETA ?"
        left = sum(known[c] for c in self.pending) / self.jobs
        return f"ETA {int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"


def _execute(tasks: list[Task], config: EvalConfig, results: Results) -> None:
    if not tasks:
        return
    import sys

    from tqdm import tqdm

    eta = _Eta(tasks, config.jobs)
    # A terminal gets a bar; a log (stderr redirected) gets one line a finished task instead of the
    # bar's carriage-return frames.
    interactive = not config.quiet and sys.stderr.isatty()
    logged = not config.quiet and not interactive
    bar = tqdm(total=len(tasks), desc="eval", unit="task", file=sys.stderr, disable=not interactive, leave=False,
               bar_format="{desc} {bar} {n_fmt}/{total_fmt} tasks [{elapsed}]{postfix}")
    bar.set_postfix_str(eta.text())
    finished_tasks: list[Task] = []

    def finished(task: Task, records: list[dict]) -> None:
        for r in records:
            results.add(r)
        results.computed += len(records)
        eta.finish(task.codec, sum(r["computed"]["seconds"] for r in records))
        bar.update(1)
        bar.set_postfix_str(f"{eta.text()}, done {task.image.name} {task.codec}")
        finished_tasks.append(task)
        if logged:
            print(f"eval: {len(finished_tasks)}/{len(tasks)} tasks, done {task.image.name} {task.codec}, {eta.text()}",
                  file=sys.stderr, flush=True)

    try:
        if config.jobs == 1:
            for task in tasks:
                label = f"{eta.text()}, {task.image.name} {task.codec}"
                bar.set_postfix_str(label)

                def fitting(done: int, total: int, psnr: float, label: str = label) -> None:
                    if done % 50 == 0 or done == total:
                        bar.set_postfix_str(f"{label} at {task.targets[0]:g} bpp, iteration {done}/{total}")

                finished(task, run_task(task, None if config.quiet else fitting))
        else:
            context = multiprocessing.get_context("spawn")  # no forked torch or OpenMP state
            with concurrent.futures.ProcessPoolExecutor(max_workers=config.jobs, mp_context=context) as pool:
                futures = {pool.submit(run_task, t): t for t in tasks}
                try:
                    for future in concurrent.futures.as_completed(futures):
                        finished(futures[future], future.result())
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()


def evaluate(config: EvalConfig) -> Results:
    """Run (or resume) the evaluation, then write the JSON results, rd.png and report.md under ``config.out``."""
    from .report import write_outputs

    results = collect(config)
    write_outputs(config, results)
    return results


def collect(config: EvalConfig) -> Results:
    """Every unit of the run, from ``config.out``'s cache or computed into it; writes no report (so a
    tool that only needs some units can share a folder whose report covers more)."""
    images = find_images(config)
    if "dipcodec" in config.codecs:
        from ..decoder import resolve_device

        resolve_device(config.device)  # a bad --device fails now, not after the classic codecs
    if config.out.exists() and not config.out.is_dir():
        raise InputError(f"{config.out}: exists and is not a folder")
    try:
        config.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {config.out}: {exc.strerror or exc}") from None
    results = Results(images=images)
    _execute(_plan(config, images, results), config, results)
    return results
