"""The snapshot strategy's phases, each a separate component: fence, copy, verify, cut over.

Every phase does idempotent work first, then records its outcome (state transition, checkpoint,
report, audit entry) in one control-plane transaction. A process killed between the two simply
redoes the idempotent work on resume. Another strategy (``online``: logical replication) can
reuse or replace any of them; see :mod:`migrate.strategy`.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable

from residency import audit, directory, moves
from residency.errors import OperationError
from residency.moves import MoveRecord

from . import copy as copy_mod
from . import faults, fence, objects
from .context import MoveContext
from .progress import Progress
from .verify import VerifyResult, verify_tables


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def subject(rec: MoveRecord) -> str:
    return f"move/{rec.id}"


def details(rec: MoveRecord, **extra: Any) -> dict[str, Any]:
    return {"workspace_id": rec.workspace_id, "source": rec.source, "target": rec.target, "strategy": rec.strategy, **extra}


def record(ctx: MoveContext, rec: MoveRecord, action: str, *, to_state: str | None = None, checkpoints: dict[str, Any] | None = None, report: dict[str, Any] | None = None, audit_details: dict[str, Any] | None = None) -> MoveRecord:
    """One control-plane transaction: checkpoint + report + transition + audit entry."""
    with ctx.connect("control", autocommit=False) as cp:
        with cp.transaction():
            if checkpoints:
                moves.checkpoint(cp, rec.id, checkpoints)
            if report:
                moves.update_report(cp, rec.id, report)
            if to_state is not None:
                moves.transition(cp, rec.id, to_state, expect=[rec.state])
            audit.append(cp, action, subject(rec), details(rec, **(audit_details or {})), ctx.actor)
            return moves.get(cp, rec.id)


def checkpoint(ctx: MoveContext, rec: MoveRecord, patch: dict[str, Any]) -> MoveRecord:
    with ctx.connect("control", autocommit=False) as cp:
        with cp.transaction():
            moves.checkpoint(cp, rec.id, patch)
            return moves.get(cp, rec.id)


def _state(ctx: MoveContext, message: str) -> None:
    ctx.emit(Progress("state", message, message=message))


# ----------------------------------------------------------------------------------- fence


def fence_phase(ctx: MoveContext, rec: MoveRecord) -> MoveRecord:
    token = rec.checkpoints.get("fence_token")
    if not token:
        token = fence.new_token()
        rec = checkpoint(ctx, rec, {"fence_token": token})
    _state(ctx, f"fencing workspace {rec.workspace_id} in {rec.source}")
    with ctx.connect("source") as conn:
        fenced_at = fence.install(conn, ctx.builder, rec.workspace_id, rec.id, token)
        faults.point("fence_installed")
        fence.wait_for_older_transactions(conn, fenced_at)
    at = fenced_at.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return record(
        ctx, rec, "move.fenced", to_state="fenced",
        checkpoints={"fenced_at": at}, report={"fence": {"fenced_at": at, "enforced_by": "source database triggers"}},
        audit_details={"fenced_at": at, "tables": len(ctx.graph.order)},
    )


# ----------------------------------------------------------------------------------- copy


def copy_phase(ctx: MoveContext, rec: MoveRecord) -> MoveRecord:
    cp = dict(rec.checkpoints.get("copy") or {})
    done: dict[str, Any] = dict(cp.get("tables") or {})
    attempts = int(cp.get("attempts", 0))
    t0 = time.monotonic()
    src, dst = ctx.src, ctx.dst
    if attempts > 0:
        # A resumed copy: first remove what the interrupted attempt left of the unfinished tables
        # (children first), so every row ends up in the target exactly once.
        left = [t for t in ctx.graph.order if t not in done]
        removed = copy_mod.clear_target(dst.dsn, ctx.builder, ctx.workspace_id, left)
        if any(removed.values()):
            _state(ctx, "removed a previous attempt's partial rows: " + ", ".join(f"{t} {n}" for t, n in removed.items() if n))
    cp["attempts"] = attempts + 1
    rec = checkpoint(ctx, rec, {"copy": {**cp, "tables": done}})
    expected = {t["table"]: t["rows"] for t in rec.plan.get("tables", [])}

    globals_done = dict(cp.get("globals") or {})
    for g in ctx.graph.global_order:
        if g in globals_done:
            continue
        res = copy_mod.copy_global(src.dsn, dst.dsn, ctx.builder, g, ctx.workspace_id, ctx.emit)
        globals_done[g] = res
        rec = checkpoint(ctx, rec, {"copy": {**cp, "tables": done, "globals": globals_done}})

    for table in ctx.graph.order:
        if table in done:
            continue
        tc = copy_mod.copy_table(src.dsn, dst.dsn, ctx.builder, table, ctx.workspace_id, ctx.emit, expected.get(table), ctx.should_stop)
        faults.point("table_copied")
        done[table] = {"rows": tc.rows, "bytes": tc.bytes, "seconds": tc.seconds, "removed_first": tc.deleted_first}
        rec = checkpoint(ctx, rec, {"copy": {**cp, "tables": done, "globals": globals_done}})
    faults.point("rows_copied")

    prefix = ctx.cat.workspace.prefix_for(ctx.workspace_id)
    obj = objects.copy_objects(src, dst, ctx.cat.environment.buckets, prefix, ctx.emit, ctx.should_stop)
    seqs = copy_mod.bump_sequences(dst.dsn, ctx.builder)
    seconds = round(time.monotonic() - t0, 3)
    rows = sum(v["rows"] for v in done.values())
    nbytes = sum(v["bytes"] for v in done.values())
    copy_seconds = sum(v["seconds"] for v in done.values())
    summary = {
        "tables": done,
        "globals": globals_done,
        "objects": obj,
        "sequences": seqs,
        "rows": rows,
        "bytes": nbytes,
        "seconds": round(copy_seconds, 3),
        "rows_per_second": round(rows / copy_seconds) if copy_seconds > 0 else None,
        "attempts": attempts + 1,
        "phase_seconds_this_attempt": seconds,
    }
    return record(
        ctx, rec, "move.copied", to_state="copied",
        checkpoints={"copy": {**cp, "tables": done, "globals": globals_done, "objects": obj, "complete": True}},
        report={"copy": summary},
        audit_details={"rows": rows, "bytes": nbytes, "objects": sum(b["objects"] for b in obj["buckets"].values())},
    )


# ----------------------------------------------------------------------------------- verify


def verify_phase(ctx: MoveContext, rec: MoveRecord, verifier: Callable[[], VerifyResult] | None = None) -> MoveRecord:
    """Tables (``verifier``: another strategy's way of computing the same result, e.g. online's
    incremental verification; default: full counts and checksums), then objects."""
    _state(ctx, f"verifying {len(ctx.graph.order)} tables in {rec.source} and {rec.target}")
    if verifier is not None:
        res = verifier()
    else:
        res = verify_tables(ctx.src.dsn, ctx.dst.dsn, ctx.builder, ctx.workspace_id, rec.source, rec.target)
    oc = objects.compare(ctx.src, ctx.dst, ctx.cat.environment.buckets, ctx.cat.workspace.prefix_for(ctx.workspace_id))
    res.objects = {"ok": oc.ok, "buckets": oc.buckets, "problems": oc.problems}
    res.ok = res.ok and oc.ok
    data = res.to_dict()
    if not res.ok:
        problems = res.problems()
        # The copy is not trusted any more: a resume copies every table again (after removing
        # this attempt's rows), then verifies again. The move never cuts over unverified.
        with ctx.connect("control", autocommit=False) as cp:
            with cp.transaction():
                moves.update_report(cp, rec.id, {"verify": data})
                moves.checkpoint(cp, rec.id, {"copy": {"attempts": int((rec.checkpoints.get("copy") or {}).get("attempts", 1)), "tables": {}, "globals": (rec.checkpoints.get("copy") or {}).get("globals", {})}})
                moves.transition(cp, rec.id, "fenced", expect=["copied"])
                audit.append(cp, "move.verify_failed", subject(rec), details(rec, problems=problems[:20]), ctx.actor)
        raise VerifyFailed("verification failed: " + "; ".join(problems[:5]))
    return record(ctx, rec, "move.verified", to_state="verified", report={"verify": data},
                  audit_details={"tables": len(res.tables), "seconds": res.seconds})


class VerifyFailed(OperationError):
    pass


# ----------------------------------------------------------------------------------- cut over


def cutover_phase(ctx: MoveContext, rec: MoveRecord) -> MoveRecord:
    if not (rec.report.get("verify") or {}).get("ok"):
        raise OperationError(f"move {rec.id} is not verified; it never cuts over unverified")
    seqs = copy_mod.bump_sequences(ctx.dst.dsn, ctx.builder)
    faults.point("sequences_bumped")
    at = now_iso()
    fenced_at = rec.checkpoints.get("fenced_at")
    fence_seconds = _seconds_between(fenced_at, at)
    total = _seconds_between(rec.created_at.astimezone(timezone.utc).isoformat(), at)
    with ctx.connect("control", autocommit=False) as cp:
        with cp.transaction():
            entry = directory.move_home(cp, rec.workspace_id, rec.source, rec.target)
            moves.checkpoint(cp, rec.id, {"cut_over_at": at})
            moves.update_report(cp, rec.id, {
                "cut_over": {"at": at, "directory_version": entry.version, "sequences": seqs},
                "fence": {"fenced_at": fenced_at, "cut_over_at": at, "seconds": fence_seconds,
                          "note": "the source copy stays fenced (stale, read-only) until cleanup"},
                "timing": {"started_at": rec.created_at.astimezone(timezone.utc).isoformat(), "cut_over_at": at, "total_seconds": total},
            })
            moves.transition(cp, rec.id, "cut_over", expect=["verified"])
            audit.append(cp, "move.cut_over", subject(rec), details(rec, directory_version=entry.version, fence_seconds=fence_seconds), ctx.actor)
            rec = moves.get(cp, rec.id)
    return rec


def _seconds_between(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return round((datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds(), 3)
