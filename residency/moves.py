"""The moves table: one row per workspace move, the mover's persistent memory.

A move is a state machine (``planned → fenced → copied → verified → cut_over → cleaned``, plus
``rolled_back`` and ``failed``). Every transition is a conditional UPDATE, so two processes can
never both advance the same move, and a partial unique index lets only one open move exist per
workspace. ``failed`` keeps ``resume_from`` (the state the move was in) so ``move resume`` knows
where to go on. Functions run inside the caller's transaction and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .db import columns
from .errors import InputError, OperationError
from .redaction import redact as _redact, redact_obj as _redact_obj

STATES = ("planned", "fenced", "copied", "verified", "cut_over", "cleaned", "rolled_back", "failed")
CLOSED = ("cleaned", "rolled_back")


@dataclass(frozen=True)
class MoveRecord:
    id: int
    workspace_id: str
    source: str
    target: str
    strategy: str
    state: str
    resume_from: str | None
    error: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    plan: dict[str, Any]
    checkpoints: dict[str, Any]
    report: dict[str, Any]
    lease_owner: str | None
    lease_until: datetime | None


_COLS = columns(MoveRecord)


def create(conn: psycopg.Connection[Any], workspace_id: object, source: str, target: str, strategy: str, plan: dict[str, Any], created_by: str) -> MoveRecord:
    """Insert a new move in state ``planned``; refused if the workspace already has an open move."""
    try:
        with conn.transaction():  # a savepoint, so the caller's transaction survives a refusal
            row = conn.execute(
                sql.SQL(
                    "INSERT INTO residency.moves (workspace_id, source, target, strategy, state, plan, created_by)"
                    " VALUES (%s, %s, %s, %s, 'planned', %s, %s) RETURNING {}"
                ).format(_COLS),
                (str(workspace_id), source, target, strategy, Jsonb(_redact_obj(plan)), created_by),
            ).fetchone()
    except psycopg.errors.UniqueViolation:
        other = open_move_for(conn, workspace_id)
        which = f"move {other.id} ({other.state})" if other else "another move"
        raise OperationError(f"workspace '{workspace_id}' already has an open move: {which}") from None
    assert row is not None
    return MoveRecord(*row)


def get(conn: psycopg.Connection[Any], move_id: int, *, for_update: bool = False) -> MoveRecord:
    q = sql.SQL("SELECT {} FROM residency.moves WHERE id = %s{}").format(_COLS, sql.SQL(" FOR UPDATE" if for_update else ""))
    row = conn.execute(q, (int(move_id),)).fetchone()
    if row is None:
        raise InputError(f"unknown move {move_id}")
    return MoveRecord(*row)


def open_move_for(conn: psycopg.Connection[Any], workspace_id: object) -> MoveRecord | None:
    row = conn.execute(
        sql.SQL("SELECT {} FROM residency.moves WHERE workspace_id = %s AND state <> ALL(%s) ORDER BY id DESC LIMIT 1").format(_COLS),
        (str(workspace_id), list(CLOSED)),
    ).fetchone()
    return MoveRecord(*row) if row else None


def latest_since(conn: psycopg.Connection[Any], workspace_id: object, target: str, since: datetime) -> MoveRecord | None:
    """The workspace's newest move to ``target`` created at or after ``since`` (a request's move)."""
    row = conn.execute(
        sql.SQL(
            "SELECT {} FROM residency.moves WHERE workspace_id = %s AND target = %s AND created_at >= %s ORDER BY id DESC LIMIT 1"
        ).format(_COLS),
        (str(workspace_id), target, since),
    ).fetchone()
    return MoveRecord(*row) if row else None


def list_moves(conn: psycopg.Connection[Any], *, workspace_id: object | None = None, open_only: bool = False, limit: int = 100) -> list[MoveRecord]:
    where: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if workspace_id is not None:
        where.append(sql.SQL("workspace_id = %s"))
        params.append(str(workspace_id))
    if open_only:
        where.append(sql.SQL("state <> ALL(%s)"))
        params.append(list(CLOSED))
    params.append(limit)
    q = sql.SQL("SELECT {} FROM residency.moves WHERE {} ORDER BY id DESC LIMIT %s").format(_COLS, sql.SQL(" AND ").join(where))
    return [MoveRecord(*r) for r in conn.execute(q, params)]


def transition(conn: psycopg.Connection[Any], move_id: int, to_state: str, *, expect: Iterable[str], error: str | None = None) -> MoveRecord:
    """Move to ``to_state`` only if the move is in one of ``expect``; otherwise OperationError.

    Going to ``failed`` records the state it failed in as ``resume_from``; leaving ``failed``
    clears it. ``error`` is kept for ``failed`` and cleared otherwise.
    """
    if to_state not in STATES:
        raise ValueError(to_state)
    expect = list(expect)
    row = conn.execute(
        sql.SQL(
            "UPDATE residency.moves SET state = %s,"
            " resume_from = CASE WHEN %s = 'failed' THEN (CASE WHEN state = 'failed' THEN resume_from ELSE state END) ELSE NULL END,"
            " error = %s, updated_at = now()"
            " WHERE id = %s AND state = ANY(%s) RETURNING {}"
        ).format(_COLS),
        (to_state, to_state, _redact(error) if to_state == "failed" and error is not None else None, int(move_id), expect),
    ).fetchone()
    if row is None:
        cur = get(conn, move_id)
        raise OperationError(f"move {move_id} is {cur.state}; it can go to {to_state} only from {', '.join(expect)}")
    return MoveRecord(*row)


def _merge(conn: psycopg.Connection[Any], move_id: int, column: str, patch: dict[str, Any]) -> None:
    conn.execute(
        sql.SQL("UPDATE residency.moves SET {col} = {col} || %s, updated_at = now() WHERE id = %s").format(col=sql.Identifier(column)),
        (Jsonb(_redact_obj(patch)), int(move_id)),
    )


def checkpoint(conn: psycopg.Connection[Any], move_id: int, patch: dict[str, Any]) -> None:
    """Merge keys into the move's checkpoints (top-level keys replace)."""
    _merge(conn, move_id, "checkpoints", patch)


