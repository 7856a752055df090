"""Restoration beside the codec: what to inpaint, the super-resolution downsampler, denoising.

``modes`` turns a restoration into what a fit needs (its loss, output size and schedule) and
``restore`` runs one without writing a file. They import the fitting code, so this package's
top level imports only what the decoder may use (the downsampler); the subtitle finder (scipy)
loads on first use.
"""

from .downsample import downsample, lanczos_matrix

__all__ = ["downsample", "lanczos_matrix", "subtitle_mask"]


def __getattr__(name: str):
    if name == "subtitle_mask":
        from .subtitles import subtitle_mask

        return subtitle_mask
    raise AttributeError(f"module 'dipcodec.restoration' has no attribute {name!r}")
