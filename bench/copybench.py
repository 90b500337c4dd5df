"""Copy, verify and 1x memory: the mover's snapshot copy against the plain psql pipe.

One workspace of ``rows`` rows is seeded in ``us``. Runs alternate (ABBA: ours, pipe, pipe, ours,
...) into the same target state each time: ``eu``'s database is dropped and created again from
the sample-schema template (every index and constraint present, every table empty), and both
servers are CHECKPOINTed before a timed run.

- ours: a real move (plan, fence, copy, verify) in a child process (bench/child.py), stopped
  once verified; the copy time is the wall time of the mover's copy phase (the referenced global
  rows, every table in foreign-key order, the objects, the sequences, its checkpoints), the
  verify time the wall time of its verify phase. Then the move is rolled back (source unfenced).
- pipe: for the referenced global rows and then every moving table in the same order, one
  ``psql -c "\\copy (SELECT ... WHERE ...) TO STDOUT (FORMAT binary)" | psql -c "\\copy t (...)
  FROM STDIN (FORMAT binary)"`` after the other; the SELECTs are the mover's own (same rows).
"""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any, Callable

import psycopg
from psycopg import sql

from .common import Say, checkpoint, median, mb, psql_binary, run_child, seed_workspace, vacuum_analyze
from .sandbox import BenchSandbox

SOURCE, TARGET = "us", "eu"


def _one_line(q: str) -> str:
    return " ".join(q.split())


def mover_statements(world: Any, ws: str, shared: Callable[[Any, str], sql.Composable],
                     moving: Callable[[Any, str], sql.Composable]) -> tuple[Any, list[tuple[str, str]]]:
    """The mover's builder and (table, statement on one line, values bound by psycopg, not by
    hand): ``shared(builder, table)`` for each table of the shared rows the workspace needs, then
    ``moving(builder, table)`` for every moving table, in the mover's order. A peer runs the
    mover's own SQL."""
    from residency.migrate.context import make_context

    ctx = make_context(world.catalogue, world.connections, ws, SOURCE, TARGET)
    b, g = ctx.builder, ctx.graph
    params = b.params(ws)
    with psycopg.connect(world.dsn(SOURCE)) as conn:
        cur = psycopg.ClientCursor(conn)
        items = [(t, shared(b, t)) for t in g.global_order] + [(t, moving(b, t)) for t in g.order]
        return b, [(t, _one_line(cur.mogrify(q, params))) for t, q in items]


def pipe_commands(world: Any, ws: str) -> list[tuple[str, str, str]]:
    """(table, source \\copy, target \\copy) for the global rows and every moving table, in the
    mover's order, with the mover's own SELECTs."""
    b, selects = mover_statements(world, ws, lambda b, t: b.global_referenced(t), lambda b, t: b.select_rows(t))
    out = []
    for table, q in selects:
        cols = b.graph.table(table).copy_columns
        into = sql.SQL("{} ({})").format(b.qname(table), sql.SQL(", ").join(sql.Identifier(c) for c in cols)).as_string()
        out.append((table, f"\\copy ({q}) TO STDOUT (FORMAT binary)", f"\\copy {into} FROM STDIN (FORMAT binary)"))
    return out


