"""Run one move in its own process and print one JSON line: phase wall times, the report's
figures and this process's peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss`` and ``VmHWM`` from
/proc/self/status). The benchmark harness starts it with ``python -m bench.child ...``.

    python -m bench.child --home H --token T --workspace W --to eu [--stop-after verified]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Any


def proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def phase_seconds(events: list[tuple[float, str, str]]) -> dict[str, float]:
    """Wall time of each phase of the state machine, named by the state it starts from
    (``fenced`` is the copy phase, ``copied`` the verify phase, ...), from the mover's own
    ``state`` progress events: "move N: S → next phase" ... "move N: S2"."""
    out: dict[str, float] = {}
    start: tuple[float, str] | None = None
    for t, item, message in events:
        if message.endswith("next phase"):
            start = (t, item)
        elif start is not None and message.endswith(f": {item}") and item != start[1]:
            out[start[1]] = round(t - start[0], 3)
            start = None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.child")
    ap.add_argument("--home", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--regions", required=True)
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--strategy", default="snapshot")
    ap.add_argument("--stop-after", default=None)
    ap.add_argument("--jobs", type=int, default=None, help="parallel copy streams (default: the mover's)")
    ap.add_argument("--target-dsn", default=None, help="reach the target region's database as this DSN (another role)")
    a = ap.parse_args(argv)

    from residency import catalogue
    from residency.sandbox.world import World

    from residency.migrate import start_move

    cat = catalogue.load(a.regions)
    world = World(cat, a.home, a.token)
    rss_before_kb = proc_status_kb("VmRSS")
    events: list[tuple[float, str, str]] = []

    def progress(ev: Any) -> None:
        if ev.phase == "state":
            events.append((time.monotonic(), ev.item, ev.message))

    t0 = time.monotonic()
    from residency.migrate.chunks import CopyOptions

    opts = CopyOptions(jobs=a.jobs) if a.jobs else None
    conns = world.connections_as({a.to: a.target_dsn}) if a.target_dsn else world.connections
    rec = start_move(cat, conns, a.workspace, a.to, strategy=a.strategy, progress=progress, stop_after=a.stop_after, copy_options=opts)
    wall = time.monotonic() - t0
    report = rec.report or {}
    out = {
        "move_id": rec.id,
        "state": rec.state,
        "wall_seconds": round(wall, 3),
        "phases": phase_seconds(events),
        "copy": {k: (report.get("copy") or {}).get(k) for k in ("rows", "bytes", "seconds", "phase_seconds_this_attempt", "rows_per_second", "chunks", "method", "options", "timings", "stream_seconds")},
        "copy_tables": {t: v.get("seconds") for t, v in ((report.get("copy") or {}).get("tables") or {}).items()},
        "verify_seconds": (report.get("verify") or {}).get("seconds") if isinstance(report.get("verify"), dict) else None,
        "verify_ok": (report.get("verify") or {}).get("ok") if isinstance(report.get("verify"), dict) else None,
        "verify_timings": (report.get("verify") or {}).get("timings") if isinstance(report.get("verify"), dict) else None,
        "throttle": (report.get("copy") or {}).get("throttle"),
        "fence": report.get("fence"),
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "vmhwm_kb": proc_status_kb("VmHWM"),
        "rss_before_move_kb": rss_before_kb,
    }
    sys.stdout.write(json.dumps(out, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
