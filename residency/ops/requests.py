"""Move requests: sales or support ask for a workspace to move, someone else approves, a worker runs it.

A request names a workspace, a target region, a window (``START/DURATION``), who asked (an email)
and why. It is checked at creation against policy (:func:`residency.policy.may_move`) and against
the mover's plan (sizes, schema, conflicts); a refused request is recorded as ``refused`` with the
reason, so "why didn't my move happen?" always has an answer.

States::

    pending ──approve──▶ approved ──worker──▶ running ──▶ done | failed
       │                    │ └─window closes / too short─▶ skipped
       └──────cancel────────┴──▶ cancelled          refused (at creation)

Every action is one control-plane transaction carrying its audit entry (who asked, who approved,
who cancelled) and its notice (:mod:`residency.notify`); functions commit, and hand the notices
to the notifier only after the commit.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from residency import admission, audit, authz, directory, moves, policy
from residency.audit import Actor
from residency.catalogue import Catalogue
from residency.db import columns
from residency.errors import InputError, OperationError, ResidencyError, first_line
from residency.units import format_duration

from residency.estimates import DEFAULT_OVERHEAD, DEFAULT_THROUGHPUT, ONLINE_FENCE, Throughput, estimate, plan_sizes  # noqa: F401
from .moving import Mover, mover  # noqa: F401
from residency.windows import Window, parse_instant, parse_window  # noqa: F401

STATES = ("pending", "approved", "running", "done", "failed", "skipped", "refused", "cancelled")
LIVE = ("pending", "approved", "running")
TERMINAL = ("done", "failed", "skipped", "refused", "cancelled")
STRATEGIES = ("auto", "snapshot", "online")
"""``auto`` lets the plan choose by size (see migrate.online.plan_strategy); the request records
the strategy the plan chose."""

# --------------------------------------------------------------------------- windows, durations, emails

_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


def validate_email(text: str) -> str:
    t = (text or "").strip()
    if len(t) > 254 or not _EMAIL.match(t):
        raise InputError(f"requested-by '{text}' is not an email address (name@example.com)")
    return t.lower()


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class Request:
    id: int
    workspace_id: str
    source: str
    target: str
    strategy: str
    window_start: datetime
    window_end: datetime
    requested_by: str
    reason: str
    state: str
    state_reason: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    approved_by: str | None
    approved_at: datetime | None
    estimate: dict[str, Any]
    move_id: int | None
    worker: str | None
    lease_until: datetime | None
    attempts: int
    result: dict[str, Any]
    created_for: str | None = None
    """Who is behind the creation ($RESIDENCY_ACTOR): an annotation; created_by is the role."""
    approved_for: str | None = None

    @property
    def window(self) -> Window:
        return Window(self.window_start, self.window_end)

    @property
    def subject(self) -> str:
        return f"request:{self.id}"


_COLS = columns(Request)
_INSERT = sql.SQL(
    "INSERT INTO residency.requests (workspace_id, source, target, strategy, window_start, window_end,"
    " requested_by, reason, state, state_reason, created_by, estimate, created_for)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, session_user, %s, %s) RETURNING {}"
).format(_COLS)


def get(conn: psycopg.Connection[Any], request_id: int | str, *, for_update: bool = False) -> Request:
    try:
        rid = int(request_id)
    except (TypeError, ValueError):
        raise InputError(f"request id '{request_id}' is not a number") from None
    q = sql.SQL("SELECT {} FROM residency.requests WHERE id = %s{}").format(_COLS, sql.SQL(" FOR UPDATE" if for_update else ""))
    row = conn.execute(q, (rid,)).fetchone()
    if row is None:
        raise InputError(f"unknown request {request_id}")
    return Request(*row)


def move_and_request(conn: psycopg.Connection[Any], *, move_id: int | None = None, request_id: int | str | None = None) -> tuple[moves.MoveRecord | None, Request | None]:
    """A move and the request behind it, from either one: a request leads to its move; a move
    leads to the newest request that ran it."""
    req = get(conn, request_id) if request_id is not None else None
    if move_id is None and req is not None and req.move_id:
        move_id = req.move_id
    mv = moves.get(conn, move_id) if move_id is not None else None
    if req is None and mv is not None:
        found = conn.execute("SELECT id FROM residency.requests WHERE move_id = %s ORDER BY id DESC LIMIT 1", (mv.id,)).fetchone()
        req = get(conn, found[0]) if found else None
    return mv, req

def list_requests(conn: psycopg.Connection[Any], *, state: str | Iterable[str] | None = None, workspace_id: str | None = None, limit: int = 200) -> list[Request]:
    where: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if state:
        states = [state] if isinstance(state, str) else list(state)
        bad = [s for s in states if s not in STATES]
        if bad:
            raise InputError(f"unknown request state '{bad[0]}' (states: {', '.join(STATES)})")
        where.append(sql.SQL("state = ANY(%s)"))
        params.append(states)
    if workspace_id:
        where.append(sql.SQL("workspace_id = %s"))
        params.append(str(workspace_id))
    params.append(limit)
    q = sql.SQL("SELECT {} FROM residency.requests WHERE {} ORDER BY id DESC LIMIT %s").format(_COLS, sql.SQL(" AND ").join(where))
    return [Request(*r) for r in conn.execute(q, params)]


def notices(conn: psycopg.Connection[Any], request_id: int) -> list[dict[str, Any]]:
    """The notices kept with a request, oldest first."""
    rows = conn.execute(
        "SELECT id, event, subject, body, created_at, delivery, attempts, delivered_at, last_error"
        " FROM residency.notices WHERE request_id = %s ORDER BY id",
        (int(request_id),),
    ).fetchall()
    keys = ("id", "event", "subject", "body", "created_at", "delivery", "attempts", "delivered_at", "last_error")
    return [dict(zip(keys, r)) for r in rows]


# --------------------------------------------------------------------------- transitions (shared with the worker)


def transition(
    conn: psycopg.Connection[Any],
    request_id: int,
    to_state: str,
    *,
    expect: Iterable[str],
    reason: str | None = None,
    worker: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Request:
    """Move a request to ``to_state`` only if it is in one of ``expect`` (and, with ``worker``,
    only while that worker holds it); OperationError otherwise. Runs in the caller's transaction."""
    expect = list(expect)
    from residency.redaction import redact, redact_obj

    sets = [sql.SQL("state = %s, state_reason = %s, updated_at = now()")]
    params: list[Any] = [to_state, redact(reason) if reason is not None else None]
    for col, val in (extra or {}).items():
        sets.append(sql.SQL("{} = %s").format(sql.Identifier(col)))
        params.append(Jsonb(redact_obj(val)) if isinstance(val, dict) else redact_obj(val))
    if to_state in TERMINAL:
        sets.append(sql.SQL("lease_until = NULL"))
    where = sql.SQL("id = %s AND state = ANY(%s)")
    params += [int(request_id), expect]
    if worker is not None:
        where = where + sql.SQL(" AND worker = %s")
        params.append(worker)
    q = sql.SQL("UPDATE residency.requests SET {} WHERE {} RETURNING {}").format(sql.SQL(", ").join(sets), where, _COLS)
    row = conn.execute(q, params).fetchone()
    if row is None:
        cur = get(conn, request_id)
        held = f" (held by {cur.worker})" if worker is not None and cur.worker != worker else ""
        raise OperationError(f"request {request_id} is {cur.state}{held}; it can become {to_state} only from {', '.join(expect)}")
    return Request(*row)


