"""Backups (issue 14): ``residency backup create`` of one workspace against ``COPY ... TO`` files of
the same rows on the same disk, and a one-record restore with its dependants.

One workspace of ``--rows`` rows is seeded in ``us``. Runs alternate (ours, files, files, ours...):

- ours: :func:`residency.backups.create_backup` (one exported snapshot, ``--jobs`` streams, binary
  COPY per key-range chunk plus its key index, zlib, SSE-KMS objects written to the sandbox's moto
  S3 in the backup region, the objects, the manifest, the control-plane row);
- files: for the same tables, with the backup's own SELECTs (the same rows: the workspace's and the
  shared rows they reference), ``psql -c "\\copy (SELECT ...) TO STDOUT (FORMAT binary)" > file``,
  one table after the other, into a temporary directory (fsynced), uncompressed.

ratio = ours / files (target ≤ 1.3). Then a conversation with the most messages is deleted with
everything hanging off it and restored from the backup with ``restore --table conversations --key
K`` (target < 2 s), reporting how many of the backup's chunks it read.

    .venv/bin/python -m bench.backupbench [--rows 1000000] [--runs 1] [--jobs 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from .common import checkpoint, median, psql_binary, seed_workspace, vacuum_analyze
from .sandbox import REPO, temporary_sandbox

REGION = "us"
DELETE = [
    "DELETE FROM reactions WHERE (subject_type = 'conversation' AND subject_id = %(c)s)"
    " OR (subject_type = 'message' AND subject_id IN (SELECT id FROM messages WHERE conversation_id = %(c)s))",
    "DELETE FROM attachment_previews WHERE attachment_id IN (SELECT a.id FROM attachments a JOIN messages m ON m.id = a.message_id WHERE m.conversation_id = %(c)s)",
    "DELETE FROM attachments WHERE message_id IN (SELECT id FROM messages WHERE conversation_id = %(c)s)",
    "DELETE FROM messages WHERE conversation_id = %(c)s",
    "DELETE FROM conversations WHERE id = %(c)s",
]


def file_commands(world: Any, ws: str) -> list[tuple[str, str]]:
    """(table, \\copy ... TO STDOUT) for every table the backup holds, with its own SELECTs."""
    from residency.backups import shape as shape_mod, sqlparts

    with psycopg.connect(world.dsn(REGION)) as conn:
        sh = shape_mod.read(conn, world.catalogue.workspace)
        cur = psycopg.ClientCursor(conn)
        b = sh.builder
        out = []
        for t in sh.tables:
            q = " ".join(cur.mogrify(sqlparts.rows(b, t, b.graph.table(t).copy_columns), b.params(ws)).split())
            out.append((t, f"\\copy ({q}) TO STDOUT (FORMAT binary)"))
    return out


def run_files(psql: str, dsn: str, commands: list[tuple[str, str]], folder: Path) -> tuple[float, int]:
    t0 = time.monotonic()
    total = 0
    for table, cmd in commands:
        path = folder / f"{table}.copy"
        with open(path, "wb") as f:
            p = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", cmd], stdout=f, stderr=subprocess.PIPE)
            if p.returncode != 0:
                raise RuntimeError(f"psql failed on {table}: {p.stderr.decode(errors='replace').strip()[-200:]}")
            f.flush()
            os.fsync(f.fileno())
        total += path.stat().st_size
    return round(time.monotonic() - t0, 3), total


def run(sbx: Any, rows: int, runs: int, jobs: int, say: Any) -> dict[str, Any]:
    from residency.backups import create_backup, restore
    from residency.backups.create import BackupOptions

    world = sbx.world("k")
    try:
        say(f"seeding one workspace of ~{rows:,} rows in {REGION}")
        ws, nrows, secs = seed_workspace(world, rows, region=REGION)
        vacuum_analyze(world.dsn(REGION))
        say(f"seeded workspace {ws}: {nrows:,} rows in {secs}s")
        psql = psql_binary(sbx)
        cmds = file_commands(world, ws)
        ours: list[float] = []
        files: list[float] = []
        last: Any = None
        file_bytes = 0
        with tempfile.TemporaryDirectory(prefix="residency-backupbench-", dir=os.environ.get("TMPDIR")) as tmp:
            for i in range(runs):
                for side in (("ours", "files") if i % 2 == 0 else ("files", "ours")):
                    checkpoint(world, [REGION])
                    if side == "ours":
                        last = create_backup(world.catalogue, world.connections, ws, options=BackupOptions(jobs=jobs))
                        ours.append(last.seconds)
                        say(f"run {i + 1}: backup {last.id}: {last.rows:,} rows, {last.chunks} chunks, {last.stored_bytes:,} bytes stored in {last.seconds}s")
                    else:
                        s, file_bytes = run_files(psql, world.dsn(REGION), cmds, Path(tmp))
                        files.append(s)
                        say(f"run {i + 1}: COPY TO files: {file_bytes:,} bytes in {s}s")
        with psycopg.connect(world.dsn(REGION), autocommit=True) as conn:
            c, nmsg = conn.execute("SELECT conversation_id, count(*) FROM messages WHERE workspace_id = %s GROUP BY 1 ORDER BY 2 DESC LIMIT 1", (int(ws),)).fetchone()
            conn.execute("UPDATE messages SET parent_id = NULL WHERE conversation_id <> %(c)s AND parent_id IN (SELECT id FROM messages WHERE conversation_id = %(c)s)", {"c": c})
        # the backup taken after that detachment is the one restored from
        last = create_backup(world.catalogue, world.connections, ws, options=BackupOptions(jobs=jobs))
        with psycopg.connect(world.dsn(REGION), autocommit=True) as conn:
            for stmt in DELETE:
                conn.execute(stmt, {"c": c})
        t0 = time.monotonic()
        r = restore(world.catalogue, world.connections, ws, last.id, table="conversations", keys=[str(c)])
        restore_s = round(time.monotonic() - t0, 3)
        say(f"restore of conversation {c} ({nmsg} messages): {r.restored} rows in {restore_s}s, {r.chunks_read}/{r.chunks_total} chunks read")
        mo, mf = median(ours), median(files)
        return {
            "rows": nrows, "runs": runs, "jobs": jobs, "backup_seconds": ours, "files_seconds": files,
            "backup_median": mo, "files_median": mf, "ratio": round(mo / mf, 2) if mo and mf else None,
            "stored_bytes": last.stored_bytes, "raw_bytes": last.raw_bytes, "file_bytes": file_bytes, "chunks": last.chunks,
            "restore": {"conversation": c, "messages": nmsg, "rows": r.restored, "seconds": restore_s,
                        "chunks_read": r.chunks_read, "chunks_total": r.chunks_total},
        }
    finally:
        world.drop()


def render(res: dict[str, Any]) -> str:
    rr = res["restore"]
    return "\n".join([
        "| measure | value | target |", "| --- | --- | --- |",
        f"| backup of {res['rows']:,} rows (median of {res['runs']}, --jobs {res['jobs']}) | {res['backup_median']} s | |",
        f"| COPY ... TO files of the same rows | {res['files_median']} s | |",
        f"| ratio backup / files | {res['ratio']}x | ≤ 1.3x |",
        f"| stored (zlib-1) / raw COPY / files | {res['stored_bytes']:,} / {res['raw_bytes']:,} / {res['file_bytes']:,} bytes | |",
        f"| restore one conversation ({rr['messages']} messages, {rr['rows']} rows) | {rr['seconds']} s, {rr['chunks_read']} of {rr['chunks_total']} chunks read | < 2 s |",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.backupbench")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    def say(m: str) -> None:
        print(m, file=sys.stderr, flush=True)

    with temporary_sandbox() as sbx:
        res = run(sbx, a.rows, a.runs, a.jobs, say)
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "backupbench.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2) if a.json else render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
