"""The ``.dips`` sequence container, and decoding it (no fitting code here).

A sequence is a list of complete ``.dip`` files, one per frame (``docs/FORMAT.md``, §13). A key frame
is coded from the seed or a base model and decodes on its own. Every other frame is coded as deltas
from the mean of the decoded weights of the last ``average`` frames since the key frame (the previous
frame when ``average`` is 1): its reference is ``previous-frame``. Since version 2 each frame also
carries a canvas offset: its network's output is rolled by it before the crop, so that a network
whose image stands still can follow a camera's pan.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..container import Bitstream, Reader, framed_body, unpack, varint
from ..decoder import Scale, as_bases, decoded_weights, info, reference_of, render_stream, resolve_device
from ..errors import DecodeError
from ..network import CanvasOffset, padded_size
from .basefile import BaseChoice

__all__ = ["SEQUENCE_MAGIC", "SEQUENCE_VERSION", "OFFSETS_SINCE", "MAX_OFFSET", "MAX_FRAMES", "MAX_AVERAGE", "SequenceFile",
           "pack_sequence", "unpack_sequence", "decode_sequence", "iter_sequence", "sequence_info", "is_sequence", "mean_weights"]

SEQUENCE_MAGIC = b"DIPS"
SEQUENCE_VERSION = 2
"""The newest version. The writer uses the oldest one that holds the sequence: 1 when every canvas
offset is zero."""
OFFSETS_SINCE = 2
MAX_OFFSET = 1 << 13
"""A bound on a canvas offset before the frame's canvas is known (canvases are at most 4096 pixels
and a stride a side); the decoder then checks it against the canvas itself."""
MAX_FRAMES = 100_000
MAX_AVERAGE = 16
MAX_SEQUENCE_BYTES = 1 << 32


@dataclass(frozen=True)
class SequenceFile:
    """A parsed ``.dips`` file: its frames' ``.dip`` bytes and the averaging window of inter frames."""

    frames: tuple[bytes, ...]
    average: int = 1
    offsets: tuple[CanvasOffset, ...] = ()
    """Per frame, (rows, columns) by which its network's canvas is rolled; empty: all zero."""
    version: int = 0
    """The version it was read as (0 for one built in memory)."""

    def __post_init__(self) -> None:
        if not self.offsets:
            object.__setattr__(self, "offsets", ((0, 0),) * len(self.frames))
        if len(self.offsets) != len(self.frames):
            raise ValueError("a sequence needs one canvas offset per frame")
        if any(not (0 <= o < MAX_OFFSET) for offset in self.offsets for o in offset):
            raise ValueError(f"canvas offsets must be in [0, {MAX_OFFSET})")


def pack_sequence(sequence: SequenceFile) -> bytes:
    version = OFFSETS_SINCE if any(any(o) for o in sequence.offsets) else 1
    body = bytearray(SEQUENCE_MAGIC) + bytes([version, sequence.average]) + varint(len(sequence.frames))
    for frame, (rows, columns) in zip(sequence.frames, sequence.offsets):
        if version >= OFFSETS_SINCE:
            body += varint(rows) + varint(columns)
        body += varint(len(frame)) + frame
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def is_sequence(data: bytes) -> bool:
    return bytes(data[:4]) == SEQUENCE_MAGIC


def unpack_sequence(data: bytes) -> SequenceFile:
    """Split a ``.dips`` file into its frames (each is checked when it is decoded)."""
    body = framed_body(bytes(data), SEQUENCE_MAGIC, tuple(range(1, SEQUENCE_VERSION + 1)), "sequence", min_size=11,
                       max_size=MAX_SEQUENCE_BYTES)
    version, average = body[4], body[5]
    if not 1 <= average <= MAX_AVERAGE:
        raise DecodeError(f"averaging window {average} out of range (1 to {MAX_AVERAGE})")
    r = Reader(body, "sequence")
    r.take(6, "magic, version and window")
    count = r.varint("frame count", MAX_FRAMES)
    if count == 0:
        raise DecodeError("sequence has no frames")
    frames, offsets = [], []
    for i in range(count):
        if version >= OFFSETS_SINCE:
            offsets.append((r.varint(f"canvas offset (rows) of frame {i}", MAX_OFFSET - 1),
                            r.varint(f"canvas offset (columns) of frame {i}", MAX_OFFSET - 1)))
        frames.append(r.take(r.varint(f"length of frame {i}", len(body)), f"frame {i}"))
    if not r.done():
        raise DecodeError("sequence has trailing bytes")
    return SequenceFile(tuple(frames), average, tuple(offsets), version)


