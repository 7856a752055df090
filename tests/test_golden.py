"""The golden files: every version of dipcodec must decode each of them to its pinned pixels, and no
mutation of them may crash the decoder. Version 1 is a plain file; version 2 a 2x super-resolution;
version 3 a plain file of a sine network, at 96x64; version 4 a 2x super-resolution to 96x64 whose
network upsamples bicubically; version 5 the plain 96x64 file again, now with a 5x5 post-filter;
version 6 that file's network with a post-filter of 4 phases and 2 activity bands."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dipcodec
from dipcodec import DecodeError
from dipcodec.errors import MissingBaseError

from conftest import with_crc

DATA = Path(__file__).parent / "data"
VERSIONS = (1, 2, 3, 4, 5, 6)
SIZES = {1: (24, 40), 2: (24, 40), 3: (64, 96), 4: (64, 96), 5: (64, 96), 6: (64, 96)}
MODES = {1: ("plain", 1), 2: ("super-resolution", 2), 3: ("plain", 1), 4: ("super-resolution", 2), 5: ("plain", 1),
         6: ("plain", 1)}
UPSAMPLE = {1: "bilinear", 2: "bilinear", 3: "bilinear", 4: "bicubic", 5: "bilinear", 6: "bilinear"}
FILTERS = {5: {"taps": 5, "precision": 8, "phases": 1, "thresholds": []},
           6: {"taps": 3, "precision": 8, "phases": 4, "thresholds": [444]}}


def golden_source(version: int) -> np.ndarray:
    """The image each golden file was coded from, at its decoded size (versions 3 to 6: the test card
    scaled to 96x64)."""
    card = Image.open(DATA / "golden-source.png")
    return np.asarray(card.resize((96, 64), Image.LANCZOS) if version >= 3 else card).astype(float)


@pytest.fixture(scope="module", params=VERSIONS, ids=lambda v: f"v{v}")
def version(request) -> int:
    return request.param


@pytest.fixture(scope="module")
def golden(version) -> bytes:
    return (DATA / f"golden-v{version}.dip").read_bytes()


def test_golden_decodes_to_pinned_pixels(golden, version):
    expected = np.asarray(Image.open(DATA / f"golden-v{version}.png"))
    decoded = dipcodec.decode(golden)
    assert decoded.shape == expected.shape == (*SIZES[version], 3)
    if version >= 5:
        # The post-filter is exact integer arithmetic on the network's image, but it spreads a
        # stray level of that image to its neighbours: the tolerance below is the network's.
        from dipcodec.container import unpack

        network = np.asarray(Image.open(DATA / f"golden-v{version}-network.png"))
        assert np.array_equal(unpack(golden).post_filter.apply(network), expected)
        expected, decoded = network, _without_post_filter(golden)
    # Float convolutions may round differently in another BLAS; allow a stray 1-level flip, nothing more.
    difference = np.abs(decoded.astype(int) - expected.astype(int))
    assert difference.max() <= 1
    assert np.count_nonzero(difference) <= expected.size // 1000


def test_golden_still_resembles_its_source(golden, version):
    source = golden_source(version)
    mse = np.mean((dipcodec.decode(golden).astype(float) - source) ** 2)
    assert 10 * np.log10(255**2 / mse) > 20


def test_golden_info(golden, version):
    details = dipcodec.info(golden)
    assert (details["height"], details["width"], details["channels"]) == (*SIZES[version], 3)
    assert details["seed"] == 7 and details["format_version"] == version
    assert (details["mode"], details["scale"]) == MODES[version]
    assert details["architecture"]["activation"] == ("sine" if version in (3, 5, 6) else "relu")
    assert details["post_filter"] == FILTERS.get(version)
    assert details["architecture"]["upsample"] == UPSAMPLE[version]
    assert sum(details["section_bytes"].values()) == len(golden) == details["file_bytes"]


def _mutations(data: bytes, count: int, seed: int):
    """Seeded damage: bit flips, byte overwrites, truncations, insertions, deletions, and the same with a
    recomputed CRC, so that the parser (not only the checksum) meets forged content."""
    rng = random.Random(seed)
    body = data[:-4]
    for i in range(count):
        kind = rng.randrange(6)
        b = bytearray(body if i % 2 else data)
        if kind == 0:
            pos = rng.randrange(len(b))
            b[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == 2:
            b = b[: rng.randrange(len(b))]
        elif kind == 3:
            pos = rng.randrange(len(b) + 1)
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 4:
            pos = rng.randrange(len(b))
            del b[pos : pos + rng.randint(1, 8)]
        else:  # a header field set to an extreme value
            pos = rng.randrange(min(len(b), 24))
            b[pos] = rng.choice([0x00, 0x7F, 0x80, 0xFF])
        yield with_crc(bytes(b)) if i % 2 else bytes(b)


def test_golden_v2_decodes_at_native_size():
    native = dipcodec.decode((DATA / "golden-v2.dip").read_bytes(), scale="native")
    source = np.asarray(Image.open(DATA / "golden-source.png").resize((20, 12), Image.LANCZOS)).astype(float)
    assert native.shape == (12, 20, 3)
    assert 10 * np.log10(255**2 / np.mean((native - source) ** 2)) > 20


def test_mutated_golden_files_decode_or_raise_decode_error(golden):
    outcomes = {"decoded": 0, "rejected": 0}
    for damaged in _mutations(golden, 3000, seed=1234):
        try:
            pixels = dipcodec.decode(damaged)
        except DecodeError as exc:
            assert "\n" not in str(exc) and str(exc)
            outcomes["rejected"] += 1
        else:
            assert pixels.dtype == np.uint8 and pixels.ndim in (2, 3)
            outcomes["decoded"] += 1
    assert outcomes["rejected"] > 2000  # most damage is caught, and nothing else was raised


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "too short"),
        (b"GIF89a" + bytes(40), "bad magic"),
        (b"DIPC\x63" + bytes(40), "version"),
    ],
)
def test_obviously_bad_files(data, reason):
    with pytest.raises(DecodeError, match=reason):
        dipcodec.decode(data)


def test_forged_huge_image_is_rejected_before_allocation(golden):
    # Width 1_000_000 as a varint in place of the real width, CRC recomputed: rejected by the limit.
    body = bytearray(golden[:-4])
    width_end = 5 + next(i for i in range(4) if body[5 + i] < 0x80) + 1
    body[5:width_end] = bytes([0xC0, 0x84, 0x3D])
    with pytest.raises(DecodeError, match="out of range"):
        dipcodec.decode(with_crc(bytes(body)))


def test_version_3_files_may_not_upsample_bicubically():
    golden = (DATA / "golden-v4.dip").read_bytes()
    assert golden[4] == 4
    with pytest.raises(DecodeError, match="bicubic upsampling is not defined before version 4"):
        dipcodec.decode(with_crc(golden[:4] + bytes([3]) + golden[5:-4]))


def test_version_1_files_may_not_use_the_modes_of_version_2():
    body = bytearray((DATA / "golden-v1.dip").read_bytes()[:-4])
    mode_at = 5 + 1 + 1 + 1  # magic and version, width 40, height 24, channels: one byte each
    assert body[mode_at] == 0
    for mode in (2, 3):
        body[mode_at] = mode
        with pytest.raises(DecodeError, match="not defined in version-1 files"):
            dipcodec.decode(with_crc(bytes(body)))
    body[mode_at] = 1  # inpaint was defined in version 1 and decodes like plain
    assert np.array_equal(dipcodec.decode(with_crc(bytes(body))), dipcodec.decode((DATA / "golden-v1.dip").read_bytes()))


# ---------------------------------------------------------------- the post-filter section (versions 5 and 6)

def _without_post_filter(data: bytes) -> np.ndarray:
    """A version-5 file's network image: the file without its F section, decoded as version 3."""
    from dipcodec.container import section_sizes

    body = data[: -4 - section_sizes(data)["post_filter"]]
    return dipcodec.decode(with_crc(body[:4] + bytes([3]) + body[5:]))


