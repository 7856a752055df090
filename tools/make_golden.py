#!/usr/bin/env python3
"""Write tests/data/golden-v<VERSION>.dip and the pixels it decodes to (golden-v<VERSION>.png).

Run once per format version. The files are committed; every later version of dipcodec must still
decode each golden-vN.dip to its golden-vN.png (tests/test_golden.py). Never regenerate an existing
version. Each version's file exercises what that version added: version 1 a plain file of the test
card, version 2 a 2x super-resolution of the card brought down to half size, version 3 the card
scaled to 96x64 (large enough for the encoder's sine network, whose narrowing stages also take the
convolve-first order), version 4 a 2x super-resolution of that 96x64 card brought down to 48x32 (a
network that upsamples bicubically, at the full-size layout of super-resolution), version 5 the
96x64 card of version 3 again, whose file now carries a post-filter (the network's own image, the
decode without the filter, is saved beside it as golden-v5-network.png), version 6 that card's file
with a post-filter of classes put in its place: 3x3 taps for each of the 4 phases and 2 activity
bands, solved by the encoder's least squares against the card (the encoder itself chooses classes
where their bytes pay, which on an image this small they seldom do). Since version 5 the version-3
recipe makes a version-5 file, and the script refuses it.

``--sequence`` writes the golden sequence of the current sequence version instead
(tests/data/golden-seq-vN.dips, its frames stacked top to bottom in golden-seq-vN.png): three 64x64
frames of the card, averaging window 2, the key frame coded from the small base model
golden-base-v1.dipbase (trained by the version-1 run; later runs load it). In version 1 the card
slides right under a window; in version 2 it turns round in place (rolled 3 pixels left a frame,
with wrap-around), the one motion that canvas offsets follow exactly, so that its frames carry them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

import dipcodec
from dipcodec.container import VERSION

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def golden_image() -> np.ndarray:
    """A 40x24 RGB test card: gradients, a disc and a bar, made in code."""
    y, x = np.mgrid[0:24, 0:40].astype(np.float64)
    r = 255 * x / 39
    g = 255 * y / 23
    b = 128 + 100 * np.sin(x / 5) * np.cos(y / 4)
    disc = (x - 28) ** 2 + (y - 12) ** 2 < 36
    r[disc], g[disc], b[disc] = 240, 200, 30
    g[4:8, 3:20] = 20
    return np.clip(np.stack([r, g, b], -1), 0, 255).round().astype(np.uint8)


def large_card() -> np.ndarray:
    """The test card scaled to 96x64 by Pillow's Lanczos resize."""
    return np.asarray(Image.fromarray(golden_image()).resize((96, 64), Image.LANCZOS))


def network_image(data: bytes) -> np.ndarray:
    """A file's image before its post-filter: the file without its F section, decoded as version 3."""
    import struct
    import zlib

    from dipcodec.container import section_sizes

    body = data[: -4 - section_sizes(data).get("post_filter", 0)]
    body = body[:4] + bytes([3]) + body[5:]
    return dipcodec.decode(body + struct.pack("<I", zlib.crc32(body)))


def with_classified_filter(data: bytes, source: np.ndarray) -> bytes:
    """The file with its post-filter replaced by a 3x3 one of 4 phases and 2 activity bands (split at
    the median activity of its network's image), solved against ``source``."""
    import dataclasses

    from dipcodec.container import pack, unpack
    from dipcodec.postfilter import activity, classify
    from dipcodec.postfilter_fit import normal_equations, solve_post_filter

    image = network_image(data) if unpack(data).post_filter else dipcodec.decode(data)
    median = (int(np.median(activity(image))),)
    systems = normal_equations(image, source, 3, classify(image, 4, median), 8)
    post_filter = solve_post_filter(systems, 3, 8, phases=4, thresholds=median)
    return pack(dataclasses.replace(unpack(data), post_filter=post_filter, version=None))


