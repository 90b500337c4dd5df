"""The mover's chunked parallel copy against what a skilled engineer would run, in one run.

    python -m bench.parallelbench [--rows 1000000] [--runs 3] [--jobs 2,4] [--pipes 4] [--json]

One workspace of about ``rows`` rows is seeded in ``us`` (the sample app: several tables). Every
contender copies it into the same target state (``eu``'s database dropped and created again from
the sample-schema template: every index and constraint, no rows; both servers CHECKPOINTed), in
rounds whose order rotates, median of ``runs``:

- mover --jobs N: a real snapshot move in a child process (bench/child.py) stopped once
  verified, then rolled back; the time is the wall time of its copy phase (referenced global
  rows, every chunk, objects, sequences, checkpoints);
- parallel pipes: the mover's own SELECTs as ``psql \\copy ... TO STDOUT (FORMAT binary) | psql
  \\copy ... FROM STDIN`` pipes, ``--pipes`` at a time, largest table first, the target psql
  with ``session_replication_role = replica`` (PGOPTIONS);
- pgcopydb: ``pgcopydb copy table-data --table-jobs 2`` from a prepared database on the source
  server that holds only the workspace's rows, replica injected through the target URI's
  options (skipped when pgcopydb is not installed); its target's rows are counted, since it can
  exit 0 with tables failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql

from bench.common import Say, checkpoint, median, psql_binary, run_child, seed_workspace, vacuum_analyze
from bench.copybench import SOURCE, TARGET, pipe_commands
from bench.sandbox import BenchSandbox, temporary_sandbox


def _pipe(psql: str, src_dsn: str, dst_dsn: str, out_cmd: str, in_cmd: str) -> None:
    env = dict(os.environ, PGOPTIONS="-c session_replication_role=replica")
    src = subprocess.Popen([psql, "-X", "-v", "ON_ERROR_STOP=1", "-d", src_dsn, "-c", out_cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dst = subprocess.Popen([psql, "-X", "-v", "ON_ERROR_STOP=1", "-d", dst_dsn, "-c", in_cmd], stdin=src.stdout,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert src.stdout is not None
    src.stdout.close()
    _, derr = dst.communicate()
    serr = src.stderr.read() if src.stderr else b""
    src.wait()
    if src.returncode or dst.returncode:
        raise RuntimeError(f"pipe failed: {(serr or derr).decode(errors='replace').strip()[:300]}")


def run_parallel_pipes(psql: str, src_dsn: str, dst_dsn: str, commands: list[tuple[str, str, str]], sizes: dict[str, int], jobs: int) -> float:
    todo = sorted(commands, key=lambda c: -sizes.get(c[0], 0))
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for f in [pool.submit(_pipe, psql, src_dsn, dst_dsn, o, i) for _, o, i in todo]:
            f.result()
    return round(time.monotonic() - t0, 3)


def _with_options(dsn: str) -> str:
    return dsn + ("&" if "?" in dsn else "?") + "options=-csession_replication_role%3Dreplica"


def prepare_pgcopydb_source(world: Any, psql: str, commands: list[tuple[str, str, str]], sizes: dict[str, int]) -> str:
    """A database on the source server holding only the workspace's rows (and its global rows)."""
    from residency.sandbox.core import APP_TEMPLATE, server_dsn

    name = f"pc_{world.token}"
    with psycopg.connect(world.admin_dsn(SOURCE), autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(APP_TEMPLATE)))
    dsn = server_dsn(world.home, SOURCE, name)
    with psycopg.connect(dsn, autocommit=True) as c:  # the template's own rows (none expected) go
        tables = [r[0] for r in c.execute("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND relkind = 'r'")]
        if tables:
            c.execute(sql.SQL("TRUNCATE {} CASCADE").format(sql.SQL(", ").join(sql.Identifier(t) for t in tables)))
    run_parallel_pipes(psql, world.dsn(SOURCE), dsn, commands, sizes, 2)
    vacuum_analyze(dsn)
    return dsn


def drop_database(world: Any, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(world.admin_dsn(SOURCE), autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))


def run_pgcopydb(exe: str, src_dsn: str, dst_dsn: str, jobs: int) -> float:
    work = tempfile.mkdtemp(prefix="residency-bench-pgcopydb-")
    try:
        t0 = time.monotonic()
        p = subprocess.run([exe, "copy", "table-data", "--source", src_dsn, "--target", _with_options(dst_dsn),
                            "--table-jobs", str(jobs), "--dir", work], capture_output=True, text=True)
        secs = round(time.monotonic() - t0, 3)
        if p.returncode:
            raise RuntimeError(f"pgcopydb failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
        return secs
    finally:
        shutil.rmtree(work, ignore_errors=True)


def target_rows(dsn: str, tables: list[str]) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        return sum(c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0] for t in tables)


