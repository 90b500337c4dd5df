"""A move and retention: the rules the workspace will live under in the target region, checked
against the target's schema before anything moves (called by the mover's plan)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import psycopg

from residency.catalogue import Catalogue
from residency.retention_rules import effective

from . import tree as tree_mod


def check(cat: Catalogue, ws: str, source: str, target: str, src_builder: Any, dst_schema: Any,
          sconn: psycopg.Connection[Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """(the plan's ``retention`` field, notes, refusals): the workspace's retention before and
    after the move, what changes, how many of its rows the target's rules expire at once, and a
    refusal for a target rule its schema can't run (a table or column the target lacks)."""
    import residency.migrate.graph as graph_mod
    from residency.migrate.sqlbuild import Builder

    before, after = effective(cat, source, ws), effective(cat, target, ws)
    notes: list[str] = []
    refusals: list[str] = []
    def rule(s: str) -> str:  # a rule without where it was said: the same 35d from two scopes is no change
        return s.rsplit(" (", 1)[0]

    gone = [s for s in before.summary() if rule(s) not in {rule(x) for x in after.summary()}]
    new = [s for s in after.summary() if rule(s) not in {rule(x) for x in before.summary()}]
    notes.append(f"retention in {target} after the move: " + "; ".join(after.summary()))
    if gone or new:
        notes.append(f"retention changes from {source}: " + "; ".join([f"no longer: {s}" for s in gone] + [f"now: {s}" for s in new]))
    dst = Builder(graph_mod.build(dst_schema, cat.workspace))
    expire_now: list[dict[str, Any]] = []
    now = datetime.now(timezone.utc)
    for rule in after.tables:
        t = tree_mod.build(dst.graph, rule)
        if t.problems:
            refusals.extend(f"{target}'s retention: {p}" for p in t.problems)
            continue
        st = tree_mod.build(src_builder.graph, rule)
        if st.problems:
            continue
        q = tree_mod.SQL(src_builder, st)
        n, lo, _ = sconn.execute(q.count(st.root), q.params(ws, cutoff=now - rule.older_than)).fetchone()  # type: ignore[misc]
        if n:
            expire_now.append({"table": rule.table, "rows": int(n), "oldest": lo.isoformat() if lo else None, "rule": rule.describe()})
            notes.append(f"{n} rows of {rule.table} are older than {target}'s rule ({rule.describe()}): "
                         f"the first retention sweep in {target} after the move deletes them")
    info = {"before": before.to_dict(), "after": after.to_dict(), "changes": {"no_longer": gone, "now": new}, "expire_at_once": expire_now}
    return info, notes, refusals