def sequence_frames(version: int) -> list[np.ndarray]:
    """Three 64x64 frames of the test card scaled to 96x64: version 1 seen through a window that
    slides 2 pixels a frame, version 2 its first 64 columns rolled 3 pixels left a frame."""
    card = large_card()
    if version == 1:
        return [np.ascontiguousarray(card[:, 2 * i : 2 * i + 64]) for i in range(3)]
    return [np.ascontiguousarray(np.roll(card[:, :64], -3 * i, axis=1)) for i in range(3)]


def make_sequence() -> int:
    from dipcodec.transfer.basefile import load_base, save_base
    from dipcodec.transfer.meta import MetaSchedule, standard_network, train_base
    from dipcodec.transfer.sequence import SEQUENCE_VERSION

    target = DATA / f"golden-seq-v{SEQUENCE_VERSION}.dips"
    if target.exists() and "--overwrite" not in sys.argv:
        print(f"{target} exists; a golden file is never regenerated for the same version", file=sys.stderr)
        return 2
    frames = sequence_frames(SEQUENCE_VERSION)
    base_path = DATA / "golden-base-v1.dipbase"
    if base_path.exists():
        base = load_base(base_path)
    else:
        base = train_base(frames, standard_network(8), MetaSchedule(steps=4, inner_iterations=3, outer_step_start=0.5,
                                                                      outer_step_end=0.05, tasks_per_step=1, crop=64),
                          seed=5)
        save_base(base, base_path)
    data = dipcodec.encode_sequence(frames, bpp=1.2, preset="fast", seed=7, average=2, base=base)
    if data[4] != SEQUENCE_VERSION:
        print(f"the recipe made a version-{data[4]} sequence, not version {SEQUENCE_VERSION}", file=sys.stderr)
        return 2
    target.write_bytes(data)
    Image.fromarray(np.concatenate(dipcodec.decode_sequence(data, base=base), 0)).save(target.with_suffix(".png"))
    print(f"wrote {target} ({len(data)} bytes) and base model {base.name}")
    return 0


def main() -> int:
    if "--sequence" in sys.argv:
        return make_sequence()
    target = DATA / f"golden-v{VERSION}.dip"
    if target.exists() and "--overwrite" not in sys.argv:
        print(f"{target} exists; a golden file is never regenerated for the same version", file=sys.stderr)
        return 2
    DATA.mkdir(parents=True, exist_ok=True)
    if VERSION == 1:
        data = dipcodec.encode(golden_image(), bpp=3.0, preset="fast", seed=7)
    elif VERSION == 2:
        half = np.asarray(Image.fromarray(golden_image()).resize((20, 12), Image.LANCZOS))
        data = dipcodec.encode(half, sr=2, bpp=3.0, preset="fast", seed=7)
    elif VERSION in (3, 5):
        data = dipcodec.encode(large_card(), bpp=1.5, preset="fast", seed=7)
    elif VERSION == 6:
        data = with_classified_filter(dipcodec.encode(large_card(), bpp=1.5, preset="fast", seed=7), large_card())
    else:
        half = np.asarray(Image.fromarray(large_card()).resize((48, 32), Image.LANCZOS))
        data = dipcodec.encode(half, sr=2, bpp=1.5, preset="fast", seed=7)
    if data[4] != VERSION:  # the encoder writes the oldest version that holds a file
        print(f"the recipe made a version-{data[4]} file, not one of version {VERSION}", file=sys.stderr)
        return 1
    target.write_bytes(data)
    Image.fromarray(dipcodec.decode(data)).save(target.with_suffix(".png"))
    if VERSION >= 5:
        Image.fromarray(network_image(data)).save(DATA / f"golden-v{VERSION}-network.png")
    if not (DATA / "golden-source.png").exists():
        Image.fromarray(golden_image()).save(DATA / "golden-source.png")
    print(f"wrote {target} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
