"""Fence duration of an online move under a steady writer.

    .venv/bin/python -m bench.online_fence [--scale N] [--rate OPS] [--json]   (from the repository root)

``measure_online_fence(scale)`` seeds the demo's data set (``residency demo``: 24 workspaces,
200,000 rows; ``scale`` multiplies the rows) into a fresh world of a sandbox, picks the biggest
workspace (homed in ``us``), starts a writer doing inserts, updates and deletes on it (messages,
attachments, reactions) and moves it to ``eu`` with ``--strategy online``. Returns a dict:

    scale, rows_total, workspace, workspace_rows, workspace_bytes,
    fence_seconds            how long the workspace could not be written (fence → directory flip)
    fence_breakdown          fence → caught up, stop replication, path-table changes, copy phase (globals,
                             objects, sequences), verify, cut-over (seconds)
    verify_modes             per table: "incremental" (buckets) or "full" (see migrate/incremental.py)
    verify_prepared          the bucket checksums taken before the fence (C0, buckets, fallbacks, timings)
    teardown_after_cut_over  dropping subscription, slot, publication, triggers (outside the fence)
    move_seconds             start → cut-over
    initial_copy_seconds, catchup_seconds, lag_bytes_before_fence
    writer                   {"ok": committed ops, "refused": ops refused by the fence, "ops_per_second"}
    verified                 the target equals the source's final state (checksums, both sides)
    leftovers                replication objects left anywhere afterwards (must be [])

``sandbox``: an object with ``.home`` and ``.catalogue`` (bench/sandbox.py's BenchSandbox); when
omitted a temporary sandbox is started and destroyed around the measurement.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from datetime import datetime
from typing import Any, Callable

import psycopg

from residency.errors import first_line
from residency.sandbox.demo import DEMO_ROWS, DEMO_SEED, DEMO_WORKSPACES


class Writer(threading.Thread):
    """Inserts, updates and deletes rows of one workspace, steadily, until stopped. Ignores the
    directory on purpose: writes the fence refuses are counted, not retried."""

    def __init__(self, dsn: str, ws: int, rate: float = 200.0, seed: int = 7):
        super().__init__(daemon=True, name=f"writer-{ws}")
        self.dsn, self.ws, self.rate = dsn, ws, rate
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.ok = self.refused = self.other = 0
        self.errors: list[str] = []
        self.mine: list[int] = []
        self.t0 = self.t1 = 0.0

    def run(self) -> None:
        self.t0 = time.monotonic()
        with psycopg.connect(self.dsn, autocommit=True) as c:
            convs = [r[0] for r in c.execute("SELECT id FROM conversations WHERE workspace_id = %s ORDER BY id LIMIT 200", (self.ws,))]
            old = [r[0] for r in c.execute("SELECT id FROM messages WHERE workspace_id = %s ORDER BY id LIMIT 2000", (self.ws,))]
            while not self.stop_event.is_set():
                op = self.rng.random()
                try:
                    with c.transaction():
                        if op < 0.45 or not self.mine:
                            mid = c.execute(
                                "INSERT INTO messages (workspace_id, conversation_id, body, payload) VALUES (%s, %s, %s, %s) RETURNING id",
                                (self.ws, self.rng.choice(convs), f"w{self.rng.random():.6f}", '{"writer": true}'),
                            ).fetchone()[0]
                            if self.rng.random() < 0.3:
                                c.execute(
                                    "INSERT INTO attachments (message_id, filename, content_type, size_bytes) VALUES (%s, 'w.txt', 'text/plain', 3)",
                                    (mid,),
                                )
                            if self.rng.random() < 0.2:
                                c.execute("INSERT INTO reactions (subject_type, subject_id, emoji) VALUES ('message', %s, '+1')", (mid,))
                            self.mine.append(mid)
                        elif op < 0.8:
                            target = self.rng.choice(old if self.rng.random() < 0.5 else self.mine)
                            c.execute("UPDATE messages SET body = %s, edited_at = now() WHERE id = %s AND workspace_id = %s",
                                      (f"edit {self.rng.random():.6f}", target, self.ws))
                        else:
                            mid = self.mine.pop(self.rng.randrange(len(self.mine)))
                            c.execute("DELETE FROM attachments WHERE message_id = %s", (mid,))
                            c.execute("DELETE FROM reactions WHERE subject_type = 'message' AND subject_id = %s", (mid,))
                            c.execute("DELETE FROM messages WHERE id = %s AND workspace_id = %s", (mid, self.ws))
                    self.ok += 1
                except psycopg.Error as exc:
                    if "is fenced" in str(exc):
                        self.refused += 1
                    else:
                        self.other += 1
                        if len(self.errors) < 5:
                            self.errors.append(first_line(exc))
                if self.rate > 0:
                    self.stop_event.wait(1.0 / self.rate)
        self.t1 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        self.stop_event.set()
        self.join(timeout=30)
        secs = max((self.t1 or time.monotonic()) - self.t0, 1e-9)
        return {"ok": self.ok, "refused": self.refused, "other_errors": self.other, "errors": self.errors,
                "ops_per_second": round((self.ok + self.refused) / secs, 1)}


def _secs(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return round((datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds(), 3)


def measure_online_fence(scale: float = 1, *, sandbox: Any = None, rate: float = 200.0, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One online move of the biggest demo workspace (rows × ``scale``) under a steady writer."""
    say = say or (lambda _m: None)
    if sandbox is None:
        from bench.sandbox import temporary_sandbox

        with temporary_sandbox(say) as sb:
            return measure_online_fence(scale, sandbox=sb, rate=rate, say=say)

    from residency.migrate import move_report, start_move, verify_workspace
    from residency.migrate.replication import leftovers
    from residency.sandbox.world import World
    import uuid

    w = World(sandbox.catalogue, sandbox.home, f"of{uuid.uuid4().hex[:8]}")
    w.create()
    try:
        t = time.monotonic()
        rows = int(DEMO_ROWS * scale)
        s = w.seed(workspaces=DEMO_WORKSPACES, rows=rows, seed=DEMO_SEED)
        say(f"seeded {s.total_rows:,} rows in {time.monotonic() - t:.1f}s")
        ws = s.biggest
        src = s.home[ws]
        dst = next(r for r in ("eu", "us", "au") if r != src)
        writer = Writer(w.dsn(src), ws, rate=rate)
        writer.start()
        time.sleep(1.0)  # the writer is in its stride before the move begins
        t = time.monotonic()
        rec = start_move(sandbox.catalogue, w.connections, ws, dst, strategy="online",
                         progress=lambda e: say(e.message) if e.phase == "state" and e.message else None)
        move_seconds = round(time.monotonic() - t, 3)
        time.sleep(0.5)
        wr = writer.stop()
        rep = move_report(w.connections, rec.id)
        ver = verify_workspace(sandbox.catalogue, w.connections, ws, src, dst)
        online = rec.report.get("online") or {}
        fence = rep.get("fence") or {}
        cp = rec.checkpoints
        return {
            "scale": scale,
            "rows_total": s.total_rows,
            "workspace": ws,
            "route": f"{src} → {dst}",
            "workspace_rows": sum(t["source_rows"] for t in rep["tables"] if t.get("kind") != "global"),
            "fence_seconds": fence.get("seconds"),
            "fence_breakdown": {
                "fenced_to_caught_up": online.get("fence_to_caught_up_seconds"),
                "stop_replication": (cp.get("online") or {}).get("stop_replication_seconds"),
                "teardown_under_fence": (cp.get("online") or {}).get("teardown_seconds"),
                "path_changes": (cp.get("online") or {}).get("path_changes_seconds"),
                "globals_and_touched_keys": (cp.get("online") or {}).get("fenced_globals_seconds"),
                "path_tables_copy": (rep.get("copy") or {}).get("seconds"),
                "verify": (rec.report.get("verify") or {}).get("seconds"),
                **{f"step_{k}": v for k, v in ((cp.get("online") or {}).get("fenced_steps") or {}).items()},
                "fenced_at": fence.get("fenced_at"),
                "cut_over_at": fence.get("cut_over_at"),
            },
            "verify_timings": (rec.report.get("verify") or {}).get("timings"),
            "verify_modes": {t["table"]: t.get("verify_mode") for t in rep["tables"] if t.get("kind") != "global"},
            "verify_prepared": online.get("verify_prepared"),
            "teardown_after_cut_over": (cp.get("online") or {}).get("teardown_after_cut_over_seconds"),
            "move_seconds": move_seconds,
            "initial_copy_seconds": online.get("initial_copy_seconds"),
            "catchup_seconds": online.get("catchup_seconds"),
            "lag_bytes_before_fence": online.get("lag_bytes_before_fence"),
            "writer": wr,
            "verified": ver.ok,
            "leftovers": [x.to_dict() for x in leftovers(w.connections)],
        }
    finally:
        w.drop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the demo's 200,000 rows (10 = 2,000,000)")
    ap.add_argument("--rate", type=float, default=200.0, help="writer operations per second (0 = as fast as it can)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    r = measure_online_fence(a.scale, rate=a.rate, say=lambda m: print(m, file=sys.stderr))
    if a.json:
        print(json.dumps(r, indent=2, default=str))
    else:
        print(f"scale {r['scale']}: workspace {r['workspace']} ({r['workspace_rows']:,} rows of {r['rows_total']:,}), {r['route']}")
        print(f"fence {r['fence_seconds']} s  breakdown {r['fence_breakdown']}")
        print(f"verify modes {r['verify_modes']}")
        print(f"move {r['move_seconds']} s (initial copy {r['initial_copy_seconds']} s, catch-up {r['catchup_seconds']} s)")
        print(f"writer {r['writer']}  verified {r['verified']}  leftovers {len(r['leftovers'])}")
    return 0 if r["verified"] and not r["leftovers"] else 1


if __name__ == "__main__":
    sys.exit(main())
