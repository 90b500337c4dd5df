"""The snapshot strategy's phases, each a separate component: fence, copy, verify, cut over.

Every phase does idempotent work first, then records its outcome (state transition, checkpoint,
report, audit entry) in one control-plane transaction. A process killed between the two simply
redoes the idempotent work on resume. Another strategy (``online``: logical replication) can
reuse or replace any of them; see :mod:`migrate.strategy`.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable

import psycopg

from residency import audit, db, directory, grants, moves
from residency.errors import OperationError
from residency.evidence import section_hash
from residency.moves import MoveRecord

from . import chunks as chunks_mod
from . import copy as copy_mod
from . import faults, fence, globalkeys, objects, tenant_objects
from .chunks import CopyOptions
from .context import MoveContext
from .load import SourceLoad
from .throttle import RateLimit, StreamSlots
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


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    return fn(*args), time.monotonic() - t0


class CheckpointWriter:
    """Checkpoints of one phase on one kept control-plane connection (the copy records one per
    chunk); a connection that fails is replaced once, then the error stands."""

    def __init__(self, ctx: MoveContext, rec: MoveRecord):
        self.ctx, self.rec = ctx, rec
        self._conn: Any = None

    def save(self, patch: dict[str, Any]) -> None:
        for attempt in (0, 1):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = db.connect(self.ctx.conns.control_dsn, application_name="residency-mover-control")
                with self._conn.transaction():
                    moves.checkpoint(self._conn, self.rec.id, patch)
                return
            except psycopg.OperationalError:
                self.close()
                if attempt:
                    raise

    def close(self) -> None:
        db.close_quietly(self._conn)
        self._conn = None


def emit_state(ctx: MoveContext, message: str) -> None:
    ctx.emit(Progress("state", message, message=message))


# ----------------------------------------------------------------------------------- fence


def fence_phase(ctx: MoveContext, rec: MoveRecord) -> MoveRecord:
    token = rec.checkpoints.get("fence_token")
    if not token:
        token = fence.new_token()
        rec = checkpoint(ctx, rec, {"fence_token": token})
    emit_state(ctx, f"fencing workspace {rec.workspace_id} in {rec.source}")
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


def usable_source_checksums(ctx: MoveContext, rec: MoveRecord) -> tuple[dict[str, tuple[int, Decimal]] | None, str]:
    """The source checksums the copy phase recorded, if they still hold: computed under this
    move's fence, and that very fence (same token, same fenced_at: never lifted and installed
    again) still in place now, so no row of the workspace changed in the source since."""
    stored = rec.checkpoints.get("source_checksums")
    if not stored:
        return None, "none recorded during the copy"
    if stored.get("fence_token") != rec.checkpoints.get("fence_token"):
        return None, "recorded under another fence"
    with ctx.connect("source") as conn:
        now = fence.state(conn, ctx.builder, ctx.workspace_id)
    if now is None or list(now) != [stored.get("fence_token"), stored.get("fenced_at")]:
        return None, "the fence they were computed under is no longer in place"
    tables = stored.get("tables") or {}
    if any(t not in tables for t in ctx.graph.order):
        return None, "not every table"
    return {t: (int(v[0]), Decimal(v[1])) for t, v in tables.items()}, "computed during the copy under the fence (still in place)"


def usable_shared_keys(rec: MoveRecord) -> dict[str, tuple[str, list[Any]]]:
    """The values the copy found a global table's needed rows by (:meth:`globalkeys.LandedKeys.kept`),
    per table, when they were gathered under the fence the source checksums were taken under. The
    caller has checked that fence is still in place (:func:`usable_source_checksums`): the
    workspace's rows have not changed since, so neither has what they point at."""
    kept, sums = rec.checkpoints.get("shared_keys") or {}, rec.checkpoints.get("source_checksums") or {}
    if not kept or [kept.get("fence_token"), kept.get("fenced_at")] != [sums.get("fence_token"), sums.get("fenced_at")]:
        return {}
    return {g: (v["column"], list(v["values"])) for g, v in (kept.get("tables") or {}).items()}


def snapshot_copy_phase(ctx: MoveContext, rec: MoveRecord) -> MoveRecord:
    """The snapshot's copy: the source is fenced, so its checksums are computed meanwhile."""
    return copy_phase(ctx, rec, source_checksums=True)


