"""The rate-distortion figure: mean PSNR against bpp, one line per codec.

matplotlib is imported only here and only when a figure is drawn, through its object API and the Agg
canvas, so no GUI backend or pyplot state is involved and ``import dipcodec`` stays light.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Series", "COLORS", "plot_rd"]

COLORS = {"dipcodec": "#000000", "jpeg": "#d62728", "webp": "#2ca02c", "jpeg2000": "#9467bd", "avif": "#1f77b4"}


@dataclass(frozen=True)
class Series:
    """One codec's line: a dense mean curve (a classic codec's sweep) or measured points (dipcodec)."""

    label: str
    bpp: tuple[float, ...]
    psnr: tuple[float, ...]
    kind: Literal["curve", "points"] = "curve"
    color: str = "#7f7f7f"


def plot_rd(series: Sequence[Series], title: str, x_max: float) -> bytes:
    """A PNG of PSNR against bpp from 0 to ``x_max``, the y range fitted to what is visible."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    visible = []
    for s in series:
        pts = [(b, p) for b, p in zip(s.bpp, s.psnr) if math.isfinite(b) and math.isfinite(p)]
        if not pts:
            continue
        xs, ys = zip(*pts)
        visible += [p for b, p in pts if b <= x_max]
        if s.kind == "points":
            ax.plot(xs, ys, color=s.color, linewidth=2.2, marker="o", markersize=6, label=s.label, zorder=3)
        else:
            ax.plot(xs, ys, color=s.color, linewidth=1.6, label=s.label)
    ax.set_xlim(0, x_max)
    if visible:
        lo, hi = min(visible), max(visible)
        pad = max(0.5, 0.05 * (hi - lo))
        ax.set_ylim(math.floor(lo - pad), math.ceil(hi + pad))
    ax.set_xlabel("bits per pixel (whole file)")
    ax.set_ylabel("RGB PSNR (dB), mean of per-image values")
    ax.set_title(title)
    ax.grid(True, alpha=0.35)
    ax.legend(loc="best", frameon=True)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
