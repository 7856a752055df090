"""dipcodec: image compression by overfitting a small Deep Image Prior network.

The file holds only the network's quantized, entropy-coded weights (as deltas from a seeded
initialization, a base model, or in a sequence the frames before), and since format version 5 a
small linear post-filter (since version 6 with classes of pixels, each with its own filter); the decoder regenerates the fixed input from the seed, runs one forward
pass and applies the filter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import pillow_plugin as _pillow_plugin  # registers .dip with Pillow
from .decoder import decode, info
from .errors import DecodeError, DipcodecError, DipcodecWarning, InputError
from .transfer.sequence import decode_sequence

if TYPE_CHECKING:
    from .encoder import encode
    from .restoration.restore import restore
    from .transfer.warmstart import encode_sequence

__all__ = ["encode", "decode", "info", "restore", "encode_sequence", "decode_sequence", "DipcodecError", "InputError", "DecodeError", "DipcodecWarning", "__version__"]
__version__ = "0.1.0"

_pillow_plugin.register()


def __getattr__(name: str):
    # The encoder pulls in the fitting code; importing it lazily keeps decode-only use free of it.
    if name == "encode":
        from .encoder import encode

        return encode
    if name == "encode_sequence":
        from .transfer.warmstart import encode_sequence

        return encode_sequence
    if name == "restore":
        from .restoration.restore import restore

        return restore
    raise AttributeError(f"module 'dipcodec' has no attribute {name!r}")