def _golden_parts(version: int = 5) -> tuple[bytes, bytes]:
    """golden-v5.dip's (or golden-v6.dip's) body up to its ``F`` section, and that section's payload."""
    from dipcodec.container import Reader, section_sizes

    data = (DATA / f"golden-v{version}.dip").read_bytes()
    body = data[:-4 - section_sizes(data)["post_filter"]]
    assert data[len(body)] == ord("F")
    section = Reader(data[len(body) + 1 : -4], "F")
    section.varint("length", len(data))
    return body, data[len(body) + 1 + section.pos : -4]


def _f_section(payload: bytes) -> bytes:
    from dipcodec.container import varint

    return b"F" + varint(len(payload)) + payload


@pytest.mark.parametrize("version", [5, 6])
def test_golden_post_filter_is_what_lifts_it(version):
    """Decoded without its F section (as a version-3 file), golden-v5 (and v6) is its network's own
    image; the file's image is exactly that through the filter, and closer to the source."""
    from dipcodec.container import unpack

    data = (DATA / f"golden-v{version}.dip").read_bytes()
    with_filter, without = dipcodec.decode(data), _without_post_filter(data)
    np.testing.assert_array_equal(with_filter, unpack(data).post_filter.apply(without))
    source = golden_source(version)
    assert np.mean((with_filter - source) ** 2) < 0.9 * np.mean((without - source) ** 2)


