"""The ``online`` strategy: PostgreSQL logical replication keeps the workspace writable while it
is copied; the fence only covers the last catch-up, the path tables and the verification.

States (the same machine as ``snapshot``, different components):

``planned`` → :func:`replicate_phase` → ``fenced``
    TRUNCATE guard in the source; a publication with row filters on the workspace key for the
    tables that carry it (root and key tables), a subscription in the target with
    ``copy_data = true`` (the initial copy, then every change); objects and referenced global
    rows copied ahead; wait until the initial copy is ready and the lag is small; then fence
    (database-enforced, as in ``snapshot``), wait for older transactions, take the source's
    ``pg_current_wal_lsn()`` and wait until the slot's ``confirmed_flush_lsn`` passes it: the
    target now holds every committed change of the workspace's row-filtered tables.
    Just before the fence, with the workspace still writable, :mod:`migrate.incremental` takes
    per key-range bucket checksums of both sides (after the change log's high-water mark C0).
``fenced`` → :func:`finish_copy_phase` → ``copied``
    (after a resume: catch up again) check for TRUNCATE, schema changes and apply errors, disable
    the subscription (cheap; it is dropped after cut-over), copy again the path-table rows the
    change log names, the global rows referenced by rows touched since C0, then objects and
    sequences. If replication is gone without having caught up (a crash, a failure), every table
    is copied the snapshot way: the source is fenced and static, so that is correct, only slower.
``copied`` → :func:`verify_phase`: incremental (only buckets touched since C0, or that differed
    before the fence, are checked again) when this process prepared it, else the full one.
``verified`` → :func:`cutover_phase`: snapshot's cut-over, then publication, subscription, slots
    and triggers are dropped, outside the fence (a crash in between: `move resume` drops them).

Any failure in an online phase removes the replication objects before the move is marked
failed; rollback removes them first; a resumed ``planned`` move reuses intact replication or
removes what is left and starts again. A move never leaves a slot behind.
"""

from __future__ import annotations

import os
import time
from datetime import timezone
from typing import Any, Callable

import psycopg

from residency.catalogue import Catalogue
from residency.connections import Connections
from residency.errors import first_line
from residency.moves import MoveRecord

from . import copy as copy_mod
from . import faults, fence, incremental, objects, phases
from . import replication as repl
from .context import MoveContext
from .phases import checkpoint, record
from .progress import Progress
from .retry import transient as retry_transient
from .strategy import Strategy

# Default strategy by size: above this many bytes (rows' pg_column_size) a snapshot move would
# keep the workspace read-only for too long, and online is chosen when its preconditions hold.
ONLINE_THRESHOLD_BYTES = int(os.environ.get("RESIDENCY_ONLINE_THRESHOLD_BYTES", str(256 * 1024 * 1024)))
SNAPSHOT_RATE_BYTES = 40 * 1024 * 1024  # rough copy+verify rate for the estimate in the plan's reason
SYNC_TIMEOUT = float(os.environ.get("RESIDENCY_ONLINE_SYNC_TIMEOUT", "3600"))
FENCED_CATCHUP_TIMEOUT = float(os.environ.get("RESIDENCY_ONLINE_FENCED_TIMEOUT", "60"))
CLOSE_ENOUGH_SECONDS = 0.25  # catch up unfenced until one round trip takes less than this


def _guarded(phase: Callable[[MoveContext, MoveRecord], MoveRecord]) -> Callable[[MoveContext, MoveRecord], MoveRecord]:
    """Remove publication, subscription and slots when an online phase fails (not when the lease
    is lost: then another process drives the move and owns its replication)."""

    def run(ctx: MoveContext, rec: MoveRecord) -> MoveRecord:
        try:
            return phase(ctx, rec)
        except InterruptedError:
            raise
        except BaseException:
            try:
                teardown(ctx, rec)
            except Exception:  # the original failure matters more; status shows leftovers
                pass
            raise

    run.__name__ = phase.__name__
    run.__doc__ = phase.__doc__
    return run


