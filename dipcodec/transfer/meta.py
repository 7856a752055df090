"""Meta-learning a base initialization (Reptile) from a folder of images.

Each outer step fits a few copies of the current base (``tasks_per_step``) for a few iterations,
each to a random crop of a random training image from the fixed input of a random seed, and moves
the base a step towards the mean of their fitted weights. The result is a start from which short
fits go far: what the encoder needs. Random seeds make the base independent of any one fixed input,
so it serves every seed and image size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..decoder import resolve_device
from ..errors import InputError
from ..fit import DEFAULT_BETA2, FitSchedule, fit
from ..layout import network_layout
from ..network import Generator, NetworkConfig, NetworkPurpose, fixed_input, reference_weights
from .basefile import BaseModel, load_base, save_base

__all__ = ["MetaSchedule", "train_base", "training_images", "standard_network", "CHECKPOINT_EVERY"]

CHECKPOINT_EVERY = 10
"""Outer steps between checkpoints."""

MetaProgress = Callable[[int, int, float], None]
"""Called with (outer steps done, outer steps in all, PSNR of the last inner fit in dB)."""


@dataclass(frozen=True)
class MetaSchedule:
    """How long and how hard the base is trained."""

    steps: int = 200
    inner_iterations: int = 32
    inner_learning_rate: float = 0.02
    inner_adam_beta2: float = DEFAULT_BETA2
    """Adam's beta2 in the inner fits. PyTorch's 0.999 although ``fast`` fits with 0.95: a width-67 base
    learned with 0.95 saved fewer iterations even in fits at 0.95 (BENCHMARKS.md, "Base models")."""
    outer_step_start: float = 0.3
    outer_step_end: float = 0.03
    """The outer (Reptile) step size, linearly annealed from start to end."""
    tasks_per_step: int = 4
    """Inner fits per outer step (each on its own crop and seed), averaged into one outer update."""
    crop: int = 192
    """Side of the square crops the inner fits see: a 1x1-convolution network's weights do not depend on
    the image size, and small crops make an inner fit several times cheaper."""

    def outer_step(self, step: int) -> float:
        return self.outer_step_start + (self.outer_step_end - self.outer_step_start) * step / max(self.steps - 1, 1)


def standard_network(width: int, channels: int = 3, purpose: NetworkPurpose = "compress") -> NetworkConfig:
    """The encoder's network of width ``width`` for images of 64 pixels or more a side: the sine
    network of plain compression, or the ReLU one of inpainting (``"restore"``)."""
    return network_layout(512, 768, channels, purpose=purpose)(width)


def training_images(folder: str | os.PathLike, *, grayscale: bool = False) -> list[np.ndarray]:
    """Every image of ``folder`` (``images.image_files``), as uint8 pixels; with ``grayscale``, the
    colour ones reduced to their BT.601 luma, rounded."""
    from ..images import image_files, read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    images = [read_image(p) for p in image_files(folder)]
    if not images:
        raise InputError(f"{folder} holds no images")
    if grayscale:
        images = [i if i.ndim == 2 else np.rint(0.299 * i[..., 0] + 0.587 * i[..., 1] + 0.114 * i[..., 2])
                  .astype(np.uint8) for i in images]
    return images


def _crop(rng: np.random.Generator, image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    return image[y : y + side, x : x + side]


def train_base(images: Sequence[np.ndarray], network: NetworkConfig, schedule: MetaSchedule = MetaSchedule(), *,
               seed: int = 0, device: str | torch.device = "cpu", progress: MetaProgress | None = None,
               checkpoint: str | os.PathLike | None = None, resume: bool = False) -> BaseModel:
    """Reptile over ``images`` (uint8 HxWx3 or HxW, at least ``schedule.crop`` a side).

    With ``checkpoint``, the base so far is written there every CHECKPOINT_EVERY steps; ``resume``
    continues from it (the steps are seeded by their index, so a resumed run matches an unbroken one).
    """
    channels = network.out_channels
    if not images:
        raise InputError("no training images")
    for image in images:
        if (1 if image.ndim == 2 else image.shape[2]) != channels:
            raise InputError(f"training images must all have {channels} channel(s)")
        if min(image.shape[:2]) < schedule.crop:
            raise InputError(f"training images must be at least {schedule.crop} pixels a side")
    dev = resolve_device(str(device))
    settings = {"schedule": asdict(schedule), "seed": seed, "images": len(images)}
    weights, first = [torch.from_numpy(w) for w in reference_weights(network, seed)], 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        saved = load_base(checkpoint)
        if saved.network != network or saved.info.get("settings") != settings:
            raise InputError(f"{checkpoint} is a checkpoint of a different training run; remove it or drop --resume")
        weights, first = [torch.from_numpy(w.copy()) for w in saved.weights], int(saved.info["step"])
    net = Generator(network).to(dev)
    inner = FitSchedule(iterations=schedule.inner_iterations, qat_iterations=0,
                        learning_rate=schedule.inner_learning_rate, adam_beta2=schedule.inner_adam_beta2)
    psnr = math.nan
    for step in range(first, schedule.steps):
        rng = np.random.default_rng([seed, step])
        moved = [torch.zeros_like(w) for w in weights]
        for _ in range(schedule.tasks_per_step):
            image = _crop(rng, images[rng.integers(len(images))], schedule.crop)
            target = torch.from_numpy(image.reshape(schedule.crop, schedule.crop, -1).transpose(2, 0, 1).copy())
            target = (target.float() / 255).unsqueeze(0).to(dev)
            noise = fixed_input(network, int(rng.integers(2**32)), schedule.crop, schedule.crop).to(dev)
            net.load([w.numpy() for w in weights])
            psnr = fit(net, noise, target, inner)
            with torch.no_grad():
                for m, w, p in zip(moved, weights, net.parameters()):
                    m += (p.detach().cpu() - w) / schedule.tasks_per_step
        rate = schedule.outer_step(step)
        weights = _rescale_stages(network, [w + rate * m for w, m in zip(weights, moved)])
        if progress:
            progress(step + 1, schedule.steps, psnr)
        if checkpoint is not None and ((step + 1) % CHECKPOINT_EVERY == 0 or step + 1 == schedule.steps):
            save_base(_as_base(network, weights, settings, step + 1), checkpoint)
    return _as_base(network, weights, settings, schedule.steps)


def _rescale_stages(network: NetworkConfig, weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """Give each output channel of every stage convolution the norm of the seeded initialization's.

    The per-channel normalization after a stage convolution cancels its scale, so this changes
    nothing the network computes; but Adam's steps have a fixed size, so weights that Reptile let grow
    (8x in 400 steps, measured) would make every later fit learn that much slower.
    """
    out = list(weights)
    for stage in range(len(network.channels)):
        w = out[3 * stage]
        rows = w.reshape(w.shape[0], -1)
        out[3 * stage] = (rows * (STAGE_ROW_NORM / rows.norm(dim=1, keepdim=True).clamp_min(1e-12))).reshape(w.shape)
    return out


STAGE_ROW_NORM = 1 / math.sqrt(3)
"""Expected norm of a stage convolution's row under the seeded initialization (uniform in +-1/sqrt(fan_in))."""


def _as_base(network: NetworkConfig, weights: list[torch.Tensor], settings: dict, step: int) -> BaseModel:
    return BaseModel(network, tuple(w.numpy().astype(np.float32) for w in weights),
                     {"method": "reptile", "settings": settings, "step": step})
