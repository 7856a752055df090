#!/usr/bin/env python3
"""Restoration benchmarks: subtitle removal, 4x super-resolution and denoising, against the classic baselines.

    python tools/bench_restore.py subtitles [--frames 0,5,10,15] [--preset fast] [--json OUT]
    python tools/bench_restore.py subtitles-seq --frames 0,1,2,3 --preset fast [--no-motion] [--json OUT]
    python tools/bench_restore.py sr        [--images kodak6] [--crop 256] [--preset default] [--json OUT]
    python tools/bench_restore.py denoise   [--images kodak6] [--crop 256] [--sigma 25] [--preset default] [--json OUT]

``--coded BPP`` (sr, denoise) measures the coded file instead: ``dipcodec.encode(..., sr=4 |
denoise=True, bpp=BPP)`` and its decoded image, where ``restore`` writes no file.

subtitles: on ``seq/camel``, the mask found by ``subtitle_mask`` on each subtitled frame is inpainted
by ``dipcodec.restore`` and by ``skimage.restoration.inpaint_biharmonic``; PSNR against the clean
frame inside the true mask (opacity >= 128). sr: Kodak images (a centred crop of ``--crop`` pixels a
side, 0 for the whole image) brought down 4x with Pillow's LANCZOS, then super-resolved against
Pillow's bicubic upscale and that upscale back-projected as ``restore``'s image is; PSNR on luma
(BT.601) with a 4-pixel border cropped. denoise: Kodak images (cropped likewise) with Gaussian noise
of ``--sigma`` on 0-255, seeded by the image's place in ``--images``; RGB PSNR of ``restore``'s
image and of its networks' image before the Wiener refinement, beside two classic denoisers told
the true sigma: scikit-image's non-local means (fast mode, 5x5 patches, 13x13 search, h = 0.8
sigma) and ``sliding_dct_denoise`` (BM3D's two steps without block matching).
``--references-only`` (sr, denoise): the classic references alone, seconds where dipcodec takes
minutes, on the same inputs as a full run's. Every mode prints seconds per image (this machine;
run nothing else heavy beside it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import dipcodec
from dipcodec.evaluation import psnr
from dipcodec.evaluation.run import load_rgb, parse_images
from dipcodec.layout import MAX_WIDTH
from dipcodec.restoration import modes
from dipcodec.restoration import restore as restore_module
from dipcodec.restoration.back_projection import back_project
from dipcodec.restoration.subtitles import subtitle_mask
from dipcodec.restoration.wiener import sliding_dct_denoise
from dipcodec.transfer.sequence import sequence_info

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _crop(image: np.ndarray, side: int) -> np.ndarray:
    if not side:
        return image
    h, w = image.shape[:2]
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


def _luma(image: np.ndarray) -> np.ndarray:
    return 16 + image.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255


def _luma_psnr(reference: np.ndarray, image: np.ndarray, border: int = 4) -> float:
    a, b = (_luma(x)[border:-border, border:-border] for x in (reference, image))
    return float(10 * np.log10(255**2 / np.mean((a - b) ** 2)))


def _timed(function, *args, **kwargs):
    calls = []
    start = time.perf_counter()
    out = function(*args, progress=lambda done, total, _: calls.append(done), **kwargs)
    return out, time.perf_counter() - start, (calls[-1] if calls else 0)


def _restored(image: np.ndarray, mode: str, args: argparse.Namespace, progress) -> np.ndarray:
    """``restore``'s image, or with ``--coded`` the decoded image of a file coded at that rate."""
    if args.coded is None:
        factor = {"factor": 4} if mode == "super-resolution" else {}
        return dipcodec.restore(image, mode, preset=args.preset, progress=progress, **factor)
    how = {"sr": 4} if mode == "super-resolution" else {"denoise": True}
    return dipcodec.decode(dipcodec.encode(image, bpp=args.coded, preset=args.preset, progress=progress, **how))


def subtitles(args: argparse.Namespace) -> list[dict]:
    from skimage.restoration import inpaint_biharmonic

    seq = DATA / "seq" / "camel"
    frames = sorted((seq / "subtitled").glob("*.png"))
    chosen = [frames[int(i)] for i in args.frames.split(",")] if args.frames else frames
    rows = []
    for path in chosen:
        subtitled, clean = load_rgb(path), load_rgb(seq / "clean" / path.name)
        truth = np.asarray(Image.open(seq / "subtitle_mask" / path.name).convert("L")) >= 128
        mask = subtitle_mask(subtitled)
        restored, seconds, iterations = _timed(dipcodec.restore, subtitled, "inpaint", mask=mask, preset=args.preset)
        start = time.perf_counter()
        biharmonic = np.clip(np.round(inpaint_biharmonic(subtitled, mask, channel_axis=-1) * 255), 0, 255)
        biharmonic_seconds = time.perf_counter() - start
        row = dict(frame=path.name, masked=int(mask.sum()), psnr=psnr(clean[truth], restored[truth]),
                   biharmonic_psnr=psnr(clean[truth], biharmonic.astype(np.uint8)[truth]),
                   subtitled_psnr=psnr(clean[truth], subtitled[truth]), seconds=seconds,
                   biharmonic_seconds=biharmonic_seconds, iterations=iterations)
        rows.append(row)
        print(f"{row['frame']}: in the true mask, dipcodec {row['psnr']:.2f} dB, biharmonic "
              f"{row['biharmonic_psnr']:.2f} dB (subtitled {row['subtitled_psnr']:.2f}); "
              f"{seconds:.0f} s ({iterations} iterations), biharmonic {biharmonic_seconds:.1f} s", flush=True)
    return rows


