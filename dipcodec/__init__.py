"""dipcodec: image compression by overfitting a small Deep Image Prior network.

The file holds only the network's quantized, entropy-coded weights (as deltas from a seeded
initialization, a base model, or in a sequence the frames before), and since format version 5 a
small linear post-filter (since version 6 with classes of pixels, each with its own filter); the decoder regenerates the fixed input from the seed, runs one forward
pass and applies the filter.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import pillow_plugin as _pillow_plugin  # registers .dip with Pillow
from .errors import DecodeError, DipcodecError, DipcodecWarning, InputError

if TYPE_CHECKING:
    from .decoder import decode, info
    from .encoder import encode
    from .restoration.restore import restore
    from .transfer.sequence import decode_sequence
    from .transfer.warmstart import encode_sequence

__all__ = ["encode", "decode", "info", "restore", "encode_sequence", "decode_sequence", "DipcodecError", "InputError", "DecodeError", "DipcodecWarning", "__version__"]
__version__ = "0.1.0"

_pillow_plugin.register()

_LAZY = {"decode": ".decoder", "info": ".decoder", "decode_sequence": ".transfer.sequence", "encode": ".encoder",
         "encode_sequence": ".transfer.warmstart", "restore": ".restoration.restore"}
"""Where each entry point lives. Imported on first use: ``import dipcodec`` stays free of torch (the
command line answers ``--help`` at once, and Ctrl-C during start-up is a clean interrupt), and
decode-only use never loads the fitting code."""


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'dipcodec' has no attribute {name!r}")
