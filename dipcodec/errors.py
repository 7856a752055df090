"""The exceptions and warnings dipcodec raises: one base class so callers can catch everything at once."""

import sys
import warnings

__all__ = ["DipcodecError", "InputError", "DecodeError", "MissingBaseError", "DipcodecWarning", "warn"]


class DipcodecError(Exception):
    """Base class of every error dipcodec raises on purpose."""


class InputError(DipcodecError, ValueError):
    """The image or the settings given to the encoder cannot be used."""


class DecodeError(DipcodecError, ValueError):
    """A bitstream is damaged, forged, of an unknown version, or needs something not available."""


class MissingBaseError(DecodeError):
    """A file is coded against a base model that is not available (its message names the base's id):
    the one decode error that an argument (``base=``, ``--base``) fixes."""


class DipcodecWarning(UserWarning):
    """Something was dropped or missed on the way (alpha channel, bit depth, rate target); work went on."""


def warn(message: str) -> None:
    """Issue a DipcodecWarning attributed to the first caller outside the dipcodec package (and the
    ``contextlib`` wrappers of its decorated functions)."""
    frame, level = sys._getframe(1), 2  # level 1 would be this function
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("dipcodec", "contextlib"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DipcodecWarning, stacklevel=level)
