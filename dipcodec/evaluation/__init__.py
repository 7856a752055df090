"""Measuring the codec: metrics, classic codecs to compare with, Bjontegaard deltas, and ``dipcodec eval``.

Sits beside the core codec; nothing in the encoder or decoder imports it. This module loads only numpy,
scipy and Pillow; the runner (``dipcodec.evaluation.run``) and the report with its matplotlib figure
are imported when used.

| module | concern |
| --- | --- |
| ``metrics`` | PSNR, SSIM, MS-SSIM on uint8 images |
| ``classic`` | JPEG, WebP, JPEG 2000 and AVIF through Pillow: at a byte budget (bisection), and sweeps |
| ``curves`` | per-image sweeps to mean curves (PCHIP in log-rate) |
| ``bdrate`` | BD-rate and BD-PSNR with piecewise cubic interpolation |
| ``plots`` | the rate-distortion figure |
| ``run`` | the ``dipcodec eval`` runner: configuration, cache, parallel jobs, progress |
| ``report`` | the output folder: CompressAI-layout JSON, rd.png, crops, report.md |
"""

from .bdrate import bd_psnr, bd_rate
from .classic import jpeg_at_size
from .metrics import ms_ssim, psnr, ssim

__all__ = ["psnr", "ssim", "ms_ssim", "jpeg_at_size", "bd_rate", "bd_psnr"]