def teardown(ctx: MoveContext, rec: MoveRecord) -> dict[str, Any]:
    sub_oid = ((rec.checkpoints.get("online") or {}).get("subscription_oid"))
    removed = repl.teardown(ctx.src.dsn, ctx.dst.dsn, ctx.builder, rec.id, sub_oid)
    if any(removed.values()):
        phases.emit_state(ctx, f"removed replication of move {rec.id}: " + ", ".join(f"{k}={v}" for k, v in removed.items() if v))
    return removed


# ------------------------------------------------------------------------------ checks


def _checker(ctx: MoveContext, rec: MoveRecord, src: psycopg.Connection[Any], dst: psycopg.Connection[Any], fps: dict[str, str]) -> Callable[[], None]:
    def check() -> None:
        t = repl.truncations(src, ctx.builder, rec.id)
        if t:
            kinds = ", ".join(sorted({f"{k} {tbl}" for k, tbl, _ in t}))
            raise repl.ReplicationStopped(
                f"{kinds} in {rec.source} during the move: TRUNCATE is not replicated (it ignores row filters), so the target"
                f" copy can't be trusted; replication removed, `residency move resume {rec.id}` copies again"
            )
        for side, conn in (("source", src), ("target", dst)):
            if fps.get(side) and repl.fingerprint(conn, ctx.graph) != fps[side]:
                raise repl.ReplicationStopped(
                    f"the schema of the moving tables changed in the {side} ({rec.source if side == 'source' else rec.target}) during the move;"
                    f" replication removed; make both schemas match, then `residency move resume {rec.id}` (it plans and copies again)"
                )

    return check


# ------------------------------------------------------------------------------ planned → fenced


def _start_replication(ctx: MoveContext, rec: MoveRecord, src: psycopg.Connection[Any], dst: psycopg.Connection[Any]) -> MoveRecord:
    b = ctx.builder
    st = rec.checkpoints.get("online") or {}
    intact = (
        st.get("subscription_oid") is not None
        and repl.subscription_oid(dst, rec.id) == st.get("subscription_oid")
        and repl.slot_exists(src, rec.id)
        and repl.publication_exists(src, rec.id)
        and not repl.truncations(src, b, rec.id)
    )
    if intact:
        phases.emit_state(ctx, f"replication of move {rec.id} is intact; resuming the catch-up")
        return rec
    # a fresh start, or what a crashed/failed attempt left: remove it, then start clean
    teardown(ctx, rec)
    removed = copy_mod.clear_target(ctx.dst.dsn, b, ctx.workspace_id, list(ctx.graph.order))
    if any(removed.values()):
        phases.emit_state(ctx, "removed a previous attempt's rows from the target: " + ", ".join(f"{t} {n}" for t, n in removed.items() if n))
    t0 = time.monotonic()
    fps = {"source": repl.fingerprint(src, ctx.graph), "target": repl.fingerprint(dst, ctx.graph)}
    repl.install_guard(src, b, rec.id)
    repl.install_change_log(src, b, rec.id, ctx.workspace_id)
    repl.create_publication(src, b, rec.id, ctx.workspace_id)
    conninfo = repl.source_conninfo(rec.source, ctx.src.dsn)
    oid = repl.create_subscription(dst, b, rec.id, conninfo)
    name = repl.name_for(rec.id)
    phases.emit_state(ctx, f"replicating: publication {name} in {rec.source} ({len(repl.row_filtered(ctx.graph))} row-filtered tables), subscription {name} in {rec.target}")
    return checkpoint(ctx, rec, {"online": {
        "publication": name, "subscription": name, "slot": name, "subscription_oid": oid,
        "fingerprints": fps, "started_at": phases.now_iso(), "setup_seconds": round(time.monotonic() - t0, 3),
        "attempts": int(st.get("attempts", 0)) + 1,
    }, "copy": {}})