def subtitles_sequence(args: argparse.Namespace) -> list[dict]:
    """The chosen camel frames as one sequence: ``encode_sequence(..., mask="subtitles")`` (canvas
    offsets searched unless ``--no-motion``), decoded; each frame's offset is reported."""
    from skimage.restoration import inpaint_biharmonic

    seq = DATA / "seq" / "camel"
    frames = sorted((seq / "subtitled").glob("*.png"))
    chosen = [frames[int(i)] for i in args.frames.split(",")] if args.frames else frames
    subtitled = [load_rgb(p) for p in chosen]
    timing: list[tuple[float, int]] = []
    calls: list[int] = []
    data = dipcodec.encode_sequence(subtitled, quality=75, preset=args.preset, mask="subtitles",
                                    motion=not args.no_motion, progress=lambda done, total, _: calls.append(done),
                                    on_frame=lambda i, r, s: (timing.append((s, len(calls))), calls.clear()))
    decoded = dipcodec.decode_sequence(data)
    offsets = [f["canvas_offset"] for f in sequence_info(data)["frame_info"]]
    rows = []
    for path, image, out, (seconds, iterations), offset in zip(chosen, subtitled, decoded, timing, offsets,
                                                               strict=True):
        clean = load_rgb(seq / "clean" / path.name)
        truth = np.asarray(Image.open(seq / "subtitle_mask" / path.name).convert("L")) >= 128
        biharmonic = np.clip(np.round(inpaint_biharmonic(image, subtitle_mask(image), channel_axis=-1) * 255), 0, 255)
        row = dict(frame=path.name, psnr=psnr(clean[truth], out[truth]),
                   biharmonic_psnr=psnr(clean[truth], biharmonic.astype(np.uint8)[truth]),
                   outside_psnr=psnr(clean[~truth], out[~truth]), seconds=seconds, iterations=iterations,
                   canvas_offset=offset)
        rows.append(row)
        print(f"{row['frame']}: in the true mask, dipcodec sequence {row['psnr']:.2f} dB, biharmonic "
              f"{row['biharmonic_psnr']:.2f} dB; outside it {row['outside_psnr']:.2f} dB; {seconds:.0f} s "
              f"({iterations} iterations), canvas offset {offset[0]},{offset[1]}", flush=True)
    print(f"sequence file: {len(data)} bytes for {len(chosen)} frames")
    return rows


def _kodak(args: argparse.Namespace) -> list[tuple[str, np.ndarray]]:
    names = parse_images(args.images)
    return [(name, _crop(load_rgb(DATA / "kodak" / f"{name}.png"), args.crop)) for name in names]


