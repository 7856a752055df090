"""Base models: network weights learned on many images, which a file's weights are coded against.

A base model is a ``.dipbase`` file (``docs/FORMAT.md``, §12): the network description, the
weights as raw float32, a little JSON about how they were trained, and a CRC. No pickle: loading
one reads numbers and nothing else. Its id, which ``.dip`` files name in their ``B`` section, is a
hash of the network description and the weights, so two bases with the same id decode alike.

The bases that ship with the package live in ``dipcodec/transfer/bases/``: one per network width
of the encoder's RGB compression layout (sines), and of its inpainting layout (ReLUs).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from ..container import BASE_ID_BYTES, MAX_FILE_BYTES, Reader, framed_body, network_bytes, parse_network, varint
from ..errors import DecodeError, InputError, MissingBaseError
from ..network import NetworkConfig

__all__ = ["BaseModel", "BaseChoice", "BASE_MAGIC", "BASE_VERSION", "BASE_READABLE_VERSIONS", "BASE_SUFFIX", "SHIPPED_DIR", "base_id",
           "base_to_bytes", "base_from_bytes", "load_base", "save_base", "shipped_bases", "find_base"]

BASE_MAGIC = b"DIPB"
BASE_VERSION = 2
"""The version written for a base whose network description has an activation byte (a sine
network); a ReLU base is written as version 1, byte for byte what earlier releases wrote."""
BASE_READABLE_VERSIONS = (1, 2)
BASE_ACTIVATION_SINCE = 2
"""The first version whose network description may end in an activation byte."""
BASE_SUFFIX = ".dipbase"
SHIPPED_DIR = Path(__file__).with_name("bases")
MAX_INFO_BYTES = 1 << 16


@dataclass(frozen=True, eq=False)
class BaseModel:
    """A network and its weights (float32, in ``network.tensor_shapes()`` order)."""

    network: NetworkConfig
    weights: tuple[np.ndarray, ...] = field(repr=False)
    info: dict = field(default_factory=dict)
    """How it was made (training steps, data): informative only, not part of the id."""

    def __post_init__(self) -> None:
        shapes = self.network.tensor_shapes()
        if len(self.weights) != len(shapes) or any(w.shape != s for w, s in zip(self.weights, shapes)):
            raise InputError("base model weights do not match its network")

    @functools.cached_property
    def id(self) -> bytes:
        return base_id(self.network, self.weights)

    @property
    def name(self) -> str:
        return self.id.hex()



BaseChoice = Union[str, os.PathLike, BaseModel, None]
"""What a base argument may be: ``"auto"``, ``"default"`` or ``"none"`` (the encoder's), a path to a
``.dipbase`` file, a loaded :class:`BaseModel`, or None."""

def base_id(network: NetworkConfig, weights: Iterable[np.ndarray]) -> bytes:
    """The first 8 bytes of the SHA-256 of the network description and the float32 weights."""
    digest = hashlib.sha256(network_bytes(network))
    for w in weights:
        digest.update(np.ascontiguousarray(w, "<f4").tobytes())
    return digest.digest()[:BASE_ID_BYTES]


def base_to_bytes(base: BaseModel) -> bytes:
    if base.network.upsample == "bicubic":  # no base serves those networks, and base files refuse them
        raise ValueError("a base model file cannot hold a network with bicubic upsampling")
    net = network_bytes(base.network)
    info = json.dumps(base.info, sort_keys=True, separators=(",", ":")).encode()
    version = 1 if base.network.activation == "relu" else BASE_VERSION
    body = bytearray(BASE_MAGIC) + bytes([version]) + varint(len(net)) + net + varint(len(info)) + info
    for w in base.weights:
        body += np.ascontiguousarray(w, "<f4").tobytes()
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def base_from_bytes(data: bytes) -> BaseModel:
    """Parse a ``.dipbase`` file; any damage is a :class:`DecodeError`."""
    body = framed_body(bytes(data), BASE_MAGIC, BASE_READABLE_VERSIONS, "base model", min_size=10,
                       max_size=MAX_FILE_BYTES)
    r = Reader(body, "base model")
    r.take(5, "magic")
    network = parse_network(r.take(r.varint("network length", 256), "network description"),
                            activation_byte=body[4] >= BASE_ACTIVATION_SINCE)
    if network.upsample == "bicubic":
        raise DecodeError("a base model cannot upsample bicubically")
    try:
        info = json.loads(r.take(r.varint("description length", MAX_INFO_BYTES), "description").decode())
    except (UnicodeDecodeError, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise DecodeError("base model has a damaged description") from None
    shapes = network.tensor_shapes()
    if len(body) - r.pos != 4 * network.parameter_count():
        raise DecodeError("base model weights do not match its network")
    flat = np.frombuffer(body, "<f4", offset=r.pos).astype(np.float32)
    if not np.all(np.isfinite(flat)):
        raise DecodeError("base model holds non-finite weights")
    weights, start = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        weights.append(flat[start : start + n].reshape(shape))
        start += n
    return BaseModel(network, tuple(weights), info if isinstance(info, dict) else {})


def load_base(path: str | os.PathLike) -> BaseModel:
    """Read a ``.dipbase`` file (a one-line :class:`InputError` if it is missing or not a base)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read base model {path}: {exc.strerror or exc}") from None
    try:
        return base_from_bytes(data)
    except DecodeError as exc:
        raise InputError(f"{path}: {exc}") from None


def save_base(base: BaseModel, path: str | os.PathLike, *, force: bool = True) -> None:
    """Write a ``.dipbase`` file atomically with :func:`dipcodec.images.write_atomic` (a unique
    temporary file, synced, renamed into place; a failure is a one-line InputError). An existing
    file is replaced unless ``force`` is False: by default, since training rewrites its checkpoint."""
    from ..images import write_atomic  # here, not above: decoding loads this module and needs no image I/O

    write_atomic(path, base_to_bytes(base), force=force)


@functools.cache
def shipped_bases() -> tuple[BaseModel, ...]:
    """The bases in the package, smallest network first."""
    bases = [base_from_bytes(p.read_bytes()) for p in sorted(SHIPPED_DIR.glob(f"*{BASE_SUFFIX}"))]
    return tuple(sorted(bases, key=lambda b: b.network.parameter_count()))


def find_base(wanted: bytes, extra: Iterable[BaseModel] = ()) -> BaseModel:
    """The base with this id among ``extra`` and the shipped ones, or a DecodeError naming it."""
    for base in (*extra, *shipped_bases()):
        if base.id == wanted:
            return base
    raise MissingBaseError(f"this file needs base model {wanted.hex()}, which is not available")
