"""A grant's life: request → consent → granted → revoked | expired | ended (by a move).

- :func:`request`: an operator (a control-plane role holding ``residency_requester``, on behalf of
  an email) asks to see a workspace. Checked at once against the workspace's home, the scope
  (tables of the schema) and policy (:func:`residency.policy.may_access`: the operator's
  jurisdictions from regions.yaml). A refusal is recorded (``refused``) and audited. A one-time
  consent token goes to the customer through the notice channel (``residency.notices``, delivered
  to the webhook like move notices); only its SHA-256 is kept with the grant.
- :func:`approve` (a ``residency_approver``, representing the customer) or :func:`consent` (anyone
  holding the token but the role that asked) records the consent -- who, how, when, scope,
  duration -- and the database refuses a consent by the requesting role. Then :func:`grant`
  creates, in the home region's database only, a login role ``VALID UNTIL`` the expiry, with
  ``log_statement = all``, and the views of :mod:`.scope`.
- :func:`password`: the requesting role sets a fresh password and sees it once (sent to the server
  as a SCRAM verifier, so not even the server's statement log holds it).
- :func:`revoke`, :func:`sweep_expired` end grants (:func:`residency.grants.end`).

Every step is an audit entry with subject ``access/<id>``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from residency import audit, authz, directory, grants, policy
from residency.audit import Actor
from residency.catalogue import Catalogue
from residency.db import connect
from residency.errors import InputError, OperationError
from residency.grants import Grant
from residency.redaction import register
from residency.units import format_duration, parse_duration

from . import scope as scope_mod

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_OPERATOR = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Refused(OperationError):
    """A request policy forbids; recorded as ``refused``."""

    def __init__(self, grant: Grant):
        self.grant = grant
        super().__init__(f"access {grant.id} refused: {grant.state_reason}")


@dataclass(frozen=True)
class Requested:
    grant: Grant
    notice_id: int
    dsn: str
    """How to connect once consented: no password in it (see :func:`password`)."""


# --------------------------------------------------------------------------- input


def parse_scope(text: str) -> list[str]:
    """``all`` or ``table[,table...]``."""
    parts = [p.strip() for p in (text or "").split(",")]
    if parts == ["all"]:
        return parts
    bad = [p for p in parts if not _TABLE.match(p)]
    if not parts or bad:
        raise InputError(f"--scope '{text}' must be 'all' or table names separated by commas, such as messages,channels")
    return parts


def parse_operator(text: str) -> str:
    t = (text or "").strip().lower()
    if len(t) > 254 or not _OPERATOR.match(t):
        raise InputError(f"--operator '{text}' is not an email address (name@example.com)")
    return t


def parse_for(cat: Catalogue, text: str) -> int:
    secs = int(parse_duration(text, what="--for").total_seconds())
    most = cat.operator_access.max_duration_seconds if cat.operator_access else 8 * 3600
    if secs > most:
        raise InputError(f"--for {text} is longer than operator_access.max_duration ({format_duration(most)})")
    return secs


def dsn_for(region_dsn: str, role: str) -> str:
    """``postgresql://ROLE@HOST:PORT/DB`` of the region database, without any password."""
    d = conninfo_to_dict(region_dsn)
    host = d.get("host") or "localhost"
    port = f":{d['port']}" if d.get("port") else ""
    return f"postgresql://{role}@{host}{port}/{d.get('dbname') or role}"


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _graph(region_dsn: str, cat: Catalogue) -> Any:
    from residency.migrate.context import load_graph

    with connect(region_dsn, autocommit=True) as c:
        return load_graph(c, cat)


def _details(g: Grant, **extra: Any) -> dict[str, Any]:
    return {"workspace_id": g.workspace_id, "region": g.region, "operator": g.operator, "scope": list(g.scope),
            "write": g.write, "duration": format_duration(g.duration_seconds), **extra}


# --------------------------------------------------------------------------- request


