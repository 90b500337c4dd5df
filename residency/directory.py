"""The directory: which region is each workspace's home. Applications route by it.

Functions take a connection and run inside the caller's transaction; they never commit, so a
directory change and its audit entry (and a move's state change) commit together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from .db import columns
from .errors import InputError, OperationError

STATUSES = ("active", "frozen", "moving")


@dataclass(frozen=True)
class DirectoryEntry:
    workspace_id: str
    region: str
    status: str
    version: int
    updated_at: datetime


_COLS = columns(DirectoryEntry)


def get(conn: psycopg.Connection[Any], workspace_id: object, *, for_update: bool = False) -> DirectoryEntry | None:
    q = sql.SQL("SELECT {} FROM residency.directory WHERE workspace_id = %s{}").format(
        _COLS, sql.SQL(" FOR UPDATE" if for_update else "")
    )
    row = conn.execute(q, (str(workspace_id),)).fetchone()
    return DirectoryEntry(*row) if row else None


def require(conn: psycopg.Connection[Any], workspace_id: object, *, for_update: bool = False) -> DirectoryEntry:
    e = get(conn, workspace_id, for_update=for_update)
    if e is None:
        raise InputError(f"unknown workspace '{workspace_id}': it is not in the directory")
    return e


def register(conn: psycopg.Connection[Any], workspace_id: object, region: str) -> DirectoryEntry:
    """Record a workspace's home; registering it again in the same region is a no-op."""
    row = conn.execute(
        sql.SQL(
            "INSERT INTO residency.directory (workspace_id, region) VALUES (%s, %s)"
            " ON CONFLICT (workspace_id) DO NOTHING RETURNING {}"
        ).format(_COLS),
        (str(workspace_id), region),
    ).fetchone()
    if row:
        return DirectoryEntry(*row)
    e = require(conn, workspace_id)
    if e.region != region:
        raise OperationError(f"workspace '{workspace_id}' is already registered in region '{e.region}'")
    return e


def set_status(conn: psycopg.Connection[Any], workspace_id: object, status: str, *, expect: tuple[str, ...] | None = None) -> DirectoryEntry:
    if status not in STATUSES:
        raise ValueError(status)
    params: list[Any] = [status, str(workspace_id)]
    if expect:
        params.append(list(expect))
    q = sql.SQL(
        "UPDATE residency.directory SET status = %s, version = version + 1, updated_at = now()"
        " WHERE workspace_id = %s{} RETURNING {}"
    ).format(sql.SQL(" AND status = ANY(%s)" if expect else ""), _COLS)
    row = conn.execute(q, params).fetchone()
    if row is None:
        e = require(conn, workspace_id)
        raise OperationError(f"workspace '{workspace_id}' is {e.status}, expected {' or '.join(expect or ())}")
    return DirectoryEntry(*row)


def move_home(conn: psycopg.Connection[Any], workspace_id: object, source: str, target: str) -> DirectoryEntry:
    """Flip the home from ``source`` to ``target``, mark it active and bump the version.

    Refuses (and changes nothing) unless the workspace's home is still ``source``.
    """
    row = conn.execute(
        sql.SQL(
            "UPDATE residency.directory SET region = %s, status = 'active', version = version + 1, updated_at = now()"
            " WHERE workspace_id = %s AND region = %s RETURNING {}"
        ).format(_COLS),
        (target, str(workspace_id), source),
    ).fetchone()
    if row is None:
        e = require(conn, workspace_id)
        raise OperationError(f"workspace '{workspace_id}' is homed in '{e.region}', not '{source}': directory unchanged")
    return DirectoryEntry(*row)


def list_entries(conn: psycopg.Connection[Any], region: str | None = None) -> list[DirectoryEntry]:
    params: list[Any] = [region] if region else []
    q = sql.SQL("SELECT {} FROM residency.directory{} ORDER BY region, workspace_id").format(
        _COLS, sql.SQL(" WHERE region = %s" if region else "")
    )
    return [DirectoryEntry(*r) for r in conn.execute(q, params)]