def replicate_phase(ctx: MoveContext, rec: MoveRecord) -> MoveRecord:
    """Replicate the workspace while it stays writable, then fence and catch up to the source."""
    b = ctx.builder
    t_phase = time.monotonic()
    incremental.PREPARED.pop(rec.id, None)
    with ctx.connect("source") as src, ctx.connect("target") as dst:
        rec = _start_replication(ctx, rec, src, dst)
        st = dict(rec.checkpoints.get("online") or {})
        check = _checker(ctx, rec, src, dst, st.get("fingerprints") or {})

        # objects ahead of the fence (idempotent: the fenced copy repeats them and then only
        # moves what changed); the referenced global rows are copied ahead by the verification
        # prepared before the fence, after its watermark (migrate.incremental.prepare: read
        # once, their keys kept), or under the fence if it could not be prepared. The initial
        # copy needs none of them first: the subscription applies with replica, no
        # foreign-key checks
        prefix = ctx.cat.workspace.prefix_for(ctx.workspace_id)
        objects.copy_objects(ctx.src, ctx.dst, ctx.cat.environment.buckets, prefix, ctx.emit, ctx.should_stop)

        # the initial copy: every published table ready
        t0 = time.monotonic()
        last = -1
        while True:
            s = repl.sub_state(dst, rec.id)
            if s.apply_errors or s.sync_errors:
                raise repl.ReplicationStopped(repl._errors_line(rec.id, s))
            if s.synced:
                break
            if s.ready != last:
                last = s.ready
                ctx.emit(Progress("copy", "initial copy (replication)", done=s.ready, total=s.tables, elapsed=time.monotonic() - t0,
                                  message=f"initial copy: {s.ready}/{s.tables} tables ready"))
            if ctx.should_stop():
                raise InterruptedError("the move's lease was lost; stopping")
            if time.monotonic() - t0 > SYNC_TIMEOUT:
                raise repl.ReplicationStopped(f"the initial copy did not finish within {SYNC_TIMEOUT:.0f}s: {s.states}")
            check()
            time.sleep(0.1)
        initial = round(time.monotonic() - t0, 3)
        faults.point("online_synced")

        # path tables: copied ahead too; their change log (installed before) says which rows to
        # copy again under the fence
        if not st.get("path_precopied"):
            st["path_precopied"] = {t: _precopy(ctx, t) for t in repl.path_tables(ctx.graph)}
            rec = checkpoint(ctx, rec, {"online": st})

        # catch up unfenced until a round trip is short, so the fenced wait is short too
        t0 = time.monotonic()
        rounds = 0
        while True:
            rounds += 1
            took = repl.wait_applied(src, dst, rec.id, repl.current_lsn(src), timeout=SYNC_TIMEOUT, should_stop=ctx.should_stop, check=check)
            faults.point("online_catching_up")
            check()
            if took < CLOSE_ENOUGH_SECONDS or rounds >= 50:
                break
        catchup = round(time.monotonic() - t0, 3)

        # incremental verification: per key-range bucket checksums on both sides while the
        # workspace is still writable; under the fence only buckets that changed are checked again
        prep = _prepare_verify(ctx, rec, src, dst, check)
        if prep is not None:
            repl.wait_applied(src, dst, rec.id, repl.current_lsn(src), timeout=SYNC_TIMEOUT, should_stop=ctx.should_stop, check=check)
        _, lag_bytes = repl.lag(src, rec.id)

        # fence, then wait until everything committed before it has been applied in the target
        token = rec.checkpoints.get("fence_token")
        if not token:
            token = fence.new_token()
            rec = checkpoint(ctx, rec, {"fence_token": token})
        phases.emit_state(ctx, f"fencing workspace {rec.workspace_id} in {rec.source} for the final catch-up")
        f0 = time.monotonic()
        fenced_at = _install_fence(src, b, rec, token)
        faults.point("fence_installed")
        fence.wait_for_older_transactions(src, fenced_at)
        lsn = repl.current_lsn(src)
        fenced_wait = repl.wait_applied(src, dst, rec.id, lsn, timeout=FENCED_CATCHUP_TIMEOUT, should_stop=ctx.should_stop, check=check)
        check()
        caught = round(time.monotonic() - f0, 3)
    at = fenced_at.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    online = {**st, "initial_copy_seconds": initial, "catchup_seconds": catchup, "catchup_rounds": rounds,
              "verify_prepared": prep.summary() if prep is not None else None,
              "lag_bytes_before_fence": lag_bytes, "fenced_lsn": lsn, "caught_up_lsn": lsn,
              "fenced_apply_wait_seconds": round(fenced_wait, 3), "fence_to_caught_up_seconds": caught}
    return record(
        ctx, rec, "move.fenced", to_state="fenced",
        checkpoints={"fenced_at": at, "online": online},
        report={"fence": {"fenced_at": at, "enforced_by": "source database triggers"},
                "online": {"tables": _paths(ctx), **{k: v for k, v in online.items() if k not in ("fingerprints",)},
                           "replicate_phase_seconds": round(time.monotonic() - t_phase, 3)}},
        audit_details={"fenced_at": at, "tables": len(ctx.graph.order), "strategy": "online", "lsn": lsn},
    )


