"""Restoration beside the codec: what to inpaint, back-projection for super-resolution, denoising.

``modes`` turns a restoration into what a fit needs (its loss, output size and schedule) and
``restore`` runs one without writing a file. They import the fitting code, so this package's top
level imports none of its modules; the subtitle finder (scipy) loads on first use. The Lanczos
downsampler that super-resolution fits through is part of the decoding spec, in the core
(``dipcodec.downsample``).
"""

__all__ = ["subtitle_mask"]


def __getattr__(name: str):
    if name == "subtitle_mask":
        from .subtitles import subtitle_mask

        return subtitle_mask
    raise AttributeError(f"module 'dipcodec.restoration' has no attribute {name!r}")