def copy_phase(ctx: MoveContext, rec: MoveRecord, *, source_checksums: bool = False) -> MoveRecord:
    """Copy the rows (chunks on parallel streams, :mod:`migrate.chunks`) and the objects.
    ``source_checksums``: the source is fenced (a snapshot move), so each chunk also sums the
    source's rows as they pass (:mod:`migrate.rowhash`) and the phase records the source's
    checksums for verify, with the fence they hold under (:func:`usable_source_checksums`)."""
    return _copy(ctx, rec, source_checksums)


def _source_fence(ctx: MoveContext, rec: MoveRecord) -> list[str] | None:
    """[token, fenced_at] of this move's fence on the source, or None (not fenced by this move)."""
    with ctx.connect("source") as conn:
        now = fence.state(conn, ctx.builder, ctx.workspace_id)
    return list(now) if now is not None and now[0] == rec.checkpoints.get("fence_token") else None


def chunk_sums(plans: dict[str, Any], side: str) -> dict[str, list[tuple[int, Decimal]]]:
    """Per table whose every chunk recorded its ``side`` (``source`` or ``target``) count and
    checksum as it was copied: those sums, in chunk order. Tables lacking any are left out."""
    out: dict[str, list[tuple[int, Decimal]]] = {}
    for t, p in plans.items():
        bounds, done = p.get("bounds") or [], p.get("done") or {}
        if not bounds or len(done) != len(bounds):
            continue
        got = [done.get(str(i), {}).get(side) for i in range(len(bounds))]
        if all(isinstance(x, list) and len(x) == 2 for x in got):
            out[t] = [(int(x[0]), Decimal(x[1])) for x in got]
    return out


def _source_sums(plans: dict[str, Any], tables: list[str]) -> dict[str, list[Any]] | None:
    """Per table, the source's [rows, sum] from its chunks' sums; None when a chunk lacks them."""
    per = chunk_sums(plans, "source")
    if any(t not in per for t in tables):
        return None
    return {t: [sum(n for n, _ in per[t]), str(sum(s for _, s in per[t]))] for t in tables}


