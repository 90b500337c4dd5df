"""The record of operator-access grants, and how one ends (issue 13).

A grant (``residency.access_grants`` in the control plane) is an operator's look at one workspace:
asked for, consented to by the customer's side, then a temporary login role and a schema of views
in the workspace's home region database (built by :mod:`residency.access`). This module is the
foundation under it, as :mod:`residency.moves` is under the mover: reading the record, and ending
a grant -- the role can no longer log in, its sessions are terminated, its schema and role are
dropped -- so that the mover can end a workspace's grants at cut-over (the grant does not follow
the data) without depending on the access engine.

Names: grant ``id`` gets the role and schema ``residency_access_<id>_<random>``; every such role
is a member of the NOLOGIN group ``residency_access_login`` (which holds no privilege; it lets a
server's pg_hba.conf require a password of exactly these roles).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from . import audit
from .audit import Actor
from .db import columns, connect
from .errors import InputError, OperationError

ROLE_PREFIX = "residency_access_"
LOGIN_GROUP = "residency_access_login"
STATES = ("pending", "refused", "granted", "revoked", "expired", "ended", "cancelled")
LIVE = ("pending", "granted")


@dataclass(frozen=True)
class Grant:
    id: int
    workspace_id: str
    region: str
    operator: str
    scope: list[str]
    write: bool
    duration_seconds: int
    reason: str
    state: str
    state_reason: str | None
    requested_by: str
    requested_for: str | None
    created_at: datetime
    token_sha256: str | None
    token_expires_at: datetime | None
    consent: dict[str, Any] | None
    role_name: str | None
    granted_at: datetime | None
    expires_at: datetime | None
    ended_at: datetime | None
    ended_by: str | None

    @property
    def subject(self) -> str:
        return f"access/{self.id}"

    def public(self) -> dict[str, Any]:
        """The record without the token's hash (for --json and reports)."""
        from dataclasses import asdict

        d = asdict(self)
        d.pop("token_sha256")
        return d


COLUMNS = columns(Grant)


def _select(conn: psycopg.Connection[Any], where: sql.Composable, params: list[Any], *, suffix: str = "") -> list[Grant]:
    q = sql.SQL("SELECT {} FROM residency.access_grants WHERE {} ORDER BY id DESC LIMIT %s{}").format(COLUMNS, where, sql.SQL(suffix))
    return [Grant(*r) for r in conn.execute(q, params).fetchall()]


def get(conn: psycopg.Connection[Any], grant_id: int | str, *, for_update: bool = False) -> Grant:
    """One grant by id (InputError naming a bad or unknown one)."""
    if not str(grant_id).strip().isdigit():
        raise InputError(f"access id '{grant_id}' is not a number")
    found = _select(conn, sql.SQL("id = %s"), [int(grant_id), 1], suffix=" FOR UPDATE" if for_update else "")
    if not found:
        raise InputError(f"unknown access {grant_id}")
    return found[0]


def list_grants(conn: psycopg.Connection[Any], *, active: bool = False, workspace_id: str | None = None, limit: int = 200) -> list[Grant]:
    """Newest first; ``active``: granted and not yet expired."""
    where: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if active:
        where.append(sql.SQL("state = 'granted' AND expires_at > now()"))
    if workspace_id is not None:
        where.append(sql.SQL("workspace_id = %s"))
        params.append(str(workspace_id))
    return _select(conn, sql.SQL(" AND ").join(where), [*params, limit])


# --------------------------------------------------------------------------- ending a grant in its region


def drop_in_region(region_dsn: str, role: str) -> bool:
    """Make ``role`` unable to log in, end its sessions, drop its schema and the role (idempotent).
    Returns whether the role existed. Needs CREATEROLE and ``pg_signal_backend`` (or membership)."""
    if not role.startswith(ROLE_PREFIX):
        raise ValueError(role)
    r = sql.Identifier(role)
    with connect(region_dsn, autocommit=True, application_name="residency-access") as c:
        exists = c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None
        if exists:
            c.execute(sql.SQL("ALTER ROLE {} NOLOGIN VALID UNTIL '-infinity'").format(r))
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()", (role,))
        with c.transaction():
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(r))
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(r))
    return exists


def end(conn: psycopg.Connection[Any], region_dsn: str, g: Grant, state: str, why: str, actor: Actor | None = None) -> Grant:
    """End a granted (or pending) grant: the region's role and schema first (idempotent), then the
    record and its audit entry in one control-plane transaction. ``state``: revoked, expired,
    ended (by a move) or cancelled (never granted)."""
    assert state in ("revoked", "expired", "ended", "cancelled")
    dropped = drop_in_region(region_dsn, g.role_name) if g.role_name else False
    settle(conn)
    with conn.transaction():
        cur = get(conn, g.id, for_update=True)
        if cur.state not in LIVE:
            return cur
        conn.execute(
            "UPDATE residency.access_grants SET state = %s, state_reason = %s, ended_at = now(), ended_by = session_user WHERE id = %s",
            (state, why, g.id),
        )
        audit.append(conn, f"access.{state}", g.subject, {
            "workspace_id": g.workspace_id, "region": g.region, "operator": g.operator, "role": g.role_name,
            "why": why, "role_dropped": dropped}, actor)
    settle(conn)
    return get(conn, g.id)


def settle(conn: psycopg.Connection[Any]) -> None:
    """Commit what the caller's connection holds, so each step stands on its own (a no-op in
    autocommit): a recorded refusal or an ended grant must not roll back with a later error."""
    if not conn.autocommit:
        conn.commit()


def end_for_workspace(control_dsn: str, region_dsn: str, workspace_id: str, region: str, why: str, actor: Actor | None = None) -> list[Grant]:
    """End every live grant of a workspace in ``region`` (a move's cut-over calls it); returns them."""
    out: list[Grant] = []
    with connect(control_dsn, autocommit=True) as cp:
        if cp.execute("SELECT to_regclass('residency.access_grants')").fetchone()[0] is None:  # type: ignore[index]
            return out
        try:
            live = [g for g in list_grants(cp, workspace_id=workspace_id, limit=10_000) if g.state in LIVE and g.region == region]
        except psycopg.errors.InsufficientPrivilege:
            raise OperationError(f"cannot end workspace {workspace_id}'s operator-access grants: this control-plane role may not"
                                 " read residency.access_grants; run `residency controlplane roles` as the admin") from None
        for g in live:
            out.append(end(cp, region_dsn, g, "ended", why, actor))
    return out
