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

from residency import admission, db, directory
from residency.catalogue import Catalogue
from residency.connections import Connections, redact
from residency.errors import ResidencyError

from . import graph as graph_mod
from . import references as refs_mod
from . import tenant_objects
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
    why: str = ""  # global | shared key value | owned through a reference | rows hanging off shared rows


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
    references: list[str] = field(default_factory=list)  # every reference the moved rows carry, checked by verify
    policy: str = ""
    planned_at: str = ""
    seconds: float = 0.0
    strategy_reason: str = ""
    preconditions: list[dict[str, Any]] = field(default_factory=list)  # online: each check, ok, detail, fix
    tenant_objects: list[dict[str, Any]] = field(default_factory=list)  # per-tenant sequences (migrate.tenant_objects)
    copy_method: dict[str, Any] = field(default_factory=dict)  # what the target role allows (migrate.triggers)
    retention: dict[str, Any] = field(default_factory=dict)  # before/after the move (residency.expiry.movecheck)

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

    def sizes(self) -> dict[str, Any]:
        """What a move of this plan carries, for estimates (:func:`residency.estimates.estimate`):
        ``{rows, bytes, objects, object_bytes, tables: {name: {rows, bytes}}}``."""
        return {"rows": self.total_rows, "bytes": self.total_bytes, "objects": self.object_count,
                "object_bytes": sum(b["bytes"] for b in self.objects.values()),
                "tables": {t.table: {"rows": t.rows, "bytes": t.bytes} for t in self.tables}}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ok=self.ok, total_rows=self.total_rows, total_bytes=self.total_bytes, object_count=self.object_count, sizes=self.sizes())
        return d