def _copy(ctx: MoveContext, rec: MoveRecord, source_checksums: bool) -> MoveRecord:
    cp = dict(rec.checkpoints.get("copy") or {})
    done: dict[str, Any] = dict(cp.get("tables") or {})
    plans: dict[str, Any] = {t: dict(v) for t, v in (cp.get("chunks") or {}).items()}
    attempts = int(cp.get("attempts", 0))
    t0 = time.monotonic()
    src, dst = ctx.src, ctx.dst
    b, ws = ctx.builder, ctx.workspace_id
    opts = ctx.copy_options or CopyOptions()
    access = copy_mod.target_access(dst.dsn, b)  # checked again now: grants may have changed since the plan
    left = [t for t in ctx.graph.order if t not in done]
    removed: dict[str, int] = {}
    # A first snapshot attempt starts from a target the plan found free of the workspace's keys:
    # nothing to remove, and with replica no table waits for another. A resumed copy (or one
    # after another strategy's partial work) removes what an interrupted attempt committed of the
    # unrecorded chunks, so every row ends up in the target exactly once (:func:`chunks.clear_unfinished`:
    # by the workspace column, by the keys in the fenced source, or through the tables a table is
    # reached through, which it then waits for, :func:`chunks.dependencies`). With replica each
    # table's leftovers go just before its first chunk. With foreign-key checks on they go first,
    # children first, in one transaction (a parent's rows can only go once no child row points at
    # them: after a failed verify every table's chunks are leftovers).
    snapshot_move = rec.strategy == "snapshot"  # the source is fenced: its keys are the ones copied
    first = attempts == 0 and snapshot_move
    lazy = not first and snapshot_move and not access.fk_order
    if not first and not lazy:
        removed = chunks_mod.clear_unfinished(src.dsn, dst.dsn, b, ws, plans, left, access, fenced=snapshot_move)
        if any(removed.values()):
            emit_state(ctx, "removed a previous attempt's partial rows: " + ", ".join(f"{t} {n}" for t, n in removed.items() if n))
    clearing = {t: threading.Lock() for t in left} if lazy else {}

    def clear_before_first_chunk(table: str) -> None:
        with clearing[table]:
            if table not in removed:
                n = chunks_mod.clear_unfinished(src.dsn, dst.dsn, b, ws, plans, [table], access, fenced=snapshot_move).get(table, 0)
                if n:
                    emit_state(ctx, f"removed a previous attempt's partial rows: {table} {n}")
                removed[table] = n
    cp["attempts"] = attempts + 1
    fenced = _source_fence(ctx, rec) if source_checksums else None
    if cp.get("source_fence") and cp.get("source_fence") != fenced:
        # the chunks' source sums were taken under another fence (or none): they prove nothing now
        for p in plans.values():
            for res in (p.get("done") or {}).values():
                res.pop("source", None)
    cp["source_fence"] = fenced
    cp["method"] = {"method": access.method, "reason": access.reason, "would_fire": [t.describe() for t in access.would_fire()]}
    chunk_rows = opts.rows_per_chunk(sum(int(t.get("rows") or 0) for t in rec.plan.get("tables", [])))
    cp["options"] = {**opts.to_dict(), "chunk_rows": chunk_rows}
    emit_state(ctx, f"copy method: {access.method}; {opts.jobs} streams")
    rec = checkpoint(ctx, rec, {"copy": {**cp, "tables": done, "chunks": plans}})
    expected = {t["table"]: int(t["rows"]) for t in rec.plan.get("tables", [])}

    globals_done = dict(cp.get("globals") or {})
    global_rows = {g["table"]: int(g.get("referenced_rows") or 0) for g in rec.plan.get("globals", [])}
    global_tasks = [chunks_mod.Chunk(g, 0, 1, None, None, max(1, global_rows.get(g, 0)), kind="global")
                    for g in ctx.graph.global_order if g not in globals_done]
    load = SourceLoad(src.dsn, opts.load, lambda m: emit_state(ctx, m))
    snap = chunks_mod.SourceSnapshot(src.dsn) if left else None
    # the objects copy server-side meanwhile (independent of the rows; idempotent on resume)
    prefix = ctx.cat.workspace.prefix_for(ctx.workspace_id)
    objects_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="residency-objects")
    rows_failed = threading.Event()
    objects_job = objects_pool.submit(_timed, objects.copy_objects, src, dst, ctx.cat.environment.buckets, prefix, ctx.emit,
                                      lambda: ctx.should_stop() or rows_failed.is_set())
    t_tables = time.monotonic()
    t_bounds = 0.0
    slots = StreamSlots(ctx.conns.control_dsn, rec.source, opts.streams_per_region)
    tasks: list[chunks_mod.Chunk] = list(global_tasks)
    streams = chunks_mod.StreamConnections(src.dsn, dst.dsn, ctx.conns.control_dsn)
    recorder = CheckpointWriter(ctx, rec)
    try:
        if snap is not None:
            new = [t for t in left if t not in plans]
            tb = time.monotonic()
            # bounds first, recorded before any chunk is copied
            for t, bounds in chunks_mod.plan_all_bounds(src.dsn, b, ws, new, expected, chunk_rows, fk_order=access.fk_order,
                                                        jobs=opts.jobs).items():
                plans[t] = {"bounds": bounds, "done": {}}
            t_bounds = time.monotonic() - tb
            if new:
                rec = checkpoint(ctx, rec, {"copy": {**cp, "tables": done, "globals": globals_done, "chunks": plans}})
        tasks += [c for t in left for c in chunks_mod.chunks_of(t, plans[t]["bounds"], expected.get(t, 0))
                  if str(c.index) not in plans[t]["done"]]
        # with replica, a global table's rows the moving rows point at are copied by the values
        # the landed chunks gathered, after them (no workspace predicate on the source)
        landed = globalkeys.LandedKeys.for_copy(ctx.graph, fk_order=access.fk_order, pending=[c.table for c in global_tasks],
                                                fresh=[t for t in left if not plans[t]["done"]])
        found_by = {t: landed.found_by(t) for t in left}
        rate = RateLimit(opts.rows_per_second)

        def finish_table(t: str) -> None:
            done[t] = chunks_mod.table_summary(plans[t]["done"].values(), removed.get(t, 0))

        for t in left:  # every chunk recorded but the table not (killed in between)
            if len(plans[t]["done"]) == len(plans[t]["bounds"]):
                finish_table(t)

        def between_batches(rows: int) -> None:
            rate.take(rows)
            load.wait(ctx.should_stop)

        def work(c: chunks_mod.Chunk) -> dict[str, Any]:
            load.wait(ctx.should_stop)  # before taking a slot: a loaded source holds none
            try:
                with slots.slot(ctx.should_stop, conn=streams.control()):
                    if c.kind == "global":
                        return copy_mod.copy_global(src.dsn, dst.dsn, b, c.table, ws, ctx.emit, access, keys=landed.keys(c.table))
                    if lazy:
                        clear_before_first_chunk(c.table)
                    return chunks_mod.copy_chunk(src.dsn, dst.dsn, b, c, ws, ctx.emit, access, snapshot=snap.id if snap else None,
                                                 should_stop=ctx.should_stop, on_batch=between_batches, pool=streams,
                                                 source_sums=fenced is not None, found=found_by[c.table])
            except BaseException:
                streams.discard_control()
                raise

        def on_done(c: chunks_mod.Chunk, res: dict[str, Any]) -> None:
            if c.kind == "global":
                globals_done[c.table] = res
            else:
                landed.add(c.table, res.pop("found_values", []))
                plans[c.table]["done"][str(c.index)] = res
                faults.point("chunk_copied")  # committed in the target, not yet recorded
                if len(plans[c.table]["done"]) == len(plans[c.table]["bounds"]):
                    faults.point("table_copied")
                    finish_table(c.table)
            recorder.save({"copy": {**cp, "tables": done, "globals": globals_done, "chunks": plans}})

        deps = chunks_mod.dependencies(b, left, [c.table for c in global_tasks], fk_order=access.fk_order, reach=not first or access.fk_order,
                                       fenced=snapshot_move, split=chunks_mod.split_tables({t: plans[t] for t in left}),
                                       landed={g: landed.referencing(g) for g in landed.refs})
        chunks_mod.run(tasks, jobs=opts.jobs, deps=deps, exclusive=access.exclusive, work=work, on_done=on_done)
    except BaseException:
        rows_failed.set()  # the objects stop too; the move fails with the rows' error
        objects_pool.shutdown(wait=True)
        raise
    finally:
        if snap is not None:
            snap.close()
        load.close()
        streams.close()
        recorder.close()
    tables_seconds = round(time.monotonic() - t_tables, 3)
    faults.point("rows_copied")
    extra: dict[str, Any] = {}
    if fenced is not None:
        sums = _source_sums(plans, list(ctx.graph.order))
        why = "a chunk lacks them" if sums is None else "the fence changed during the copy" if _source_fence(ctx, rec) != fenced else ""
        if not why:
            extra["source_checksums"] = {"fence_token": fenced[0], "fenced_at": fenced[1], "taken": "in the copy stream",
                                         "tables": sums}
            emit_state(ctx, "source checksums taken from the copy stream under the fence")
            kept = landed.kept(ctx.graph, [g for g, r in globals_done.items() if r.get("found") == copy_mod.FOUND_LANDED])
            if kept:  # verify reads the needed shared rows by them while this fence holds
                extra["shared_keys"] = {"fence_token": fenced[0], "fenced_at": fenced[1], "tables": kept}
        else:
            emit_state(ctx, f"source checksums not kept from the copy ({why}); verify computes them")

    t1 = time.monotonic()
    try:
        obj, objects_s = objects_job.result()
    finally:
        objects_pool.shutdown(wait=True)
    objects_wait = time.monotonic() - t1
    t1 = time.monotonic()
    seqs = copy_mod.bump_sequences(dst.dsn, ctx.builder)
    tobj = tenant_objects.copy(src.dsn, dst.dsn, ctx.graph.schema.name, ctx.cat.workspace, ctx.workspace_id)
    tail_s = time.monotonic() - t1
    seconds = round(time.monotonic() - t0, 3)
    rows = sum(v["rows"] for v in done.values())
    nbytes = sum(v["bytes"] for v in done.values())
    copy_seconds = tables_seconds if tasks else sum(v["seconds"] for v in done.values())
    summary = {
        "tables": done,
        "globals": globals_done,
        "method": cp["method"],
        "options": cp["options"],
        "chunks": sum(len(p["bounds"]) for p in plans.values()),
        "stream_seconds": round(sum(float(v.get("seconds") or 0) for v in done.values()), 3),
        "slot_wait_seconds": round(slots.waited, 3),
        "throttle": load.report(),
        "objects": obj,
        "sequences": seqs,
        "tenant_objects": tobj,
        "rows": rows,
        "bytes": nbytes,
        "seconds": round(copy_seconds, 3),
        "rows_per_second": round(rows / copy_seconds) if copy_seconds > 0 else None,
        "attempts": attempts + 1,
        "phase_seconds_this_attempt": seconds,
        "timings": {"before_rows": round(t_tables - t0, 3), "bounds": round(t_bounds, 3), "rows": tables_seconds,
                    "objects": round(objects_s, 3),
                    "objects_wait": round(objects_wait, 3), "sequences_and_tenant_objects": round(tail_s, 3)},
    }
    return record(
        ctx, rec, "move.copied", to_state="copied",
        checkpoints={"copy": {**cp, "tables": done, "globals": globals_done, "chunks": plans, "objects": obj, "complete": True}, **extra},
        report={"copy": summary},
        audit_details={"rows": rows, "bytes": nbytes, "objects": sum(b["objects"] for b in obj["buckets"].values()),
                       "throttled_seconds": summary["throttle"]["throttled_seconds"]},
    )


