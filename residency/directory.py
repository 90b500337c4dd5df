"""The directory: which region is each workspace's home. Applications route by it.

Functions take a connection and run inside the caller's transaction; they never commit, so a
directory change and its audit entry (and a move's state change) commit together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from .errors import InputError, OperationError

STATUSES = ("active", "frozen", "moving")


@dataclass(frozen=True)
class DirectoryEntry:
    workspace_id: str
    region: str
    status: str
    version: int
    updated_at: datetime


_COLS = "workspace_id, region, status, version, updated_at"


def get(conn: psycopg.Connection[Any], workspace_id: object, *, for_update: bool = False) -> DirectoryEntry | None:
    q = f"SELECT {_COLS} FROM residency.directory WHERE workspace_id = %s"
    if for_update:
        q += " FOR UPDATE"
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
        f"INSERT INTO residency.directory (workspace_id, region) VALUES (%s, %s)"
        f" ON CONFLICT (workspace_id) DO NOTHING RETURNING {_COLS}",
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
    q = f"UPDATE residency.directory SET status = %s, version = version + 1, updated_at = now() WHERE workspace_id = %s"
    params: list[Any] = [status, str(workspace_id)]
    if expect:
        q += " AND status = ANY(%s)"
        params.append(list(expect))
    row = conn.execute(q + f" RETURNING {_COLS}", params).fetchone()
    if row is None:
        e = require(conn, workspace_id)
        raise OperationError(f"workspace '{workspace_id}' is {e.status}, expected {' or '.join(expect or ())}")
    return DirectoryEntry(*row)


def move_home(conn: psycopg.Connection[Any], workspace_id: object, source: str, target: str) -> DirectoryEntry:
    """Flip the home from ``source`` to ``target``, mark it active and bump the version.

    Refuses (and changes nothing) unless the workspace's home is still ``source``.
    """
    row = conn.execute(
        f"UPDATE residency.directory SET region = %s, status = 'active', version = version + 1, updated_at = now()"
        f" WHERE workspace_id = %s AND region = %s RETURNING {_COLS}",
        (target, str(workspace_id), source),
    ).fetchone()
    if row is None:
        e = require(conn, workspace_id)
        raise OperationError(f"workspace '{workspace_id}' is homed in '{e.region}', not '{source}': directory unchanged")
    return DirectoryEntry(*row)


def list_entries(conn: psycopg.Connection[Any], region: str | None = None) -> list[DirectoryEntry]:
    q = f"SELECT {_COLS} FROM residency.directory"
    params: list[Any] = []
    if region:
        q += " WHERE region = %s"
        params.append(region)
    return [DirectoryEntry(*r) for r in conn.execute(q + " ORDER BY region, workspace_id", params)]