def request(cp: psycopg.Connection[Any], cat: Catalogue, conns: Any, workspace_id: object, operator: str, scope: str, *,
            duration: str, reason: str, write: bool = False, deliver: bool = False, actor: Actor | None = None) -> Requested:
    """Ask for access; a refusal by policy is recorded and raised as :class:`Refused` (exit 1)."""
    ws = cat.workspace.parse_id(workspace_id)
    op = parse_operator(operator)
    tables = parse_scope(scope)
    secs = parse_for(cat, duration)
    if not (reason or "").strip():
        raise InputError("--reason is required: say why the operator needs to look")
    authz.require(cp, authz.REQUESTER, "asking for operator access")
    entry = directory.get(cp, ws)
    if entry is None:
        raise InputError(f"unknown workspace {ws}: it is not in the directory")
    if entry.status != "active":
        raise OperationError(f"workspace {ws} is {entry.status} (a move is under way); ask again once it has settled")
    decision = policy.may_access(cat, op, entry.region)
    if decision:
        scope_mod.resolve_scope(_graph(conns.region(entry.region).dsn, cat), tables)  # unknown tables: exit 2
    ttl = cat.operator_access.consent_valid_for_seconds if cat.operator_access else 86400
    token = secrets.token_urlsafe(24)
    register(token)
    grants.settle(cp)
    with cp.transaction():
        row = cp.execute(
            "INSERT INTO residency.access_grants (workspace_id, region, operator, scope, write, duration_seconds, reason, state,"
            " state_reason, requested_by, requested_for, token_sha256, token_expires_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, session_user, %s, %s, now() + make_interval(secs => %s)) RETURNING id",
            (ws, entry.region, op, tables, write, secs, reason.strip(), "pending" if decision else "refused",
             None if decision else decision.reason, (actor or Actor.current()).who,
             _sha(token) if decision else None, ttl),
        ).fetchone()
        gid = int(row[0])  # type: ignore[index]
        role = f"{grants.ROLE_PREFIX}{gid}_{secrets.token_hex(3)}"
        cp.execute("UPDATE residency.access_grants SET role_name = %s WHERE id = %s", (role, gid))
        g = grants.get(cp, gid)
        if not decision:
            audit.append(cp, "access.refused", g.subject, _details(g, why=decision.reason), actor)
        else:
            audit.append(cp, "access.requested", g.subject, _details(g, reason=g.reason, role=role,
                                                                    consent_token_expires=g.token_expires_at), actor)
            notice = _consent_notice(cp, g, token, deliver)
    grants.settle(cp)
    if not decision:
        raise Refused(g)
    return Requested(g, notice, dsn_for(conns.region(g.region).dsn, role))


def _consent_notice(cp: psycopg.Connection[Any], g: Grant, token: str, deliver: bool) -> int:
    """The customer's notice: what is asked, and the one-time token that consents to it."""
    subject = f"Support asks to see workspace {g.workspace_id} ({', '.join(g.scope)}) for {format_duration(g.duration_seconds)}"
    body = (f"{g.operator} asks for {'read and write' if g.write else 'read-only'} access to workspace {g.workspace_id}"
            f" in region {g.region}, tables: {', '.join(g.scope)}, for {format_duration(g.duration_seconds)}.\n"
            f"Reason: {g.reason}\n"
            f"To consent, run `residency access consent {token}` (valid until {g.token_expires_at:%Y-%m-%d %H:%M UTC}, once)"
            f" or ask an approver to run `residency access approve {g.id}`. Ignore this notice to refuse.")
    payload = {"event": "access.consent_requested", "access_id": g.id, "workspace_id": g.workspace_id, "region": g.region,
               "operator": g.operator, "scope": list(g.scope), "write": g.write, "duration_seconds": g.duration_seconds,
               "consent_token": token, "token_expires_at": g.token_expires_at.isoformat() if g.token_expires_at else None,
               "subject": subject, "text": body}
    row = cp.execute(
        "INSERT INTO residency.notices (event, subject, body, payload, delivery) VALUES (%s, %s, %s, %s, %s) RETURNING id",
        ("access.consent_requested", subject, body, Jsonb(payload), "pending" if deliver else "kept"),
    ).fetchone()
    return int(row[0])  # type: ignore[index]


# --------------------------------------------------------------------------- consent and grant


def approve(cp: psycopg.Connection[Any], cat: Catalogue, conns: Any, grant_id: int | str, *, actor: Actor | None = None) -> Grant:
    """Consent by a role representing the customer (``residency_approver``), then the grant."""
    ident = authz.require(cp, authz.APPROVER, "approving operator access")
    return _consent(cp, cat, conns, grants.get(cp, grant_id), "approval", ident.role, actor)


