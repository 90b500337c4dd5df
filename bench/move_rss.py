"""Measure one big workspace move by hand: memorybench at one scale (a workspace of about --rows
rows in `us` moved to `eu` in a child process, in a temporary sandbox); prints its JSON figures.

    .venv/bin/python bench/move_rss.py --rows 1000000
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import memorybench  # noqa: E402
from bench.sandbox import temporary_sandbox  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    rows = ap.parse_args().rows
    with temporary_sandbox() as sbx:
        print(json.dumps(memorybench.run(sbx, rows, [1], lambda m: print(m, flush=True))["1x"], indent=2))
