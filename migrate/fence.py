"""The fence: writes to a moving workspace's rows are refused by the source database itself.

A per-database table ``residency_mover.fence`` lists fenced workspaces; a BEFORE row trigger on
every moving table computes the row's workspace (own key column, foreign-key path, configured or
polymorphic path) and refuses INSERT, UPDATE and DELETE when it is fenced; TRUNCATE is refused
while any fence exists. Other workspaces keep writing. The mover itself passes the fence only for
its own cleanup, with the fence's random token in a transaction-local setting.

Installing and lifting are idempotent and serialised per database (an advisory lock), so several
moves out of the same region can fence and unfence concurrently; triggers are removed only when
the last fence in that database is lifted.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from residency.errors import OperationError

from .sqlbuild import FENCE_SCHEMA, Builder

_FENCE_LOCK = 0x6665_6E63_65  # names the advisory lock that serialises fence DDL in a database


def new_token() -> str:
    return secrets.token_hex(16)


def install(conn: psycopg.Connection[Any], b: Builder, workspace_id: str, move_id: int, token: str, lock_timeout: str = "10s") -> datetime:
    """Fence ``workspace_id`` in this (source) database; returns when the fence took effect."""
    with conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (lock_timeout,))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_FENCE_LOCK,))
        for stmt in b.fence_setup():
            conn.execute(stmt)
        for table in b.graph.order:
            for stmt in b.fence_trigger(table):
                conn.execute(stmt)
        conn.execute(
            sql.SQL("INSERT INTO {} (workspace_id, move_id, token) VALUES (%s, %s, %s) ON CONFLICT (workspace_id) DO NOTHING").format(
                b.fence_table()
            ),
            (workspace_id, move_id, token),
        )
        row = conn.execute(
            sql.SQL("SELECT move_id, token, fenced_at FROM {} WHERE workspace_id = %s").format(b.fence_table()), (workspace_id,)
        ).fetchone()
    assert row is not None
    if row[0] != move_id:
        raise OperationError(f"workspace '{workspace_id}' is already fenced in this database by move {row[0]}")
    return row[2]


def token_of(conn: psycopg.Connection[Any], b: Builder, workspace_id: str) -> str | None:
    try:
        row = conn.execute(sql.SQL("SELECT token FROM {} WHERE workspace_id = %s").format(b.fence_table()), (workspace_id,)).fetchone()
    except psycopg.errors.UndefinedTable:
        if not conn.autocommit:
            conn.rollback()
        return None
    return row[0] if row else None


def state(conn: psycopg.Connection[Any], b: Builder, workspace_id: str) -> tuple[str, str] | None:
    """(token, fenced_at as ISO text) of the workspace's fence, or None when it is not fenced."""
    try:
        row = conn.execute(b.fence_state(), {"ws": workspace_id}).fetchone()
    except psycopg.errors.UndefinedTable:
        if not conn.autocommit:
            conn.rollback()
        return None
    return (row[0], row[1].isoformat()) if row else None


def wait_for_older_transactions(conn: psycopg.Connection[Any], since: datetime, timeout: float = 60.0) -> None:
    """Wait until no transaction that began before the fence is still running in this database:
    such a transaction (REPEATABLE READ, say) could still see the workspace unfenced."""
    deadline = time.monotonic() + timeout
    while True:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND xact_start IS NOT NULL AND xact_start < %s AND backend_type = 'client backend'",
            (since,),
        ).fetchall()
        if not rows:
            return
        if time.monotonic() > deadline:
            pids = ", ".join(str(r[0]) for r in rows[:10])
            raise OperationError(
                f"transactions older than the fence are still running in the source (pids {pids}); "
                "end them or wait, then `residency move resume`"
            )
        time.sleep(0.2)


def lift(conn: psycopg.Connection[Any], b: Builder, workspace_id: str, move_id: int | None = None) -> bool:
    """Remove this workspace's fence; when no fence is left in the database, remove the triggers,
    functions and the fence schema. Idempotent. Returns True if a fence row was removed."""
    with conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', '10s', true)")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_FENCE_LOCK,))
        exists = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (FENCE_SCHEMA,)
        ).fetchone()
        if not exists:
            return False
        q = sql.SQL("DELETE FROM {} WHERE workspace_id = %s").format(b.fence_table())
        params: list[Any] = [workspace_id]
        if move_id is not None:
            q = sql.SQL("{} AND move_id = %s").format(q)
            params.append(move_id)
        removed = conn.execute(q, params).rowcount > 0
        (left,) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(b.fence_table())).fetchone()
        if left == 0:
            for table in b.graph.order:
                if b.graph.schema.table(table) is not None:
                    for stmt in b.fence_drop(table):
                        conn.execute(stmt)
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(b.fence_schema()))
    return removed


def bypass(conn: psycopg.Connection[Any], b: Builder, token: str) -> None:
    """Inside the caller's transaction: let this connection write the fenced workspace's rows."""
    q, params = b.bypass(token)
    conn.execute(q, params)