def update_report(conn: psycopg.Connection[Any], move_id: int, patch: dict[str, Any]) -> None:
    """Merge keys into the move's report (top-level keys replace)."""
    _merge(conn, move_id, "report", patch)


def claim(conn: psycopg.Connection[Any], move_id: int, owner: str, seconds: float) -> bool:
    """Take (or renew) the move's lease for ``seconds``; False if another live owner holds it.

    A process runs a move only while it holds the lease; a crashed process's lease expires and
    another may resume the move.
    """
    row = conn.execute(
        "UPDATE residency.moves SET lease_owner = %s, lease_until = now() + make_interval(secs => %s)"
        " WHERE id = %s AND (lease_owner IS NULL OR lease_owner = %s OR lease_until < now()) RETURNING id",
        (owner, seconds, int(move_id), owner),
    ).fetchone()
    return row is not None


def release(conn: psycopg.Connection[Any], move_id: int, owner: str) -> None:
    conn.execute(
        "UPDATE residency.moves SET lease_owner = NULL, lease_until = NULL WHERE id = %s AND lease_owner = %s",
        (int(move_id), owner),
    )


def take_over(conn: psycopg.Connection[Any], move_id: int, old_owner: str, owner: str, seconds: float) -> bool:
    """Take the lease from ``old_owner`` (a process known to be dead) only if it still holds it."""
    row = conn.execute(
        "UPDATE residency.moves SET lease_owner = %s, lease_until = now() + make_interval(secs => %s)"
        " WHERE id = %s AND lease_owner = %s RETURNING id",
        (owner, seconds, int(move_id), old_owner),
    ).fetchone()
    return row is not None
