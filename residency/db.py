"""Connecting to PostgreSQL: one place for connection settings and transient-fault retries.

Only connection establishment is retried here (a refused or dropped connection is transient);
a failing statement is never retried blindly: callers decide whether their work is idempotent
and wrap it with :data:`transient_retry` themselves.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

import psycopg
from psycopg import sql
from .errors import InputError, OperationError, first_line
from .retrying import bounded_retry

log = logging.getLogger("residency.db")

# SQLSTATE classes that mean "try again": connection exceptions (08), serialization failure and
# deadlock (40001, 40P01), admin shutdown / crash shutdown / cannot connect now (57P01-57P03).
_TRANSIENT_STATES = {"40001", "40P01", "57P01", "57P02", "57P03"}

# Never worth a retry: the server said who may not come in (28000 invalid authorization, 28P01
# wrong password), the database or role does not exist (3D000), or the DSN itself is wrong. libpq
# reports a failed connection attempt without a SQLSTATE, so its message is read too.
_PERMANENT_STATES = {"28000", "28P01", "3D000", "42501"}
_PERMANENT_MESSAGES = re.compile(
    r"password authentication failed|authentication failed|no pg_hba\.conf entry|role \S+ does not exist"
    r"|database \S+ does not exist|password is required|invalid connection option|missing \"=\"|invalid sslmode"
    r"|permission denied|must be superuser|invalid URI|invalid integer value",
    re.I,
)


def is_authentication_failure(exc: BaseException) -> bool:
    """True for a refusal that no retry changes: a wrong password, an unknown role or database."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = getattr(exc, "sqlstate", None)
    return state in _PERMANENT_STATES or bool(_PERMANENT_MESSAGES.search(str(exc)))


def is_transient(exc: BaseException) -> bool:
    """True for faults worth retrying: dropped or refused connections, deadlocks, restarts --
    never an authentication failure."""
    if isinstance(exc, psycopg.OperationalError):
        if is_authentication_failure(exc):
            return False
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
    """Open a connection, retrying transient failures; a final failure is one clear line, redacted:
    a DSN that is not one (libpq cannot parse it) is bad input (exit 2), an authentication failure
    is not retried."""
    from .redaction import redact, register_dsn

    register_dsn(dsn)
    kwargs.setdefault("connect_timeout", 10)
    try:
        return _connect(dsn, autocommit=autocommit, application_name=application_name, **kwargs)
    except psycopg.ProgrammingError as exc:  # libpq could not parse the DSN; it echoes it back
        raise InputError(f"invalid connection string {redact(dsn)}: {_first(exc)}") from None
    except psycopg.OperationalError as exc:
        what = "authentication failed for" if is_authentication_failure(exc) else "cannot connect to"
        raise OperationError(f"{what} {redact(dsn)}: {_first(exc)}") from None


def _first(exc: BaseException) -> str:
    from .redaction import redact

    return redact(first_line(exc))


def columns(record: type) -> sql.Composed:
    """The column list of a dataclass whose fields mirror a table's columns, in field order,
    so a row fetched with it builds the record with ``record(*row)``."""
    return sql.SQL(", ").join(sql.Identifier(f.name) for f in dataclasses.fields(record))


def close_quietly(*conns: psycopg.Connection[Any] | None) -> None:
    """Close connections that may already be broken, ignoring their errors (None: skipped)."""
    for c in conns:
        if c is None:
            continue
        try:
            c.close()
        except psycopg.Error:
            pass
