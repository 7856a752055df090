"""The ``.dip`` file format, version 6 (also reads versions 1 to 5): magic, version, header, tagged sections, CRC32.

``docs/FORMAT.md`` documents it byte by byte. Parsing validates every declared size against hard
limits before anything is allocated, so decoding a forged file costs at most a fixed multiple
(16 floats per tensor, 32768 multiply-adds; the post-filter's 81 integer multiply-adds a sample)
per pixel of the image it declares, plus padding and temporaries of the same order.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Literal

import zstandard

from .entropy import TensorModel
from .errors import DecodeError
from .network import ACTIVATIONS, NetworkConfig, Upsample, decode_cost, padded_size
from .postfilter import MAX_BANDS, MAX_CODE, MAX_THRESHOLD, PostFilter
from .quantize import STEP_CODE_RANGE

__all__ = [
    "MAGIC", "VERSION", "READABLE_VERSIONS", "file_version", "MIN_SIDE", "MAX_SIDE", "MAX_FILE_BYTES", "MAX_SCALE",
    "FILE_UPSAMPLE_MODES", "MODES", "REFERENCES", "Mode", "Reference",
    "Bitstream", "pack", "unpack", "section_sizes", "check_network_limits", "network_bytes", "parse_network",
    "varint", "zigzag", "Reader", "framed_body", "post_filter_section",
]

MAGIC = b"DIPC"
VERSION = 6
"""The newest version, which this decoder reads. Version 2 gave modes 2 (super-resolution, with a
scale byte) and 3 (denoise) their meaning; version 3 added the network description's activation byte
(sine networks); version 4 the upsampling byte's value 2 (bicubic); version 5 the post-filter
section ``F``; version 6 its classes (phases and activity bands); everything else is as in version 1. The encoder writes the oldest version that holds
a file (:func:`file_version`), so a file without a post-filter still reads in older decoders."""
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)
ACTIVATION_SINCE = 3
"""The first ``.dip`` version whose network description may end with an activation byte."""
BICUBIC_SINCE = 4
"""The first ``.dip`` version whose network may upsample bicubically."""
POST_FILTER_SINCE = 5
"""The first ``.dip`` version that may hold a post-filter section (plain files only)."""
FILTER_CLASSES_SINCE = 6
"""The first ``.dip`` version whose post-filter section declares classes (phases and activity bands)."""
MIN_SIDE, MAX_SIDE = 8, 4096
MAX_FILE_BYTES = 64 << 20
"""No valid file comes near this (2**21 weights at 24 bits each is 6 MiB); readers stop here."""
MAX_PARAMETERS = 1 << 21
MAX_STAGES = 10
MAX_CHANNELS = 512
MAX_KERNEL = 15
MAX_ACTIVATION_RATIO = 16
"""A network may hold at most this many floats per declared image pixel in any one tensor."""
MAX_MACS_PER_PIXEL = 32768
"""And cost at most this many multiply-adds per declared image pixel."""
MAX_SEED = (1 << 32) - 1
FILE_UPSAMPLE_MODES: tuple[Upsample, ...] = ("bilinear", "nearest", "bicubic")
"""The upsampling a file's network declares, by its byte (bicubic, 2, from version 4 on)."""
BASE_ID_BYTES = 8

Mode = Literal["plain", "inpaint", "super-resolution", "denoise"]
Reference = Literal["seed", "base", "previous-frame"]
MODES: tuple[Mode, ...] = ("plain", "inpaint", "super-resolution", "denoise")
"""How the network was fitted. Only super-resolution changes decoding: the network renders the image
``scale`` times larger than the header's size, which is the size of the image that was fitted."""
MAX_SCALE = 8
REFERENCES: tuple[Reference, ...] = ("seed", "base", "previous-frame")

TAG_NETWORK, TAG_TABLE, TAG_WEIGHTS, TAG_BASE, TAG_FILTER = b"N", b"Q", b"W", b"B", b"F"
_TABLE_RAW, _TABLE_ZSTD = 0, 1


