"""Memory: the mover's peak RSS for a whole move (plan, fence, copy, verify, cut over) at 1x and
5x the copy benchmark's workspace, each in its own child process. The figure is ``VmHWM`` from
the child's /proc/self/status (its peak resident set). ``ru_maxrss`` is recorded too, but it is
inflated: Linux carries the forked harness's RSS across exec into the child's ru_maxrss."""

from __future__ import annotations

from typing import Any

from .common import Say, mb, run_child, seed_workspace, vacuum_analyze
from .sandbox import BenchSandbox

SOURCE, TARGET = "us", "eu"


def run(sbx: BenchSandbox, base_rows: int, scales: list[int], say: Say) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scale in scales:
        world = sbx.world("m")
        try:
            ws, rows, seed_s = seed_workspace(world, base_rows * scale, region=SOURCE, seed=31 + scale)
            vacuum_analyze(world.dsn(SOURCE))
            say(f"memory: {scale}x: workspace {ws} with {rows:,} rows (seeded in {seed_s}s)")
            r = run_child(sbx, world, ws, TARGET)
            out[f"{scale}x"] = {
                "scale": scale,
                "rows": rows,
                "state": r["state"],
                "peak_rss_mb": mb(r["vmhwm_kb"]),
                "ru_maxrss_mb": mb(r["maxrss_kb"]),
                "rss_before_move_mb": mb(r["rss_before_move_kb"]),
                "move_seconds": r["wall_seconds"],
                "phases": r["phases"],
                "rows_per_second": r["copy"].get("rows_per_second"),
            }
            say(f"memory: {scale}x: peak RSS {mb(r['vmhwm_kb'])} MB (before the move {mb(r['rss_before_move_kb'])} MB), move {r['wall_seconds']}s")
        finally:
            world.drop()
    peaks = [v["peak_rss_mb"] for v in out.values() if v.get("peak_rss_mb") is not None]
    if len(peaks) >= 2:
        out["growth_mb"] = round(peaks[-1] - peaks[0], 1)
    return out