def super_resolution(args: argparse.Namespace) -> list[dict]:
    rows = []
    for name, image in _kodak(args):
        h, w = image.shape[0] // 4 * 4, image.shape[1] // 4 * 4
        image = image[:h, :w]
        small = np.asarray(Image.fromarray(image).resize((w // 4, h // 4), Image.LANCZOS))
        bicubic = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))
        row: dict = dict(image=name, size=f"{w}x{h}", bicubic_psnr_y=_luma_psnr(image, bicubic),
                         back_projected_psnr_y=_luma_psnr(image, _back_projected(bicubic, small)))
        text = f"bicubic {row['bicubic_psnr_y']:.2f} dB, back-projected {row['back_projected_psnr_y']:.2f} dB"
        if not args.references_only:
            restored, seconds, iterations = _timed(_restored, small, "super-resolution", args)
            row |= dict(psnr_y=_luma_psnr(image, restored), seconds=seconds, iterations=iterations)
            text = f"luma {row['psnr_y']:.2f} dB, {seconds:.0f} s; " + text
        rows.append(row)
        print(f"{name} {row['size']}: {text}", flush=True)
    return rows


def _back_projected(upscaled: np.ndarray, small: np.ndarray) -> np.ndarray:
    """The second reference of super-resolution: the bicubic upscale with the step of back-projection
    that ends ``restore``'s (the least change that makes its Lanczos downscale the input)."""
    as_tensor = lambda pixels: torch.from_numpy(pixels.astype(np.float32).transpose(2, 0, 1)[None] / 255)
    found = back_project(as_tensor(upscaled), as_tensor(small)).clamp(0, 1)
    return (found[0] * 255).round().byte().numpy().transpose(1, 2, 0)


def _non_local_means(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """The reference: scikit-image's non-local means, given the true sigma (its documented settings)."""
    from skimage.restoration import denoise_nl_means

    s = sigma / 255
    found = denoise_nl_means(noisy.astype(np.float64) / 255, h=0.8 * s, sigma=s, fast_mode=True, patch_size=5,
                             patch_distance=6, channel_axis=-1)
    return np.clip(np.round(found * 255), 0, 255).astype(np.uint8)


def denoise(args: argparse.Namespace) -> list[dict]:
    rows = []
    for index, (name, image) in enumerate(_kodak(args)):
        rng = np.random.default_rng(index)
        noisy = np.clip(np.round(image + rng.normal(0, args.sigma, image.shape)), 0, 255).astype(np.uint8)
        row: dict = dict(image=name, noisy_psnr=psnr(image, noisy))
        start = time.perf_counter()
        row["nlm_psnr"] = psnr(image, _non_local_means(noisy, args.sigma))
        row["nlm_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        row["dct_psnr"] = psnr(image, sliding_dct_denoise(noisy, args.sigma))
        row["dct_seconds"] = time.perf_counter() - start
        text = (f"non-local means {row['nlm_psnr']:.2f} dB ({row['nlm_seconds']:.1f} s), "
                f"sliding DCT {row['dct_psnr']:.2f} dB ({row['dct_seconds']:.1f} s)")
        if not args.references_only:
            guides = []  # the networks' image, before restore's Wiener refinement
            refine = restore_module.wiener_refine
            restore_module.wiener_refine = lambda pixels, estimate, *rest: guides.append(estimate) or refine(
                pixels, estimate, *rest)
            try:
                restored, seconds, iterations = _timed(_restored, noisy, "denoise", args)
            finally:
                restore_module.wiener_refine = refine
            row |= dict(psnr=psnr(image, restored), seconds=seconds, iterations=iterations)
            if guides:
                row["networks_psnr"] = psnr(image, guides[0])
            text = (f"{row['psnr']:.2f} dB" + (f" (the networks alone {row['networks_psnr']:.2f})" if guides else "")
                    + f", {seconds:.0f} s, stopped after {iterations} iterations; " + text)
        rows.append(row)
        print(f"{name}: {text} (noisy {row['noisy_psnr']:.2f})", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("subtitles", "subtitles-seq", "sr", "denoise"))
    p.add_argument("--frames", help="subtitles: comma-separated frame indices (default: all 16)")
    p.add_argument("--images", default="kodak6", help="sr, denoise: kodak6 or comma-separated Kodak names")
    p.add_argument("--crop", type=int, default=0, help="sr, denoise: centred square crop side (0: whole image)")
    p.add_argument("--sigma", type=float, default=25.0)
    p.add_argument("--preset", default="default")
    p.add_argument("--margin", type=int, help="ablation: known pixels around the holes that restore's inpainting "
                   "fits (default INPAINT_MARGIN)")
    p.add_argument("--restore-width", type=int, help="ablation: width of restore's networks (default RESTORE_WIDTH)")
    p.add_argument("--jitter", type=float, help="ablation: input jitter of super-resolution and denoising "
                   "(default INPUT_JITTER)")
    p.add_argument("--coded", type=float, metavar="BPP", help="sr, denoise: code a file at this rate and decode it")
    p.add_argument("--references-only", action="store_true", help="sr, denoise: the classic references alone")
    p.add_argument("--no-motion", action="store_true", help="subtitles-seq: no canvas offsets (encode-seq --no-motion)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.coded is not None and args.mode not in ("sr", "denoise"):
        p.error("--coded is for sr and denoise")
    if args.references_only and args.mode not in ("sr", "denoise"):
        p.error("--references-only is for sr and denoise")
    if args.no_motion and args.mode != "subtitles-seq":
        p.error("--no-motion is for subtitles-seq")
    if args.margin is not None:
        if args.margin < 1:
            p.error("--margin must be at least 1 (the window needs known pixels)")
        restore_module.INPAINT_MARGIN = args.margin
    if args.restore_width is not None:
        if not 4 <= args.restore_width <= MAX_WIDTH:
            p.error(f"--restore-width must be between 4 and {MAX_WIDTH} (the encoder's widest network)")
        restore_module.RESTORE_WIDTH = args.restore_width
    if args.jitter is not None:
        modes.INPUT_JITTER = args.jitter
    rows = {"subtitles": subtitles, "subtitles-seq": subtitles_sequence, "sr": super_resolution,
            "denoise": denoise}[args.mode](args)
    numeric = [k for k, v in rows[0].items() if isinstance(v, float)]
    summary = {k: statistics.mean(r[k] for r in rows) for k in numeric if "seconds" not in k}
    summary |= {f"median_{k}": statistics.median(r[k] for r in rows) for k in numeric if "seconds" in k}
    print("mean " + ", ".join(f"{k} {v:.2f}" for k, v in summary.items()))
    if args.json:
        args.json.write_text(json.dumps({"mode": args.mode, "argv": sys.argv[1:], "date": time.strftime("%Y-%m-%d"),
                                         "rows": rows, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
