#!/usr/bin/env python3
"""`make demo`: compress the built-in sample image at the default setting and compare with JPEG.

Encodes skimage.data.astronaut() (512x512 RGB) with the CLI's defaults, decodes it, and prints the
file size, bpp, PSNR, encode and decode seconds, and Pillow JPEG's PSNR at the same file size.
Files land in demo/ so you can look at them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PIL import Image
from skimage import data

from dipcodec.cli import main as cli
from dipcodec.evaluation import jpeg_at_size, psnr
from dipcodec.images import read_image

OUT = Path("demo")


def run() -> int:
    OUT.mkdir(exist_ok=True)
    source, coded, decoded_path = OUT / "astronaut.png", OUT / "astronaut.dip", OUT / "astronaut.decoded.png"
    Image.fromarray(data.astronaut()).save(source)

    print(f"encoding {source} (512x512) at the default setting ...", flush=True)
    start = time.perf_counter()
    if cli(["encode", str(source), str(coded), "--force"]) != 0:
        return 1
    encode_s = time.perf_counter() - start

    start = time.perf_counter()
    if cli(["decode", str(coded), str(decoded_path), "--force"]) != 0:
        return 1
    decode_s = time.perf_counter() - start

    original = read_image(source)
    decoded = read_image(decoded_path)  # what a user gets, through the PNG the CLI wrote
    size = coded.stat().st_size
    pixels = original.shape[0] * original.shape[1]
    quality, jpeg, jpeg_pixels = jpeg_at_size(original, size)
    (OUT / "astronaut.jpeg-same-size.jpg").write_bytes(jpeg)

    rows = [
        ("file", f"{coded} ({size} bytes)"),
        ("bpp", f"{8 * size / pixels:.4f}"),
        ("PSNR", f"{psnr(original, decoded):.2f} dB"),
        ("encode", f"{encode_s:.1f} s"),
        ("decode", f"{decode_s:.2f} s"),
        ("JPEG", f"{psnr(original, jpeg_pixels):.2f} dB at {8 * len(jpeg) / pixels:.4f} bpp "
                 f"(Pillow quality {quality}, the largest no bigger than the .dip file)"),
    ]
    print()
    for name, value in rows:
        print(f"  {name:<7} {value}")
    print(f"\ndecoded image: {decoded_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
