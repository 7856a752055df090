#!/usr/bin/env python3
"""Turn the JSON rows of tools/bench_kodak.py into the Markdown table of BENCHMARKS.md.

    python tools/results_table.py docs/results/kodak6-default.json
"""

import json
import sys

from bench_kodak import table

if __name__ == "__main__":
    print(table(json.loads(open(sys.argv[1]).read())))
