"""Find burned-in subtitles so they can be inpainted instead of coded.

Subtitles are drawn as a light, nearly colourless fill inside a near-black outline, usually in the
lower part of the frame. That structure is what we detect: small light regions whose surroundings
are mostly outline. Bright things without a dark border (sky, white walls, a white shirt) are left
alone. The kept fill is then grown by the measured outline thickness plus a soft edge, so that the
mask covers the whole drawn glyph: a remnant of the outline would show after inpainting, while
masking a thin ring of background costs almost nothing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["subtitle_mask"]

LIGHT_MIN = 170
"""Darkest channel of a fill pixel: subtitle text is white or light gray."""
CHROMA_MAX = 40
"""Largest channel spread of a fill pixel, so that saturated bright colours are not text."""
DARK_MAX = 70
"""Brightest channel of an outline pixel: outlines are near black, darker than most backgrounds."""
ENCLOSED = 0.45
"""Fraction of the two pixels around a fill region that must be outline (text: >= 0.5, scenery: < 0.4)."""
SOFT_EDGE = 0.5
"""Anti-aliased edge beyond the outline, in half stroke widths (at least a pixel): scaled-up text is softer."""
MIN_AREA = 4
"""Smallest fill region kept, in pixels: smaller ones are noise, not glyphs."""
MAX_HEIGHT = 0.2
"""Tallest fill region kept, as a fraction of the frame height: glyphs are small."""


def _channels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-pixel darkest and brightest channel of a uint8 RGB or gray image."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return image, image
    if image.ndim == 3 and image.shape[2] == 3:
        return image.min(axis=2), image.max(axis=2)
    raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")


def _outlined_fill(light: np.ndarray, dark: np.ndarray) -> np.ndarray:
    """The light regions that are small and mostly bordered by dark pixels: glyph fills."""
    labels, count = ndi.label(light)
    if count == 0:
        return light
    # Each border pixel goes to the highest label within two pixels: fills of one line of text
    # are separated by outline, so a border pixel seldom has two. Two pixels, because the first
    # may be mostly anti-aliasing (scaled-up text) or the outline may be one pixel thin.
    near = ndi.grey_dilation(labels, size=5)
    border = (near > 0) & ~light
    owner = near[border]
    outlined = np.bincount(owner, weights=dark[border], minlength=count + 1)
    enclosed = outlined / np.maximum(np.bincount(owner, minlength=count + 1), 1)
    area = np.bincount(labels.ravel(), minlength=count + 1)
    height = np.zeros(count + 1)
    height[1:] = [box[0].stop - box[0].start for box in ndi.find_objects(labels)]
    keep = (enclosed >= ENCLOSED) & (area >= MIN_AREA) & (height <= MAX_HEIGHT * light.shape[0])
    keep[0] = False
    return keep[labels]


def subtitle_mask(image: np.ndarray, *, search_from: float = 0.5) -> np.ndarray:
    """A bool HxW mask, True on burned-in subtitle pixels (fill, outline and anti-aliased edge).

    ``image`` is uint8, HxWx3 RGB or HxW gray. Only text whose fill starts below ``search_from``
    times the height is looked for (0 searches the whole frame): subtitles sit low, and the prior
    keeps outlined bright details of the scene above them out of the mask.
    """
    lo, hi = _channels(image)
    light = (lo >= LIGHT_MIN) & (hi.astype(np.int16) - lo <= CHROMA_MAX)
    light[: int(round(search_from * light.shape[0]))] = False
    fill = _outlined_fill(light, hi <= DARK_MAX)
    if not fill.any():
        return fill
    # The outline is as thick as the dark band around the fill, measured where that band ends (the
    # median ignores where it runs on into dark scenery). Cover that much and the soft edge beyond
    # it, but not the light background next to the text: it is scene, not outline.
    half_stroke = ndi.distance_transform_edt(fill).max()
    cap = 2 * int(np.ceil(half_stroke)) + 2
    band = ndi.binary_dilation(fill, iterations=cap, mask=fill | (hi <= DARK_MAX))
    edge = band & ~fill & ~ndi.binary_erosion(band, border_value=1)
    dist = ndi.distance_transform_edt(~fill)
    outline = np.median(dist[edge]) if edge.any() else 1.0
    return fill | ((dist <= outline + max(1.0, SOFT_EDGE * half_stroke)) & ~light)
