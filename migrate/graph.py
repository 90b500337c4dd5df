"""How every table reaches its workspace, and the order tables are copied in.

Built from the catalogue's ``workspace:`` section and an introspected :class:`Schema`, nothing
else. A table reaches the workspace in exactly one of these ways:

* ``root``        the root table; its (single-column) primary key is the workspace id
* ``key``         it has the key column
* ``fk``          foreign keys to tables that reach the workspace (all such keys on the shortest
                  path are followed; a row belongs if any of them leads to the workspace)
* ``reference``   a configured path: a column pointing at another table's primary key
* ``polymorphic`` a configured path: (type column, id column) pointing at one of several tables
* ``owned``       ``workspace.owned_through``: a workspace row points at it (blobs ← attachments.blob_id)
* ``global``      declared global: shared, never moved wholesale
* ``none``        none of the above: the plan refuses to move anything while such a table exists

Besides its own rows, a table may hold *shared rows* the workspace needs in the target so that
nothing it points at dangles (see :attr:`Graph.shared`): the referenced rows of a global table, the
rows of a keyed table whose key is a shared value (``workspace.shared_key_values``: NULL or ''
meaning "every tenant"), and rows that hang off a shared row (an attachment of a global user, the
blob of such an attachment). Shared rows are inserted where the target lacks them, compared by
content, and never deleted from the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from residency.catalogue import WorkspaceSpec

from .introspect import ForeignKey, Schema, Table

MOVING_KINDS = ("root", "key", "fk", "reference", "polymorphic", "owned")
LINK_KINDS = ("fk", "reference", "polymorphic", "owned")


@dataclass(frozen=True)
class Link:
    """One step towards the workspace: local columns → parent table's columns."""

    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    type_value: str | None = None  # polymorphic: the type column's value selecting this parent


@dataclass(frozen=True)
class Reach:
    table: str
    kind: str
    depth: int = 0
    key_column: str | None = None  # root: the PK column; key: the key column
    links: tuple[Link, ...] = ()
    type_column: str | None = None

    @property
    def moves(self) -> bool:
        return self.kind in MOVING_KINDS

    @property
    def by_column(self) -> bool:
        """The table holds its workspace's id (``root``, ``key``): its rows are found by that
        column (its index), not through joins."""
        return self.kind in ("root", "key")

    def describe(self) -> str:
        if self.kind == "root":
            return f"root (primary key {self.key_column})"
        if self.kind == "key":
            return f"own key column {self.key_column}"
        if self.kind in ("fk", "reference"):
            via = " or ".join(f"{','.join(l.columns)} → {l.parent}" for l in self.links)
            return f"{'foreign key' if self.kind == 'fk' else 'configured reference'} {via}"
        if self.kind == "polymorphic":
            via = ", ".join(f"{l.type_value} → {l.parent}" for l in self.links)
            return f"polymorphic {self.type_column}/{self.links[0].columns[0]}: {via}"
        if self.kind == "global":
            return "global (referenced rows copied when missing)"
        return "reaches no workspace"


@dataclass(frozen=True)
class Ref:
    """Rows of ``table`` point at rows of ``ref_table``: a foreign key, a reference declared in
    ``workspace.references`` (by id or by a unique name, possibly polymorphic), or a path."""

    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    origin: str = "foreign key"  # "foreign key" | "declared reference" | "path"
    name: str = ""
    type_column: str | None = None
    type_value: str | None = None

    def describe(self) -> str:
        cols = ",".join(self.columns)
        where = f" where {self.type_column} = '{self.type_value}'" if self.type_column else ""
        return f"{self.table}.{cols} → {self.ref_table}.{','.join(self.ref_columns)}{where} ({self.origin}{' ' + self.name if self.name and self.origin == 'foreign key' else ''})"