def plan_move(cat: Catalogue, conns: Connections, workspace_id: object, target: str, strategy: str = "snapshot") -> MovePlan:
    """Everything a move would do, or every reason it must not; changes nothing."""
    t0 = time.monotonic()
    ws = cat.workspace.parse_id(workspace_id)  # bad input before any connection
    from .strategies import get as get_strategy

    if strategy != "auto":  # auto: chosen by size (migrate.online.plan_strategy)
        get_strategy(strategy)  # an unknown strategy is bad input
    cat.region(target)  # an unknown region name is bad input, not a refusal
    plan = MovePlan(ws, None, target, "snapshot" if strategy == "auto" else strategy, planned_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    try:
        _plan(cat, conns, ws, target, plan)
        if plan.tables and plan.source:
            plan_copy_method(conns, plan)
        if plan.tables and plan.source:
            from .online import plan_strategy

            plan_strategy(cat, conns, plan, strategy)
    finally:
        plan.seconds = round(time.monotonic() - t0, 3)
    return plan


def _plan(cat: Catalogue, conns: Connections, ws: str, target: str, plan: MovePlan) -> None:
    with db.connect(conns.control_dsn, autocommit=True) as cp:
        adm = admission.check(cp, cat, ws, target)  # unknown, already there, inactive, policy, open move
    plan.refusals += adm.refusals
    plan.policy = adm.policy
    if adm.source is None:
        return
    plan.source = source = adm.source
    if source == target or source not in cat.regions:
        return
    try:
        src_ep, dst_ep = conns.region(source), conns.region(target)
    except ResidencyError as exc:
        plan.refusals.append(str(exc))
        return

    try:
        _plan_databases(cat, ws, source, target, src_ep, dst_ep, plan)
    except psycopg.Error as exc:
        plan.refusals.append(f"cannot read the databases of {source} or {target}: {_first_line(exc)}")
    # the objects are checked whatever the databases said: every refusal is listed at once

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
    """Every check that can still run runs: a problem of one kind (the graph, a table's schema)
    leaves out only the checks it makes impossible, so the plan lists every refusal at once."""
    with db.connect(src_ep.dsn, autocommit=True) as sconn, db.connect(dst_ep.dsn, autocommit=False) as tconn:
        src_schema = introspect(sconn)
        dst_schema = introspect(tconn)
        tconn.rollback()
        g = graph_mod.build(src_schema, cat.workspace)
        plan.refusals.extend(g.problems)
        differing: set[str] = set()
        for name in _compared_tables(g):
            lines = _table_differences(g, dst_schema, target, name)
            if lines:
                differing.add(name)
                plan.refusals.extend(lines)
        b = Builder(g)
        params = b.params(ws)
        root = cat.workspace.root_table
        for name in g.order:
            try:
                rows, nbytes = sconn.execute(b.count_rows(name), params).fetchone()
            except psycopg.Error as exc:
                plan.refusals.append(f"cannot count the rows of {name} in {source}: {_first_line(exc)}")
                continue
            r = g.reach[name]
            plan.tables.append(TablePlan(name, r.describe(), r.kind, int(rows), int(nbytes)))
        root_rows = next((t.rows for t in plan.tables if t.table == root), 0)
        if root in g.order and root_rows == 0:
            plan.refusals.append(f"unknown workspace '{ws}': no row in {root} of region {source} ({redact(src_ep.dsn)})")
            return
        if line := directory.second_home(tconn, dst_schema.name, root, ws, source, target):  # an id in two regions
            plan.refusals.append(line)
        for tp in plan.tables:
            if not tp.rows or tp.table in differing:
                continue
            try:
                if b.graph.table(tp.table).primary_key:
                    line = _key_conflicts(sconn, tconn, b, tp.table, params, target)
                    if line:
                        plan.refusals.append(line)
                plan.refusals.extend(_unique_conflicts(sconn, tconn, b, dst_schema, tp.table, params, target))
            except psycopg.Error as exc:
                tconn.rollback()
                plan.refusals.append(f"cannot check the unique keys of {tp.table} against {target}: {_first_line(exc)}")
        tobjs, tnotes, trefusals = tenant_objects.plan(sconn, tconn, g.schema.name, cat.workspace, ws, target)
        plan.tenant_objects, plan.notes, plan.refusals = [asdict(o) for o in tobjs], plan.notes + tnotes, plan.refusals + trefusals
        from residency.expiry.movecheck import check as retention_check  # the target's retention rules (issue 14)

        plan.retention, rnotes, rrefusals = retention_check(cat, ws, source, target, b, dst_schema, sconn)
        plan.notes, plan.refusals = plan.notes + rnotes, plan.refusals + rrefusals
        for gname in g.global_order:
            if gname in differing or not b.graph.table(gname).primary_key:  # (a graph problem says why)
                continue
            n, missing = _global_missing(sconn, tconn, b, gname, params)
            plan.globals.append(GlobalPlan(gname, n, missing, g.shared.get(gname, "")))
            if n > missing:
                try:
                    for c in refs_mod.shared_collisions(sconn, tconn, b, gname, params, source, target):
                        plan.refusals.append(c.line(source, target))
                finally:
                    tconn.rollback()
        tconn.rollback()
        _plan_references(sconn, b, params, plan, source)


def _plan_references(sconn: psycopg.Connection[Any], b: Builder, params: dict[str, Any], plan: MovePlan, source: str) -> None:
    """What the workspace's rows point at, listed; references the source itself can't resolve,
    and links whose empty value leaves rows reaching no workspace, named (they are not moved)."""
    for r in refs_mod.checked_refs(b):
        plan.references.append(r.describe())
    missing, foreign = refs_mod.source_dangling(sconn, b, params)
    for d in missing:
        plan.notes.append(d.line(source) + "; already so in the source, so verify tolerates these")
    had = {d.ref: d.rows for d in missing}
    for d in foreign:
        if d.rows > had.get(d.ref, 0):
            plan.refusals.append(f"reference {d.table}.{','.join(d.columns)} → {d.ref_table}: {d.rows - had.get(d.ref, 0)} rows of the workspace point at"
                                 f" rows of another workspace ({', '.join(d.sample)}); the target would lack them")
    g = b.graph
    for name in g.order:
        if g.reach[name].kind != "key":
            continue
        q = b.empty_rows(name, [g.spec.key_column])
        if q is None:
            continue
        n, sample = sconn.execute(q).fetchone()
        if not n:
            continue
        shown = ", ".join(str(x) for x in sample or [])
        key = g.spec.key_column
        sr = g.spec.shared_rows.get(name)
        if sr is not None and sr.policy != "keep":
            who = "any of their members" if sr.policy == "any" else "all of their members"
            plan.notes.append(f"{name}: {n} rows have an empty {key} (shared by several tenants); policy {sr.policy}: those where {who}"
                              f" belong to this workspace are copied with what hangs off them (shared rows above), never deleted from {source}")
        elif sr is not None:
            plan.notes.append(f"{name}: {n} rows have an empty {key} (shared by several tenants); policy keep: they stay in {source} (e.g. {shown})")
        elif g.spec.shared_key_values:
            plan.notes.append(f"{name}: {n} rows have an empty {key}: shared by every tenant; those this workspace references are copied (e.g. {shown})")
        else:
            plan.notes.append(f"{name}: {n} rows have an empty {key}: they belong to no tenant and stay in {source} (e.g. {shown});"
                              f" declare workspace.shared_rows.{name} or workspace.shared_key_values to decide otherwise")
    for r in b.graph.unfollowed:
        if r.origin != "path" and len(r.columns) == 1:
            continue  # a foreign key with a NULL: the row simply has no parent
        q = b.empty_rows(r.table, r.columns, r.type_column, r.type_value)
        if q is None:
            continue
        n, sample = sconn.execute(q).fetchone()
        if n:
            shown = ", ".join(str(x) for x in sample or [])
            plan.notes.append(f"{r.table}: {n} rows have no value in {','.join(r.columns)}{' for ' + r.type_column + ' ' + repr(r.type_value) if r.type_column else ''},"
                              f" so they reach no workspace and stay where they are (e.g. {shown})")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _compared_tables(g: graph_mod.Graph) -> list[str]:
    return sorted(n for n, r in g.reach.items() if r.moves or r.kind == "global")


def _schema_differences(g: graph_mod.Graph, dst: Schema, target: str) -> list[str]:
    return [line for name in _compared_tables(g) for line in _table_differences(g, dst, target, name)]


def _table_differences(g: graph_mod.Graph, dst: Schema, target: str, name: str) -> list[str]:
    out: list[str] = []
    st = g.schema.tables[name]
    tt = dst.table(name)
    if tt is None:
        return [f"target schema differs: table '{name}' is missing in {target}"]
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


def _stream_keys(sconn: psycopg.Connection[Any], tconn: psycopg.Connection[Any], b: Builder, table: str, params: dict[str, Any], temp: str, *, global_: bool, key: tuple[str, ...] | None = None) -> None:
    key = key or b.graph.table(table).primary_key
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


UNIQUE_SAMPLE = 5  # clashing values named per unique index


def _unique_conflicts(sconn: psycopg.Connection[Any], tconn: psycopg.Connection[Any], b: Builder, dst: Schema, table: str, params: dict[str, Any], target: str) -> list[str]:
    """One refusal line per unique constraint or unique index of ``table`` in the target (other
    than its primary key, see :func:`_key_conflicts`; partial and expression ones too) that the
    moving rows' values would violate: the index's key parts (and predicate) are evaluated over
    the moving rows in the source, streamed to a temp table in the target (rolled back) and
    joined to the target's rows. NULLs never clash unless the index is NULLS NOT DISTINCT."""
    tt = dst.table(table)
    out: list[str] = []
    for u in tt.unique_indexes if tt is not None else ():
        if u.constraint == "p" or not u.valid:
            continue
        if tt.primary_key and u.plain and set(tt.primary_key) <= set(u.columns):
            continue  # holds whenever the primary key does (checked by _key_conflicts), e.g. (workspace_id, id)
        st = b.graph.table(table)
        if any(c is not None and st.column(c) is None for c in u.columns):
            continue  # a column only the target has: the copy leaves it to its default (a schema difference if required)
        temp = "residency_plan_unique"
        tconn.execute(b.temp_unique_values(temp, table, u.parts))
        with sconn.cursor().copy(b.copy_out_unique_values(table, u.parts, u.predicate), params) as cout, tconn.cursor().copy(
            b.copy_in_unique_values(temp, len(u.parts))
        ) as cin:
            for chunk in cout:
                cin.write(chunk)
        (n,) = tconn.execute(b.count_unique_clashes(table, temp, u.parts, u.predicate, u.nulls_not_distinct)).fetchone()
        sample = list(tconn.execute(b.unique_clashes(table, temp, u.parts, u.predicate, u.nulls_not_distinct), {"limit": UNIQUE_SAMPLE})) if n else []
        tconn.rollback()
        if not n:
            continue
        lhs = u.parts[0] if len(u.parts) == 1 else f"({', '.join(u.parts)})"
        vals = ", ".join(_value(r[0]) if len(r) == 1 else f"({', '.join(_value(v) for v in r)})" for r in sample)
        more = ", ..." if n > len(sample) else ""
        rows = "1 moving row clashes" if n == 1 else f"{n} moving rows clash"
        out.append(f"{u.describe()}: {rows} with rows in {target} ({lhs} = {vals}{more})")
    return out


def _value(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return repr(v)
    return str(v)


def _global_missing(sconn: psycopg.Connection[Any], tconn: psycopg.Connection[Any], b: Builder, gname: str, params: dict[str, Any]) -> tuple[int, int]:
    temp = "residency_plan_globals"
    key = b.graph.presence_key(gname)
    _stream_keys(sconn, tconn, b, gname, params, temp, global_=True, key=key)
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
        what = f"global {gp.table}" if gp.why in ("", "global") else f"shared rows of {gp.table} ({gp.why})"
        lines.append(f"{what}: {gp.referenced_rows} referenced rows, {gp.missing_in_target} missing in {plan.target} (copied, never overwritten)")
    if plan.references:
        lines.append(f"references checked after the copy: {len(plan.references)}")
    for logical, o in plan.objects.items():
        lines.append(f"objects in {logical}: {o['objects']} ({human_bytes(o['bytes'])})")
    lines.extend(f"tenant {o['kind']} {o['name']}: {o['detail']}" for o in plan.tenant_objects)
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


def plan_copy_method(conns: Connections, plan: MovePlan) -> None:
    """Which copy method the target role allows (replica, disabling triggers, or neither) and
    why, as a note and ``plan.copy_method``; the user triggers that would fire are listed too."""
    from .introspect import app_schema
    from .triggers import inspect

    names = [t.table for t in plan.tables] + [g.table for g in plan.globals]
    try:
        with db.connect(conns.region(plan.target).dsn, autocommit=True) as tconn:
            acc = inspect(tconn, app_schema(), names)
    except psycopg.Error as exc:
        plan.notes.append(f"copy method: unknown (cannot read the target role's privileges: {str(exc).strip().splitlines()[0]})")
        return
    plan.copy_method = acc.to_dict()
    plan.notes.extend(acc.notes())
    from .load import plan_note

    try:
        with db.connect(conns.region(plan.source).dsn, autocommit=True) as sconn:
            plan.notes.append(plan_note(sconn))
    except psycopg.Error as exc:
        plan.notes.append(f"source load: unknown (cannot read the source's activity: {str(exc).strip().splitlines()[0]})")