# --------------------------------------------------------------------------- actions

Planner = Callable[[Catalogue, Any, str, str, str], Any]


@dataclass
class _Pending:
    """Notices written inside a transaction, handed to the notifier after it commits."""

    ids: list[int] = field(default_factory=list)


def _after_commit(notifier: Any, pending: _Pending) -> None:
    if notifier is not None and pending.ids:
        notifier.submit(pending.ids)


def _notice(conn: psycopg.Connection[Any], req: Request, event: str, notifier: Any, pending: _Pending, cat: Catalogue | None = None, **extra: Any) -> None:
    from . import notify

    nid = notify.record(conn, event, req, cat=cat, deliver=notifier is not None and notifier.enabled, **extra)
    pending.ids.append(nid)


def _default_planner() -> Planner:
    return mover().plan


def create(
    conn: psycopg.Connection[Any],
    cat: Catalogue,
    conns: Any,
    workspace_id: str,
    target: str,
    window: Window | str,
    requested_by: str,
    reason: str = "",
    *,
    strategy: str = "snapshot",
    actor: Actor | None = None,
    planner: Planner | None = None,
    throughput: Throughput | None = None,
    notifier: Any = None,
    now: datetime | None = None,
) -> Request:
    """Record a move request, checked against policy and the mover's plan; commits.

    Bad input (unknown region or workspace, a malformed window or email) raises InputError and
    records nothing. A request that is well formed but may not or cannot run (policy, plan,
    another live request, a window shorter than the estimate) is recorded as ``refused`` with
    the reason and returned; check ``.state``.
    """
    actor = actor or Actor.current()
    now = now or datetime.now(timezone.utc)
    ws = cat.workspace.parse_id(workspace_id)  # the same rule as the mover's, before any query
    cat.region(target)
    if strategy not in STRATEGIES:
        raise InputError(f"strategy '{strategy}' is not one of {', '.join(STRATEGIES)}")
    win = parse_window(window, now) if isinstance(window, str) else window
    if win.end <= now:
        raise InputError(f"window {win} has already closed")
    email = validate_email(requested_by)
    reason = (reason or "").strip()
    if len(reason) > 2000:
        raise InputError("reason is longer than 2000 characters")

    ident = authz.require(conn, authz.REQUESTER, "creating a move request")
    home = directory.require(conn, ws)
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()  # the lookup above opened a transaction; the record gets its own
    refusal: str | None = None
    est: dict[str, Any] = {}
    adm = admission.check(conn, cat, ws, target)  # the mover's plan checks the same, in the same words
    if not adm:
        refusal = adm.refusals[0]
    if refusal is None:
        other = conn.execute(
            "SELECT id, state FROM residency.requests WHERE workspace_id = %s AND state = ANY(%s) ORDER BY id LIMIT 1",
            (ws, list(LIVE)),
        ).fetchone()
        if other:
            refusal = f"workspace '{ws}' already has request {other[0]} ({other[1]})"
    if refusal is None:
        try:
            plan = (planner or _default_planner())(cat, conns, ws, target, strategy)
            if strategy == "auto":
                strategy = getattr(plan, "strategy", None) or "snapshot"
            est = estimate(plan_sizes(plan), strategy, throughput)
        except ResidencyError as exc:
            refusal = f"plan: {first_line(exc)}"
    if refusal is None and est and est["seconds"] > win.duration.total_seconds():
        refusal = (
            f"the window ({format_duration(win.duration)}) is shorter than the move's estimated "
            f"{format_duration(est['seconds'])}; ask for a longer window"
        )
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()

    if refusal is not None:
        from residency.redaction import redact

        refusal = redact(refusal)
    state = "refused" if refusal else "pending"
    pending = _Pending()
    with conn.transaction():
        try:
            with conn.transaction():
                row = conn.execute(
                    _INSERT, (ws, home.region, target, strategy, win.start, win.end, email, reason, state, refusal, Jsonb(est), _for(actor, ident))
                ).fetchone()
        except psycopg.errors.UniqueViolation:
            # another request for this workspace was recorded between our check and now
            row = conn.execute(
                _INSERT, (ws, home.region, target, strategy, win.start, win.end, email, reason,
                          "refused", f"workspace '{ws}' already has a live request", Jsonb(est), _for(actor, ident)),
            ).fetchone()
        assert row is not None
        req = Request(*row)
        audit.append(
            conn,
            "request.refuse" if req.state == "refused" else "request.create",
            req.subject,
            {
                "workspace_id": ws, "source": req.source, "target": target, "strategy": strategy,
                "window": str(win), "requested_by": email, "reason": reason,
                **({"refused": req.state_reason} if req.state == "refused" else {}),
                **({"estimated_seconds": est.get("seconds")} if est else {}),
            },
            actor,
        )
        _notice(conn, req, "refused" if req.state == "refused" else "created", notifier, pending, cat)
    _after_commit(notifier, pending)
    return req