@dataclass
class Graph:
    schema: Schema
    spec: WorkspaceSpec
    reach: dict[str, Reach]
    order: list[str]  # moving tables, parents before children
    global_order: list[str]  # tables holding shared rows the workspace needs, parents first
    global_refs: dict[str, list[Ref]]  # such a table -> references into it from rows that go to the target
    problems: list[str] = field(default_factory=list)
    refs: list[Ref] = field(default_factory=list)  # every reference from a moving or shared table
    shared: dict[str, str] = field(default_factory=dict)  # table -> why it can hold shared rows
    dependents: dict[str, list[Ref]] = field(default_factory=dict)  # table -> its rows needed with a shared parent
    unfollowed: list[Ref] = field(default_factory=list)  # links whose rows with an empty value reach no workspace

    def table(self, name: str) -> Table:
        return self.schema.tables[name]

    @property
    def moving(self) -> list[str]:
        return list(self.order)

    @property
    def target_tables(self) -> list[str]:
        """Every table rows go to in the target (moving or shared), each once, parents first."""
        return list(dict.fromkeys(list(self.global_order) + list(self.order)))

    def presence_key(self, table: str) -> tuple[str, ...]:
        """How the target's copy of a shared row is found: by the columns every reference into
        ``table`` uses when they all use the same unique name (a role referenced by name resolves
        to the target's role of that name), else by the primary key."""
        cols = {tuple(r.ref_columns) for r in self.global_refs.get(table, [])}
        pk = tuple(self.table(table).primary_key)
        if len(cols) == 1 and not self.dependents.get(table):
            (only,) = cols
            return only
        return pk

    def shared_values(self) -> tuple[object, ...]:
        return tuple(self.spec.shared_key_values)

    def narrow_key(self, name: str) -> tuple[tuple[str, ...], bool]:
        """Columns a verify mismatch of ``name`` is narrowed by, and whether they are unique: the
        primary key, else a plain unique index on NOT NULL columns, else the columns the table
        reaches its workspace through (its key column or its links' columns: rows in groups)."""
        t = self.table(name)
        if t.row_key:
            return t.row_key, True
        r = self.reach[name]
        cols: list[str] = []
        if r.key_column:
            cols.append(r.key_column)
        if r.type_column:
            cols.append(r.type_column)
        for link in r.links:
            cols.extend(c for c in link.columns if c not in cols)
        return tuple(cols), False


