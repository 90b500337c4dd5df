"""``deleted_workspaces``: a workspace whose root row was marked deleted longer ago than the rule
says is purged -- every row the mover would move (children first, owned rows only where nothing
else points at them), every object version and delete marker under its prefix in the region's
buckets and their replicas -- with a deletion record (per table rows and the mover's checksum,
per bucket versions) and a ``retention.purge`` audit entry.

The rows of one workspace go in one transaction: nobody writes to a deleted workspace, so its row
locks keep no writer waiting, and a purge is all or nothing.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from residency import audit
from residency.audit import Actor
from residency.catalogue import Catalogue
from residency.retention_rules import PurgeRule


def expired_workspaces(conn: psycopg.Connection[Any], b: Any, rule: PurgeRule, now: datetime) -> tuple[list[str], str | None]:
    """Ids of the root rows marked deleted before ``now - rule.after``, or a problem."""
    root = b.graph.spec.root_table
    t = b.graph.schema.tables.get(root)
    if t is None or t.column(rule.marked_by) is None:
        return [], f"deleted_workspaces ({rule.scope}, {rule.at}): column '{rule.marked_by}' does not exist in the root table '{root}'"
    (pk,) = t.primary_key
    q = sql.SQL("SELECT {pk}::text FROM {t} WHERE {m} < %s ORDER BY 1").format(pk=sql.Identifier(pk), t=b.qname(root), m=sql.Identifier(rule.marked_by))
    return [r[0] for r in conn.execute(q, (now - rule.after,)).fetchall()], None


def plan_workspace(conn: psycopg.Connection[Any], b: Any, ws: str) -> dict[str, int]:
    """Rows per table the purge of ``ws`` would delete."""
    params = b.params(ws)
    return {t: int(conn.execute(b.count_rows(t), params).fetchone()[0]) for t in b.graph.order}  # type: ignore[index]


def purge_workspace(cat: Catalogue, conn: psycopg.Connection[Any], cp: psycopg.Connection[Any], b: Any, ep: Any, region: str, ws: str,
                    rule: PurgeRule, actor: Actor | None) -> dict[str, Any]:
    """Delete the workspace's rows and objects; record and audit it. Returns the record's purge
    part (rule, tables, object_versions) with its rows and ``record_id``."""
    from residency.migrate import objects
    from residency.migrate.copy import delete_workspace_rows

    params = b.params(ws)
    tables: dict[str, dict[str, Any]] = {}
    with conn.transaction():
        for t in b.graph.order:
            n, ck = conn.execute(b.checksum(t), params).fetchone()  # type: ignore[misc]
            tables[t] = {"rows": int(n), "checksum": str(ck)}
        deleted = delete_workspace_rows(conn, b, params, list(b.graph.order))
    for t, n in deleted.items():
        tables[t]["deleted"] = int(n)
    prefix = cat.workspace.prefix_for(ws)
    versions = objects.purge_versions(ep, cat.environment.buckets, prefix)
    per_bucket: dict[str, int] = {}
    for v in versions:
        per_bucket[v["bucket"]] = per_bucket.get(v["bucket"], 0) + 1
    record = {"region": region, "workspace_id": ws, "purge": {"rule": {"after_seconds": int(rule.after.total_seconds()), "marked_by": rule.marked_by,
                                                                           "scope": rule.scope}, "tables": tables, "object_versions": per_bucket}}
    rows = sum(int(v.get("deleted", 0)) for v in tables.values())
    with cp.transaction():
        (rid,) = cp.execute(  # type: ignore[misc]
            "INSERT INTO residency.retention_runs (region, workspace_id, state, rules, record, rows_deleted, finished_at)"
            " VALUES (%s, %s, 'done', %s, %s, %s, now()) RETURNING id",
            (region, ws, Jsonb([record["purge"]["rule"]]), Jsonb(record), rows),
        ).fetchone()
        h = hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()
        audit.append(cp, "retention.purge", f"workspace:{ws}", {"region": region, "retention_run": rid, "rows": rows,
                                                                "object_versions": sum(per_bucket.values()), "record_sha256": h}, actor)
    return {**record["purge"], "rows": rows, "record_id": rid}
