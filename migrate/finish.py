"""The ends of a move: cleanup after the grace period, and rollback before cut-over."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from residency import audit, directory, moves, retention
from residency.errors import OperationError
from residency.evidence import section_hash
from residency.moves import MoveRecord

from . import copy as copy_mod
from . import faults, fence, objects, tenant_objects
from .context import MoveContext
from .phases import checkpoint, details, now_iso, subject
from .progress import Progress
from .retry import transient


class CleanupRefused(OperationError):
    """Cleanup declined to delete the source copy (grace period not over, or the workspace is not
    safely homed in the target). Nothing was attempted, so the move is not failed."""


def _source_evidence(ctx: MoveContext) -> dict[str, Any]:
    """What is about to be deleted: per table rows and checksum; objects per bucket."""
    b = ctx.builder
    params = ctx.params()
    tables = {}
    with ctx.connect("source") as conn:
        for t in ctx.graph.order:
            n, s = conn.execute(b.checksum(t), params).fetchone()
            tables[t] = {"rows": int(n), "checksum": str(s)}
    inv = objects.inventory(ctx.src, ctx.cat.environment.buckets, ctx.cat.workspace.prefix_for(ctx.workspace_id))
    objs = {k: {"objects": len(v), "bytes": sum(o.size for o in v.values())} for k, v in inv.items()}
    with ctx.connect("source") as conn:
        seqs = tenant_objects.read_sequences(conn, ctx.graph.schema.name, tenant_objects.sequence_names(ctx.cat.workspace, ctx.workspace_id))
    versions = objects.version_inventory(ctx.src, ctx.cat.environment.buckets, ctx.cat.workspace.prefix_for(ctx.workspace_id))
    return {"tables": tables, "objects": objs, "object_count": sum(o["objects"] for o in objs.values()),
            "rows": sum(t["rows"] for t in tables.values()), "versions": versions,
            "tenant_objects": {"sequences": {q.name: {"last_value": q.last_value, "is_called": q.is_called} for q in seqs}}}


@transient
def _delete_source_rows(ctx: MoveContext, token: str | None) -> dict[str, int]:
    b = ctx.builder
    params = ctx.params()
    out: dict[str, int] = {}
    with ctx.connect("source", autocommit=False) as conn:
        with conn.transaction():
            if token:
                fence.bypass(conn, b, token)
            out = copy_mod.delete_workspace_rows(conn, b, params, list(ctx.graph.order))
    return out


def cleanup(ctx: MoveContext, rec: MoveRecord, grace: timedelta, now: datetime | None = None) -> MoveRecord:
    now = now or datetime.now(timezone.utc)
    cut_at = rec.checkpoints.get("cut_over_at")
    if not cut_at:
        raise OperationError(f"move {rec.id} has no cut-over time; it cannot be cleaned up")
    ends = datetime.fromisoformat(cut_at) + grace
    if now < ends:
        raise CleanupRefused(
            f"move {rec.id}: the grace period ends {ends:%Y-%m-%d %H:%M:%S %Z} (cut over {cut_at}, grace {grace});"
            " the source copy is kept until then (use --grace to shorten it)"
        )
    with ctx.connect("control") as cp:
        entry = directory.require(cp, rec.workspace_id)
    if entry.region != rec.target:
        raise CleanupRefused(f"workspace {rec.workspace_id} is homed in {entry.region}, not {rec.target}: refusing to delete the source copy")
    with ctx.connect("target") as t:
        root = ctx.cat.workspace.root_table
        (n,) = t.execute(ctx.builder.count_rows(root), ctx.params()).fetchone()[:1]
    if not n:
        raise CleanupRefused(f"workspace {rec.workspace_id} has no row in {root} of {rec.target}: refusing to delete the source copy")

    evidence = rec.checkpoints.get("deletion")
    if not evidence or "versions" not in evidence:
        evidence = _source_evidence(ctx)
        rec = checkpoint(ctx, rec, {"deletion": evidence})
    ctx.emit(Progress("state", "cleanup", message=f"deleting {evidence['rows']:,} rows and {evidence['object_count']} objects from {rec.source}"))
    token = rec.checkpoints.get("fence_token")
    with ctx.connect("source") as conn:
        current = fence.token_of(conn, ctx.builder, rec.workspace_id)
    deleted = _delete_source_rows(ctx, current or token)
    faults.point("cleanup_rows_deleted")
    prefix = ctx.cat.workspace.prefix_for(ctx.workspace_id)
    purged = objects.purge_versions(ctx.src, ctx.cat.environment.buckets, prefix)
    faults.point("cleanup_objects_deleted")
    dropped = tenant_objects.drop(ctx.src.dsn, ctx.graph.schema.name, ctx.cat.workspace, ctx.workspace_id)
    left = objects.version_inventory(ctx.src, ctx.cat.environment.buckets, prefix)
    if left:
        v = left[0]
        raise OperationError(f"{len(left)} object versions remain under {prefix} after the purge, e.g. s3://{v['bucket']}/{v['key']}"
                             f" version {v['version_id']}; run `residency move resume {rec.id}`")
    deleted_objs: dict[str, int] = {}
    for v in purged:
        deleted_objs[v["bucket"]] = deleted_objs.get(v["bucket"], 0) + 1
    with ctx.connect("source") as conn:
        fence.lift(conn, ctx.builder, rec.workspace_id)
    at = now_iso()
    # every version seen before the purge (a resumed cleanup may have deleted some already) or by it
    listed = {(v["bucket"], v["key"], v["version_id"]): v for v in evidence["versions"] + purged}
    versions = sorted(listed.values(), key=lambda v: (v["place"], v["bucket"], v["key"], v["version_id"]))
    held = retention.still_held(ctx.cat.region(rec.source), datetime.fromisoformat(at))
    record = {
        "deleted_at": at,
        "region": rec.source,
        "grace": str(grace),
        "tables": evidence["tables"],
        "rows": evidence["rows"],
        "objects": evidence["objects"],
        "object_count": evidence["object_count"],
        "tenant_objects": evidence.get("tenant_objects", {}),
        "deleted_now": {"rows": deleted, "objects": deleted_objs, "tenant_objects": dropped},
        "object_versions": versions,
        "versions_deleted": sum(1 for v in versions if v["kind"] == "version"),
        "delete_markers_deleted": sum(1 for v in versions if v["kind"] == "delete_marker"),
        "versions_remaining": 0,
        "still_held": held,
        "no_copy_after": retention.no_copy_after(held, datetime.fromisoformat(at)),
        "jurisdiction": ctx.cat.region(rec.source).jurisdiction,
    }
    with ctx.connect("control", autocommit=False) as cp:
        with cp.transaction():
            moves.update_report(cp, rec.id, {"deletion": record})
            moves.transition(cp, rec.id, "cleaned", expect=["cut_over"])
            audit.append(cp, "move.cleaned", subject(rec), details(rec, rows=evidence["rows"], objects=evidence["object_count"],
                                                                   checksums={t: v["checksum"] for t, v in evidence["tables"].items()},
                                                                   versions=len(versions), no_copy_after=record["no_copy_after"],
                                                                   record_sha256=section_hash(record)), ctx.actor)
            return moves.get(cp, rec.id)


def rollback(ctx: MoveContext, rec: MoveRecord) -> MoveRecord:
    ctx.emit(Progress("state", "rollback", message=f"removing the copy in {rec.target}"))
    removed = copy_mod.clear_target(ctx.dst.dsn, ctx.builder, ctx.workspace_id, list(ctx.graph.order))
    faults.point("rollback_target_cleared")
    dropped = tenant_objects.drop(ctx.dst.dsn, ctx.graph.schema.name, ctx.cat.workspace, ctx.workspace_id)
    objs = objects.delete_objects(ctx.dst, ctx.cat.environment.buckets, ctx.cat.workspace.prefix_for(ctx.workspace_id))
    with ctx.connect("source") as conn:
        fence.lift(conn, ctx.builder, rec.workspace_id, rec.id)
    at = now_iso()
    fenced_at = rec.checkpoints.get("fenced_at")
    with ctx.connect("control", autocommit=False) as cp:
        with cp.transaction():
            e = directory.get(cp, rec.workspace_id, for_update=True)
            if e is not None and e.status == "moving" and e.region == rec.source:
                directory.set_status(cp, rec.workspace_id, "active")
            moves.update_report(cp, rec.id, {"rollback": {"at": at, "removed_rows": removed, "removed_objects": objs, "removed_tenant_objects": dropped,
                                                          "note": "global rows added to the target are kept (other workspaces may use them)"},
                                             "fence": {"fenced_at": fenced_at, "lifted_at": at,
                                                       "seconds": _secs(fenced_at, at)}})
            moves.transition(cp, rec.id, "rolled_back", expect=[rec.state])
            audit.append(cp, "move.rolled_back", subject(rec), details(rec, removed_rows=sum(removed.values()),
                                                                       removed_objects=sum(objs.values())), ctx.actor)
            return moves.get(cp, rec.id)


def _secs(a: str | None, b: str) -> float | None:
    if not a:
        return None
    return round((datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds(), 3)
