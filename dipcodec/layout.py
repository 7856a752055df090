"""The network layout policy: which network an image of a given size and bit budget gets.

It sits between the network (which runs any configuration) and the encoder (which fits one), so
that ``restoration.restore`` and ``transfer.meta`` pick their networks without loading the encoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .container import MAX_ACTIVATION_RATIO, check_network_limits
from .errors import InputError
from .network import Activation, NetworkConfig, NetworkPurpose, Upsample

__all__ = ["BITS_PER_WEIGHT", "MAX_WIDTH", "choose_network", "network_layout", "widest_network"]

BITS_PER_WEIGHT = 8.0
"""Expected coded bits per weight at the working fineness; sizes the network for a bit budget. At 8
rather than 6 the network is narrower with finer steps: the same decoded PSNR at 0.5 bpp, almost no
loss to rounding, and faster fits (BENCHMARKS.md, "Bits per weight")."""
MAX_WIDTH = 192
"""The widest network (its width k) the encoder gives any image."""


def choose_network(height: int, width: int, channels: int, budget_bits: float, *,
                   purpose: NetworkPurpose = "compress") -> NetworkConfig:
    """A Deep Decoder (1x1 convolutions) with about ``budget_bits / BITS_PER_WEIGHT`` weights.

    For compression, on images of 64 pixels or more a side: a fixed input at 1/16 of the image size,
    stages at 1/16, 1/8, 1/4 and 1/2 size of widths k, k, k/2 and k/4 with sine activations, and a 2x
    pixel shuffle, so no hidden tensor is ever full size. k stops at MAX_WIDTH (on a 768x512 image
    near 2 bpp), and finer quantization carries higher rates.
    Each choice was measured on Kodak (BENCHMARKS.md): a half-size last stage beats shuffling 4x from
    1/4 size, an input at 1/16 size beats 1/8 and 1/64, and sines instead of ReLUs, with narrower
    fine stages, gain 0.2 to 0.6 dB at the default preset's length and fit a third faster. Smaller
    images get a plain ReLU stack with an input of 4 to 7 pixels on its short side.

    ``purpose="restore"`` picks the Deep Image Prior's measured network (ReLUs, widths k, k, k, k/2),
    whose bias towards natural images is what inpainting relies on. ``"upscale"`` (super-resolution)
    and ``"denoise"`` draw every pixel themselves, so they upsample bicubically (sharper than bilinear:
    ``restoration.restore.RESTORE_UPSAMPLE`` has the measurements; smaller images keep bilinear), with no
    pixel shuffle (its sub-pixels are free to draw
    patterns that a downsampler never sees, and a shuffled denoiser gained 2 dB less), a last stage at
    full size and wide coarse ones, widths k, k, k, min(k, 64), min(k, 16) from an input at 1/16 size
    (the decoder's 16 floats per pixel cap the two fine stages, more tightly where padding to a
    multiple of 16 adds pixels). Width buys detail before noise
    (kodim07's crop at sigma 25: 27.6 dB at k = 64, 28.2 at 128, 28.3 at 256).
    """
    return widest_network(network_layout(height, width, channels, purpose=purpose), height, width,
                          max(budget_bits / BITS_PER_WEIGHT, 64))


def network_layout(height: int, width: int, channels: int, *,
                   purpose: NetworkPurpose = "compress") -> Callable[[int], NetworkConfig]:
    """The encoder's network for an image of this size, as a function of its width k
    (:func:`choose_network` says which layout and why)."""
    short = min(height, width)
    activation: Activation = "relu"
    upsample: Upsample = "bilinear"
    if short >= 64 and purpose in ("upscale", "denoise"):
        # The decoder allows MAX_ACTIVATION_RATIO floats per image pixel in any one tensor, and the
        # padding to the input's stride (16) adds pixels of its own: the two fine stages narrow with it.
        covered = height * width / (-(-height // 16) * 16 * (-(-width // 16) * 16))
        full, half = max(int(MAX_ACTIVATION_RATIO * covered), 1), int(4 * MAX_ACTIVATION_RATIO * covered)
        layout, upsample = lambda k: ((k, k, k, min(k, half), min(k, full)), 1), "bicubic"
    elif short >= 64 and purpose == "restore":
        layout = lambda k: ((k, k, k, max(k // 2, 4)), 2)
    elif short >= 64:
        layout, activation = lambda k: ((k, k, max(k // 2, 4), max(k // 4, 4)), 2), "sine"
    else:
        shuffle = 1 if purpose in ("upscale", "denoise") or short < 16 else 2
        stages = int(np.clip(math.floor(math.log2(max(short / shuffle / 4, 1))) + 1, 1, 7))
        layout = lambda k: ((k,) * stages, shuffle)

    def config(k: int) -> NetworkConfig:
        widths, shuffle = layout(k)
        return NetworkConfig(channels=widths, kernel_sizes=(1,) * len(widths), input_channels=k,
                             out_channels=channels, shuffle=shuffle, upsample=upsample, activation=activation)

    return config


def widest_network(config_for_width: Callable[[int], NetworkConfig], height: int, width: int,
                   max_parameters: float) -> NetworkConfig:
    """``config_for_width(k)`` for the largest k (4 to MAX_WIDTH) whose network has at most
    ``max_parameters`` weights and passes the decoder's cost limits (they bind on tiny, heavily padded
    images and cap the width of large ones); k = 4 when none does."""
    best = 4
    for k in range(4, MAX_WIDTH + 1):
        candidate = config_for_width(k)
        if candidate.parameter_count() > max_parameters:
            break
        try:
            check_network_limits(candidate, height, width, InputError)
        except InputError:
            break
        best = k
    return config_for_width(best)