def run_pipe(psql: str, src_dsn: str, dst_dsn: str, commands: list[tuple[str, str, str]]) -> tuple[float, dict[str, int]]:
    """The baseline: one psql | psql pipe per table, one after another. Returns (seconds, rows per table)."""
    rows: dict[str, int] = {}
    t0 = time.monotonic()
    for table, out_cmd, in_cmd in commands:
        src = subprocess.Popen([psql, "-X", "-v", "ON_ERROR_STOP=1", "-d", src_dsn, "-c", out_cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        dst = subprocess.Popen([psql, "-X", "-v", "ON_ERROR_STOP=1", "-d", dst_dsn, "-c", in_cmd], stdin=src.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert src.stdout is not None
        src.stdout.close()  # the target psql owns the read end now
        dout, derr = dst.communicate()
        serr = src.stderr.read() if src.stderr else b""
        src.wait()
        if src.returncode or dst.returncode:
            raise RuntimeError(f"baseline pipe for {table} failed: {(serr or derr).decode(errors='replace').strip()[:300]}")
        m = re.search(rb"COPY (\d+)", dout)
        rows[table] = int(m.group(1)) if m else -1
    return round(time.monotonic() - t0, 3), rows


def _reset_target(world: Any) -> None:
    world.recreate_database(TARGET)


def run(sbx: BenchSandbox, rows: int, runs: int, say: Say) -> dict[str, Any]:
    from residency.migrate import rollback_move
    from residency.migrate.verify import verify_tables
    from residency.migrate.context import make_context

    world = sbx.world("c")
    try:
        ws, ws_rows, seed_s = seed_workspace(world, rows, region=SOURCE, seed=11)
        vacuum_analyze(world.dsn(SOURCE))
        say(f"copy: seeded workspace {ws} with {ws_rows:,} rows in {seed_s}s")
        commands = pipe_commands(world, ws)
        with psycopg.connect(world.dsn(TARGET)) as c:  # the mover skips per-row FK triggers only as superuser
            target_superuser = c.execute("SELECT current_setting('is_superuser')").fetchone()[0] == "on"
        psql = psql_binary(sbx)
        ours: list[dict[str, Any]] = []
        pipe: list[dict[str, Any]] = []
        pipe_checked: dict[str, Any] | None = None
        order = []
        for i in range(runs):
            order += ["ours", "pipe"] if i % 2 == 0 else ["pipe", "ours"]
        for n, kind in enumerate(order, 1):
            _reset_target(world)
            checkpoint(world, [SOURCE, TARGET])
            if kind == "ours":
                r = run_child(sbx, world, ws, TARGET, stop_after="verified")
                if r["state"] != "verified" or not r.get("verify_ok"):
                    raise RuntimeError(f"benchmark move ended in {r['state']} (verified: {r.get('verify_ok')})")
                ours.append(r)
                say(f"copy run {n}/{len(order)} ours: copy {r['phases'].get('fenced')}s, verify {r['phases'].get('copied')}s, peak RSS {mb(r['vmhwm_kb'])} MB")
                rollback_move(world.catalogue, world.connections, r["move_id"])
            else:
                secs, counts = run_pipe(psql, world.dsn(SOURCE), world.dsn(TARGET), commands)
                pipe.append({"seconds": secs, "rows": counts})
                say(f"copy run {n}/{len(order)} pipe: {secs}s ({sum(v for t, v in counts.items()) :,} rows incl. global)")
                if pipe_checked is None:  # once: the pipe's target equals the source, like the mover's
                    ctx = make_context(world.catalogue, world.connections, ws, SOURCE, TARGET)
                    v = verify_tables(world.dsn(SOURCE), world.dsn(TARGET), ctx.builder, ws)
                    pipe_checked = {"ok": v.ok, "rows": sum(t.target_rows for t in v.tables if t.kind == "table")}
                    if not v.ok:
                        raise RuntimeError("the baseline pipe's target differs from the source: " + "; ".join(v.problems()[:3]))
        _reset_target(world)
        ours_copy = [r["phases"].get("fenced") for r in ours]
        ours_verify = [r["phases"].get("copied") for r in ours]
        pipe_s = [p["seconds"] for p in pipe]
        m_ours, m_pipe, m_verify = median(ours_copy), median(pipe_s), median(ours_verify)
        moved = ours[0]["copy"]["rows"] if ours else ws_rows
        return {
            "workspace_rows": ws_rows,
            "moved_rows": moved,
            "moved_bytes": ours[0]["copy"]["bytes"] if ours else None,
            "tables": len(commands),
            "runs": runs,
            "order": order,
            "ours_copy_seconds": ours_copy,
            "ours_table_seconds_sum": [r["copy"]["seconds"] for r in ours],
            "ours_table_seconds": ours[-1]["copy_tables"] if ours else {},
            "pipe_seconds": pipe_s,
            "pipe_rows": pipe[-1]["rows"] if pipe else {},
            "pipe_target_verified": pipe_checked,
            "median_ours_seconds": m_ours,
            "median_pipe_seconds": m_pipe,
            "ratio_pipe_over_ours": round(m_pipe / m_ours, 3) if m_ours and m_pipe else None,
            "ours_rows_per_second": round(moved / m_ours) if m_ours else None,
            "verify_seconds": ours_verify,
            "median_verify_seconds": m_verify,
            "verify_over_copy": round(m_verify / m_ours, 3) if m_verify and m_ours else None,
            "peak_rss_mb": [mb(r["vmhwm_kb"]) for r in ours],
            "ru_maxrss_mb": [mb(r["maxrss_kb"]) for r in ours],
            "rss_before_move_mb": [mb(r["rss_before_move_kb"]) for r in ours],
            "seed_seconds": seed_s,
            "target_superuser": target_superuser,
        }
    finally:
        world.drop()
