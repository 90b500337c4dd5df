"""The library entry points the CLI (and later a request worker) call.

``plan_move`` → ``start_move`` (plan, record, then drive through cut-over) → ``cleanup_move``
after the grace period; ``resume_move`` after any crash or failure; ``rollback_move`` before
cut-over. The state machine lives in residency.moves; the lease makes sure one process drives
a move at a time.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from residency import admission, anchor, audit, authz, db, directory, moves
from residency.audit import Actor
from residency.catalogue import Catalogue
from residency.connections import Connections
from residency.errors import InputError, OperationError, ResidencyError, first_line
from residency.evidence import section_hash
from residency.moves import MoveRecord

from . import faults, finish, objects, strategies as strategy_mod
from .context import MoveContext, make_context
from .lease import Lease
from .phases import details, subject
from .plan import MovePlan, plan_move
from .progress import Progress, ProgressFn
from .verify import VerifyResult, verify_tables

PRE_CUTOVER = ("planned", "fenced", "copied", "verified")

__all__ = ["plan_move", "start_move", "resume_move", "rollback_move", "cleanup_move", "move_report", "move_status", "verify_workspace"]


class MoveRefused(OperationError):
    """The plan refused the move; the message lists every refusal, one per line."""

    def __init__(self, plan: MovePlan):
        self.plan = plan
        self.refusals = list(plan.refusals)
        if len(self.refusals) == 1:
            super().__init__(f"move refused: {self.refusals[0]}")
        else:
            super().__init__(f"move refused ({len(self.refusals)} refusals):\n" + "\n".join(f"  - {r}" for r in self.refusals))


class UnknownWorkspace(MoveRefused, InputError):
    """A move of a workspace that does not exist: bad input (exit 2), nothing changed."""

    exit_code = 2


def unknown_workspace(plan: MovePlan) -> str | None:
    """The refusal saying the workspace does not exist (bad input, exit 2), if the plan has one."""
    return next((r for r in plan.refusals if r.startswith("unknown workspace ")), None)


def _one_line(exc: BaseException) -> str:
    """Our errors as they are; anything else with its class name in front."""
    first = first_line(exc)
    return first if isinstance(exc, ResidencyError) or not str(exc).strip() else f"{type(exc).__name__}: {first}"


def _drive(ctx: MoveContext, rec: MoveRecord, stop_after: str | None) -> MoveRecord:
    strat = strategy_mod.get(rec.strategy)
    lease = Lease(ctx.conns.control_dsn, rec.id).acquire()
    ctx.should_stop = lambda: lease.lost
    try:
        with db.connect(ctx.conns.control_dsn, autocommit=True) as cp:
            rec = moves.get(cp, rec.id)  # fresh, under the lease
        while rec.state in strat.phases and rec.state != stop_after:
            state = rec.state
            ctx.emit(Progress("state", state, message=f"move {rec.id}: {state} → next phase"))
            try:
                rec = strat.phases[state](ctx, rec)
            except (KeyboardInterrupt, InterruptedError) as exc:
                raise OperationError(f"move {rec.id} interrupted in {state}: {exc or 'stopped'}; run `residency move resume {rec.id}`") from exc
            except Exception as exc:
                reason = _one_line(exc)
                with db.connect(ctx.conns.control_dsn) as cp:
                    with cp.transaction():
                        cur = moves.get(cp, rec.id, for_update=True)
                        if cur.state not in ("failed", "cleaned", "rolled_back", "cut_over"):
                            moves.transition(cp, rec.id, "failed", expect=[cur.state], error=reason)
                            audit.append(cp, "move.failed", subject(rec), details(rec, state=cur.state, error=reason), ctx.actor)
                raise OperationError(f"move {rec.id} failed in {state}: {reason}; fix the cause, then `residency move resume {rec.id}` (or `move rollback {rec.id}`)") from exc
            ctx.emit(Progress("state", rec.state, message=f"move {rec.id}: {rec.state}"))
            faults.point(rec.state)
    finally:
        lease.release()
    if rec.state in MOVE_ENDS:
        _anchor(ctx, rec)
    return rec


MOVE_ENDS = ("cut_over", "cleaned", "rolled_back")


def _anchor(ctx: MoveContext, rec: MoveRecord) -> None:
    """At the end of a move, a signed digest of the audit chain (when an anchor is configured).
    The move is done either way: a digest that cannot be written is reported, not fatal, and
    `residency audit digest` (or the next move, or the worker) covers the entries later."""
    cfg = ctx.conns.anchor
    if cfg is None:
        return
    try:
        with db.connect(ctx.conns.control_dsn, autocommit=True) as cp:
            w = anchor.write_digest(cp, cfg)
        ctx.emit(Progress("state", rec.state, message=f"audit digest {w.number} signed: entries {w.first_seq}..{w.last_seq}"))
    except Exception as exc:  # noqa: BLE001 - the move itself succeeded; say so and go on
        ctx.emit(Progress("state", rec.state, message=f"warning: audit digest not written ({_one_line(exc)}); run `residency audit digest`"))


def start_move(
    cat: Catalogue,
    conns: Connections,
    workspace_id: object,
    target: str,
    *,
    strategy: str = "snapshot",
    actor: Actor | None = None,
    progress: ProgressFn | None = None,
    stop_after: str | None = None,
    copy_options: Any = None,
    plan: MovePlan | None = None,
) -> MoveRecord:
    """Plan, record and run a move through cut-over (or until ``stop_after`` state is reached).
    Raises :class:`MoveRefused` (nothing changed) if the plan refuses.

    ``plan``: one :func:`plan_move` already made for this workspace and target (the CLI showed
    it to confirm; the worker sized the window with it), used as it is instead of planning
    again. What can change between plan and start, the control plane's answer (home, target's
    status, policy, an open move), is checked again in the transaction that records the move."""
    actor = actor or Actor.current()
    authz.require_dsn(conns.control_dsn, authz.OPERATOR, "starting a move")
    if plan is None:
        plan = plan_move(cat, conns, workspace_id, target, strategy)
    elif (plan.workspace_id, plan.target) != (cat.workspace.parse_id(workspace_id), target):
        raise InputError(f"the plan given is for workspace {plan.workspace_id} to {plan.target}, not {workspace_id} to {target}")
    if unknown_workspace(plan):
        raise UnknownWorkspace(plan)
    if not plan.ok:
        raise MoveRefused(plan)
    assert plan.source is not None
    strategy = plan.strategy  # "auto" resolved by the plan
    with db.connect(conns.control_dsn) as cp:
        with cp.transaction():
            now = admission.check(cp, cat, plan.workspace_id, target)  # may have changed since the plan
            if now.source is not None and now.source != plan.source:
                now.refusals.append(f"workspace '{plan.workspace_id}' is now homed in '{now.source}', not '{plan.source}' as planned: plan again")
            if now.refusals:
                raise MoveRefused(replace(plan, refusals=now.refusals))
            try:
                directory.set_status(cp, plan.workspace_id, "moving", expect=("active",))
            except OperationError as exc:
                raise OperationError(f"move refused: {exc}") from None
            rec = moves.create(cp, plan.workspace_id, plan.source, target, strategy, plan.to_dict(), authz.identity(cp).role)
            audit.append(cp, "move.planned", subject(rec), details(rec, rows=plan.total_rows, bytes=plan.total_bytes, objects=plan.object_count,
                                                                        plan_sha256=section_hash(plan.to_dict())), actor)
    faults.point("planned")
    ctx = make_context(cat, conns, plan.workspace_id, plan.source, target, actor=actor, progress=progress, move_id=rec.id)
    ctx.copy_options = copy_options  # migrate.chunks.CopyOptions: streams, chunk size, rate (None: defaults)
    return _drive(ctx, rec, stop_after)


def _get(conns: Connections, move_id: int) -> MoveRecord:
    with db.connect(conns.control_dsn, autocommit=True) as cp:
        return moves.get(cp, move_id)


def resume_move(
    cat: Catalogue,
    conns: Connections,
    move_id: int,
    *,
    actor: Actor | None = None,
    progress: ProgressFn | None = None,
    stop_after: str | None = None,
    copy_options: Any = None,
) -> MoveRecord:
    """Continue a move from its last recorded state (after a crash, a kill, or a failure)."""
    actor = actor or Actor.current()
    authz.require_dsn(conns.control_dsn, authz.OPERATOR, "resuming a move")
    rec = _get(conns, move_id)
    if rec.state in ("cleaned", "rolled_back"):
        raise OperationError(f"move {move_id} is {rec.state}; nothing to resume")
    if (rec.state == "failed" and (rec.resume_from or "planned") == "cut_over") or (rec.state == "cut_over" and rec.checkpoints.get("deletion")):
        # a cleanup that began, or a move that failed after cut-over: finish it without a grace period
        return cleanup_move(cat, conns, move_id, grace=timedelta(0), actor=actor, progress=progress)
    ctx = make_context(cat, conns, rec.workspace_id, rec.source, rec.target, actor=actor, progress=progress, move_id=rec.id)
    ctx.copy_options = copy_options
    if rec.state == "failed":
        was = rec.resume_from or "planned"
        with db.connect(conns.control_dsn) as cp:
            with cp.transaction():
                rec = moves.transition(cp, move_id, was, expect=["failed"])
                audit.append(cp, "move.resumed", subject(rec), details(rec, state=was), actor)
    elif rec.state in PRE_CUTOVER:
        with db.connect(conns.control_dsn) as cp:
            with cp.transaction():
                audit.append(cp, "move.resumed", subject(rec), details(rec, state=rec.state), actor)
    elif rec.state == "cut_over":
        # already done up to cut-over; cleanup waits for its grace period. What the strategy set up
        # and removes after cut-over (online: replication) goes now if a crash left it behind.
        strat = strategy_mod.get(rec.strategy)
        if strat.teardown is not None:
            strat.teardown(ctx, rec)
        return rec
    return _drive(ctx, rec, stop_after)


def rollback_move(cat: Catalogue, conns: Connections, move_id: int, *, actor: Actor | None = None, progress: ProgressFn | None = None) -> MoveRecord:
    """Before cut-over: remove the target copy and lift the fence. After: refuse, and say how to move back."""
    actor = actor or Actor.current()
    authz.require_dsn(conns.control_dsn, authz.OPERATOR, "rolling back a move")
    rec = _get(conns, move_id)
    if rec.state == "rolled_back":
        return rec
    effective = rec.resume_from if rec.state == "failed" else rec.state
    if effective in ("cut_over", "cleaned"):
        raise OperationError(
            f"move {move_id} has already cut over to {rec.target}; it cannot be rolled back. "
            f"Move the workspace back instead: residency move start {rec.workspace_id} --to {rec.source}"
        )
    ctx = make_context(cat, conns, rec.workspace_id, rec.source, rec.target, actor=actor, progress=progress, move_id=rec.id)
    with Lease(conns.control_dsn, move_id) as lease:
        ctx.should_stop = lambda: lease.lost
        rec = _get(conns, move_id)
        strat = strategy_mod.get(rec.strategy)
        if strat.teardown is not None:  # e.g. online: publication, subscription and slot go first
            strat.teardown(ctx, rec)
        rec = finish.rollback(ctx, rec)
    _anchor(ctx, rec)
    return rec


def cleanup_move(
    cat: Catalogue,
    conns: Connections,
    move_id: int,
    *,
    grace: timedelta = timedelta(days=7),
    actor: Actor | None = None,
    progress: ProgressFn | None = None,
) -> MoveRecord:
    """After the grace period: delete the source copy and record the deletion in the report."""
    actor = actor or Actor.current()
    authz.require_dsn(conns.control_dsn, authz.OPERATOR, "cleaning up a move")
    rec = _get(conns, move_id)
    if rec.state == "cleaned":
        return rec
    effective = rec.resume_from if rec.state == "failed" else rec.state
    if effective != "cut_over":
        raise OperationError(f"move {move_id} is {rec.state}{f' (in {effective})' if effective != rec.state else ''}; only a cut-over move can be cleaned up")
    ctx = make_context(cat, conns, rec.workspace_id, rec.source, rec.target, actor=actor, progress=progress, move_id=rec.id)
    with Lease(conns.control_dsn, move_id) as lease:
        ctx.should_stop = lambda: lease.lost
        rec = _get(conns, move_id)
        if rec.state == "failed":
            with db.connect(conns.control_dsn) as cp:
                with cp.transaction():
                    rec = moves.transition(cp, move_id, "cut_over", expect=["failed"])
                    audit.append(cp, "move.resumed", subject(rec), details(rec, state="cut_over"), actor)
        strat = strategy_mod.get(rec.strategy)
        if strat.teardown is not None:  # e.g. online replication left by a crash after cut-over
            strat.teardown(ctx, rec)
        try:
            rec = finish.cleanup(ctx, rec, grace)
            _anchor(ctx, rec)
            return rec
        except finish.CleanupRefused:
            raise
        except OperationError as exc:
            _fail(conns, rec, exc, actor)
            raise
        except Exception as exc:
            _fail(conns, rec, exc, actor)
            raise OperationError(f"cleanup of move {move_id} failed: {_one_line(exc)}; run `residency move resume {move_id}`") from exc


def _fail(conns: Connections, rec: MoveRecord, exc: BaseException, actor: Actor) -> None:
    with db.connect(conns.control_dsn) as cp:
        with cp.transaction():
            cur = moves.get(cp, rec.id, for_update=True)
            if cur.state == "cut_over":
                moves.transition(cp, rec.id, "failed", expect=["cut_over"], error=_one_line(exc))
                audit.append(cp, "move.failed", subject(rec), details(rec, state="cut_over", error=_one_line(exc)), actor)


def move_status(conns: Connections, move_id: int | None = None, *, open_only: bool = False) -> list[MoveRecord]:
    with db.connect(conns.control_dsn, autocommit=True) as cp:
        if move_id is not None:
            return [moves.get(cp, move_id)]
        return moves.list_moves(cp, open_only=open_only, limit=50)


def move_report(conns: Connections, move_id: int) -> dict[str, Any]:
    from .report import build

    return build(_get(conns, move_id))


def verify_workspace(cat: Catalogue, conns: Connections, workspace_id: object, a: str, b: str, *, objects_too: bool = True) -> VerifyResult:
    """Compare a workspace's rows (and objects) in regions ``a`` and ``b``."""
    workspace_id = cat.workspace.parse_id(workspace_id)  # bad input before any connection
    cat.region(a)
    cat.region(b)
    ctx = make_context(cat, conns, workspace_id, a, b)
    res = verify_tables(ctx.src.dsn, ctx.dst.dsn, ctx.builder, ctx.workspace_id, a, b)
    if objects_too:
        oc = objects.compare(ctx.src, ctx.dst, cat.environment.buckets, cat.workspace.prefix_for(ctx.workspace_id))
        res.objects = {"ok": oc.ok, "buckets": oc.buckets, "problems": oc.problems}
        res.ok = res.ok and oc.ok
    return res
