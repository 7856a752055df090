#!/usr/bin/env python3
"""Turn the JSON rows of tools/bench_kodak.py into the Markdown table of BENCHMARKS.md.

    python tools/results_table.py docs/results/kodak6-default.json
"""

import json, statistics, sys
rows = json.load(open(sys.argv[1]))
print("| image | target bpp | bpp | PSNR dB | float fit dB | gap dB | JPEG q | JPEG bpp | JPEG PSNR | dB over JPEG | encode s | decode s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['image']} | {r['target']} | {r['bpp']:.4f} | {r['psnr']:.2f} | {r['float_psnr']:.2f} | {r['float_psnr']-r['psnr']:.2f} | {r['jpeg_quality']} | {r['jpeg_bpp']:.4f} | {r['jpeg_psnr']:.2f} | {r['psnr']-r['jpeg_psnr']:+.2f} | {r['encode_s']:.0f} | {r['decode_s']:.2f} |")
for t in sorted({r['target'] for r in rows}):
    s = [r for r in rows if r['target'] == t]
    m = lambda k: statistics.mean(r[k] for r in s)
    print(f"| **mean of {len(s)}** | {t} | {m('bpp'):.4f} | **{m('psnr'):.2f}** | {m('float_psnr'):.2f} | {m('float_psnr')-m('psnr'):.2f} | | {m('jpeg_bpp'):.4f} | **{m('jpeg_psnr'):.2f}** | {m('psnr')-m('jpeg_psnr'):+.2f} | {statistics.median(r['encode_s'] for r in s):.0f} (median), {max(r['encode_s'] for r in s):.0f} (max) | {statistics.median(r['decode_s'] for r in s):.2f} (median) |")