def _install_fence(src: psycopg.Connection[Any], b: Any, rec: MoveRecord, token: str) -> Any:
    """fence.install, giving way to writers (replication.again_after_deadlock): its trigger
    DDL locks the tables one by one while a writer's transaction may hold one and want the next.
    The install is one transaction, rolled back whole; the fence starts when one commits."""
    return repl.again_after_deadlock(fence.install)(src, b, rec.workspace_id, rec.id, token, lock_timeout=repl.DDL_LOCK_TIMEOUT)


def _prepare_verify(ctx: MoveContext, rec: MoveRecord, src: psycopg.Connection[Any], dst: psycopg.Connection[Any], check: Callable[[], None]) -> incremental.Prepared | None:
    """Before the fence: boundaries, C0, catch-up and bucket checksums (migrate.incremental).
    None when not possible: the fenced verification then checks every row, as snapshot does."""
    b = ctx.builder
    if not repl.change_log_present(src, b, rec.id):
        return None
    try:
        prep = incremental.prepare(
            src, ctx.src.dsn, ctx.dst.dsn, b, ctx.workspace_id, rec.id,
            lambda lsn: repl.wait_applied(src, dst, rec.id, lsn, timeout=SYNC_TIMEOUT, should_stop=ctx.should_stop, check=check),
        )
    except (incremental.Skip, psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable) as exc:
        phases.emit_state(ctx, f"incremental verification not prepared ({first_line(exc, '')}); the fenced verification checks every row")
        return None
    check()
    incremental.PREPARED[rec.id] = prep
    inc = sorted(prep.tables)
    phases.emit_state(ctx, f"verification prepared before the fence: {len(inc)} tables bucketed ({', '.join(inc)}), C0 = {prep.c0}")
    return prep


def _paths(ctx: MoveContext) -> dict[str, str]:
    rf, whole = set(repl.row_filtered(ctx.graph)), set(repl.fenced_tables(ctx.graph))
    return {t: ("replication (row filter)" if t in rf else NO_KEY_PATH if t in whole else "snapshot copy under the fence")
            for t in ctx.graph.order}


NO_KEY_PATH = "copied whole under the fence (no primary key: neither replication nor the change log can follow its rows)"


# ------------------------------------------------------------------------------ fenced → copied