@pytest.mark.parametrize(
    "forge, reason",
    [
        (lambda body, payload: body[:4] + bytes([5]) + body[5:] + _f_section(payload), "trailing bytes"),
        (lambda body, payload: body + _f_section(payload[:2] + bytes([2]) + payload[3:]), "phases 2 not allowed"),
        (lambda body, payload: body + _f_section(payload[:3] + bytes([0]) + payload[4:]), "bands 0 out of range"),
        (lambda body, payload: body + _f_section(payload[:3] + bytes([9]) + payload[4:]), "bands 9 out of range"),
        (lambda body, payload: body + _f_section(payload[:3] + bytes([3]) + payload[4:6] + payload[4:]), "rise strictly"),
        (lambda body, payload: body + _f_section(payload[:3] + bytes([3]) + payload[4:6] + bytes([1]) + payload[6:]),
         "rise strictly"),
        (lambda body, payload: body + _f_section(payload[:4] + bytes([0]) + payload[6:]), "rise strictly"),
        (lambda body, payload: body + _f_section(payload[:4] + bytes([0x81, 0x80, 0x80, 0x01]) + payload[6:]),
         "activity threshold"),
        (lambda body, payload: body + _f_section(payload + b"\x00"), "trailing bytes"),
        (lambda body, payload: body + _f_section(payload[:-1]), "truncated post-filter"),
    ],
    ids=["as-version-5", "phases", "no-bands", "nine-bands", "repeated-threshold", "falling-threshold", "zero-threshold",
         "huge-threshold", "trailing", "truncated"],
)
def test_forged_post_filter_classes_are_rejected(forge, reason):
    body, payload = _golden_parts(6)
    assert payload[2:6] == bytes([4, 2]) + bytes([0xBC, 0x03])  # 4 phases, 2 bands, threshold 444
    with pytest.raises(DecodeError, match=reason):
        dipcodec.decode(with_crc(forge(body, payload)))


@pytest.mark.parametrize("offset, accepted", [(2**24, True), (-(2**24), True), (2**24 + 1, False),
                                              (-(2**24) - 1, False)])
