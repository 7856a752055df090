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

__all__ = ["MOTION_RADIUS", "MOTION_MIN_GAIN_DB", "find_canvas_offset"]

MOTION_RADIUS = 32
"""The largest move searched, in pixels along each axis, from one frame to the next."""
MOTION_MIN_GAIN_DB = 1.0
"""How much closer (in luma PSNR) the moved start must be to the frame than the unmoved one: a move
has a cost the start does not show (the strip that wraps round must be redrawn, with a seam beside
it). On dog at ``fast`` the moves found gained 0 to 0.66 dB at the start and warm frames then cost
0.87 of the bits of frames coded alone at equal PSNR, against 0.84 unmoved; camel's pans gained 1.85
to 2.45 dB and brought it from 0.80 to 0.69 (BENCHMARKS.md, "Canvas offsets")."""
_COARSE = 4
"""The coarse search runs on 4x4 block means, over moves that are multiples of 4."""


def find_canvas_offset(canvas: np.ndarray, frame: np.ndarray, previous: CanvasOffset, *,
                       known: np.ndarray | None = None, radius: int = MOTION_RADIUS,
                       min_gain_db: float = MOTION_MIN_GAIN_DB) -> CanvasOffset:
    """The canvas offset, within ``radius`` (and half the canvas) of ``previous`` along each axis,
    whose rolled and cropped ``canvas`` (uint8, the network's whole padded output) is closest to
    ``frame`` in luma MSE (over the ``known`` pixels only, when given: True = known); ``previous``
    itself unless that move brings the MSE down by ``min_gain_db`` or more. Ties keep the smaller
    move. On canvases whose sides are multiples of 4, block means of 4x4 pick a coarse move and
    single pixels refine it; on others every move is tried."""
    height, width = frame.shape[:2]
    rows, columns = canvas.shape[:2]
    reach = (min(radius, rows // 2), min(radius, columns // 2))
    placed = np.roll(_luma(canvas), previous, axis=(0, 1))
    target = _luma(frame)
    weight = np.ones((height, width), np.float32) if known is None else known.astype(np.float32)

    def best_of(moves, canvas_plane, target_plane, weight_plane) -> tuple[int, int]:
        return min(sorted(moves), key=lambda m: (_error(canvas_plane, m, target_plane, weight_plane),
                                                 abs(m[0]) + abs(m[1])))

    if rows % _COARSE or columns % _COARSE:
        moves = {(dy, dx) for dy in range(-reach[0], reach[0] + 1) for dx in range(-reach[1], reach[1] + 1)}
        move = best_of(moves, placed, target, weight)
    else:
        # Coarse: whole blocks of the frame only.
        bh, bw = height // _COARSE, width // _COARSE
        coarse = best_of({(dy, dx) for dy in range(-(reach[0] // _COARSE), reach[0] // _COARSE + 1)
                          for dx in range(-(reach[1] // _COARSE), reach[1] // _COARSE + 1)},
                         _blocks(placed), _blocks(target[: bh * _COARSE, : bw * _COARSE]),
                         _blocks(weight[: bh * _COARSE, : bw * _COARSE]))
        near = range(-(_COARSE - 1), _COARSE)
        moves = {(0, 0)} | {(_COARSE * coarse[0] + dy, _COARSE * coarse[1] + dx) for dy in near for dx in near
                            if abs(_COARSE * coarse[0] + dy) <= reach[0] and abs(_COARSE * coarse[1] + dx) <= reach[1]}
        move = best_of(moves, placed, target, weight)
    if _error(placed, move, target, weight) * 10 ** (min_gain_db / 10) > _error(placed, (0, 0), target, weight):
        return previous
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