def finish_copy_phase(ctx: MoveContext, rec: MoveRecord) -> MoveRecord:
    """Under the fence: confirm the catch-up, stop replication, copy what it can't carry."""
    st = dict(rec.checkpoints.get("online") or {})
    verify_failed = (rec.report.get("verify") or {}).get("ok") is False
    replicated_ok = False
    with ctx.connect("source") as src, ctx.connect("target") as dst:
        alive = repl.subscription_oid(dst, rec.id) is not None and repl.slot_exists(src, rec.id)
        if alive and not verify_failed:
            check = _checker(ctx, rec, src, dst, st.get("fingerprints") or {})
            if repl.subscription_enabled(dst, rec.id) is False:
                repl.enable_subscription(dst, rec.id)  # disabled by an interrupted attempt: catch up again
            # the fenced catch-up's position (taken after the fence and the older transactions):
            # nothing of the workspace was written after it, so having applied up to it is enough
            # (normally already confirmed: one query); current_lsn only for older records
            lsn = st.get("fenced_lsn") or repl.current_lsn(src)
            repl.wait_applied(src, dst, rec.id, lsn, timeout=FENCED_CATCHUP_TIMEOUT, should_stop=ctx.should_stop, check=check)
            check()
            st["caught_up_lsn"] = lsn
            replicated_ok = True
            faults.point("online_caught_up")
            # stop applying: a catalogue flag, cheap under the fence; subscription, slot,
            # publication and triggers are dropped after cut-over (or on failure/rollback/resume)
            t0 = time.monotonic()
            repl.disable_subscription(dst, rec.id)
            st["stop_replication_seconds"] = round(time.monotonic() - t0, 3)
        elif st.get("replication_done") and not verify_failed:
            replicated_ok = True  # caught up and stopped by an earlier attempt; the source is static since
            faults.point("online_caught_up")
        else:
            faults.point("online_caught_up")
    delta: dict[str, Any] | None = None
    if replicated_ok and st.get("path_precopied"):
        t0 = time.monotonic()
        delta = _apply_changes(ctx, rec)
        st["path_changes"] = delta
        st["path_changes_seconds"] = round(time.monotonic() - t0, 3)
    prep = incremental.PREPARED.get(rec.id)
    if not replicated_ok:
        incremental.PREPARED.pop(rec.id, None)
        t0 = time.monotonic()
        teardown(ctx, rec)
        st["teardown_seconds"] = round(time.monotonic() - t0, 3)
    elif prep is not None and (delta is not None or not repl.path_tables(ctx.graph)):
        prep.usable = True
    cp = dict(rec.checkpoints.get("copy") or {})
    if prep is not None and prep.usable:
        # referenced global rows: only those of rows touched since C0 (the rest was copied, and
        # their keys kept, before the fence); copy_phase then skips the globals
        t0 = time.monotonic()
        fg = incremental.fenced_globals(ctx.src.dsn, ctx.dst.dsn, ctx.builder, ctx.workspace_id, rec.id, prep)
        st["fenced_globals_seconds"] = round(time.monotonic() - t0, 3)
        if fg is not None:
            cp["globals"] = fg
    done = dict(cp.get("tables") or {})
    if replicated_ok:
        # no counting under the fence (a scan of the workspace): rows as planned; verify reports exact counts
        st["replication_done"] = True
        planned = {t["table"]: t for t in rec.plan.get("tables", [])}
        for t in repl.row_filtered(ctx.graph):
            if t not in done:
                done[t] = {"rows": int(planned.get(t, {}).get("rows", 0)), "bytes": int(planned.get(t, {}).get("bytes", 0)),
                           "seconds": 0.0, "via": "replication", "rows_as_planned": True}
        for t in repl.path_tables(ctx.graph) if delta is not None else []:
            if t not in done:
                done[t] = {"rows": int((st.get("path_precopied") or {}).get(t, 0)), "bytes": int(planned.get(t, {}).get("bytes", 0)),
                           "seconds": 0.0, "via": "copied ahead + changed rows under the fence", "changed_rows": delta[t]}
    else:
        st["replication_done"] = False
        done = {}
        phases.emit_state(ctx, "replication did not finish (crash, failure or failed verification): copying every table under the fence")
    rec = checkpoint(ctx, rec, {"online": st, "copy": {**cp, "tables": done}})
    faults.point("online_replication_removed")
    t0 = time.monotonic()
    try:
        return phases.copy_phase(ctx, rec)
    finally:
        _FENCED_STEPS.setdefault(rec.id, {})["copy_phase"] = round(time.monotonic() - t0, 3)


@retry_transient
def _precopy(ctx: MoveContext, table: str) -> int:
    """Copy a path table's rows ahead of the fence. The target checks no foreign keys in this
    transaction (``session_replication_role = replica``, as the subscription's own apply does):
    a parent row may still be on its way through replication. The fenced catch-up, the changed
    rows and verification make the result exact."""
    from residency import db

    from .progress import Meter

    b = ctx.builder
    params = ctx.params()
    meter = Meter(ctx.emit, "copy", f"{table} (ahead of the fence)", None)
    with ctx.connect("source") as src, db.connect(ctx.dst.dsn, application_name="residency-online") as dst:
        with dst.transaction():
            dst.execute("SET LOCAL session_replication_role = replica")
            dst.execute(b.delete_rows(table), params)
            rows = copy_mod._stream(src, dst, b.copy_out(table), b.copy_in(table), params, meter, ctx.should_stop)
    meter.finish(rows)
    return rows