def test_post_filter_codes_are_bounded_at_two_to_the_24(offset, accepted):
    from dipcodec.container import zigzag

    body, payload = _golden_parts()
    end = len(payload) - 2  # the last varint (the last channel's offset) starts after the last byte
    while payload[end] & 0x80:  # before it without a continuation bit
        end -= 1
    data = with_crc(body + _f_section(payload[: end + 1] + zigzag(offset)))
    if accepted:
        assert dipcodec.decode(data).shape == (64, 96, 3)
    else:
        with pytest.raises(DecodeError, match="coefficient out of range"):
            dipcodec.decode(data)


@pytest.mark.parametrize(
    "forge, reason",
    [
        (lambda body, payload: body[:4] + bytes([4]) + body[5:] + _f_section(payload), "not defined before version 5"),
        (lambda body, payload: body + _f_section(bytes([4]) + payload[1:]), "taps 4 out of range"),
        (lambda body, payload: body + _f_section(bytes([11]) + payload[1:]), "taps 11 out of range"),
        (lambda body, payload: body + _f_section(payload[:1] + bytes([17]) + payload[2:]), "precision 17 out of range"),
        (lambda body, payload: body + _f_section(payload + b"\x00"), "trailing bytes"),
        (lambda body, payload: body + _f_section(payload[:-1]), "truncated post-filter"),
        (lambda body, payload: body + _f_section(payload[:-1] + bytes([0x81, 0x80, 0x80, 0x10])), "coefficient out of range"),
        (lambda body, payload: body + _f_section(payload) + _f_section(payload), "repeated or out of order"),
    ],
    ids=["version-4", "even-taps", "wide", "precision", "trailing", "truncated", "huge", "repeated"],
)
def test_forged_post_filter_sections_are_rejected(forge, reason):
    body, payload = _golden_parts()
    with pytest.raises(DecodeError, match=reason):
        dipcodec.decode(with_crc(forge(body, payload)))


def test_post_filter_sections_belong_to_plain_files_before_the_crc_only():
    from dipcodec.container import section_sizes

    body, payload = _golden_parts()
    mode_at = 5 + 1 + 1 + 1  # magic and version, width 96, height 64, channels: one byte each
    assert body[mode_at] == 0
    denoised = body[:mode_at] + bytes([3]) + body[mode_at + 1 :]
    with pytest.raises(DecodeError, match="only for plain files"):
        dipcodec.decode(with_crc(denoised + _f_section(payload)))
    # F is the last section: it may not come before W.
    weights = section_sizes((DATA / "golden-v5.dip").read_bytes())["weights"]
    before_w = body[: len(body) - weights] + _f_section(payload) + body[len(body) - weights :]
    with pytest.raises(DecodeError, match="repeated or out of order"):
        dipcodec.decode(with_crc(before_w))


# ---------------------------------------------------------------- the golden sequence and base model

SEQUENCE = DATA / "golden-seq-v1.dips"
SEQUENCE_V2 = DATA / "golden-seq-v2.dips"
"""Version 2: canvas offsets, on a card that turns round in place 3 pixels a frame."""
BASE = DATA / "golden-base-v1.dipbase"


@pytest.mark.parametrize("golden", [SEQUENCE, SEQUENCE_V2], ids=["v1", "v2"])
def test_golden_sequence_decodes_to_pinned_frames(golden):
    expected = np.asarray(Image.open(golden.with_suffix(".png")))
    frames = dipcodec.decode_sequence(golden.read_bytes(), base=BASE)
    assert len(frames) == 3 and all(f.shape == (64, 64, 3) for f in frames)
    difference = np.abs(np.concatenate(frames, 0).astype(int) - expected.astype(int))
    assert difference.max() <= 1
    assert np.count_nonzero(difference) <= expected.size // 1000


