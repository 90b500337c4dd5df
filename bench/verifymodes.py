"""Verify with the target sums recorded as each chunk landed, against verify reading the target again.

    python -m bench.verifymodes [--rows 300000] [--runs 1] [--jobs 2]

One workspace is seeded in ``us``; per round, one snapshot move to ``eu`` (stopped once verified,
then rolled back) with ``RESIDENCY_VERIFY_TARGET=recorded`` (the default) and one with
``recompute``, alternating. Prints the copy and verify seconds of each, the verify's own timings
(target checksums, references, global rows) and where the target's sums came from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from bench.common import median, seed_workspace, vacuum_analyze
from bench.sandbox import temporary_sandbox


def run(rows: int, runs: int, jobs: int) -> dict[str, Any]:
    from residency.migrate import rollback_move, start_move
    from residency.migrate.chunks import CopyOptions

    out: dict[str, list[dict[str, Any]]] = {"recorded": [], "recompute": []}
    old = os.environ.get("RESIDENCY_VERIFY_TARGET")
    with temporary_sandbox() as sbx:
        w = sbx.world("v")
        try:
            ws, n, _ = seed_workspace(w, rows, region="us", seed=11)
            vacuum_analyze(w.dsn("us"))
            for r in range(runs):
                modes = ["recorded", "recompute"] if r % 2 == 0 else ["recompute", "recorded"]
                for mode in modes:
                    os.environ["RESIDENCY_VERIFY_TARGET"] = mode
                    rec = start_move(w.catalogue, w.connections, ws, "eu", strategy="snapshot", stop_after="verified",
                                     copy_options=CopyOptions(jobs=jobs))
                    v, c = rec.report["verify"], rec.report["copy"]
                    out[mode].append({"copy": c["seconds"], "verify": v["seconds"], "verify_timings": v["timings"],
                                      "target_checksums": v.get("target_checksums")})
                    print(f"round {r + 1} {mode}: copy {c['seconds']} s, verify {v['seconds']} s {json.dumps(v['timings'])}", file=sys.stderr, flush=True)
                    rollback_move(w.catalogue, w.connections, rec.id)
        finally:
            w.drop()
            if old is None:
                os.environ.pop("RESIDENCY_VERIFY_TARGET", None)
            else:
                os.environ["RESIDENCY_VERIFY_TARGET"] = old
    return {"rows": rows, "runs": out, "median_verify": {m: median(x["verify"] for x in v) for m, v in out.items()},
            "median_copy": {m: median(x["copy"] for x in v) for m, v in out.items()}, "loadavg_1m": round(os.getloadavg()[0], 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.verifymodes")
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    print(json.dumps(run(a.rows, a.runs, a.jobs), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