def _apply_changes(ctx: MoveContext, rec: MoveRecord) -> dict[str, int]:
    """Under the fence: copy again the path-table rows whose keys the change log recorded since
    their copy ahead of the fence (upsert parents first, then delete what the source no longer
    has, children first), in one target transaction."""
    from psycopg import sql
    from psycopg.types.json import Jsonb

    from residency import db

    b = ctx.builder
    tables = repl.path_tables(ctx.graph)
    out: dict[str, int] = {}
    with ctx.connect("source") as src, db.connect(ctx.dst.dsn, application_name="residency-online") as dst:
        keys = {t: [Jsonb(k) for k in repl.changed_keys(src, b, rec.id, t)] for t in tables}
        with dst.transaction():
            temps: dict[str, str] = {}
            for i, t in enumerate(tables):
                if not keys[t]:
                    out[t] = 0
                    continue
                temps[t] = f"residency_changed_{i}"
                dst.execute(b.temp_like(temps[t], t))
                params = ctx.params(keys=keys[t])
                with src.cursor().copy(b.copy_out_keys_rows(t), params) as cout, dst.cursor().copy(
                    b.copy_in(t, into=sql.Identifier(temps[t]))
                ) as cin:
                    for chunk in cout:
                        cin.write(chunk)
                out[t] = dst.execute(b.upsert_from(t, temps[t])).rowcount
            for t in reversed(tables):
                if t in temps:
                    out[t] += dst.execute(b.delete_keys_absent(t, temps[t]), {"keys": keys[t]}).rowcount
    return out


# Seconds each fenced step took in this process (move id → step → seconds), written to the
# move's checkpoints after cut-over (outside the fence) as ``online.fenced_steps``.
_FENCED_STEPS: dict[int, dict[str, float]] = {}


def _timed(name: str, phase: Callable[[MoveContext, MoveRecord], MoveRecord]) -> Callable[[MoveContext, MoveRecord], MoveRecord]:
    def run(ctx: MoveContext, rec: MoveRecord) -> MoveRecord:
        t0 = time.monotonic()
        try:
            return phase(ctx, rec)
        finally:
            _FENCED_STEPS.setdefault(rec.id, {})[name] = round(time.monotonic() - t0, 3)

    run.__name__ = phase.__name__
    run.__doc__ = phase.__doc__
    return run


def verify_phase(ctx: MoveContext, rec: MoveRecord) -> MoveRecord:
    """Incremental verification when this process prepared it before the fence and the fenced copy
    went the replicated way; else the full verification (snapshot's)."""
    prep = incremental.PREPARED.pop(rec.id, None)
    st = rec.checkpoints.get("online") or {}
    if prep is None or not prep.usable or not st.get("replication_done"):
        return phases.verify_phase(ctx, rec)
    return phases.verify_phase(ctx, rec, verifier=lambda: incremental.verify(
        ctx.src.dsn, ctx.dst.dsn, ctx.builder, ctx.workspace_id, rec.id, prep, rec.source, rec.target))


def cutover_phase(ctx: MoveContext, rec: MoveRecord) -> MoveRecord:
    """Cut over (snapshot's component), then remove the replication: outside the fence. A failure
    to remove it leaves the move cut over; `move status` lists the leftovers and `move resume`
    removes them."""
    t0 = time.monotonic()
    rec = phases.cutover_phase(ctx, rec)
    steps = {**_FENCED_STEPS.pop(rec.id, {}), "cut_over": round(time.monotonic() - t0, 3)}
    faults.point("online_cut_over")
    t0 = time.monotonic()
    removed: float | None = None
    try:
        teardown(ctx, rec)
        removed = round(time.monotonic() - t0, 3)
    except Exception as exc:  # noqa: BLE001 - the move is cut over; the leftovers are reported
        phases.emit_state(ctx, f"cut over, but removing the replication of move {rec.id} failed ({first_line(exc, '')});"
                   f" `residency move resume {rec.id}` removes it")
    st = rec.checkpoints.get("online") or {}
    breakdown = {
        "fenced_to_caught_up": st.get("fence_to_caught_up_seconds"),
        "stop_replication": st.get("stop_replication_seconds"),
        "path_changes": st.get("path_changes_seconds"),
        "globals_and_touched_keys": st.get("fenced_globals_seconds"),
        "copy_phase": steps.get("copy_phase"),
        "replicated_copy_total": steps.get("replicated_copy"),
        "verify": steps.get("verify"),
        "cut_over": steps.get("cut_over"),
    }
    from residency import moves

    with ctx.connect("control", autocommit=False) as cp:
        with cp.transaction():
            moves.checkpoint(cp, rec.id, {"online": {**st, "fenced_steps": steps, "teardown_after_cut_over_seconds": removed}})
            moves.update_report(cp, rec.id, {"online": {**(rec.report.get("online") or {}), "fence_breakdown": breakdown,
                                                        "teardown_after_cut_over_seconds": removed}})
            return moves.get(cp, rec.id)