def approve(conn: psycopg.Connection[Any], cat: Catalogue, request_id: int | str, *, actor: Actor | None = None, notifier: Any = None) -> Request:
    """Approve a pending request (policy is asked again: the catalogue may have changed); commits.

    Nobody approves their own request: the approver must differ from who asked and who recorded it.
    """
    actor = actor or Actor.current()
    pending = _Pending()
    ident = authz.require(conn, authz.APPROVER, "approving a move request")
    seen = get(conn, request_id)  # unlocked: a row the database hides from this approver is still explained
    _not_your_own(seen, ident, actor)
    with conn.transaction():
        req = get(conn, request_id, for_update=True)
        if req.state != "pending":
            raise OperationError(f"request {req.id} is {req.state}; only a pending request can be approved")
        _not_your_own(req, ident, actor)
        d = policy.may_move(cat, req.source, req.target)
        if not d:
            raise OperationError(f"request {req.id} can no longer be approved: policy: {d.reason}")
        try:
            with conn.transaction():
                req = transition(conn, req.id, "approved", expect=("pending",),
                                 extra={"approved_by": ident.role, "approved_for": _for(actor, ident)})
        except psycopg.errors.InsufficientPrivilege:  # row-level security: the database's own refusal
            raise OperationError(f"request {req.id} was recorded by {req.created_by}; someone else must approve it"
                                 " (refused by the control plane)") from None
        conn.execute("UPDATE residency.requests SET approved_at = now() WHERE id = %s", (req.id,))
        req = get(conn, req.id)
        audit.append(conn, "request.approve", req.subject, {"workspace_id": req.workspace_id, "target": req.target, "window": str(req.window), "requested_by": req.requested_by}, actor)
        _notice(conn, req, "approved", notifier, pending, cat)
    _after_commit(notifier, pending)
    return req


