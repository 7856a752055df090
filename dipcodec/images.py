"""Reading images into the uint8 arrays the codec works on, and writing files atomically.

The codec codes 8-bit grayscale (one channel) or RGB. Everything else Pillow can read is brought to
one of those, with a warning whenever information is dropped (alpha, bits beyond 8).
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .container import MAX_SIDE, MIN_SIDE
from .errors import InputError, warn

__all__ = ["ImageLike", "MIN_SIDE", "MAX_SIDE", "as_array", "image_files", "read_image", "write_image", "write_atomic", "output_target",
           "image_format", "image_bytes"]

ImageLike = Union[Image.Image, np.ndarray]
"""An image the API takes: a PIL image, or a uint8 array HxW or HxWxC (C = 1, 3 or 4)."""

_GRAY_MODES = {"1", "L", "LA", "La"}


def _check_size(height: int, width: int) -> None:
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
        raise InputError(f"image is {width}x{height}; dipcodec codes sizes from {MIN_SIDE}x{MIN_SIDE} to {MAX_SIDE}x{MAX_SIDE}")


def _from_pil(im: Image.Image) -> np.ndarray:
    sixteen_bit = any(";16" in str(t.args) for t in (getattr(im, "tile", None) or []))  # only file-read images have tiles
    w, h = im.size
    _check_size(h, w)  # before decoding the pixels: a huge image costs nothing to reject
    try:
        im.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot decode image: {exc}") from None
    mode = im.mode
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "La", "RGBa"):
        warn("dropping the alpha channel: dipcodec codes grayscale or RGB")
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(im).astype(np.float64)
        if mode == "F":
            if not np.all(np.isfinite(values)):
                raise InputError("the image holds values that are not finite numbers")
            if values.size and 0 <= values.min() and values.max() <= 1:  # a float image scaled to [0, 1]
                warn("reading a floating-point image in [0, 1] as 0 to 255")
                values = values * 255
        if mode.startswith("I;16") or sixteen_bit or (mode == "I" and values.max(initial=0) > 255):
            warn("reducing a 16-bit image to 8 bits")
            values = values / 257.0
        return np.rint(np.clip(values, 0, 255)).astype(np.uint8)
    if sixteen_bit:
        warn("reducing a 16-bit image to 8 bits")
    if mode in _GRAY_MODES:
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def as_array(image: ImageLike) -> np.ndarray:
    """A uint8 array HxW (grayscale) or HxWx3 from a PIL image or an array HxW / HxWxC (C in 1, 3, 4)."""
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    a = image
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InputError(f"expected an array HxW or HxWxC with C in 1, 3, 4; got shape {image.shape}")
    _check_size(a.shape[0], a.shape[1])
    if a.dtype == np.uint16:
        warn("reducing a 16-bit image to 8 bits")
        a = np.rint(a / 257.0).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise InputError(f"expected uint8 pixels, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 4:
        warn("dropping the alpha channel: dipcodec codes grayscale or RGB")
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The files of ``folder`` that Pillow knows by their extension (less dipcodec's own and hidden
    files), sorted by name: what ``eval`` and ``train-base`` read."""
    extensions = {e for e, fmt in Image.registered_extensions().items() if fmt != "DIPCODEC"}
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read any image Pillow can open; the first frame of an animation."""
    path = Path(path)
    try:
        # Only a regular file's size says anything: a pipe (/dev/stdin, <(cat x.png)) reports 0 bytes.
        status = path.stat()
        if stat.S_ISREG(status.st_mode) and status.st_size == 0:
            raise InputError(f"{path}: file is empty")
        with Image.open(path) as im:
            return _from_pil(im)
    except InputError as exc:
        message = str(exc)
        raise InputError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: cannot read image ({getattr(exc, 'strerror', None) or exc})") from None


def output_target(path: str | os.PathLike, *, force: bool = False) -> Path:
    """The file that writing ``path`` replaces: the real file behind a symlink, so the link survives.

    Checked before any slow work: it must not be a directory or a non-regular file (a FIFO, a
    device: an atomic rename would replace it with a plain file), its folder must exist and be
    writable, and an existing one is replaced only with ``force``.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode  # through links, /proc's too (/dev/stdout on a pipe: realpath cannot follow)
    except OSError:  # nothing there yet (or no folder: see below)
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise InputError(f"{path} is a directory" if stat.S_ISDIR(mode) else
                         f"{path} is not a regular file (dipcodec writes files only)")
    target = Path(os.path.realpath(path))
    if os.path.lexists(path) and not force:
        raise InputError(f"{path} already exists (use --force to overwrite)")
    folder = target.parent
    if not folder.is_dir():
        raise InputError(f"{path}: folder {folder if path.is_symlink() else path.parent} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write in folder {folder} (permission denied)")
    return target


def write_atomic(path: str | os.PathLike, data: bytes, *, force: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place, so a crash or an
    error never leaves a partial file; refuses to replace an existing file unless ``force``. A
    symlink is written through (see :func:`output_target`)."""
    path = Path(path)
    target = output_target(path, force=force)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the rename must not land before the data does
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def image_bytes(path: str | os.PathLike, pixels: np.ndarray, fmt: str) -> bytes:
    """``pixels`` saved as ``fmt``; whatever Pillow raises becomes one readable line naming ``path``."""
    buffer = io.BytesIO()
    try:
        Image.fromarray(pixels).save(buffer, format=fmt)
    except (OSError, ValueError, KeyError) as exc:  # KeyError: a mode or option the plugin lacks
        detail = "" if isinstance(exc, KeyError) else f" ({exc})"
        kind = "grayscale" if pixels.ndim == 2 else "RGB"
        raise InputError(f"{path}: Pillow cannot write {kind} images as {fmt}{detail}") from None
    return buffer.getvalue()


def image_format(path: str | os.PathLike, channels: int | None = None) -> str:
    """The Pillow format ``path``'s extension names, refused before any slow work unless Pillow
    can write it: for images of ``channels`` (1 or 3) channels, or if None, of one of the two.

    A tiny test image is saved, since Pillow registers formats it only reads, stubs whose save
    handler is not installed (.h5, .grib), and formats that take neither kind of pixels (.xbm).
    """
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt == "DIPCODEC":
        raise InputError(f"{path}: cannot tell the image format from the extension (use .png, .bmp, .tiff ...)")
    if fmt not in Image.SAVE:
        raise InputError(f"{path}: Pillow reads {fmt} images but cannot write them (use .png, .bmp, .tiff ...)")
    refusals = []
    for kind in (3, 1) if channels is None else (channels,):
        try:
            image_bytes(path, np.zeros((8, 8, 3) if kind == 3 else (8, 8), np.uint8), fmt)
            return fmt
        except InputError as exc:
            refusals.append(exc)
    raise refusals[0]


def write_image(path: str | os.PathLike, pixels: np.ndarray, *, force: bool = False) -> None:
    """Save pixels in the format named by the extension (PNG, BMP, TIFF, WebP, JPEG ...), atomically."""
    path = Path(path)
    write_atomic(path, image_bytes(path, pixels, image_format(path)), force=force)
