"""Connecting to PostgreSQL: one place for connection settings and transient-fault retries.

Only connection establishment is retried here (a refused or dropped connection is transient);
a failing statement is never retried blindly: callers decide whether their work is idempotent
and wrap it with :data:`transient_retry` themselves.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import psycopg
from psycopg import sql
from .errors import OperationError, first_line
from .retrying import bounded_retry

log = logging.getLogger("residency.db")

# SQLSTATE classes that mean "try again": connection exceptions (08), serialization failure and
# deadlock (40001, 40P01), admin shutdown / crash shutdown / cannot connect now (57P01-57P03).
_TRANSIENT_STATES = {"40001", "40P01", "57P01", "57P02", "57P03"}


def is_transient(exc: BaseException) -> bool:
    """True for faults worth retrying: dropped or refused connections, deadlocks, restarts."""
    if isinstance(exc, psycopg.OperationalError):
        state = getattr(exc, "sqlstate", None)
        return state is None or state.startswith("08") or state in _TRANSIENT_STATES
    if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return True
    return False


transient_retry = bounded_retry(is_transient, attempts=6, within=60, log=log)
"""Bounded, jittered retry for transient database faults. Use on idempotent units of work."""


@transient_retry
def _connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, **kwargs)


def connect(dsn: str, *, autocommit: bool = False, application_name: str = "residency", **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a connection, retrying transient failures; a final failure is one clear line."""
    from .connections import redact

    kwargs.setdefault("connect_timeout", 10)
    try:
        return _connect(dsn, autocommit=autocommit, application_name=application_name, **kwargs)
    except psycopg.OperationalError as exc:
        first = first_line(exc)
        raise OperationError(f"cannot connect to {redact(dsn)}: {first}") from exc


def columns(record: type) -> sql.Composed:
    """The column list of a dataclass whose fields mirror a table's columns, in field order,
    so a row fetched with it builds the record with ``record(*row)``."""
    return sql.SQL(", ").join(sql.Identifier(f.name) for f in dataclasses.fields(record))
