"""What a restoration changes in a fit: the loss, the size of the output, the schedule and the network.

The encoder knows nothing of the modes themselves: it fits the kind of network, with the loss and
schedule, that a :class:`Restoration` asks for (through ``encoder.RestorationSpec``, the little it
needs of one), then codes the network's float output, which is the restored image. Of the encoder,
only the public ``encode`` imports this module, when its ``mask``, ``sr`` or ``denoise`` keyword
asks for a restoration.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np
import torch

from ..container import MAX_SCALE, MAX_SIDE
from ..errors import InputError, warn
from ..images import ImageLike
from ..fit import DEFAULT_BETA2, FitSchedule, Loss, image_mse
from ..downsample import lanczos_matrix
from ..network import NetworkPurpose

__all__ = ["RestorationMode", "MaskLike", "Restoration", "restoration_for", "as_mask", "PURPOSES", "INPUT_JITTER",
           "AVERAGE_DECAY", "noise_level"]

RestorationMode = Literal["inpaint", "super-resolution", "denoise"]
MaskLike = Union[ImageLike, Literal["subtitles"]]
"""A mask the API takes: an image (non-zero = missing) or ``"subtitles"``, to find them."""
PURPOSES: dict[RestorationMode | None, NetworkPurpose] = {
    None: "compress", "inpaint": "restore", "super-resolution": "upscale", "denoise": "denoise"}
"""The network each restoration fits (None: plain coding). For super-resolution and denoising one
without a pixel shuffle (a downsampler would let shuffled sub-pixels draw any pattern it cannot see;
a denoiser must draw every pixel itself); for inpainting the ReLU network of the Deep Image Prior."""
INPUT_JITTER = 1 / 30
"""Standard deviation of the noise added to the fixed input (uniform on [0, 1)) at each iteration of
a denoising or super-resolution fit: the Deep Image Prior's regularizer and value. kodim07's 256-pixel
crop at sigma 25: 28.27 dB without, 28.59 with 1/30, 28.44 with 0.06; 4x super-resolution of it and
of kodim01's: +1.20 and +0.44 dB over bicubic without, +1.21 and +0.50 with (BENCHMARKS.md,
"Restoration")."""
AVERAGE_DECAY = 0.99
"""A denoised (or, by ``restore``, inpainted) image comes from a moving average of the fit's
weights, as the Deep Image Prior averages its recent outputs (a weights-only file can hold only
one network)."""


@dataclass(frozen=True)
class Restoration:
    """One restoration: ``mask`` (True = missing) for inpainting, ``scale`` for super-resolution."""

    mode: RestorationMode
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    scale: int = 1

    def __post_init__(self) -> None:
        if self.mask is not None:
            object.__setattr__(self, "mask", np.asarray(self.mask) != 0)  # any dtype: non-zero = missing
        if self.mode not in ("inpaint", "super-resolution", "denoise"):
            raise InputError(f"unknown restoration {self.mode!r}")
        if (self.mode == "inpaint") != (self.mask is not None):
            raise InputError("a mask goes with inpainting, and inpainting needs one")
        if self.mode == "super-resolution":
            if not (isinstance(self.scale, int) and 2 <= self.scale <= MAX_SCALE):
                raise InputError(f"super-resolution scale must be an integer from 2 to {MAX_SCALE}, got {self.scale}")
        elif self.scale != 1:
            raise InputError("only super-resolution takes a scale")

    def check(self, pixels: np.ndarray) -> None:
        """Refuse, with a one-line reason, an image this restoration cannot apply to."""
        height, width = pixels.shape[:2]
        if self.mask is not None:
            if self.mask.shape != (height, width):
                raise InputError(f"mask is {self.mask.shape[1]}x{self.mask.shape[0]} but the image is {width}x{height}")
            if self.mask.all():
                raise InputError("the mask covers the whole image: nothing is known to fit")
        big_h, big_w = self.output_size(height, width)
        if max(big_h, big_w) > MAX_SIDE:
            raise InputError(f"{self.scale}x super-resolution of a {width}x{height} image exceeds {MAX_SIDE}x{MAX_SIDE}")

    @property
    def purpose(self) -> NetworkPurpose:
        """The network it needs (:data:`PURPOSES`)."""
        return PURPOSES[self.mode]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.scale * height, self.scale * width

    def loss(self, target: torch.Tensor) -> Loss:
        """The fit's loss against ``target`` (the input image as an N x C x H x W tensor)."""
        if self.mode == "inpaint":
            known = torch.from_numpy(~self.mask).to(target)[None, None]
            count = known.sum() * target.shape[1]

            def masked(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                h, w = target.shape[-2:]
                return (((output[..., :h, :w] - target) * known) ** 2).sum() / count

            return masked
        if self.mode == "super-resolution":
            h, w = target.shape[-2:]
            rows = torch.from_numpy(lanczos_matrix(self.scale * h, h)).to(target)
            cols = torch.from_numpy(lanczos_matrix(self.scale * w, w)).to(target).T.contiguous()

            def downsampled(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                big = output[..., : self.scale * h, : self.scale * w]
                return torch.nn.functional.mse_loss(rows @ big @ cols, target)

            return downsampled
        return image_mse

    def schedule(self, base: FitSchedule, pixels: np.ndarray) -> FitSchedule:
        """The preset's iteration count as it is (these lengths were chosen by measurement, not sized by
        cost), with the optimizer they were measured with; super-resolution and denoising jitter the
        input, and denoising also averages its fit and stops it at the image's noise level."""
        base = dataclasses.replace(base, sized_for_cost=None, adam_beta2=DEFAULT_BETA2)
        if self.mode == "inpaint":
            return base
        if self.mode == "super-resolution":
            return dataclasses.replace(base, input_jitter=INPUT_JITTER)
        return dataclasses.replace(base, input_jitter=INPUT_JITTER, average_decay=AVERAGE_DECAY,
                                   stop_mse=noise_level(pixels) ** 2)


def as_mask(mask: MaskLike, pixels: np.ndarray) -> np.ndarray:
    """A boolean HxW mask (True = missing) from a PIL image or an array (non-zero = missing), or found
    in ``pixels`` when ``mask`` is ``"subtitles"``."""
    from PIL import Image

    if isinstance(mask, str):
        if mask != "subtitles":
            raise InputError(f"unknown mask {mask!r} (give an image, or 'subtitles')")
        from .subtitles import subtitle_mask

        found = subtitle_mask(pixels)
        if not found.any():
            warn("no subtitles found: nothing to inpaint")
        return found
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"))
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., :3].any(axis=2)  # an alpha channel is not part of the mask
    if mask.ndim != 2:
        raise InputError(f"a mask is an HxW image, got shape {mask.shape}")
    return mask != 0


def restoration_for(pixels: np.ndarray, *, mask: MaskLike | None = None, sr: int | None = None, denoise: bool = False
                    ) -> Restoration | None:
    """The restoration that the encoder's keywords ask for (at most one), or None for plain coding."""
    asked = [name for name, on in (("mask", mask is not None), ("sr", sr is not None), ("denoise", denoise)) if on]
    if len(asked) > 1:
        raise InputError(f"choose one restoration, not {' and '.join(asked)}")
    if mask is not None:
        return Restoration("inpaint", mask=as_mask(mask, pixels))
    if sr is not None:
        return Restoration("super-resolution", scale=sr)
    return Restoration("denoise") if denoise else None


def noise_level(pixels: np.ndarray) -> float:
    """The standard deviation of white noise in an image, on [0, 1], from its finest diagonal Haar
    band (Donoho's median rule: image content is sparse there, noise is not), averaged over channels."""
    image = pixels.astype(np.float64).reshape(pixels.shape[0], pixels.shape[1], -1) / 255
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    a, b = image[0:h:2, 0:w:2], image[0:h:2, 1:w:2]
    c, d = image[1:h:2, 0:w:2], image[1:h:2, 1:w:2]
    diagonal = (a - b - c + d) / 2  # orthonormal: white noise keeps its variance
    return float(np.mean(np.median(np.abs(diagonal), axis=(0, 1)) / 0.6745))
