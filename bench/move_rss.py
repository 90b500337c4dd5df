"""Measure one big workspace move by hand: memorybench at one scale (a workspace of about --rows
rows in `us` moved to `eu` in a child process, in a temporary sandbox); prints its JSON figures.

    .venv/bin/python -m bench.move_rss --rows 1000000   (from the repository root)
"""

import argparse
import json

from bench import memorybench
from bench.sandbox import temporary_sandbox

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    rows = ap.parse_args().rows
    with temporary_sandbox() as sbx:
        print(json.dumps(memorybench.run(sbx, rows, [1], lambda m: print(m, flush=True))["1x"], indent=2))