@dataclass(frozen=True)
class Bitstream:
    """The decoded contents of a ``.dip`` file, before the weights are rebuilt."""

    width: int
    height: int
    channels: int
    seed: int
    network: NetworkConfig
    step_codes: tuple[int, ...]
    models: tuple[TensorModel, ...]
    weights: bytes = field(repr=False)
    mode: Mode = "plain"
    reference: Reference = "seed"
    base_id: bytes | None = None
    scale: int = 1
    """Super-resolution factor: the decoded image is ``scale * width`` by ``scale * height``."""
    version: int | None = None
    """The format version the file was read from; None for a stream not read from a file (``pack``
    writes :func:`file_version`)."""
    post_filter: PostFilter | None = None
    """The filter the decoder applies to the network's 8-bit image (plain files, versions 5 and 6)."""

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the image the network renders."""
        return self.scale * self.height, self.scale * self.width


# ---------------------------------------------------------------- varints (LEB128, little-endian)

def varint(value: int) -> bytes:
    """An unsigned LEB128 varint (FORMAT.md §1.1); base model and sequence files use them too."""
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def zigzag(value: int) -> bytes:
    """A signed integer as a zigzag varint (FORMAT.md §1.2)."""
    return varint(value * 2 if value >= 0 else -value * 2 - 1)


class Reader:
    """Bounds-checked cursor: every read past the end is a DecodeError naming what was being read,
    every varint out of its limit or not minimally encoded one naming the field."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int, name: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DecodeError(f"truncated {self.what}: {name} runs past the end")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, name: str) -> int:
        return self.take(1, name)[0]

    def varint(self, name: str, limit: int) -> int:
        value = shift = 0
        while True:
            byte = self.u8(name)
            value |= (byte & 0x7F) << shift
            shift += 7
            if value > limit or shift > 63:
                raise DecodeError(f"{name} out of range in {self.what}")
            if not byte & 0x80:
                if byte == 0 and shift > 7:
                    raise DecodeError(f"{name} is not minimally encoded in {self.what}")
                return value

    def zigzag(self, name: str, limit: int) -> int:
        raw = self.varint(name, 2 * limit + 1)
        return raw >> 1 if not raw & 1 else -(raw >> 1) - 1

    def done(self) -> bool:
        return self.pos == len(self.data)


# ---------------------------------------------------------------- writing

def network_bytes(cfg: NetworkConfig) -> bytes:
    """The network description (section ``N``; base model files hold the same bytes). A ReLU network
    has no activation byte, so its description (and a base model's id) is what version 2 wrote."""
    out = bytearray([len(cfg.channels)]) + varint(cfg.input_channels)
    for c, k in zip(cfg.channels, cfg.kernel_sizes):
        out += varint(c) + bytes([k])
    out += bytes([cfg.out_channels, cfg.shuffle, FILE_UPSAMPLE_MODES.index(cfg.upsample)])
    if cfg.activation != "relu":
        out.append(ACTIVATIONS.index(cfg.activation))
    return bytes(out)


def _table_bytes(codes: tuple[int, ...], models: tuple[TensorModel, ...]) -> bytes:
    raw = bytearray()
    for code, m in zip(codes, models, strict=True):
        raw += zigzag(code) + zigzag(m.scale_code) + zigzag(m.center) + zigzag(m.low) + varint(m.high - m.low)
    packed = zstandard.ZstdCompressor(level=19, write_checksum=False, write_content_size=True).compress(bytes(raw))
    if len(packed) < len(raw):
        return bytes([_TABLE_ZSTD]) + packed
    return bytes([_TABLE_RAW]) + bytes(raw)


