"""Plan a move from the databases themselves, and refuse what must not happen.

Nothing is changed: the source is only read, the target only read (a temporary table holding
candidate keys lives in a transaction that is rolled back), the control plane only read. Each
refusal is one line.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg

from residency import db, directory, moves, policy
from residency.catalogue import Catalogue
from residency.connections import Connections, redact
from residency.errors import InputError, ResidencyError

from . import graph as graph_mod
from .introspect import Schema, introspect
from .objects import inventory
from .sqlbuild import Builder



@dataclass
class TablePlan:
    table: str
    reach: str
    kind: str
    rows: int
    bytes: int
    path: str = ""  # online: "replication, row filter ..." or "snapshot copy under the fence"


@dataclass
class GlobalPlan:
    table: str
    referenced_rows: int
    missing_in_target: int


@dataclass
class MovePlan:
    workspace_id: str
    source: str | None
    target: str
    strategy: str
    tables: list[TablePlan] = field(default_factory=list)
    globals: list[GlobalPlan] = field(default_factory=list)
    objects: dict[str, dict[str, int]] = field(default_factory=dict)
    refusals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    policy: str = ""
    planned_at: str = ""
    seconds: float = 0.0
    strategy_reason: str = ""
    preconditions: list[dict[str, Any]] = field(default_factory=list)  # online: each check, ok, detail, fix

    @property
    def ok(self) -> bool:
        return not self.refusals

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    @property
    def object_count(self) -> int:
        return sum(b["objects"] for b in self.objects.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ok=self.ok, total_rows=self.total_rows, total_bytes=self.total_bytes, object_count=self.object_count)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MovePlan":
        return cls(
            workspace_id=d["workspace_id"],
            source=d.get("source"),
            target=d["target"],
            strategy=d.get("strategy", "snapshot"),
            tables=[TablePlan(**t) for t in d.get("tables", [])],
            globals=[GlobalPlan(**g) for g in d.get("globals", [])],
            objects=d.get("objects", {}),
            refusals=list(d.get("refusals", [])),
            notes=list(d.get("notes", [])),
            policy=d.get("policy", ""),
            planned_at=d.get("planned_at", ""),
            seconds=d.get("seconds", 0.0),
            strategy_reason=d.get("strategy_reason", ""),
            preconditions=list(d.get("preconditions", [])),
        )


def plan_move(cat: Catalogue, conns: Connections, workspace_id: object, target: str, strategy: str = "snapshot") -> MovePlan:
    """Everything a move would do, or every reason it must not; changes nothing."""
    t0 = time.monotonic()
    ws = cat.workspace.parse_id(workspace_id)  # bad input before any connection
    from .strategy import get as get_strategy

    if strategy != "auto":  # auto: chosen by size (migrate.online.plan_strategy)
        get_strategy(strategy)  # an unknown strategy is bad input
    cat.region(target)  # an unknown region name is bad input, not a refusal
    plan = MovePlan(ws, None, target, "snapshot" if strategy == "auto" else strategy, planned_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    try:
        _plan(cat, conns, ws, target, plan)
        if plan.tables and plan.source:
            from .online import plan_strategy

            plan_strategy(cat, conns, plan, strategy)
    finally:
        plan.seconds = round(time.monotonic() - t0, 3)
    return plan


def _plan(cat: Catalogue, conns: Connections, ws: str, target: str, plan: MovePlan) -> None:
    with db.connect(conns.control_dsn, autocommit=True) as cp:
        entry = directory.get(cp, ws)
        if entry is None:
            plan.refusals.append(f"unknown workspace '{ws}': it is not in the directory")
            return
        plan.source = entry.region
        open_move = moves.open_move_for(cp, ws)
    source = entry.region
    decision = policy.may_move(cat, source, target)  # the one place the rule lives
    plan.policy = decision.reason
    if source == target:
        plan.refusals.append(f"target equals home: workspace '{ws}' is already in region '{target}'")
    elif not cat.region(target).is_active:
        plan.refusals.append(f"target region '{target}' is not active (status {cat.region(target).status}): {decision.reason}")
    elif not decision:
        plan.refusals.append(f"policy forbids the move: {decision.reason}")
    if open_move is not None:
        plan.refusals.append(
            f"a move is already running for workspace '{ws}': move {open_move.id} ({open_move.state}, {open_move.source} → {open_move.target})"
        )
    if source == target or source not in cat.regions:
        if source not in cat.regions:
            plan.refusals.append(f"workspace '{ws}' is homed in '{source}', which regions.yaml does not define")
        return
    try:
        src_ep, dst_ep = conns.region(source), conns.region(target)
    except ResidencyError as exc:
        plan.refusals.append(str(exc))
        return

    try:
        _plan_databases(cat, ws, source, target, src_ep, dst_ep, plan)
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        plan.refusals.append(f"cannot read the databases of {source} or {target}: {first}")
        return
    if plan.refusals and not plan.tables:
        return

    try:
        src_inv = inventory(src_ep, cat.environment.buckets, cat.workspace.prefix_for(ws))
        dst_inv = inventory(dst_ep, cat.environment.buckets, cat.workspace.prefix_for(ws))
    except Exception as exc:  # an unreachable object store is a refusal, not a crash
        plan.refusals.append(f"cannot list objects: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return
    for logical, objs in src_inv.items():
        plan.objects[logical] = {"objects": len(objs), "bytes": sum(o.size for o in objs.values())}
    for logical, objs in dst_inv.items():
        if objs:
            plan.refusals.append(
                f"objects already present in target {target}: {len(objs)} under {cat.workspace.prefix_for(ws)} in bucket {dst_ep.bucket(logical)}"
            )


def _plan_databases(cat: Catalogue, ws: str, source: str, target: str, src_ep: Any, dst_ep: Any, plan: MovePlan) -> None:
    with db.connect(src_ep.dsn, autocommit=True) as sconn, db.connect(dst_ep.dsn, autocommit=False) as tconn:
        src_schema = introspect(sconn)
        dst_schema = introspect(tconn)
        tconn.rollback()
        g = graph_mod.build(src_schema, cat.workspace)
        plan.refusals.extend(g.problems)
        plan.refusals.extend(_schema_differences(g, dst_schema, target))
        if g.problems:
            return
        b = Builder(g)
        params = b.params(ws)
        root = cat.workspace.root_table
        for name in g.order:
            rows, nbytes = sconn.execute(b.count_rows(name), params).fetchone()
            r = g.reach[name]
            plan.tables.append(TablePlan(name, r.describe(), r.kind, int(rows), int(nbytes)))
        root_rows = next((t.rows for t in plan.tables if t.table == root), 0)
        if root_rows == 0:
            plan.refusals.append(f"unknown workspace '{ws}': no row in {root} of region {source} ({redact(src_ep.dsn)})")
            return
        if any("target schema differs" in r for r in plan.refusals):
            return
        for name in g.order:
            tp = next(t for t in plan.tables if t.table == name)
            if tp.rows:
                line = _key_conflicts(sconn, tconn, b, name, params, target)
                if line:
                    plan.refusals.append(line)
        for gname in g.global_order:
            n, missing = _global_missing(sconn, tconn, b, gname, params)
            plan.globals.append(GlobalPlan(gname, n, missing))
        tconn.rollback()


def _schema_differences(g: graph_mod.Graph, dst: Schema, target: str) -> list[str]:
    out: list[str] = []
    names = [n for n, r in g.reach.items() if r.moves or r.kind == "global"]
    for name in sorted(names):
        st = g.schema.tables[name]
        tt = dst.table(name)
        if tt is None:
            out.append(f"target schema differs: table '{name}' is missing in {target}")
            continue
        for c in st.columns:
            if c.generated:
                continue
            tc = tt.column(c.name)
            if tc is None:
                out.append(f"target schema differs: column {name}.{c.name} is missing in {target}")
            elif tc.type != c.type:
                out.append(f"target schema differs: column {name}.{c.name} is {tc.type} in {target}, {c.type} in the source")
            elif tc.generated:
                out.append(f"target schema differs: column {name}.{c.name} is generated in {target} but not in the source")
        for tc in tt.columns:
            if st.column(tc.name) is None and tc.not_null and not tc.has_default and not tc.generated and not tc.identity:
                out.append(f"target schema differs: column {name}.{tc.name} exists only in {target} and is NOT NULL without a default")
        if tuple(tt.primary_key) != tuple(st.primary_key):
            out.append(f"target schema differs: primary key of {name} is ({', '.join(tt.primary_key)}) in {target}, ({', '.join(st.primary_key)}) in the source")
    return out


def _stream_keys(sconn: psycopg.Connection[Any], tconn: psycopg.Connection[Any], b: Builder, table: str, params: dict[str, Any], temp: str, *, global_: bool) -> None:
    key = b.graph.table(table).primary_key
    tconn.execute(b.temp_keys(temp, table, key))
    with sconn.cursor().copy(b.copy_out_keys(table, key, global_=global_), params) as out, tconn.cursor().copy(
        b.copy_in(table, key, into=_ident(temp))
    ) as into:
        for chunk in out:
            into.write(chunk)


def _ident(name: str) -> Any:
    from psycopg import sql

    return sql.Identifier(name)


def _key_conflicts(sconn: psycopg.Connection[Any], tconn: psycopg.Connection[Any], b: Builder, table: str, params: dict[str, Any], target: str) -> str | None:
    """A refusal line if primary keys of the moving rows already exist in the target."""
    key = b.graph.table(table).primary_key
    if len(key) == 1:  # fast path: nothing in the target within the moving keys' range
        lo, hi = sconn.execute(b.key_range(table, key), params).fetchone()
        try:
            (n,) = tconn.execute(b.count_key_between(table, key[0]), {"lo": lo, "hi": hi}).fetchone()
        except psycopg.Error:
            tconn.rollback()
            n = 1
        if n == 0:
            return None
    temp = "residency_plan_keys"
    _stream_keys(sconn, tconn, b, table, params, temp, global_=False)
    (n,) = tconn.execute(b.count_present(table, temp, key)).fetchone()
    sample = [r[0] if len(r) == 1 else r for r in tconn.execute(b.present_keys(table, temp, key, 5), {"limit": 5})]
    tconn.rollback()
    if not n:
        return None
    shown = ", ".join(str(s) for s in sample) + (", ..." if n > len(sample) else "")
    return f"primary keys of moving rows already present in target {target}: {table} has {n} ({', '.join(key)} = {shown})"


def _global_missing(sconn: psycopg.Connection[Any], tconn: psycopg.Connection[Any], b: Builder, gname: str, params: dict[str, Any]) -> tuple[int, int]:
    temp = "residency_plan_globals"
    key = b.graph.table(gname).primary_key
    _stream_keys(sconn, tconn, b, gname, params, temp, global_=True)
    (total,) = tconn.execute(_count_temp(temp)).fetchone()
    (present,) = tconn.execute(b.count_present(gname, temp, key)).fetchone()
    tconn.rollback()
    return int(total), int(total) - int(present)


def _count_temp(temp: str) -> Any:
    from psycopg import sql

    return sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(temp))


def render(plan: MovePlan) -> str:
    from .progress import human_bytes

    lines = [f"move plan: workspace {plan.workspace_id}, {plan.source or '?'} → {plan.target} ({plan.strategy})"]
    if plan.policy:
        lines.append(f"policy: {plan.policy}")
    if plan.strategy_reason:
        lines.append(f"strategy: {plan.strategy}: {plan.strategy_reason}")
    if plan.tables:
        w = max(len(t.table) for t in plan.tables)
        lines.append("tables (copy order):")
        for t in plan.tables:
            lines.append(f"  {t.table.ljust(w)}  {t.rows:>10,} rows  {human_bytes(t.bytes):>9}  {t.reach}" + (f"  [{t.path}]" if t.path else ""))
        lines.append(f"  {'total'.ljust(w)}  {plan.total_rows:>10,} rows  {human_bytes(plan.total_bytes):>9}")
    for gp in plan.globals:
        lines.append(f"global {gp.table}: {gp.referenced_rows} referenced rows, {gp.missing_in_target} missing in {plan.target} (copied, never overwritten)")
    for logical, o in plan.objects.items():
        lines.append(f"objects in {logical}: {o['objects']} ({human_bytes(o['bytes'])})")
    for n in plan.notes:
        lines.append(f"note: {n}")
    if plan.preconditions:
        good = sum(1 for p in plan.preconditions if p.get("ok"))
        lines.append(f"online preconditions: {good}/{len(plan.preconditions)} met")
    if plan.refusals:
        lines.append(f"REFUSED ({len(plan.refusals)}):")
        lines.extend(f"  - {r}" for r in plan.refusals)
    else:
        lines.append("ok: the move can start")
    return "\n".join(lines)