def build(schema: Schema, spec: WorkspaceSpec) -> Graph:
    """Resolve every table's reach and the copy order; ``problems`` lists what blocks a move."""
    tables = schema.tables
    problems: list[str] = []
    reach: dict[str, Reach] = {}

    root = tables.get(spec.root_table)
    if root is None:
        problems.append(f"root table '{spec.root_table}' (workspace.root_table) does not exist in schema {schema.name}")
    elif len(root.primary_key) != 1:
        problems.append(f"root table '{spec.root_table}' must have a single-column primary key (the workspace id)")
    else:
        reach[root.name] = Reach(root.name, "root", 0, key_column=root.primary_key[0])

    for g in spec.global_tables:
        if g not in tables:
            problems.append(f"global table '{g}' (workspace.global_tables) does not exist in schema {schema.name}")
        else:
            reach[g] = Reach(g, "global")

    for name, t in tables.items():
        if name in reach or name in spec.paths:
            continue
        if t.column(spec.key_column) is not None:
            reach[name] = Reach(name, "key", 1, key_column=spec.key_column)

    # Configured paths and foreign keys: resolve to a fixpoint (a table resolves once what it
    # points at has resolved), so depth grows along the chain and the SQL never recurses forever.
    for name, p in spec.paths.items():
        if name not in tables:
            problems.append(f"workspace.paths.{name}: table '{name}' does not exist in schema {schema.name}")
            continue
        t = tables[name]
        for c in (p.column, p.type_column):
            if c and t.column(c) is None:
                problems.append(f"workspace.paths.{name}: column '{c}' does not exist in table '{name}'")
        for parent in ([p.references] if p.references else list(p.targets.values())):
            pt = tables.get(parent)
            if pt is None:
                problems.append(f"workspace.paths.{name}: target table '{parent}' does not exist")
            elif len(pt.primary_key) != 1:
                problems.append(f"workspace.paths.{name}: target table '{parent}' needs a single-column primary key")
    changed = True
    while changed:
        changed = False
        for name, t in tables.items():
            if name in reach:
                continue
            o = spec.owned_through.get(name)
            if o is not None:
                if o.via_table not in tables or len(t.primary_key) != 1:
                    continue
                if o.via_table in reach and not reach[o.via_table].moves:
                    problems.append(f"workspace.owned_through.{name}: '{o.via_table}' does not reach the workspace")
                    reach[name] = Reach(name, "none")
                    changed = True
                    continue
                if o.via_table not in reach:
                    continue
                links = (Link(t.primary_key, o.via_table, (o.via_column,)),)
                reach[name] = Reach(name, "owned", reach[o.via_table].depth + 1, links=links)
                changed = True
                continue
            p = spec.paths.get(name)
            if p is not None:
                parents = [p.references] if p.references else list(p.targets.values())
                if any(x not in tables or len(tables[x].primary_key) != 1 for x in parents):
                    continue
                if p.targets and not all(x in reach for x in parents):
                    continue
                if p.targets and any(reach[x].moves for x in parents):
                    # a polymorphic pair may also point at global rows (an avatar of a user): those
                    # rows are shared rows, needed when their target is (Graph.dependents)
                    parents = [x for x in parents if reach[x].moves]
                if any(x in reach and not reach[x].moves for x in parents):
                    problems.append(f"workspace.paths.{name}: it points at a table that does not reach the workspace ({', '.join(parents)})")
                    reach[name] = Reach(name, "none")
                    changed = True
                    continue
                if not all(x in reach for x in parents):
                    continue
                depth = 1 + max(reach[x].depth for x in parents)
                if p.references:
                    links = (Link((p.column,), p.references, tables[p.references].primary_key),)
                    reach[name] = Reach(name, "reference", depth, links=links)
                else:
                    links = tuple(
                        Link((p.column,), tgt, tables[tgt].primary_key, type_value=val)
                        for val, tgt in p.targets.items() if reach[tgt].moves
                    )
                    reach[name] = Reach(name, "polymorphic", depth, links=links, type_column=p.type_column)
                changed = True
                continue
            cands = [fk for fk in t.foreign_keys if fk.ref_table != name and fk.ref_table in reach and reach[fk.ref_table].moves]
            if cands:
                best = min(reach[fk.ref_table].depth for fk in cands)
                links = tuple(
                    Link(fk.columns, fk.ref_table, fk.ref_columns) for fk in cands if reach[fk.ref_table].depth == best
                )
                reach[name] = Reach(name, "fk", best + 1, links=links)
                changed = True

    for name, o in spec.owned_through.items():
        if name not in tables:
            problems.append(f"workspace.owned_through.{name}: table '{name}' does not exist in schema {schema.name}")
        elif o.via_table not in tables or tables[o.via_table].column(o.via_column) is None:
            problems.append(f"workspace.owned_through.{name}: column {o.via_table}.{o.via_column} does not exist")
        elif len(tables[name].primary_key) != 1:
            problems.append(f"workspace.owned_through.{name}: '{name}' needs a single-column primary key")
        elif name in spec.paths or name in spec.global_tables or tables[name].column(spec.key_column) is not None:
            problems.append(f"workspace.owned_through.{name}: '{name}' already reaches the workspace another way")
    for name in tables:
        if name not in reach:
            reach[name] = Reach(name, "none")
            problems.append(
                f"table '{name}' reaches no workspace (no {spec.key_column} column, no foreign key or configured"
                f" path to a workspace table) and is not declared in workspace.global_tables"
            )
    # A moving table without a primary key (a join table) moves like the others: copied by its
    # reach filter, verified as a multiset (count and sum of row hashes), narrowed by a unique key
    # it has or else by its reach columns (Graph.narrow_key), deleted by filter.

    moving = [n for n, r in reach.items() if r.moves]
    deps: dict[str, set[str]] = {n: set() for n in moving}
    for n in moving:
        t = tables[n]
        for fk in t.foreign_keys:
            if fk.ref_table != n and fk.ref_table in deps:
                deps[n].add(fk.ref_table)
        if reach[n].kind == "owned":
            continue  # its owner points at it: the owner depends on it, not the other way
        for link in reach[n].links:
            if link.parent != n and link.parent in deps:
                deps[n].add(link.parent)
    order, cycle = _toposort(deps)
    if cycle:
        problems.append(f"foreign keys form a cycle between tables {', '.join(sorted(cycle))}: no copy order exists")

    refs, ref_problems = _references(schema, spec, reach)
    problems.extend(ref_problems)
    shared = _shared_tables(schema, spec, reach)
    dependents: dict[str, list[Ref]] = {}
    for name, p in spec.paths.items():
        if name in tables and p.targets and reach.get(name) and reach[name].moves:
            for val, tgt in p.targets.items():
                if tgt in tables and tgt in shared and not reach[tgt].moves:
                    dependents.setdefault(name, []).append(
                        Ref(name, (p.column,), tgt, tables[tgt].primary_key, "path", f"{name}.{p.column}", p.type_column, val)
                    )
    # rows several tenants share (workspace.shared_rows, policy any/all), and the rows hanging off them
    policy_set = set()
    for name, sr in spec.shared_rows.items():
        r = reach.get(name)
        if r is None or r.kind != "key":
            problems.append(f"workspace.shared_rows.{name}: '{name}' must be a table with the key column {spec.key_column}")
            continue
        if sr.policy == "keep":
            continue
        for tbl, col in ((sr.members_table, sr.members_column), (sr.tenant_table, sr.tenant_column)):
            if tbl not in tables or tables[tbl or ""].column(col or "") is None:
                problems.append(f"workspace.shared_rows.{name}: column {tbl}.{col} does not exist")
                break
        else:
            if tables[sr.members_table or ""].column(sr.member_column or "") is None:
                problems.append(f"workspace.shared_rows.{name}: column {sr.members_table}.{sr.member_column} does not exist")
            elif tables[sr.tenant_table or ""].column(spec.key_column) is None:
                problems.append(f"workspace.shared_rows.{name}: '{sr.tenant_table}' must carry the key column {spec.key_column}")
            elif len(tables[name].primary_key) != 1:
                problems.append(f"workspace.shared_rows.{name}: '{name}' needs a single-column primary key")
            else:
                policy_set.add(name)
                shared[name] = f"shared by several tenants, policy {sr.policy}"
    grown = True
    while grown:
        grown = False
        for n in moving:
            if reach[n].kind not in ("fk", "reference", "polymorphic"):
                continue
            for link in reach[n].links:
                if link.parent in policy_set and link.parent != n:
                    ref = Ref(n, link.columns, link.parent, link.parent_columns, "path", f"{n}.{','.join(link.columns)}", reach[n].type_column, link.type_value)
                    if ref not in dependents.get(n, []):
                        dependents.setdefault(n, []).append(ref)
                        grown = True
                    if n not in policy_set:
                        policy_set.add(n)
                        grown = True
    for name in dependents:
        shared.setdefault(name, "rows hanging off shared rows")
    carriers = set(moving) | set(shared)
    global_refs: dict[str, list[Ref]] = {}
    for r in refs:
        if r.ref_table in shared and r.table != r.ref_table and r.table in carriers:
            global_refs.setdefault(r.ref_table, []).append(r)
    # rows reached from a shared row are shared too (the blob of a global user's avatar)
    needed = set(global_refs) | set(dependents) | {n for n in spec.shared_rows if n in shared and spec.shared_rows[n].policy != "keep"}
    gdeps: dict[str, set[str]] = {g: set() for g in needed}
    for g in needed:
        for r in refs:
            if r.table == g and r.ref_table in gdeps and r.ref_table != g:
                gdeps[g].add(r.ref_table)
        for d in dependents.get(g, []):
            if d.ref_table in gdeps:
                gdeps[g].add(d.ref_table)
    global_order, gcycle = _toposort(gdeps)
    if gcycle:
        problems.append(f"shared rows of tables {', '.join(sorted(gcycle))} reference each other in a cycle: no copy order exists")
    for g in needed:
        if len(tables[g].primary_key) == 0:
            problems.append(f"table '{g}' holds shared rows but has no primary key: missing rows cannot be told apart")
    unfollowed = [Ref(n, l.columns, l.parent, l.parent_columns, "path" if reach[n].kind != "fk" else "foreign key", "", reach[n].type_column, l.type_value)
                  for n in moving if reach[n].kind in ("fk", "reference", "polymorphic") for l in reach[n].links]
    graph = Graph(schema, spec, reach, order, global_order, global_refs, problems, refs, shared, dependents, unfollowed)
    return graph


