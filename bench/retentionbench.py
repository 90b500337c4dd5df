"""Retention sweep over many expired rows while writers keep writing (issue 14).

One workspace gets ``--rows`` expired messages (two days old; one in ten with an attachment and
a reaction, so dependants go too) next to fresh ones; a 1-hour rule on its messages is then run
(``residency.expiry.run``) while two writers work on the same table of the same workspace:

- an **inserter** adds new messages (never conflicts with the sweep: it must never wait);
- an **updater** edits random messages, expired ones included (it may meet a row a batch holds:
  it then waits for that batch only, or the batch skips the row the writer holds).

Measured: the sweep's duration and rate, its longest batch (the longest any row lock is held),
the longest single statement of each writer (its lock wait included), and the longest lock wait
seen in ``pg_stat_activity`` (sampled every 20 ms). Target: no lock longer than 1 s.

    .venv/bin/python -m bench.retentionbench [--rows 1000000] [--batch 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg

from .sandbox import REGIONS_YAML, temporary_sandbox


class Writer(threading.Thread):
    def __init__(self, dsn: str, ws: int, kind: str, ids: list[int], conv: int):
        super().__init__(daemon=True, name=f"writer-{kind}")
        self.dsn, self.ws, self.kind, self.ids, self.conv = dsn, ws, kind, ids, conv
        self.stop = threading.Event()
        self.durations: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        rng = random.Random(7)
        with psycopg.connect(self.dsn, autocommit=True, application_name=f"bench-{self.kind}") as c:
            c.execute("SET lock_timeout = '10s'")
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    if self.kind == "inserter":
                        c.execute("INSERT INTO messages (workspace_id, conversation_id, body) VALUES (%s, %s, 'live')", (self.ws, self.conv))
                    else:
                        c.execute("UPDATE messages SET edited_at = now() WHERE workspace_id = %s AND id = %s", (self.ws, rng.choice(self.ids)))
                except psycopg.Error as exc:
                    self.errors.append(str(exc).splitlines()[0])
                self.durations.append(time.monotonic() - t0)
                time.sleep(0.005)


class LockSampler(threading.Thread):
    """The longest wait for a lock any backend of the database is in, sampled."""

    def __init__(self, dsn: str):
        super().__init__(daemon=True, name="lock-sampler")
        self.dsn = dsn
        self.stop = threading.Event()
        self.longest = 0.0

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            while not self.stop.is_set():
                (w,) = c.execute(
                    "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - state_change)), 0) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'").fetchone()
                self.longest = max(self.longest, float(w))
                time.sleep(0.02)


def _load(dsn: str, ws: int, rows: int) -> dict[str, int]:
    """``rows`` expired messages for ``ws``, a tenth of them with an attachment and a reaction."""
    with psycopg.connect(dsn, autocommit=True) as c:
        conv = c.execute("SELECT id FROM conversations WHERE workspace_id = %s ORDER BY id LIMIT 1", (ws,)).fetchone()[0]
        base = c.execute("SELECT max(id) + 1 FROM messages").fetchone()[0]
        c.execute(
            "INSERT INTO messages (id, workspace_id, conversation_id, body, created_at)"
            " SELECT %s + g, %s, %s, repeat('expired message ', 8), now() - interval '2 days' FROM generate_series(0, %s - 1) g",
            (base, ws, conv, rows))
        c.execute("INSERT INTO attachments (message_id, filename, content_type, size_bytes)"
                  " SELECT %s + g, 'f.txt', 'text/plain', 10 FROM generate_series(0, %s - 1, 10) g", (base, rows))
        c.execute("INSERT INTO reactions (subject_type, subject_id, emoji)"
                  " SELECT 'message', %s + g, 'x' FROM generate_series(0, %s - 1, 10) g", (base, rows))
        # the writers' ids come after the loaded ones
        c.execute("SELECT setval(pg_get_serial_sequence('messages', 'id'), (SELECT max(id) FROM messages))")
        c.execute("SELECT setval(pg_get_serial_sequence('attachments', 'id'), (SELECT max(id) FROM attachments))")
        c.execute("SELECT setval(pg_get_serial_sequence('reactions', 'id'), (SELECT max(id) FROM reactions))")
        c.execute("VACUUM ANALYZE messages")
        c.execute("ANALYZE attachments")
        c.execute("ANALYZE reactions")
        return {"conversation": conv, "first": base}


def run(rows: int, batch: int, say: Any = print) -> dict[str, Any]:
    from residency import catalogue as catalogue_mod
    from residency.expiry import run as sweep_run

    with temporary_sandbox() as sb:
        w = sb.world("r")
        try:
            seeded = w.seed(workspaces=2, rows=2000, seed=11)
            ws = seeded.smallest_in("us")
            t0 = time.monotonic()
            info = _load(w.dsn("us"), ws, rows)
            say(f"loaded {rows} expired messages in {time.monotonic() - t0:.1f}s")
            head = REGIONS_YAML.read_text(encoding="utf-8").split("\nretention:", 1)[0]
            cat = catalogue_mod.loads(head.rstrip("\n") + "\n\nretention:\n  workspaces:\n    \"" + str(ws) + "\":\n"
                                      "      tables: {messages: {column: created_at, older_than: 1h}}\n", "regions.yaml")
            sample = list(range(info["first"], info["first"] + rows, max(1, rows // 5000)))
            writers = [Writer(w.dsn("us"), ws, "inserter", [], info["conversation"]), Writer(w.dsn("us"), ws, "updater", sample, info["conversation"])]
            sampler = LockSampler(w.dsn("us"))
            for t in (*writers, sampler):
                t.start()
            t0 = time.monotonic()
            report = sweep_run(cat, w.connections, workspace=ws, batch_rows=batch)
            took = time.monotonic() - t0
            for t in (*writers, sampler):
                t.stop.set()
            for t in (*writers, sampler):
                t.join()
            (wsr,) = report.workspaces
            (rule,) = wsr.rules
            out = {
                "rows_expired": rows, "rows_deleted": wsr.rows, "seconds": round(took, 2), "rows_per_second": round(wsr.rows / took),
                "batches": rule.batches, "longest_batch_seconds": rule.longest_batch_seconds,
                "inserter": {"statements": len(writers[0].durations), "longest_seconds": round(max(writers[0].durations, default=0), 3), "errors": writers[0].errors[:3]},
                "updater": {"statements": len(writers[1].durations), "longest_seconds": round(max(writers[1].durations, default=0), 3), "errors": writers[1].errors[:3]},
                "longest_lock_wait_seconds": round(sampler.longest, 3),
                "failed": report.failed,
            }
            out["target_met"] = max(out["longest_batch_seconds"], out["inserter"]["longest_seconds"], out["updater"]["longest_seconds"], out["longest_lock_wait_seconds"]) < 1.0
            return out
        finally:
            w.drop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.retentionbench", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    res = run(a.rows, a.batch, say=(lambda m: None) if a.json else print)
    res["at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "retention.json").write_text(json.dumps(res, indent=1) + "\n")
    if a.json:
        print(json.dumps(res, indent=1))
        return
    print("| measure | value |\n| --- | --- |")
    for k in ("rows_deleted", "seconds", "rows_per_second", "batches", "longest_batch_seconds", "longest_lock_wait_seconds"):
        print(f"| {k} | {res[k]} |")
    for k in ("inserter", "updater"):
        print(f"| {k}: statements / longest | {res[k]['statements']} / {res[k]['longest_seconds']} s |")
    print(f"| target (no lock > 1 s) | {'met' if res['target_met'] else 'NOT met'} |")


if __name__ == "__main__":
    main()
