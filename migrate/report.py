"""A move's report: per-table counts and checksums on both sides, objects, the fence duration,
the total time, and (after cleanup) the deletion record. Text and JSON."""

from __future__ import annotations

from typing import Any

from residency.moves import MoveRecord

from residency.units import format_bytes, format_duration


def build(rec: MoveRecord) -> dict[str, Any]:
    r = rec.report or {}
    verify = r.get("verify") or {}
    copy = r.get("copy") or {}
    tables = []
    for t in verify.get("tables", []):
        c = (copy.get("tables") or {}).get(t["table"], {})
        tables.append({**t, "bytes": c.get("bytes"), "copy_seconds": c.get("seconds")})
    return {
        "move_id": rec.id,
        "workspace_id": rec.workspace_id,
        "source": rec.source,
        "target": rec.target,
        "strategy": rec.strategy,
        "state": rec.state,
        "error": rec.error,
        "resume_from": rec.resume_from,
        "created_by": rec.created_by,
        "created_at": rec.created_at.isoformat(),
        "verified": bool(verify.get("ok")),
        "tables": tables,
        "objects": (verify.get("objects") or {}),
        "objects_copied": copy.get("objects"),
        "globals": copy.get("globals"),
        "copy": {k: copy.get(k) for k in ("rows", "bytes", "seconds", "rows_per_second", "attempts")} if copy else None,
        "fence": r.get("fence"),
        "timing": r.get("timing"),
        "cut_over": r.get("cut_over"),
        "deletion": r.get("deletion"),
        "no_copy_after": (r.get("deletion") or {}).get("no_copy_after"),
        "rollback": r.get("rollback"),
        "fence_breakdown": (r.get("online") or {}).get("fence_breakdown"),
        "verify_timings": verify.get("timings"),
        "verify_source_checksums": verify.get("source_checksums"),
        "references": verify.get("references"),
        "shared_rows": (rec.plan or {}).get("globals") or [],
        "plan_notes": (rec.plan or {}).get("notes") or [],
    }


def render(d: dict[str, Any]) -> str:
    lines = [
        f"move {d['move_id']}: workspace {d['workspace_id']} {d['source']} → {d['target']} ({d['strategy']}), state {d['state']}",
        f"started {d['created_at']} by {d['created_by']}",
    ]
    if d.get("error"):
        lines.append(f"error (in {d.get('resume_from')}): {d['error']}")
    if d["tables"]:
        w = max(len(t["table"]) for t in d["tables"])
        lines.append(f"{'table'.ljust(w)}  {'source rows':>11}  {'target rows':>11}  {'checksum (source = target)':<28}  ok")
        for t in d["tables"]:
            same = t["source_checksum"] if t["source_checksum"] == t["target_checksum"] else f"{t['source_checksum']} ≠ {t['target_checksum']}"
            if t.get("kind") == "global":
                same = "(global: presence of referenced rows)"
            lines.append(f"{t['table'].ljust(w)}  {t['source_rows']:>11,}  {t['target_rows']:>11,}  {same:<28}  {'yes' if t['ok'] else 'NO'}")
            for diff in t.get("differences") or []:
                lines.append(f"    key {diff['key']}: {diff['kind']}")
    modes = [t for t in d["tables"] if t.get("verify_mode") == "incremental"]
    if modes:
        full = [t for t in d["tables"] if t.get("verify_mode", "full") == "full"]
        lines.append("verified incrementally (key ranges changed since the pre-fence checksums): " + ", ".join(t["table"] for t in modes))
        if full:
            lines.append("verified in full: " + ", ".join(t["table"] + (f" ({t['verify_detail']})" if t.get("verify_detail") else "") for t in full))
    objs = d.get("objects") or {}
    for bucket, o in (objs.get("buckets") or {}).items():
        lines.append(f"objects {bucket}: {o['source_objects']} ({format_bytes(o['source_bytes'])}) → {o['target_objects']} ({format_bytes(o['target_bytes'])}) {'ok' if o['ok'] else 'MISMATCH'}")
    for p in objs.get("problems") or []:
        lines.append(f"    {p}")
    if d.get("copy"):
        c = d["copy"]
        rate = f", {c['rows_per_second']:,} rows/s" if c.get("rows_per_second") else ""
        lines.append(f"copied {c['rows']:,} rows ({format_bytes(c['bytes'] or 0)}) in {format_duration(c['seconds'])}{rate}, attempts {c['attempts']}")
    if d.get("fence"):
        f = d["fence"]
        lines.append(f"fence: from {f.get('fenced_at')}; workspace not writable for {format_duration(f.get('seconds'))}" if f.get("seconds") is not None else f"fence: since {f.get('fenced_at')}")
    if d.get("fence_breakdown"):
        lines.append("fence breakdown: " + ", ".join(f"{k.replace('_', ' ')} {v:.3f} s" for k, v in d["fence_breakdown"].items() if v is not None))
    if d.get("timing"):
        lines.append(f"total time to cut-over: {format_duration(d['timing'].get('total_seconds'))}")
    if d.get("verify_timings"):
        lines.append("verify timings: " + ", ".join(f"{k.replace('_', ' ')} {v:.3f} s" for k, v in d["verify_timings"].items() if v is not None)
                     + (f" (source checksums: {d['verify_source_checksums']})" if d.get("verify_source_checksums") else ""))
    refs = d.get("references") or {}
    if refs:
        lines.append(f"references checked: {refs.get('checked', 0)}; dangling in {d['target']}: {len(refs.get('dangling_in_target') or [])},"
                     f" already dangling in {d['source']}: {len(refs.get('dangling_in_source') or [])}; shared rows differing: {len(refs.get('collisions') or [])}")
        for p in refs.get("problems") or []:
            lines.append(f"    {p}")
    for g in d.get("shared_rows") or []:
        why = g.get("why") or "global"
        lines.append(f"shared rows {g['table']} ({why}): {g['referenced_rows']} referenced, {g['missing_in_target']} were missing in {d['target']} (copied, never overwritten, never deleted from {d['source']})")
    for n in d.get("plan_notes") or []:
        lines.append(f"decided at plan: {n}")
    lines.append(f"verified: {'yes' if d['verified'] else 'no'}")
    if d.get("deletion"):
        x = d["deletion"]
        lines.append(f"source copy deleted {x['deleted_at']} in {x['region']}: {x['rows']:,} rows, {x['object_count']} objects")
        for t, v in x["tables"].items():
            lines.append(f"    {t}: {v['rows']:,} rows, checksum {v['checksum']}")
        if "object_versions" in x:
            places = sorted({f"{v['bucket']} ({v['aws_region']})" for v in x["object_versions"]})
            lines.append(f"    object versions deleted: {x['versions_deleted']}, delete markers deleted: {x['delete_markers_deleted']},"
                         f" remaining: {x['versions_remaining']}" + (f" in {', '.join(places)}" if places else ""))
        for h in x.get("still_held") or []:
            lines.append(f"    still held: {h['what']} in {h['where']} until {h['until']} ({h['days']} days)")
        if x.get("no_copy_after"):
            lines.append(f"no copy remains in {x.get('jurisdiction') or x['region']} after {x['no_copy_after']}")
    if d.get("rollback"):
        lines.append(f"rolled back {d['rollback']['at']}")
    return "\n".join(lines)