def cancel(conn: psycopg.Connection[Any], request_id: int | str, reason: str = "", *, actor: Actor | None = None, notifier: Any = None) -> Request:
    """Cancel a pending or approved request; a running one is the mover's to roll back. Commits."""
    actor = actor or Actor.current()
    pending = _Pending()
    ident = authz.identity(conn)
    seen = get(conn, request_id)
    if not (ident.has(authz.APPROVER) or (authz.REQUESTER in ident.member_of and seen.created_by == ident.role)):
        raise authz.Denied(authz.APPROVER, "cancelling another role's move request", ident.role)
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE and not conn.autocommit:
        conn.commit()
    with conn.transaction():
        req = get(conn, request_id, for_update=True)
        if req.state == "running":
            hint = f"; roll its move back with `residency move rollback {req.move_id}`" if req.move_id else ""
            raise OperationError(f"request {req.id} is running{hint}")
        if req.state not in ("pending", "approved"):
            raise OperationError(f"request {req.id} is {req.state}; only a pending or approved request can be cancelled")
        why = (reason or "").strip() or f"cancelled by {ident.role}" + (f" for {_for(actor, ident)}" if _for(actor, ident) else "")
        req = transition(conn, req.id, "cancelled", expect=("pending", "approved"), reason=why)
        audit.append(conn, "request.cancel", req.subject, {"workspace_id": req.workspace_id, "reason": why}, actor)
        _notice(conn, req, "cancelled", notifier, pending)
    _after_commit(notifier, pending)
    return req


