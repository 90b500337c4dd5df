"""Back off while the source is loaded, as Ghostferry's throttler does.

Before each chunk, and between a long chunk's batches, a stream asks :class:`SourceLoad` whether
the source may be read now. It looks (at most every ``check_seconds``, on one connection of its
own shared by the move's streams) at:

- **active connections**: client backends in state ``active`` other than the mover's own
  (``application_name`` ``residency-*``), over the whole server;
- **replication lag**: on a primary the largest ``replay_lag`` in ``pg_stat_replication``; on a
  replica (``pg_is_in_recovery()``) the age of ``pg_last_xact_replay_timestamp()``.

While either is over its threshold the stream sleeps, backing off (0.25 s doubling to at most
``max_pause`` seconds, jittered) and checks again; the seconds spent so are reported in the
move's copy report (``throttle``). A check that fails (the connection dropped) lets the copy go on:
the throttle protects the source, it never fails a move.

A non-superuser sees other roles' backends in ``pg_stat_activity`` without their ``state`` and
``pg_stat_replication`` without its lag columns unless it has ``pg_read_all_stats`` (the sandbox's
``residency_mover`` has it): :func:`visibility` says which, and the report carries it.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg

from residency import db

PAUSE_MIN = 0.25

_ACTIVE = (
    "SELECT count(*)::int FROM pg_stat_activity WHERE state = 'active' AND backend_type = 'client backend'"
    " AND pid <> pg_backend_pid() AND coalesce(application_name, '') NOT LIKE %s"
)
OURS = "residency%"
_LAG = (
    "SELECT CASE WHEN pg_is_in_recovery()"
    " THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
    " ELSE (SELECT max(extract(epoch FROM replay_lag)) FROM pg_stat_replication) END::float8"
)
_VISIBLE = (
    "SELECT current_setting('is_superuser') = 'on' OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')"
)


def _env_float(name: str, default: float | None) -> float | None:
    """A number from the environment; unset or not a number: ``default``; 0 stays 0 (off)."""
    v = os.environ.get(name)
    if not v:
        return default
    try:
        return float(v)
    except ValueError:
        return default


@dataclass
class LoadLimits:
    """``max_active``: active client backends on the source (not the mover's) above which the copy
    waits (None or 0: not checked); ``max_lag``: replication lag in seconds above which it waits
    (None or 0: not checked); ``check_seconds``: how often the source is looked at; ``max_pause``:
    the longest single sleep while it is loaded."""

    max_active: int | None = field(default_factory=lambda: int(_env_float("RESIDENCY_COPY_MAX_SOURCE_ACTIVE", 64) or 0))
    max_lag: float | None = field(default_factory=lambda: _env_float("RESIDENCY_COPY_MAX_SOURCE_LAG", 30.0))
    check_seconds: float = field(default_factory=lambda: _env_float("RESIDENCY_COPY_LOAD_CHECK_SECONDS", 1.0) or 1.0)
    max_pause: float = 5.0

    @property
    def enabled(self) -> bool:
        return bool(self.max_active) or bool(self.max_lag)

    def to_dict(self) -> dict[str, Any]:
        return {"max_active": self.max_active, "max_lag": self.max_lag, "check_seconds": self.check_seconds}


def visibility(conn: psycopg.Connection[Any]) -> str:
    """What this role sees of the source's load."""
    (full,) = conn.execute(_VISIBLE).fetchone()
    if full:
        return "full (superuser or pg_read_all_stats)"
    return ("partial: without pg_read_all_stats only this role's own backends show their state and replication lag is"
            " hidden (GRANT pg_read_all_stats TO the mover role)")


def plan_note(conn: psycopg.Connection[Any], limits: LoadLimits | None = None) -> str:
    """The plan's line on the copy's back-off, saying what the source role can see of the load."""
    limits = limits or LoadLimits()
    if not limits.enabled:
        return "source load: not checked (RESIDENCY_COPY_MAX_SOURCE_ACTIVE and RESIDENCY_COPY_MAX_SOURCE_LAG are 0)"
    what = [f"more than {limits.max_active} active connections" if limits.max_active else "",
            f"replication lag over {limits.max_lag:g} s" if limits.max_lag else ""]
    return f"source load: the copy waits while the source has {' or '.join(w for w in what if w)}; the role's view: {visibility(conn)}"


def measure(conn: psycopg.Connection[Any]) -> tuple[int, float | None]:
    """(active client backends that are not the mover's, replication lag in seconds or None)."""
    (active,) = conn.execute(_ACTIVE, (OURS,)).fetchone()
    (lag,) = conn.execute(_LAG).fetchone()
    return int(active), (None if lag is None else float(lag))


class SourceLoad:
    """One move's view of its source's load, shared by its streams (thread-safe)."""

    def __init__(self, dsn: str, limits: LoadLimits, emit: Callable[[str], None] = lambda m: None):
        self.dsn, self.limits, self.emit = dsn, limits, emit
        self.throttled = 0.0  # seconds streams spent waiting (summed over streams)
        self.waits = 0
        self.peak_active = 0
        self.peak_lag: float | None = None
        self.reasons: list[str] = []
        self.visibility = ""
        self.check_errors = 0
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._checked_at = float("-inf")
        self._over: str | None = None

    # ------------------------------------------------------------------ looking
    def _look(self) -> str | None:
        """Why the source is loaded now, or None (cached for ``check_seconds``)."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at < self.limits.check_seconds:
                return self._over
            self._checked_at = now
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = db.connect(self.dsn, autocommit=True, application_name="residency-mover-load")
                    self.visibility = visibility(self._conn)
                active, lag = measure(self._conn)
            except psycopg.Error:
                self.check_errors += 1
                self._close()
                self._over = None
                return None
            self.peak_active = max(self.peak_active, active)
            if lag is not None:
                self.peak_lag = max(self.peak_lag or 0.0, lag)
            over = []
            if self.limits.max_active and active > self.limits.max_active:
                over.append(f"{active} active connections on the source (limit {self.limits.max_active})")
            if self.limits.max_lag and lag is not None and lag > self.limits.max_lag:
                over.append(f"replication lag {lag:.1f} s (limit {self.limits.max_lag:g} s)")
            self._over = "; ".join(over) or None
            if self._over and self._over not in self.reasons and len(self.reasons) < 20:
                self.reasons.append(self._over)
            return self._over

    def _close(self) -> None:
        db.close_quietly(self._conn)
        self._conn = None

    # ------------------------------------------------------------------ waiting
    def wait(self, should_stop: Callable[[], bool] = lambda: False) -> float:
        """Return once the source is under its limits; sleeps, backing off, while it is not.
        Returns the seconds waited."""
        if not self.limits.enabled:
            return 0.0
        why = self._look()
        if why is None:
            return 0.0
        t0 = time.monotonic()
        pause = PAUSE_MIN
        self.emit(f"source loaded, copy waiting: {why}")
        while why is not None:
            if should_stop():
                raise InterruptedError("stopped while the source was loaded")
            time.sleep(pause * (0.5 + random.random() / 2))
            pause = min(self.limits.max_pause, pause * 2)
            why = self._look()
        waited = time.monotonic() - t0
        with self._lock:
            self.throttled += waited
            self.waits += 1
        self.emit(f"source load back under its limits after {waited:.1f} s; copy goes on")
        return waited

    def close(self) -> None:
        with self._lock:
            self._close()

    def report(self) -> dict[str, Any]:
        return {**self.limits.to_dict(), "throttled_seconds": round(self.throttled, 3), "waits": self.waits,
                "peak_active": self.peak_active, "peak_lag_seconds": None if self.peak_lag is None else round(self.peak_lag, 3),
                "reasons": list(self.reasons), "visibility": self.visibility, "check_errors": self.check_errors}
