"""Backups in the control plane (``residency.backups``): one row per backup, ``running`` from its
first byte, ``complete`` only after its manifest is stored. Listings show complete backups only,
so a backup killed halfway is never offered for a restore; :func:`abandoned` finds such rows for
the expiry sweep to clear."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from residency.db import columns
from residency.errors import InputError


@dataclass(frozen=True)
class BackupRecord:
    id: int
    workspace_id: str
    region: str
    aws_region: str
    bucket: str
    prefix: str
    state: str
    created_by: str
    started_at: datetime
    finished_at: datetime | None
    snapshot_at: datetime | None
    expires_at: datetime | None
    rows: int | None
    bytes: int | None
    manifest_sha256: str | None
    summary: dict[str, Any]
    error: str | None
    deleted_at: datetime | None
    deletion: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLS = columns(BackupRecord)


def start(conn: psycopg.Connection[Any], workspace_id: str, region: str, aws_region: str, bucket: str) -> int:
    """A ``running`` row (committed), its prefix ``backups/<workspace>/<id>/``; returns the id."""
    with conn.transaction():
        (bid,) = conn.execute(
            "INSERT INTO residency.backups (workspace_id, region, aws_region, bucket, prefix, state)"
            " VALUES (%s, %s, %s, %s, '', 'running') RETURNING id", (workspace_id, region, aws_region, bucket)).fetchone()
        conn.execute("UPDATE residency.backups SET prefix = %s WHERE id = %s", (prefix_of(workspace_id, bid), bid))
    return int(bid)


def prefix_of(workspace_id: str, backup_id: int) -> str:
    return f"backups/{workspace_id}/{backup_id}/"


def complete(conn: psycopg.Connection[Any], backup_id: int, *, snapshot_at: datetime, expires_at: datetime | None, rows: int,
             nbytes: int, manifest_sha256: str, summary: dict[str, Any]) -> None:
    """Inside the caller's transaction (with its audit entry)."""
    conn.execute(
        "UPDATE residency.backups SET state = 'complete', finished_at = now(), snapshot_at = %s, expires_at = %s, rows = %s,"
        " bytes = %s, manifest_sha256 = %s, summary = %s WHERE id = %s AND state = 'running'",
        (snapshot_at, expires_at, rows, nbytes, manifest_sha256, Jsonb(summary), backup_id))


def fail(conn: psycopg.Connection[Any], backup_id: int, error: str) -> None:
    with conn.transaction():
        conn.execute("UPDATE residency.backups SET state = 'failed', finished_at = now(), error = %s WHERE id = %s AND state = 'running'",
                     (error[:1000], backup_id))


def mark_deleted(conn: psycopg.Connection[Any], backup_id: int, state: str, deletion: dict[str, Any]) -> None:
    """Inside the caller's transaction: the backup's objects are gone; ``deletion`` says what went."""
    conn.execute("UPDATE residency.backups SET state = %s, deleted_at = now(), deletion = %s WHERE id = %s",
                 (state, Jsonb(deletion), backup_id))


def list_backups(conn: psycopg.Connection[Any], workspace_id: str | None = None, *, states: tuple[str, ...] = ("complete",)) -> list[BackupRecord]:
    """Backups of a workspace (every workspace when None), oldest first; complete ones by default."""
    q = sql.SQL("SELECT {} FROM residency.backups WHERE state = ANY(%s) AND (%s::text IS NULL OR workspace_id = %s) ORDER BY id").format(_COLS)
    return [BackupRecord(*r) for r in conn.execute(q, (list(states), workspace_id, workspace_id)).fetchall()]


def get_backup(conn: psycopg.Connection[Any], backup_id: object, *, complete_only: bool = True) -> BackupRecord:
    """A backup by id; :class:`InputError` (one line) when it is unknown or not complete."""
    try:
        bid = int(str(backup_id))
    except ValueError:
        raise InputError(f"backup id '{backup_id}' is not a number (see `residency backup list WS`)") from None
    row = conn.execute(sql.SQL("SELECT {} FROM residency.backups WHERE id = %s").format(_COLS), (bid,)).fetchone()
    if row is None:
        raise InputError(f"unknown backup {bid} (see `residency backup list WS`)")
    rec = BackupRecord(*row)
    if complete_only and rec.state != "complete":
        what = {"running": "is still running, or was interrupted", "failed": f"failed ({rec.error})", "expired": "expired and was deleted",
                "abandoned": "was interrupted and its objects removed"}.get(rec.state, rec.state)
        raise InputError(f"backup {bid} {what}: it cannot be used")
    return rec


def abandoned(conn: psycopg.Connection[Any], older_than: datetime) -> list[BackupRecord]:
    """``running`` rows started before ``older_than``: a backup that was killed."""
    q = sql.SQL("SELECT {} FROM residency.backups WHERE state = 'running' AND started_at < %s ORDER BY id").format(_COLS)
    return [BackupRecord(*r) for r in conn.execute(q, (older_than,)).fetchall()]


def latest(conn: psycopg.Connection[Any], workspace_id: str) -> BackupRecord | None:
    q = sql.SQL("SELECT {} FROM residency.backups WHERE state = 'complete' AND workspace_id = %s ORDER BY id DESC LIMIT 1").format(_COLS)
    row = conn.execute(q, (workspace_id,)).fetchone()
    return BackupRecord(*row) if row else None