def test_golden_sequence_names_its_base_and_its_references():
    from dipcodec.transfer.basefile import load_base
    from dipcodec.transfer.sequence import sequence_info

    details = sequence_info(SEQUENCE.read_bytes())
    assert details["average"] == 2 and details["key_frames"] == [0]
    assert [f["reference"] for f in details["frame_info"]] == ["base", "previous-frame", "previous-frame"]
    assert details["frame_info"][0]["base_id"] == load_base(BASE).name == "64c9af4c3abcb906"
    with pytest.raises(MissingBaseError, match="needs base model 64c9af4c3abcb906"):
        dipcodec.decode_sequence(SEQUENCE.read_bytes())
    assert details["sequence_version"] == 1
    assert [f["canvas_offset"] for f in details["frame_info"]] == [[0, 0]] * 3


def test_golden_sequence_v2_follows_the_turn_with_canvas_offsets():
    from dipcodec.transfer.sequence import SequenceFile, pack_sequence, sequence_info, unpack_sequence

    details = sequence_info(SEQUENCE_V2.read_bytes())
    assert details["sequence_version"] == 2 and details["average"] == 2
    assert [f["canvas_offset"] for f in details["frame_info"]] == [[0, 0], [0, 61], [0, 58]]
    # The offsets carry the motion: the same frames without them decode to images 3 and 6 pixels off
    # (but within reach of the post-filter's taps, 7x7 at most, of the image's sides: it mirrors them).
    sequence = unpack_sequence(SEQUENCE_V2.read_bytes())
    frames = dipcodec.decode_sequence(SEQUENCE_V2.read_bytes(), base=BASE)
    unrolled = dipcodec.decode_sequence(pack_sequence(SequenceFile(sequence.frames, sequence.average)), base=BASE)
    for frame, still, shift in zip(frames[1:], unrolled[1:], (3, 6)):
        np.testing.assert_array_equal(np.roll(still, -shift, axis=1)[:, 3 : 61 - shift], frame[:, 3 : 61 - shift])
        assert not np.array_equal(still, frame)


@pytest.mark.parametrize("golden", [SEQUENCE, SEQUENCE_V2], ids=["v1", "v2"])
def test_mutated_golden_sequence_decodes_or_raises_decode_error(golden):
    from dipcodec.transfer.basefile import load_base

    base = load_base(BASE)
    rejected = 0
    for damaged in _mutations(golden.read_bytes(), 300, seed=99):
        try:
            frames = dipcodec.decode_sequence(damaged, base=base)
        except DecodeError as exc:
            assert "\n" not in str(exc) and str(exc)
            rejected += 1
        else:
            assert all(f.dtype == np.uint8 for f in frames)
    assert rejected > 200


def test_mutated_golden_base_loads_or_raises_decode_error():
    from dipcodec.transfer.basefile import base_from_bytes

    for damaged in _mutations(BASE.read_bytes(), 300, seed=7):
        try:
            base_from_bytes(damaged)
        except DecodeError as exc:
            assert "\n" not in str(exc) and str(exc)


def test_the_worked_example_of_the_format_document_decodes_as_it_says():
    """docs/FORMAT.md §10 prints a whole file byte by byte: it must be a valid file, of the size and
    section sizes the text gives, that decodes to an image close to the gradient it was coded from."""
    text = (Path(__file__).parents[1] / "docs" / "FORMAT.md").read_text(encoding="utf-8")
    example = text[text.index("## 10. Worked example"):]
    block = example[example.index("```\n", example.index("Output (")) + 4:]
    lines = block[: block.index("```")].split("\n")
    data = bytes.fromhex(" ".join(lines[1:]))
    assert len(data) == int(lines[0]) == 123
    details = dipcodec.info(data)
    sizes = details["section_bytes"]
    assert (f"header {sizes['header']}, network {sizes['network']}, quantization {sizes['quantization']}, "
            f"weights {sizes['weights']} and crc {sizes['crc']} bytes") in " ".join(example.split())
    gradient = np.add.outer(np.arange(16), np.arange(16)) * 8.0
    mse = np.mean((dipcodec.decode(data).astype(float) - gradient) ** 2)
    assert 10 * np.log10(255**2 / mse) > 24  # 26.9 dB from 124 weights