# ----------------------------------------------------------------------------------- verify


def snapshot_verify_phase(ctx: MoveContext, rec: MoveRecord) -> MoveRecord:
    """The snapshot's verify: the source's checksums from the copy phase when its fence held
    throughout (else computed again), the target's computed now over two connections."""
    return verify_phase(ctx, rec, source_checksums=True)


TARGET_WORKERS = 2  # connections checksumming the target at once (the machines here: 2 cores)


def verify_phase(ctx: MoveContext, rec: MoveRecord, verifier: Callable[[], VerifyResult] | None = None, *, source_checksums: bool = False) -> MoveRecord:
    """Tables (``verifier``: another strategy's way of computing the same result, e.g. online's
    incremental verification; default: full counts and checksums), then objects."""
    emit_state(ctx, f"verifying {len(ctx.graph.order)} tables in {rec.source} and {rec.target}")
    if verifier is not None:
        res = verifier()
    elif source_checksums:
        t0 = time.monotonic()
        a_sums, why = usable_source_checksums(ctx, rec)
        check_s = round(time.monotonic() - t0, 3)
        sizes = {t["table"]: int(t.get("rows") or 0) for t in rec.plan.get("tables", [])}
        chunked = {t: p["bounds"] for t, p in ((rec.checkpoints.get("copy") or {}).get("chunks") or {}).items()
                   if len(p.get("bounds") or []) > 1 and t not in _replicated(rec)}
        recorded = recorded_target_sums(rec) if target_sums_mode() == "recorded" else {}
        keys = usable_shared_keys(rec) if a_sums is not None and target_sums_mode() == "recorded" else {}
        res = verify_tables(ctx.src.dsn, ctx.dst.dsn, ctx.builder, ctx.workspace_id, rec.source, rec.target,
                            a_sums=a_sums, b_workers=TARGET_WORKERS, sizes=sizes, chunks=chunked, b_recorded=recorded, shared_keys=keys)
        res.timings = dict(res.timings or {})
        if a_sums is not None:
            res.source_checksums = why
            res.timings["source_fence_check"] = check_s
        else:
            res.source_checksums = f"computed in verify ({why})"
    else:
        res = verify_tables(ctx.src.dsn, ctx.dst.dsn, ctx.builder, ctx.workspace_id, rec.source, rec.target)
    oc = objects.compare(ctx.src, ctx.dst, ctx.cat.environment.buckets, ctx.cat.workspace.prefix_for(ctx.workspace_id))
    tp = tenant_objects.missing_in_target(ctx.src.dsn, ctx.dst.dsn, ctx.graph.schema.name, ctx.cat.workspace, ctx.workspace_id)
    res.objects = {"ok": oc.ok and not tp, "buckets": oc.buckets, "problems": oc.problems + tp}
    res.ok = res.ok and oc.ok and not tp
    data = res.to_dict()
    if not res.ok:
        problems = _with_trigger_hints(res.problems(), (rec.checkpoints.get("copy") or {}).get("method") or {})
        # The copy is not trusted any more: a resume copies again (after removing this attempt's
        # rows) what verify found different (with replica, only the differing chunks; otherwise
        # every table), then verifies again. The move never cuts over unverified.
        with ctx.connect("control", autocommit=False) as cp:
            with cp.transaction():
                moves.update_report(cp, rec.id, {"verify": data})
                moves.checkpoint(cp, rec.id, {"copy": _copy_to_redo(rec, res)})
                moves.transition(cp, rec.id, "fenced", expect=["copied"])
                audit.append(cp, "move.verify_failed", subject(rec), details(rec, problems=problems[:20]), ctx.actor)
        raise VerifyFailed("verification failed: " + "; ".join(problems[:5]))
    return record(ctx, rec, "move.verified", to_state="verified", report={"verify": data},
                  audit_details={"tables": len(res.tables), "seconds": res.seconds, "verification_sha256": section_hash(data)})