ONLINE = Strategy(
    "online",
    {
        "planned": _guarded(replicate_phase),
        "fenced": _timed("replicated_copy", _guarded(finish_copy_phase)),
        "copied": _timed("verify", _guarded(verify_phase)),
        "verified": cutover_phase,
    },
    teardown=teardown,
)


# ------------------------------------------------------------------------------ plan


def plan_strategy(cat: Catalogue, conns: Connections, plan: Any, requested: str) -> None:
    """Choose the strategy (``auto``: by size), say why, say which path every table takes, and
    check the online preconditions (each failing one with the statement that fixes it)."""
    from .context import load_graph
    from .sqlbuild import Builder
    from residency import db

    big = plan.total_bytes >= ONLINE_THRESHOLD_BYTES
    est = plan.total_bytes / SNAPSHOT_RATE_BYTES
    if requested == "snapshot":
        plan.strategy, plan.strategy_reason = "snapshot", "requested: the workspace stays fenced (read-only) for the whole copy"
        return
    if requested == "auto" and not big:
        plan.strategy = "snapshot"
        plan.strategy_reason = (
            f"chosen by size: {plan.total_bytes / 1048576:.1f} MiB is under the {ONLINE_THRESHOLD_BYTES / 1048576:.0f} MiB threshold"
            f" (a snapshot move keeps it read-only for roughly {max(est, 1):.0f} s); use --strategy online to keep it writable"
        )
        return
    src_ep, dst_ep = conns.region(plan.source), conns.region(plan.target)
    with db.connect(src_ep.dsn, autocommit=True) as c:
        g = load_graph(c, cat)
    b = Builder(g)
    try:
        pre = repl.preconditions(src_ep.dsn, dst_ep.dsn, repl.source_conninfo(plan.source, src_ep.dsn), g, b)
    except Exception as exc:  # noqa: BLE001 - a failed check is a refusal, not a crash
        first = first_line(exc)
        pre = [repl.Precondition("checks", False, f"cannot check the online preconditions: {first}")]
    plan.preconditions = [p.__dict__ for p in pre]
    failing = [p for p in pre if not p.ok]
    if requested == "auto" and failing:
        plan.strategy = "snapshot"
        plan.strategy_reason = (
            f"chosen by size would be online ({plan.total_bytes / 1048576:.1f} MiB), but {len(failing)} online precondition(s)"
            " fail (see notes): falling back to snapshot"
        )
        plan.notes.extend(p.line() for p in failing)
        return
    plan.strategy = "online"
    plan.strategy_reason = (
        "requested: logical replication keeps the workspace writable; the fence covers only the final catch-up" if requested == "online" else
        f"chosen by size: {plan.total_bytes / 1048576:.1f} MiB is over the {ONLINE_THRESHOLD_BYTES / 1048576:.0f} MiB threshold"
        f" (a snapshot move would keep it read-only for roughly {est:.0f} s); logical replication keeps it writable"
    )
    plan.refusals.extend(p.line() for p in failing)
    rf, whole = set(repl.row_filtered(g)), set(repl.fenced_tables(g))
    for t in plan.tables:
        if t.table in rf:
            key = g.reach[t.table].key_column
            t.path = f"replication, row filter {key} = {plan.workspace_id}"
        elif t.table in whole:
            t.path = NO_KEY_PATH
        else:
            t.path = "snapshot copy under the fence (no row filter can follow its path)"