def _references(schema: Schema, spec: WorkspaceSpec, reach: Mapping[str, Reach]) -> tuple[list[Ref], list[str]]:
    """Every reference a moved row can carry: foreign keys and declared references."""
    tables = schema.tables
    out: list[Ref] = []
    problems: list[str] = []
    for name, t in tables.items():
        for fk in t.foreign_keys:
            out.append(Ref(name, fk.columns, fk.ref_table, fk.ref_columns, "foreign key", fk.name))
    for rs in spec.references:
        where = f"workspace.references.{rs.table}.{rs.column}"
        t = tables.get(rs.table)
        if t is None or t.column(rs.column) is None:
            problems.append(f"{where}: column {rs.table}.{rs.column} does not exist in schema {schema.name}")
            continue
        if rs.type_column and t.column(rs.type_column) is None:
            problems.append(f"{where}: type column {rs.table}.{rs.type_column} does not exist")
            continue
        targets = dict(rs.targets) if rs.type_column else {None: rs.target}
        for val, tgt in targets.items():
            tt = tables.get(tgt or "")
            if tt is None:
                problems.append(f"{where}: target table '{tgt}' does not exist")
                continue
            cols = (rs.target_column,) if rs.target_column else tt.primary_key
            if rs.target_column and tt.column(rs.target_column) is None:
                problems.append(f"{where}: target column {tgt}.{rs.target_column} does not exist")
                continue
            if len(cols) != 1:
                problems.append(f"{where}: target table '{tgt}' needs a single-column primary key, or name a unique column")
                continue
            out.append(Ref(rs.table, (rs.column,), tgt or "", cols, "declared reference", f"{rs.table}.{rs.column}", rs.type_column, val))
    return out, problems


def _shared_tables(schema: Schema, spec: WorkspaceSpec, reach: Mapping[str, Reach]) -> dict[str, str]:
    """Tables that can hold rows a workspace needs without owning them, and why."""
    out: dict[str, str] = {}
    for name, r in reach.items():
        if r.kind == "global":
            out[name] = "global"
        elif r.kind == "key" and spec.shared_key_values:
            out[name] = "shared key value"
        elif r.kind == "owned":
            out[name] = "owned through a reference"
    return out



def _toposort(deps: Mapping[str, set[str]]) -> tuple[list[str], set[str]]:
    """Kahn's algorithm, alphabetical among equals so the order is stable."""
    remaining = {k: set(v) for k, v in deps.items()}
    out: list[str] = []
    while remaining:
        ready = sorted(k for k, v in remaining.items() if not v)
        if not ready:
            return out, set(remaining)
        for k in ready:
            out.append(k)
            del remaining[k]
        for v in remaining.values():
            v.difference_update(ready)
    return out, set()