def consent(cp: psycopg.Connection[Any], cat: Catalogue, conns: Any, token: str, *, actor: Actor | None = None) -> Grant:
    """Consent by redeeming the one-time token of the customer's notice, then the grant."""
    register(token)
    row = cp.execute("SELECT id FROM residency.access_grants WHERE token_sha256 = %s", (_sha((token or "").strip()),)).fetchone()
    if row is None:
        raise InputError("unknown consent token (or already used)")
    g = grants.get(cp, row[0])
    if g.token_expires_at is not None and g.token_expires_at <= datetime.now(timezone.utc):
        raise OperationError(f"the consent token of access {g.id} expired at {g.token_expires_at:%Y-%m-%d %H:%M:%S UTC}; ask again")
    return _consent(cp, cat, conns, g, "token", authz.identity(cp).role, actor)


def _consent(cp: psycopg.Connection[Any], cat: Catalogue, conns: Any, g: Grant, via: str, who: str, actor: Actor | None) -> Grant:
    if g.state != "pending":
        raise OperationError(f"access {g.id} is {g.state}; only a pending request can be consented to")
    if g.consent is None:
        record = {"by": who, "for": (actor or Actor.current()).who, "via": via, "at": datetime.now(timezone.utc).isoformat(),
                  "scope": list(g.scope), "write": g.write, "duration_seconds": g.duration_seconds}
        grants.settle(cp)
        try:
            with cp.transaction():
                cp.execute("UPDATE residency.access_grants SET consent = %s, token_sha256 = NULL WHERE id = %s AND consent IS NULL",
                           (Jsonb(record), g.id))
                g = grants.get(cp, g.id)
                audit.append(cp, "access.consented", g.subject, _details(g, consent=record), actor)
            grants.settle(cp)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise authz.Denied("the customer's side" if via == "token" else authz.APPROVER, f"consenting to access {g.id}",
                               who) if "only the customer" not in str(exc) else OperationError(
                f"access {g.id} was requested by {g.requested_by}: only the customer's side may consent to it") from None
    return grant(cp, cat, conns, g, actor=actor)


def grant(cp: psycopg.Connection[Any], cat: Catalogue, conns: Any, g: Grant, *, actor: Actor | None = None) -> Grant:
    """Create the consented grant in the workspace's home region database only, and record it."""
    if g.consent is None or g.state != "pending" or not g.role_name:
        raise OperationError(f"access {g.id} is {g.state}{'' if g.consent else ' without consent'}; nothing to grant")
    home = directory.get(cp, g.workspace_id)
    if home is None or home.region != g.region or home.status != "active":
        grants.end(cp, conns.region(g.region).dsn, g, "cancelled", "the workspace moved or is moving since the request", actor)
        raise OperationError(f"workspace {g.workspace_id} is no longer settled in {g.region}; access {g.id} cancelled, ask again")
    dsn = conns.region(g.region).dsn
    graph = _graph(dsn, cat)
    tables = scope_mod.resolve_scope(graph, list(g.scope))
    role = g.role_name
    expires = datetime.now(timezone.utc) + timedelta(seconds=g.duration_seconds)
    views = scope_mod.plan_views(graph, tables, role, write=g.write)
    try:
        with connect(dsn, application_name="residency-access") as rc:
            with rc.transaction():
                _create_role(rc, role, expires, write=g.write)
                scope_mod.create_views(rc, graph, views, role, role, g.workspace_id)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise OperationError(f"cannot create the grant in {g.region}: {str(exc).splitlines()[0]} (the managing role needs CREATEROLE"
                             " and GRANT SET ON PARAMETER log_statement)") from None
    grants.settle(cp)
    with cp.transaction():
        cp.execute("UPDATE residency.access_grants SET state = 'granted', granted_at = now(), expires_at = %s WHERE id = %s",
                   (expires, g.id))
        g = grants.get(cp, g.id)
        audit.append(cp, "access.granted", g.subject, _details(
            g, role=role, expires_at=expires, views=[{"table": v.table, "reach": v.kind, "writable": v.writable} for v in views],
            statement_logging="log_statement=all"), actor)
    grants.settle(cp)
    return g


def _create_role(rc: psycopg.Connection[Any], role: str, expires: datetime, *, write: bool) -> None:
    r = sql.Identifier(role)
    if rc.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (grants.LOGIN_GROUP,)).fetchone() is None:
        with rc.transaction():  # a savepoint: another grant may create the group at the same moment
            try:
                rc.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(grants.LOGIN_GROUP)))
            except psycopg.errors.DuplicateObject:
                pass
    rc.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT CONNECTION LIMIT 5 VALID UNTIL {} IN ROLE {}").format(
        r, sql.Literal(expires.isoformat()), sql.Identifier(grants.LOGIN_GROUP)))
    rc.execute(sql.SQL("ALTER ROLE {} SET log_statement = 'all'").format(r))
    rc.execute(sql.SQL("ALTER ROLE {} SET search_path = {}").format(r, r))
    if not write:
        rc.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(r))


