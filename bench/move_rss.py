"""Measure a big workspace move: time, rows/s and the mover's peak RSS (constant memory).

Brings up a private sandbox in a temporary home (or uses --home), seeds ONE workspace of about
--rows rows in `us`, then runs `start_move` to `eu` in a child process and reports the child's
peak RSS (VmHWM), the copy time and rate. Not a test: run it by hand.

    .venv/bin/python bench/move_rss.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, os, resource, sys, time
from residency import catalogue
from residency.sandbox import core
from migrate import start_move, move_report
def hwm():
    # VmHWM: peak RSS of this process image. (ru_maxrss is kept across execve on Linux, so a child
    # forked from a big parent would report the parent's size.)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
cat = catalogue.load(sys.argv[1])
conns = core.sandbox_connections(cat, sys.argv[2])
t = time.monotonic()
rec = start_move(cat, conns, sys.argv[3], "eu")
took = time.monotonic() - t
rep = move_report(conns, rec.id)
print(json.dumps({"state": rec.state, "seconds": round(took, 2), "copy": rep["copy"], "fence": rep["fence"],
                  "verify_ok": rep["verified"], "vmhwm_kb": hwm()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--home", default=None)
    args = ap.parse_args()
    from residency import catalogue
    from residency.sandbox import core
    from residency.sandbox.seed import seed

    home = args.home or tempfile.mkdtemp(prefix="residency-bench-")
    cat = catalogue.load(REPO / "regions.yaml")
    try:
        st = core.up(cat, home)
        assert st.healthy, st
        conns = core.sandbox_connections(cat, home)
        t = time.monotonic()
        s = seed(cat, conns, workspaces=1, rows=args.rows, seed=7, regions=["us"])
        ws = s.workspace_ids[0]
        print(f"seeded workspace {ws}: {s.rows_of(ws):,} rows in {time.monotonic() - t:.1f}s", flush=True)
        env = dict(os.environ, RESIDENCY_SANDBOX_HOME=home)
        p = subprocess.run([sys.executable, "-c", CHILD, str(REPO / "regions.yaml"), home, str(ws)], env=env,
                           capture_output=True, text=True, cwd=str(REPO))
        if p.returncode:
            print(p.stderr, file=sys.stderr)
            sys.exit(1)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        out["rows"] = s.rows_of(ws)
        out["peak_rss_mb"] = round(out["vmhwm_kb"] / 1024, 1)
        print(json.dumps(out, indent=2))
    finally:
        if not args.home:
            core.destroy(home)
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
