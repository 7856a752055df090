"""A Pillow plugin so ``PIL.Image.open("x.dip")`` decodes dipcodec files."""

from __future__ import annotations

from PIL import Image, ImageFile

__all__ = ["DipImageFile", "register", "MAGIC"]

MAGIC = b"DIPC"
"""``container.MAGIC``, spelled out so that registering the plugin does not import torch (a test
keeps the two equal)."""


class DipImageFile(ImageFile.ImageFile):
    format = "DIPCODEC"
    format_description = "dipcodec Deep Image Prior image"

    def _open(self) -> None:
        from .container import MAX_FILE_BYTES
        from .decoder import decode

        data = self.fp.read(MAX_FILE_BYTES + 1)  # one byte over the limit is enough for decode to refuse it
        try:
            pixels = decode(data)
        except Exception as exc:  # Pillow expects SyntaxError from a plugin that cannot read the file
            raise SyntaxError(str(exc)) from None
        self._decoded = Image.fromarray(pixels)
        self._mode = self._decoded.mode
        self._size = self._decoded.size
        self.tile = []

    def load(self):
        if getattr(self, "_im", None) is None:
            self.im = self._decoded.im
        return Image.Image.load(self)


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == MAGIC


def register() -> None:
    Image.register_open(DipImageFile.format, DipImageFile, _accept)
    Image.register_extension(DipImageFile.format, ".dip")
    Image.register_mime(DipImageFile.format, "image/x-dipcodec")