def _section(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def post_filter_section(post_filter: PostFilter) -> bytes:
    """Section ``F`` whole: its payload is taps and precision; for a filter with classes (version 6)
    phases, bands and the activity thresholds; then every channel's (and class's) codes as zigzag varints."""
    head = bytes([post_filter.taps, post_filter.precision])
    if post_filter.classes > 1:
        head += bytes([post_filter.phases, len(post_filter.thresholds) + 1])
        head += b"".join(varint(t) for t in post_filter.thresholds)
    codes = b"".join(zigzag(v) for filter_codes in post_filter.codes for v in filter_codes)
    return _section(TAG_FILTER, head + codes)


def file_version(network: NetworkConfig, post_filter: PostFilter | None = None) -> int:
    """The oldest version that can hold a file: 6 with a post-filter of several classes, 5 with one
    of one class, else 4 if the network upsamples bicubically, else 3."""
    if post_filter is not None:
        return FILTER_CLASSES_SINCE if post_filter.classes > 1 else POST_FILTER_SINCE
    return BICUBIC_SINCE if network.upsample == "bicubic" else ACTIVATION_SINCE


def pack(stream: Bitstream) -> bytes:
    """Serialize a bitstream; the result is the whole file."""
    if stream.post_filter is not None and stream.mode != "plain":
        raise ValueError("only plain files hold a post-filter")
    head = bytearray(MAGIC) + bytes([file_version(stream.network, stream.post_filter)])
    head += varint(stream.width) + varint(stream.height)
    head += bytes([stream.channels, MODES.index(stream.mode), REFERENCES.index(stream.reference)])
    head += varint(stream.seed)
    if stream.mode == "super-resolution":
        head.append(stream.scale)
    body = bytearray(head)
    if stream.base_id is not None:
        body += _section(TAG_BASE, stream.base_id)
    body += _section(TAG_NETWORK, network_bytes(stream.network))
    body += _section(TAG_TABLE, _table_bytes(stream.step_codes, stream.models))
    body += _section(TAG_WEIGHTS, stream.weights)
    if stream.post_filter is not None:
        body += post_filter_section(stream.post_filter)
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


# ---------------------------------------------------------------- reading

def parse_network(payload: bytes, channels: int | None = None, *, activation_byte: bool = True,
                  bicubic: bool = True) -> NetworkConfig:
    """Read a network description; ``channels``, when given, must match its output channels, and
    ``activation_byte`` and ``bicubic`` say whether the file's version knows the optional activation
    byte and bicubic upsampling. The cost limits, which depend on the image size, are
    :func:`check_network_limits`'s to check."""
    r = Reader(payload, "network section")
    stages = r.u8("stage count")
    if not 1 <= stages <= MAX_STAGES:
        raise DecodeError(f"stage count {stages} out of range")
    input_channels = r.varint("input channels", MAX_CHANNELS)
    widths, kernels = [], []
    for _ in range(stages):
        widths.append(r.varint("stage width", MAX_CHANNELS))
        kernels.append(r.u8("kernel size"))
    out_channels, shuffle, upsample = r.u8("output channels"), r.u8("shuffle"), r.u8("upsample mode")
    activation = 0
    if activation_byte and not r.done():
        activation = r.u8("activation")
        if not 0 < activation < len(ACTIVATIONS):  # ReLU is written as no byte at all
            raise DecodeError(f"invalid activation {activation}")
    if not r.done():
        raise DecodeError("network section has trailing bytes")
    if channels is not None and out_channels != channels:
        raise DecodeError("network output channels do not match the image channels")
    if upsample >= len(FILE_UPSAMPLE_MODES) or any(k > MAX_KERNEL for k in kernels):
        raise DecodeError("invalid network description")
    if FILE_UPSAMPLE_MODES[upsample] == "bicubic" and not bicubic:
        raise DecodeError(f"bicubic upsampling is not defined before version {BICUBIC_SINCE}")
    try:
        cfg = NetworkConfig(tuple(widths), tuple(kernels), input_channels, out_channels, shuffle,
                            FILE_UPSAMPLE_MODES[upsample], ACTIVATIONS[activation])
    except ValueError as exc:
        raise DecodeError(f"invalid network description ({exc})") from None
    if cfg.parameter_count() > MAX_PARAMETERS:
        raise DecodeError(f"network declares {cfg.parameter_count()} parameters (limit {MAX_PARAMETERS})")
    return cfg


def check_network_limits(cfg: NetworkConfig, height: int, width: int, error: type[Exception]) -> None:
    """The bounds every file's network obeys (the encoder checks its own choices with them too)."""
    if cfg.parameter_count() > MAX_PARAMETERS:
        raise error(f"network declares {cfg.parameter_count()} parameters (limit {MAX_PARAMETERS})")
    if 2 * cfg.stride > min(padded_size(cfg, height, width)):
        # The fixed input must be at least 2x2: normalizing a single value per channel is degenerate.
        raise error(f"network stride {cfg.stride} is too large for a {width}x{height} image")
    largest, macs = decode_cost(cfg, height, width)
    if largest > MAX_ACTIVATION_RATIO:
        raise error(f"network needs {largest:.0f} floats per pixel (limit {MAX_ACTIVATION_RATIO})")
    if macs > MAX_MACS_PER_PIXEL:
        raise error(f"network needs {macs:.0f} multiply-adds per pixel (limit {MAX_MACS_PER_PIXEL})")


def _parse_table(payload: bytes, count: int) -> tuple[tuple[int, ...], tuple[TensorModel, ...]]:
    if not payload:
        raise DecodeError("empty quantization table")
    limit = 32 * count + 64
    if payload[0] == _TABLE_ZSTD:
        try:
            declared = zstandard.frame_content_size(payload[1:])
            if not 0 < declared <= limit:  # -1: size not recorded; the encoder always records it
                raise DecodeError("quantization table has a missing or oversized length")
            raw = zstandard.ZstdDecompressor().decompress(payload[1:], max_output_size=limit, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise DecodeError(f"corrupt quantization table ({exc})") from None
    elif payload[0] == _TABLE_RAW:
        raw = payload[1:]
    else:
        raise DecodeError(f"unknown quantization table encoding {payload[0]}")
    r = Reader(raw, "quantization table")
    codes, models = [], []
    for _ in range(count):
        code = r.zigzag("step code", 1 << 16)
        if not STEP_CODE_RANGE[0] <= code <= STEP_CODE_RANGE[1]:
            raise DecodeError(f"step code {code} out of range")
        scale, center, low = r.zigzag("scale code", 1 << 16), r.zigzag("centre", 1 << 21), r.zigzag("low", 1 << 21)
        model = TensorModel(center=center, scale_code=scale, low=low, high=low + r.varint("span", 1 << 22))
        model.validate()
        codes.append(code)
        models.append(model)
    if not r.done():
        raise DecodeError("quantization table has trailing bytes")
    return tuple(codes), tuple(models)


def _parse_post_filter(payload: bytes, channels: int, version: int) -> PostFilter:
    """Section ``F``, every limit checked as it is read (so that nothing further is left to validate)."""
    r = Reader(payload, "post-filter section")
    taps, precision = r.u8("taps"), r.u8("precision")
    PostFilter.check_layout(taps, precision)
    phases, thresholds = 1, ()
    if version >= FILTER_CLASSES_SINCE:
        phases = r.u8("phases")
        PostFilter.check_classes(phases, ())
        bands = r.u8("bands")
        if not 1 <= bands <= MAX_BANDS:
            raise DecodeError(f"post-filter bands {bands} out of range (1 to {MAX_BANDS})")
        thresholds = tuple(r.varint("activity threshold", MAX_THRESHOLD) for _ in range(bands - 1))
        PostFilter.check_classes(phases, thresholds)
    classes = phases * (len(thresholds) + 1)
    # The zigzag limit lets -(MAX_CODE + 1) through: check_code catches it before reading on.
    codes = tuple(tuple(PostFilter.check_code(r.zigzag("post-filter coefficient", MAX_CODE))
                        for _ in range(taps * taps + 1)) for _ in range(channels * classes))
    if not r.done():
        raise DecodeError("post-filter section has trailing bytes")
    return PostFilter(taps, precision, codes, phases, thresholds)


def framed_body(data: bytes, magic: bytes, versions: tuple[int, ...], what: str, *, min_size: int,
                max_size: int) -> bytes:
    """Check a base model's or sequence's magic, version (one of ``versions``) and CRC32 (the framing
    they share with ``.dip`` files); return the bytes before the CRC."""
    if data[:4] != magic:
        raise DecodeError(f"not a dipcodec {what} (bad magic)")
    if len(data) < min_size:
        raise DecodeError(f"file too short to be a dipcodec {what}")
    if len(data) > max_size:
        raise DecodeError(f"{what} file is larger than any dipcodec {what} can be")
    if data[4] not in versions:
        readable = " and ".join(map(str, versions))
        raise DecodeError(f"unsupported {what} version {data[4]} (this decoder reads version {readable})")
    body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
    if zlib.crc32(body) != crc:
        raise DecodeError(f"checksum mismatch: the {what} file is damaged")
    return body


def _split(data: bytes) -> tuple[dict[bytes, bytes], dict[str, int]]:
    """Check magic, version and CRC; return the sections by tag and the header fields with part sizes."""
    if len(data) < len(MAGIC) + 5:
        raise DecodeError("file too short to be a dipcodec file")
    if len(data) > MAX_FILE_BYTES:
        raise DecodeError(f"file of {len(data)} bytes is larger than any dipcodec file can be")
    if data[:4] != MAGIC:
        raise DecodeError("not a dipcodec file (bad magic)")
    if data[4] not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS[:-1])) + f" and {READABLE_VERSIONS[-1]}"
        raise DecodeError(f"unsupported format version {data[4]} (this decoder reads versions {readable})")
    body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
    if zlib.crc32(body) != crc:
        raise DecodeError("checksum mismatch: the file is damaged")
    r = Reader(body, "header")
    r.take(5, "magic")
    fields = {
        "width": r.varint("width", MAX_SIDE),
        "height": r.varint("height", MAX_SIDE),
        "channels": r.u8("channels"),
        "mode": r.u8("mode"),
        "reference": r.u8("reference"),
        "seed": r.varint("seed", MAX_SEED),
    }
    if data[4] == 1 and fields["mode"] > MODES.index("inpaint"):
        raise DecodeError(f"mode {fields['mode']} is not defined in version-1 files")
    fields["scale"] = r.u8("scale") if fields["mode"] == MODES.index("super-resolution") else 1
    fields["version"] = data[4]
    sizes = {"header": r.pos}
    sections: dict[bytes, bytes] = {}
    while not r.done():
        start = r.pos
        tag = r.take(1, "section tag")
        payload = r.take(r.varint("section length", len(body)), f"section {tag!r}")
        if tag not in _SECTION_ORDER:
            raise DecodeError(f"unknown section {tag!r}")
        if tag in sections or any(_SECTION_ORDER.index(t) > _SECTION_ORDER.index(tag) for t in sections):
            raise DecodeError(f"section {tag.decode()!r} is repeated or out of order")
        sections[tag] = payload
        sizes[_SECTION_NAMES[tag]] = r.pos - start
    sizes["crc"] = 4
    return sections, fields | sizes