def password(cp: psycopg.Connection[Any], conns: Any, grant_id: int | str, *, actor: Actor | None = None) -> str:
    """A fresh password for a granted role, for the role that asked (or an admin) only; shown once.
    The server receives only its SCRAM verifier."""
    g = grants.get(cp, grant_id)
    ident = authz.identity(cp)
    if ident.role != g.requested_by and not ident.admin:
        raise authz.Denied(f"the role that asked ({g.requested_by})", f"getting the password of access {g.id}", ident.role)
    if g.state != "granted" or (g.expires_at and g.expires_at <= datetime.now(timezone.utc)):
        raise OperationError(f"access {g.id} is {'expired' if g.state == 'granted' else g.state}; no password to give")
    secret = secrets.token_urlsafe(24)
    register(secret)
    with connect(conns.region(g.region).dsn, autocommit=True, application_name="residency-access") as rc:
        verifier = rc.pgconn.encrypt_password(secret.encode(), (g.role_name or "").encode(), b"scram-sha-256").decode()
        rc.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(g.role_name or ""), sql.Literal(verifier)))
    grants.settle(cp)
    audit.record(cp, "access.password_issued", g.subject, _details(g, role=g.role_name), actor)
    grants.settle(cp)
    return secret


# --------------------------------------------------------------------------- ending


def revoke(cp: psycopg.Connection[Any], conns: Any, grant_id: int | str, *, actor: Actor | None = None) -> Grant:
    """End a grant now (or withdraw a pending request): its role can't log in, sessions end, views go."""
    g = grants.get(cp, grant_id)
    ident = authz.identity(cp)
    if not (ident.member_of or ident.superuser):
        raise authz.Denied(authz.REQUESTER, f"revoking access {g.id}", ident.role)
    if g.state not in grants.LIVE:
        raise OperationError(f"access {g.id} is already {g.state}")
    return grants.end(cp, conns.region(g.region).dsn, g, "revoked" if g.state == "granted" else "cancelled",
                      f"revoked by {ident.role}", actor)


def sweep_expired(cp: psycopg.Connection[Any], conns: Any, *, actor: Actor | None = None) -> list[Grant]:
    """End every grant past its expiry (the database already refuses its login: ``VALID UNTIL``)
    by dropping its role and views, withdraw requests whose consent token expired unused, and drop
    access roles in any reachable region that no live grant accounts for. The job engine calls it
    periodically; returns the grants it ended."""
    ended: list[Grant] = []
    for g in grants.list_grants(cp, limit=100_000):
        now = datetime.now(timezone.utc)
        if g.state == "granted" and g.expires_at and g.expires_at <= now:
            ended.append(grants.end(cp, conns.region(g.region).dsn, g, "expired", f"expired at {g.expires_at.isoformat()}", actor))
        elif g.state == "pending" and g.consent is None and g.token_expires_at and g.token_expires_at <= now:
            ended.append(grants.end(cp, conns.region(g.region).dsn, g, "cancelled", "no consent before the token expired", actor))
    live = {g.role_name for g in grants.list_grants(cp, limit=100_000) if g.state in grants.LIVE}
    for name, ep in conns.regions.items():
        try:
            with connect(ep.dsn, autocommit=True) as rc:
                mine = str(rc.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
                orphans = [r for (r,) in rc.execute(
                    "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (grants.ROLE_PREFIX,)).fetchall() if r not in live]
        except OperationError:
            continue  # an unreachable region is swept next time
        for role in orphans:
            if grants.drop_in_region(ep.dsn, role):
                grants.settle(cp)
                audit.record(cp, "access.orphan_dropped", f"access/{role.split('_')[2]}", {"region": name, "database": mine, "role": role}, actor)
                grants.settle(cp)
    return ended


def show(cp: psycopg.Connection[Any], grant_id: int | str) -> dict[str, Any]:
    """The grant, its consent record and its life in the audit log."""
    g = grants.get(cp, grant_id)
    entries = [{"seq": e.seq, "at": e.at.isoformat(), "actor": e.actor, "action": e.action, "details": e.details}
               for e in audit.entries(cp, g.subject)]
    return {**g.public(), "audit": entries}
