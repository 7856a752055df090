"""Global motion for a sequence's warm-started frames: the canvas offset that lines the start's image
up with the new frame.

A network draws its image from a fixed input, so when the camera pans, every weight must change to
move the picture. Rolling the network's canvas instead (``network.roll_canvas``) moves it for free:
the frame starts from its predecessor's network, placed where the new frame shows the scene, and
its fit only draws what changed and the strip that came into view.
"""

from __future__ import annotations

import numpy as np

from ..network import CanvasOffset

__all__ = ["MOTION_RADIUS", "find_canvas_offset"]

MOTION_RADIUS = 32
"""The largest move searched, in pixels along each axis, from one frame to the next."""
_COARSE = 4
"""The coarse search runs on 4x4 block means, over moves that are multiples of 4."""
_REFINE = _COARSE - 1


def find_canvas_offset(canvas: np.ndarray, frame: np.ndarray, previous: CanvasOffset, *,
                       known: np.ndarray | None = None, radius: int = MOTION_RADIUS) -> CanvasOffset:
    """The canvas offset, within ``radius`` of ``previous`` along each axis, whose rolled and cropped
    ``canvas`` (uint8, the network's whole padded output) is closest to ``frame`` in luma MSE (over
    the ``known`` pixels only, when given: True = known). Ties keep the smaller move, so a still scene
    keeps ``previous``. Block means of 4x4 pick a coarse move, single pixels refine it."""
    height, width = frame.shape[:2]
    rows, columns = canvas.shape[:2]
    if rows % _COARSE or columns % _COARSE:
        raise ValueError("the canvas's sides must be multiples of 4")
    placed = np.roll(_luma(canvas), previous, axis=(0, 1))
    target = _luma(frame)
    weight = np.ones((height, width), np.float32) if known is None else known.astype(np.float32)
    # Coarse: whole blocks of the frame only.
    bh, bw = height // _COARSE, width // _COARSE
    coarse_target = _blocks(target[: bh * _COARSE, : bw * _COARSE])
    coarse_weight = _blocks(weight[: bh * _COARSE, : bw * _COARSE])
    coarse_canvas = _blocks(placed)
    steps = range(-(radius // _COARSE), radius // _COARSE + 1)
    moves = [(dy, dx) for dy in steps for dx in steps]
    best = min(moves, key=lambda m: (_error(coarse_canvas, m, coarse_target, coarse_weight), abs(m[0]) + abs(m[1])))
    centre = (best[0] * _COARSE, best[1] * _COARSE)
    fine = {(0, 0)} | {(centre[0] + dy, centre[1] + dx) for dy in range(-_REFINE, _REFINE + 1)
                       for dx in range(-_REFINE, _REFINE + 1)}
    move = min(sorted(fine), key=lambda m: (_error(placed, m, target, weight), abs(m[0]) + abs(m[1])))
    return (previous[0] + move[0]) % rows, (previous[1] + move[1]) % columns


def _luma(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels.astype(np.float32)
    return pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _blocks(plane: np.ndarray) -> np.ndarray:
    h, w = plane.shape
    return plane.reshape(h // _COARSE, _COARSE, w // _COARSE, _COARSE).mean(axis=(1, 3))


def _error(canvas: np.ndarray, move: tuple[int, int], target: np.ndarray, weight: np.ndarray) -> float:
    """Weighted MSE of the canvas rolled by ``move`` and cropped, against ``target``."""
    h, w = target.shape
    rolled = np.roll(canvas, move, axis=(0, 1))[:h, :w]
    return float(np.sum(weight * (rolled - target) ** 2) / max(np.sum(weight), 1.0))
