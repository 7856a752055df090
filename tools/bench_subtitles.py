#!/usr/bin/env python3
"""Accuracy and speed of the burned-in subtitle detector on a sequence with a known subtitle mask.

    python tools/bench_subtitles.py [--seq ../shared/data/seq/camel] [--clean DIR ...] [--json OUT]

The sequence folder holds ``subtitled/`` frames, their ``subtitle_mask/`` (same file names; the
subtitle's opacity, 255 = subtitle) and the ``clean/`` frames. A mask pixel counts as subtitle when
its opacity is at least ``--truth-threshold`` (default 128: mostly subtitle). Prints recall and
precision per frame and summed over all pixels, the pixels flagged on clean frames (false
positives: there is nothing to find), and the median seconds of ``subtitle_mask`` per subtitled frame.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dipcodec.restoration.subtitles import subtitle_mask

DEFAULT_SEQ = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "seq" / "camel"


def _frames(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"})


def _timed_mask(path: Path) -> tuple[np.ndarray, float]:
    image = np.asarray(Image.open(path).convert("RGB"))
    start = time.perf_counter()
    mask = subtitle_mask(image)
    return mask, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq", type=Path, default=DEFAULT_SEQ, help="folder with subtitled/, subtitle_mask/, clean/")
    p.add_argument("--clean", type=Path, nargs="*", default=None,
                   help="folders of frames without subtitles (default: SEQ/clean)")
    p.add_argument("--truth-threshold", type=int, default=128, help="opacity from which a mask pixel is subtitle")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)

    frames = _frames(args.seq / "subtitled")
    if not frames:
        p.error(f"no frames in {args.seq / 'subtitled'}")
    rows, seconds = [], []
    for path in frames:
        mask, elapsed = _timed_mask(path)
        truth = np.asarray(Image.open(args.seq / "subtitle_mask" / path.name).convert("L")) >= args.truth_threshold
        seconds.append(elapsed)
        row = {"frame": path.name, "true": int(truth.sum()), "flagged": int(mask.sum()), "hits": int((mask & truth).sum())}
        row["recall"] = row["hits"] / max(row["true"], 1)
        row["precision"] = row["hits"] / max(row["flagged"], 1)
        rows.append(row)
        print(f"{path.name}: recall {row['recall']:.2%}  precision {row['precision']:.2%}  "
              f"({row['hits']} of {row['true']} true, {row['flagged']} flagged)  {elapsed * 1000:.0f} ms")

    hits, true, flagged = (sum(r[k] for r in rows) for k in ("hits", "true", "flagged"))
    clean = {}
    for folder in args.clean if args.clean is not None else [args.seq / "clean"]:
        counts = []
        for path in _frames(folder):
            counts.append(int(_timed_mask(path)[0].sum()))
        clean[str(folder)] = {"frames": len(counts), "false_positives": sum(counts), "worst_frame": max(counts, default=0)}

    summary = {
        "recall": hits / max(true, 1),
        "precision": hits / max(flagged, 1),
        "median_seconds_per_frame": statistics.median(seconds),
        "clean": clean,
        "frames": rows,
    }
    print(f"overall: recall {summary['recall']:.2%}  precision {summary['precision']:.2%}  "
          f"({hits} of {true} true pixels, {flagged} flagged, {len(rows)} frames)")
    for folder, c in clean.items():
        print(f"clean {folder}: {c['false_positives']} pixels flagged in {c['frames']} frames "
              f"(worst frame {c['worst_frame']})")
    print(f"median time per subtitled frame: {summary['median_seconds_per_frame'] * 1000:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