def mean_weights(history: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Per tensor, the mean of the given frames' weights, summed in order in float64 and rounded to
    float32: the same numbers on every machine."""
    out = []
    for tensors in zip(*history):
        total = np.zeros(tensors[0].shape, np.float64)
        for t in tensors:
            total += t
        out.append((total / len(tensors)).astype(np.float32))
    return out


def decode_sequence(data: bytes, *, device: str = "cpu", scale: Scale = "full",
                    base: BaseChoice = None) -> list[np.ndarray]:
    """Decode every frame of a ``.dips`` file, in order, to uint8 pixels."""
    return list(iter_sequence(data, device=device, scale=scale, base=base))


def iter_sequence(data: bytes, *, device: str = "cpu", scale: Scale = "full",
                  base: BaseChoice = None) -> Iterator[np.ndarray]:
    """Decode a ``.dips`` file's frames one at a time, holding only the averaging window's weights:
    a long clip needs the memory of one frame, not of all of them."""
    sequence = unpack_sequence(data)
    dev = resolve_device(device)
    bases = as_bases(base)
    history = []
    for index, frame in enumerate(sequence.frames):
        try:
            stream = unpack(frame)
        except DecodeError as exc:
            raise DecodeError(f"frame {index}: {exc}") from None
        if stream.reference == "previous-frame":
            if not history:
                raise DecodeError(f"frame {index} refers to a previous frame, but it starts the sequence")
            if stream.network != history[-1][0]:
                raise DecodeError(f"frame {index} has a different network from the frame before it")
            reference = mean_weights([w for _, w in history[-sequence.average:]])
        else:
            history = []
            reference = reference_of(stream, bases)
        weights = decoded_weights(stream, reference)
        history.append((stream.network, weights))
        del history[:-sequence.average]  # only the averaging window is ever read again
        yield render_stream(stream, weights, dev, scale, _checked_offset(sequence, index, stream))


def _checked_offset(sequence: SequenceFile, index: int, stream: Bitstream) -> CanvasOffset:
    """A frame's canvas offset, which must lie inside its network's canvas."""
    offset = sequence.offsets[index]
    canvas = padded_size(stream.network, *stream.output_size)
    if offset[0] >= canvas[0] or offset[1] >= canvas[1]:
        raise DecodeError(f"frame {index}: canvas offset {offset[0]},{offset[1]} lies outside its "
                          f"{canvas[1]}x{canvas[0]} canvas")
    return offset


def sequence_info(data: bytes) -> dict:
    """What a ``.dips`` file holds: per frame, :func:`dipcodec.info`'s fields."""
    sequence = unpack_sequence(data)
    frames = []
    for index, frame in enumerate(sequence.frames):
        try:
            details = info(frame)
        except DecodeError as exc:
            raise DecodeError(f"frame {index}: {exc}") from None
        frames.append(details | {"canvas_offset": list(_checked_offset(sequence, index, unpack(frame)))})
    pixels = sum(f["width"] * f["height"] for f in frames)
    return {"sequence_version": sequence.version, "file_bytes": len(data), "frames": len(frames),
            "average": sequence.average, "key_frames": [i for i, f in enumerate(frames) if f["reference"] != "previous-frame"],
            "bpp": round(8 * len(data) / pixels, 6), "frame_info": frames}
