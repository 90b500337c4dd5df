"""A steady writer: an application that keeps writing to a workspace during its move.

It routes every write by the directory (the workspace's home region, read from the control
plane), ignores the move's status, and writes at a fixed rate: two UPDATEs (a message's
``edited_at``) for each INSERT (a new message). While the source is fenced its writes are refused
by the database; once the directory points at the new home it writes there. Alongside, it writes
at the same rate to a bystander workspace in the same source database, which must never be
refused. What it observed is the application's view of the fence: the longest gap between two
accepted writes to the moving workspace.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from residency.errors import first_line


class SteadyWriter(threading.Thread):
    def __init__(self, world: Any, workspace: str, bystander: str, rate: float = 50.0):
        super().__init__(name="steady-writer", daemon=True)
        self.world, self.ws, self.bystander, self.rate = world, workspace, bystander, rate
        self.stop_event = threading.Event()
        self.ok_times: list[float] = []
        self.refused = 0
        self.errors: list[str] = []
        self.bystander_ok = 0
        self.bystander_refused = 0
        self.first_refused: float | None = None
        self.last_refused: float | None = None
        self.regions_written: set[str] = set()
        self._conns: dict[str, psycopg.Connection[Any]] = {}
        self._samples: dict[str, tuple[list[int], list[int]]] = {}

    # ---- helpers
    def _conn(self, region: str) -> psycopg.Connection[Any]:
        c = self._conns.get(region)
        if c is None or c.closed or c.broken:
            dsn = self.world.control_dsn if region == "control" else self.world.dsn(region)
            c = psycopg.connect(dsn, autocommit=True, application_name="bench-steady-writer")
            self._conns[region] = c
        return c

    def _home(self, ws: str) -> str:
        row = self._conn("control").execute("SELECT region FROM residency.directory WHERE workspace_id = %s", (ws,)).fetchone()
        return row[0]

    def _sample(self, region: str, ws: str) -> tuple[list[int], list[int]]:
        key = f"{region}:{ws}"
        if key not in self._samples:
            c = self._conn(region)
            msgs = [r[0] for r in c.execute("SELECT id FROM messages WHERE workspace_id = %s ORDER BY id LIMIT 200", (ws,))]
            convs = [r[0] for r in c.execute("SELECT id FROM conversations WHERE workspace_id = %s ORDER BY id LIMIT 50", (ws,))]
            self._samples[key] = (msgs, convs)
        return self._samples[key]

    def _write(self, ws: str, n: int) -> str:
        region = self._home(ws)
        c = self._conn(region)
        msgs, convs = self._sample(region, ws)
        if n % 3 == 2 and convs:
            c.execute(
                "INSERT INTO messages (workspace_id, conversation_id, body) VALUES (%s, %s, %s)",
                (ws, convs[n % len(convs)], f"steady writer #{n}"),
            )
        elif msgs:
            c.execute("UPDATE messages SET edited_at = now() WHERE workspace_id = %s AND id = %s", (ws, msgs[n % len(msgs)]))
        return region

    # ---- the loop
    def run(self) -> None:
        interval = 1.0 / self.rate
        n = 0
        nxt = time.monotonic()
        while not self.stop_event.is_set():
            n += 1
            for ws in (self.ws, self.bystander):
                try:
                    region = self._write(ws, n)
                    if ws == self.ws:
                        self.ok_times.append(time.monotonic())
                        self.regions_written.add(region)
                    else:
                        self.bystander_ok += 1
                except psycopg.Error as exc:
                    now = time.monotonic()
                    if ws == self.ws:
                        self.refused += 1
                        self.first_refused = self.first_refused or now
                        self.last_refused = now
                    else:
                        self.bystander_refused += 1
                    if len(self.errors) < 3 and "fence" not in str(exc).lower():
                        self.errors.append(first_line(exc)[:200])
            nxt += interval
            delay = nxt - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
            else:
                nxt = time.monotonic()
        for c in self._conns.values():
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    def stop(self) -> dict[str, Any]:
        self.stop_event.set()
        self.join(timeout=30)
        gaps = [b - a for a, b in zip(self.ok_times, self.ok_times[1:])]
        return {
            "rate_per_second": self.rate,
            "accepted": len(self.ok_times),
            "refused": self.refused,
            "longest_unwritable_seconds": round(max(gaps), 3) if gaps else None,
            "refused_span_seconds": round(self.last_refused - self.first_refused, 3) if self.first_refused and self.last_refused else 0.0,
            "regions_written": sorted(self.regions_written),
            "bystander_accepted": self.bystander_ok,
            "bystander_refused": self.bystander_refused,
            "unexpected_errors": self.errors,
        }
