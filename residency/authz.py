"""Who may do what: the authenticated control-plane role, never a variable.

Identity is ``session_user`` of the control-plane connection. Four roles, created by
``residency controlplane roles`` (:func:`residency.controlplane.ensure_roles`), are enforced by
grants and row-level security in the control-plane database itself:

- ``residency_requester``: asks for moves (creates requests), cancels its own;
- ``residency_approver``: approves or cancels other roles' requests -- never its own, the
  database refuses it;
- ``residency_operator``: starts, resumes, rolls back and cleans up moves; runs the worker;
- ``residency_admin``: all of the above and the schema (a superuser counts as admin).

:func:`require` checks up front so a denied action is one line naming the role it needs
(exit 1) instead of a permission error halfway through; the grants are what really enforce it.
``$RESIDENCY_ACTOR`` only annotates (the person behind a CI job): the audit entry's who is the role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from .errors import OperationError

REQUESTER = "residency_requester"
APPROVER = "residency_approver"
OPERATOR = "residency_operator"
ADMIN = "residency_admin"
ROLES = (REQUESTER, APPROVER, OPERATOR, ADMIN)


@dataclass(frozen=True)
class Identity:
    role: str
    """``session_user``: who authenticated."""
    superuser: bool
    member_of: frozenset[str]
    """The residency roles it holds (directly or through another role)."""

    @property
    def admin(self) -> bool:
        return self.superuser or ADMIN in self.member_of

    def has(self, role: str) -> bool:
        return self.admin or role in self.member_of


_Q = """
SELECT session_user::text, coalesce(r.rolsuper, false),
       ARRAY(SELECT b.rolname::text FROM pg_roles b
             WHERE b.rolname = ANY(%s) AND pg_has_role(session_user, b.oid, 'MEMBER'))
  FROM (SELECT 1) one LEFT JOIN pg_roles r ON r.rolname = session_user
"""


def identity(conn: psycopg.Connection[Any]) -> Identity:
    """Who this connection authenticated as, and which residency roles it holds."""
    row = conn.execute(_Q, (list(ROLES),)).fetchone()
    assert row is not None
    return Identity(row[0], bool(row[1]), frozenset(row[2] or ()))


def require(conn: psycopg.Connection[Any], role: str, action: str) -> Identity:
    """The identity of ``conn`` if it holds ``role`` (or is admin); else one line, exit 1."""
    ident = identity(conn)
    if not ident.has(role):
        raise Denied(role, action, ident.role)
    return ident


def require_dsn(dsn: str, role: str, action: str) -> Identity:
    from .db import connect

    with connect(dsn, autocommit=True) as c:
        return require(c, role, action)


class Denied(OperationError):
    """An action the authenticated role may not take."""

    def __init__(self, role: str, action: str, who: str):
        self.role, self.action, self.who = role, action, who
        super().__init__(f"{action} needs role {role}; you are connected to the control plane as {who}, which does not hold it")


def denied_by_database(exc: BaseException, role: str, action: str, who: str) -> Denied | None:
    """The database's own refusal (insufficient privilege, a row-level security check) as one line."""
    if isinstance(exc, (psycopg.errors.InsufficientPrivilege,)) or getattr(exc, "sqlstate", None) == "42501":
        return Denied(role, action, who)
    return None
