"""How hard the copy may press on a source region: a cap on concurrent copy streams per source
region, shared by every mover and worker on the control plane, and an optional row rate.

The cap is a set of slots, PostgreSQL session advisory locks on the control plane
(``pg_try_advisory_lock(region_key, slot)`` for slot 0..cap-1): a stream holds one slot while it
copies a chunk, on its own control-plane connection, so a process that dies (kill -9 too) frees
its slots with its connections. 50 moves out of one region at once share the same slots. Every
process must use the same cap (``RESIDENCY_COPY_STREAMS_PER_REGION``, default 8): the slots a
process tries are those below its own cap.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
import time
from typing import Any, Callable, Iterator

from residency import db

WAIT_MIN, WAIT_MAX = 0.05, 2.0


def region_key(region: str) -> int:
    """A stable int4 naming ``region``'s slots (the first advisory-lock key)."""
    return int.from_bytes(hashlib.sha1(f"residency-copy-streams:{region}".encode()).digest()[:4], "big", signed=True)


class StreamSlots:
    """Slots for one source region on one control plane."""

    def __init__(self, control_dsn: str, region: str, cap: int):
        self.control_dsn, self.region, self.cap = control_dsn, region, max(1, int(cap))
        self.key = region_key(region)
        self.waited = 0.0  # seconds streams of this process spent waiting for a slot
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self, should_stop: Callable[[], bool] = lambda: False, conn: Any = None) -> Iterator[int]:
        """Hold one of the region's slots for the block; waits (backing off) while all are taken.
        ``conn``: an autocommit control-plane connection of the stream's to hold it on (kept
        open afterwards); else one is opened for the block."""
        own = conn is None
        if own:
            conn = db.connect(self.control_dsn, autocommit=True, application_name="residency-mover-stream-slot")
        try:
            t0 = time.monotonic()
            pause = WAIT_MIN
            while True:
                got = self._try(conn)
                if got is not None:
                    break
                if should_stop():
                    raise InterruptedError("stopped while waiting for a copy stream slot")
                time.sleep(pause * (0.5 + random.random()))
                pause = min(WAIT_MAX, pause * 2)
            with self._lock:
                self.waited += time.monotonic() - t0
            try:
                yield got
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (self.key, got))
        finally:
            if own:
                conn.close()

    def _try(self, conn: Any) -> int | None:
        start = random.randrange(self.cap)  # spread the probes
        for i in range(self.cap):
            s = (start + i) % self.cap
            (ok,) = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self.key, s)).fetchone()
            if ok:
                return s
        return None

    def held(self, conn: Any) -> int:
        """How many of this region's slots are taken now (by anyone on the control plane)."""
        (n,) = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s::oid"
            " AND objsubid = 2 AND objid < %s", (self.key & 0xFFFFFFFF, self.cap)).fetchone()
        return int(n)


class RateLimit:
    """At most ``rows_per_second`` rows across this process's streams of one move (None: no limit)."""

    def __init__(self, rows_per_second: float | None):
        self.rate = float(rows_per_second) if rows_per_second else None
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._rows = 0

    def take(self, rows: int) -> None:
        if self.rate is None or rows <= 0:
            return
        with self._lock:
            self._rows += rows
            due = self._start + self._rows / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