def run(sbx: BenchSandbox, rows: int, runs: int, jobs: list[int], pipes: int, say: Say) -> dict[str, Any]:
    from residency.migrate import plan_move, rollback_move

    world = sbx.world("p")
    pc_src: str | None = None
    try:
        ws, ws_rows, seed_s = seed_workspace(world, rows, region=SOURCE, seed=11)
        vacuum_analyze(world.dsn(SOURCE))
        say(f"seeded workspace {ws} with {ws_rows:,} rows in {seed_s}s")
        plan = plan_move(world.catalogue, world.connections, ws, TARGET, "snapshot")
        sizes = {t.table: t.rows for t in plan.tables} | {g.table: g.referenced_rows for g in plan.globals}
        expected = sum(sizes.values())
        commands = pipe_commands(world, ws)
        psql = psql_binary(sbx)
        exe = shutil.which("pgcopydb")
        contenders = [f"mover --jobs {j}" for j in jobs] + [f"{pipes} parallel psql pipes, replica"]
        if exe:
            pc_src = prepare_pgcopydb_source(world, psql, commands, sizes)
            contenders.append("pgcopydb copy table-data --table-jobs 2")
        times: dict[str, list[float]] = {c: [] for c in contenders}
        for r in range(runs):
            order = contenders[r % len(contenders):] + contenders[: r % len(contenders)]
            for c in order:
                world.recreate_database(TARGET)
                checkpoint(world, [SOURCE, TARGET])
                if c.startswith("mover"):
                    res = run_child(sbx, world, ws, TARGET, stop_after="verified", jobs=int(c.split()[-1]))
                    if res["state"] != "verified" or not res.get("verify_ok"):
                        raise RuntimeError(f"benchmark move ended in {res['state']} (verified: {res.get('verify_ok')})")
                    secs = res["phases"].get("fenced")
                    rollback_move(world.catalogue, world.connections, res["move_id"])
                elif c.startswith("pgcopydb"):
                    assert exe and pc_src
                    secs = run_pgcopydb(exe, pc_src, world.dsn(TARGET), 2)
                    got = target_rows(world.dsn(TARGET), list(sizes))
                    if got != expected:
                        raise RuntimeError(f"pgcopydb left {got:,} rows in the target, expected {expected:,}")
                else:
                    secs = run_parallel_pipes(psql, world.dsn(SOURCE), world.dsn(TARGET), commands, sizes, pipes)
                    got = target_rows(world.dsn(TARGET), list(sizes))
                    if got != expected:
                        raise RuntimeError(f"pipes left {got:,} rows in the target, expected {expected:,}")
                times[c].append(secs)
                say(f"round {r + 1}/{runs} {c}: {secs}s")
        med = {c: median(v) for c, v in times.items()}
        best_mover = min(v for c, v in med.items() if c.startswith("mover") and v)
        return {
            "workspace_rows": ws_rows, "rows_copied": expected, "tables": len(sizes), "runs": runs, "cpus": os.cpu_count(),
            "seconds": times, "median_seconds": med,
            "ratio_peer_over_best_mover": {c: round(v / best_mover, 3) for c, v in med.items() if not c.startswith("mover") and v},
            "pgcopydb": exe or "not installed",
        }
    finally:
        if pc_src:
            drop_database(world, pc_src)
        world.drop()


def render(res: dict[str, Any]) -> str:
    lines = [f"{res['rows_copied']:,} rows ({res['tables']} tables), median of {res['runs']}, {res['cpus']} CPUs",
             "| contender | median s | runs s | peer / best mover |", "|---|---|---|---|"]
    for c, m in res["median_seconds"].items():
        ratio = res["ratio_peer_over_best_mover"].get(c)
        lines.append(f"| {c} | {m} | {', '.join(str(x) for x in res['seconds'][c])} | {ratio if ratio is not None else '—'} |")
    if res["pgcopydb"] == "not installed":
        lines.append("pgcopydb: not installed (apt-get install -y pgcopydb)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.parallelbench")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", default="2,4", help="the mover's --jobs values, comma-separated")
    ap.add_argument("--pipes", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    def say(m: str) -> None:
        print(m, file=sys.stderr, flush=True)

    with temporary_sandbox() as sbx:
        res = run(sbx, a.rows, a.runs, [int(j) for j in a.jobs.split(",") if j], a.pipes, say)
    print(json.dumps(res, indent=2) if a.json else render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