class VerifyFailed(OperationError):
    pass


def target_sums_mode() -> str:
    """``recorded`` (default): verify uses the target counts and checksums each chunk recorded as
    it landed (computed in the chunk's own target transaction, checkpointed with it); nothing
    but the move writes the workspace's rows in the target before cut-over. ``recompute``
    (``RESIDENCY_VERIFY_TARGET=recompute``): verify reads the target again, for an operator who
    distrusts what happened to it since the copy."""
    return "recompute" if os.environ.get("RESIDENCY_VERIFY_TARGET", "").strip().lower() == "recompute" else "recorded"


def recorded_target_sums(rec: MoveRecord) -> dict[str, list[tuple[int, Decimal]]]:
    """Per table whose every chunk recorded its target sums as it landed: those sums, in chunk
    order. Tables copied another way (online replication) or lacking any chunk's sums are left out
    (verify computes them)."""
    skip = _replicated(rec)
    return {t: v for t, v in chunk_sums((rec.checkpoints.get("copy") or {}).get("chunks") or {}, "target").items() if t not in skip}


def _replicated(rec: MoveRecord) -> set[str]:
    return {t for t, v in ((rec.checkpoints.get("copy") or {}).get("tables") or {}).items() if v.get("via")}


def _copy_to_redo(rec: MoveRecord, res: VerifyResult) -> dict[str, Any]:
    """The copy checkpoint after a failed verify. When the copy ran with replica (no foreign-key
    triggers: a parent's chunk can be deleted and copied again under its children), only the
    differing chunks (or tables) are marked undone; otherwise every table is copied again."""
    old = dict(rec.checkpoints.get("copy") or {})
    keep = {"attempts": int(old.get("attempts", 1)), "globals": old.get("globals", {})}
    bad = [t for t in res.tables if not t.ok and t.kind == "table"]
    if (old.get("method") or {}).get("method") != "replica" or not old.get("chunks") or not bad or _replicated(rec):
        return {**keep, "tables": {}}
    tables = dict(old.get("tables") or {})
    plans = {t: {"bounds": p["bounds"], "done": dict(p.get("done") or {})} for t, p in old["chunks"].items()}
    for tc in bad:
        tables.pop(tc.table, None)
        if tc.bad_chunks and tc.table in plans:
            for c in tc.bad_chunks:
                plans[tc.table]["done"].pop(str(c["index"]), None)
        else:
            plans.pop(tc.table, None)
    return {**keep, "tables": tables, "chunks": plans, "redo_after_verify": {t.table: [c["index"] for c in t.bad_chunks] or "all" for t in bad}}


def _with_trigger_hints(problems: list[str], method: dict[str, Any]) -> list[str]:
    """A table's mismatch after a copy during which user triggers on it fired says so."""
    fired = list(method.get("would_fire") or [])
    out = []
    for p in problems:
        table = p.split(":", 1)[0]
        mine = [f for f in fired if f.startswith(table + ".")]
        out.append(p + (f" (user triggers on the target fired during the copy ({method.get('method')}) and may have"
                        f" changed these rows: {', '.join(mine)})" if mine else ""))
    return out


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
    # operator access does not follow the data: the workspace's grants in the source end here
    ended = grants.end_for_workspace(ctx.conns.control_dsn, ctx.src.dsn, rec.workspace_id, rec.source,
                                     f"move {rec.id} cut over to {rec.target}; a grant does not follow the data", ctx.actor)
    with ctx.connect("control", autocommit=False) as cp:
        with cp.transaction():
            if ended:
                audit.append(cp, "move.access_ended", subject(rec), details(rec, grants=[
                    {"access_id": g.id, "operator": g.operator, "role": g.role_name, "consent": g.consent,
                     "granted_at": g.granted_at, "ended_at": g.ended_at} for g in ended]), ctx.actor)
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
