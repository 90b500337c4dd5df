"""Fence: how long a moving workspace cannot be written, at 1x and 10x, under a steady writer.

1x is the demo's data set (``residency demo`` seeds 200,000 rows over 24 workspaces in every region)
and its biggest workspace (about a third: ~66,700 rows) is the one moved, as in issue 5; 10x seeds
ten times the rows. The same data set as ``bench/online_fence.py``, so the two strategies compare. For the snapshot
strategy each size is a full move (plan, fence, copy, verify, cut over) in a child process while
a :class:`~bench.writer.SteadyWriter` writes to the moving workspace and to a bystander workspace;
the fence duration is the mover's own figure (fenced_at → cut_over_at in the move's report), with
the writer's view beside it. The online strategy's figures come from ``bench/online_fence.py``
(``measure_online_fence(scale) -> dict``), never estimated.
"""

from __future__ import annotations

import time
from typing import Any

from residency.errors import first_line
from residency.sandbox.demo import DEMO_ROWS, DEMO_SEED, DEMO_WORKSPACES  # the demo's data set; its biggest workspace (about a third) is 1x

from .common import Say, mb, run_child, vacuum_analyze
from .online_fence import measure_online_fence
from .sandbox import BenchSandbox
from .writer import SteadyWriter

SOURCE, TARGET = "us", "eu"


def snapshot(sbx: BenchSandbox, scales: list[int], rate: float, say: Say, demo_rows: int = DEMO_ROWS) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scale in scales:
        world = sbx.world("f")
        try:
            t = time.monotonic()
            s = world.seed(workspaces=DEMO_WORKSPACES, rows=demo_rows * scale, seed=DEMO_SEED)
            seed_s = round(time.monotonic() - t, 1)
            ws = str(s.biggest)
            source = s.home[s.biggest]
            target = TARGET if source != TARGET else SOURCE
            bystander = str(s.smallest_in(source))
            rows = s.rows_of(s.biggest)
            vacuum_analyze(world.dsn(source))
            say(f"fence: snapshot {scale}x: workspace {ws} with {rows:,} rows (demo data x{scale}, seeded in {seed_s}s), writer at {rate:g}/s")
            w = SteadyWriter(world, ws, bystander, rate)
            w.start()
            time.sleep(1.0)  # the writer is steady before the move starts
            try:
                r = run_child(sbx, world, ws, target)
                time.sleep(1.0)  # and it carries on in the new home
            finally:
                seen = w.stop()
            fence = r.get("fence") or {}
            out[f"{scale}x"] = {
                "scale": scale,
                "rows": rows,
                "state": r["state"],
                "fence_seconds": fence.get("seconds"),
                "move_seconds": r["wall_seconds"],
                "phases": r["phases"],
                "writer": seen,
                "peak_rss_mb": mb(r.get("vmhwm_kb")),
            }
            say(f"fence: snapshot {scale}x: fence {fence.get('seconds')}s; writer: {seen['refused']} refused, "
                f"longest unwritable {seen['longest_unwritable_seconds']}s, bystander refused {seen['bystander_refused']}")
        finally:
            world.drop()
    return out


def online(sbx: BenchSandbox, scales: list[int], say: Say) -> dict[str, Any]:
    """The online strategy's fence via bench/online_fence.py."""
    out: dict[str, Any] = {"status": "measured"}
    for scale in scales:
        say(f"fence: online {scale}x via bench.online_fence.measure_online_fence({scale})")
        t = time.monotonic()
        try:
            res = measure_online_fence(scale, sandbox=sbx, say=lambda m: say(f"fence: online {scale}x: {m}"))
        except Exception as exc:  # noqa: BLE001 - report it, don't lose the other sections
            out[f"{scale}x"] = {"scale": scale, "error": f"{type(exc).__name__}: {first_line(exc, '')}"}
            out["status"] = "error"
            continue
        res = dict(res) if isinstance(res, dict) else {"result": res}
        res.setdefault("scale", scale)
        res["bench_seconds"] = round(time.monotonic() - t, 2)
        out[f"{scale}x"] = res
    return out


def online_fence_seconds(entry: dict[str, Any]) -> float | None:
    """The fence duration out of measure_online_fence's dict."""
    v = entry.get("fence_seconds")
    return float(v) if isinstance(v, (int, float)) else None