def _for(actor: Actor, ident: "authz.Identity") -> str | None:
    """The annotation worth keeping: who the actor says it is, when that is not the role."""
    who = (actor.who or "").strip()
    return who if who and who != ident.role else None


def _not_your_own(req: Request, ident: "authz.Identity", actor: Actor) -> None:
    """Nobody approves their own request: the authenticated roles are compared (the database
    refuses it too). Only when one superuser login does everything (a sandbox, a test) are the
    annotations all that tell people apart, and then they are compared instead."""
    if req.created_by != ident.role:
        return
    if not ident.superuser:
        raise OperationError(f"request {req.id} was recorded by {req.created_by}; someone else must approve it")
    who = (actor.who or "").strip().lower()
    if who and who in (req.requested_by.lower(), (req.created_for or "").strip().lower()):
        raise OperationError(f"request {req.id} was asked for by {actor.who}; someone else must approve it")


# --------------------------------------------------------------------------- CSV import

CSV_COLUMNS = ("workspace", "to", "window", "requested_by")
CSV_OPTIONAL = ("reason", "strategy")
CSV_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ImportResult:
    line: int
    workspace: str
    ok: bool
    request_id: int | None
    state: str
    message: str


def import_csv(
    conn: psycopg.Connection[Any],
    cat: Catalogue,
    conns: Any,
    path: str | os.PathLike[str],
    *,
    actor: Actor | None = None,
    planner: Planner | None = None,
    throughput: Throughput | None = None,
    notifier: Any = None,
    now: datetime | None = None,
) -> list[ImportResult]:
    """Create one request per CSV row (header: workspace,to,window,requested_by[,reason,strategy]).

    Each row stands alone: a bad row gets its own error line and the others go ahead. ``ok`` is
    True for a row recorded as pending; refused rows are recorded and reported with why.
    """
    from residency.files import read_text

    p = Path(path)
    text = read_text(p, max_bytes=CSV_MAX_BYTES, what="CSV file").removeprefix("\ufeff")
    reader = csv.DictReader(text.splitlines(keepends=True))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise InputError(f"{p}:1: header must have {', '.join(CSV_COLUMNS)} (optional: {', '.join(CSV_OPTIONAL)}); missing {', '.join(missing)}")
    unknown = [h for h in header if h not in CSV_COLUMNS + CSV_OPTIONAL]
    if unknown:
        raise InputError(f"{p}:1: unknown column '{unknown[0]}' (columns: {', '.join(CSV_COLUMNS + CSV_OPTIONAL)})")
    reader.fieldnames = header
    results: list[ImportResult] = []
    actor = actor or Actor.current()
    line = 1
    for row in reader:
        line = reader.line_num
        vals = {k: (v or "").strip() for k, v in row.items() if k is not None}
        ws = vals.get("workspace", "")
        if None in row:
            results.append(ImportResult(line, ws, False, None, "error", f"{p}:{line}: more fields than the header has"))
            continue
        if not any(vals.values()):
            continue
        try:
            for c in CSV_COLUMNS:
                if not vals.get(c):
                    raise InputError(f"'{c}' is empty")
            req = create(
                conn, cat, conns, ws, vals["to"], vals["window"], vals["requested_by"], vals.get("reason", ""),
                strategy=vals.get("strategy") or "auto", actor=actor, planner=planner, throughput=throughput,
                notifier=notifier, now=now,
            )
        except ResidencyError as exc:
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                conn.rollback()
            results.append(ImportResult(line, ws, False, None, "error", f"{p}:{line}: {exc}"))
            continue
        if req.state == "refused":
            results.append(ImportResult(line, ws, False, req.id, req.state, f"{p}:{line}: request {req.id} refused: {req.state_reason}"))
        else:
            results.append(ImportResult(line, ws, True, req.id, req.state, f"{p}:{line}: request {req.id} {req.state}: {ws} {req.source} → {req.target} in {req.window}"))
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
    return results