_SECTION_ORDER = (TAG_BASE, TAG_NETWORK, TAG_TABLE, TAG_WEIGHTS, TAG_FILTER)
_SECTION_NAMES = {TAG_NETWORK: "network", TAG_TABLE: "quantization", TAG_WEIGHTS: "weights", TAG_BASE: "base",
                  TAG_FILTER: "post_filter"}


def unpack(data: bytes) -> Bitstream:
    """Parse and validate a whole file; raises :class:`DecodeError` with a one-line reason."""
    data = bytes(data)
    sections, f = _split(data)
    w, h, ch = f["width"], f["height"], f["channels"]
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise DecodeError(f"declared image size {w}x{h} is out of range")
    if ch not in (1, 3):
        raise DecodeError(f"declared channel count {ch} is not 1 or 3")
    if f["mode"] >= len(MODES) or f["reference"] >= len(REFERENCES):
        raise DecodeError("unknown coding mode or reference")
    scale = f["scale"]
    if MODES[f["mode"]] == "super-resolution" and not 2 <= scale <= MAX_SCALE:
        raise DecodeError(f"super-resolution scale {scale} out of range (2 to {MAX_SCALE})")
    if max(scale * w, scale * h) > MAX_SIDE:
        raise DecodeError(f"super-resolved size {scale * w}x{scale * h} is larger than {MAX_SIDE}x{MAX_SIDE}")
    for tag in (TAG_NETWORK, TAG_TABLE, TAG_WEIGHTS):
        if tag not in sections:
            raise DecodeError(f"missing section {tag.decode()!r}")
    base_id = sections.get(TAG_BASE)
    if (REFERENCES[f["reference"]] == "base") != (base_id is not None):
        raise DecodeError("base-model reference and base section disagree")
    if base_id is not None and len(base_id) != BASE_ID_BYTES:
        raise DecodeError(f"base id must be {BASE_ID_BYTES} bytes")
    network = parse_network(sections[TAG_NETWORK], ch, activation_byte=f["version"] >= ACTIVATION_SINCE,
                            bicubic=f["version"] >= BICUBIC_SINCE)
    check_network_limits(network, scale * h, scale * w, DecodeError)
    codes, models = _parse_table(sections[TAG_TABLE], len(network.tensor_shapes()))
    if any(m.low < m.high for m in models) and not sections[TAG_WEIGHTS]:
        raise DecodeError("weight section is empty")
    post_filter = None
    if TAG_FILTER in sections:
        if f["version"] < POST_FILTER_SINCE:
            raise DecodeError(f"a post-filter section is not defined before version {POST_FILTER_SINCE}")
        if MODES[f["mode"]] != "plain":
            raise DecodeError("a post-filter section is defined only for plain files (mode 0)")
        post_filter = _parse_post_filter(sections[TAG_FILTER], ch, f["version"])
    return Bitstream(
        width=w, height=h, channels=ch, seed=f["seed"], network=network, step_codes=codes, models=models,
        weights=sections[TAG_WEIGHTS], mode=MODES[f["mode"]], reference=REFERENCES[f["reference"]], base_id=base_id,
        scale=scale, version=f["version"], post_filter=post_filter,
    )


def section_sizes(data: bytes) -> dict[str, int]:
    """Bytes taken by each part of a valid file (header, each section, crc)."""
    _, f = _split(bytes(data))
    return {k: v for k, v in f.items() if k in ("header", "crc", *_SECTION_NAMES.values())}
