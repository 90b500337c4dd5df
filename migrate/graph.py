"""How every table reaches its workspace, and the order tables are copied in.

Built from the catalogue's ``workspace:`` section and an introspected :class:`Schema`, nothing
else. A table reaches the workspace in exactly one of these ways:

* ``root``        the root table; its (single-column) primary key is the workspace id
* ``key``         it has the key column
* ``fk``          foreign keys to tables that reach the workspace (all such keys on the shortest
                  path are followed; a row belongs if any of them leads to the workspace)
* ``reference``   a configured path: a column pointing at another table's primary key
* ``polymorphic`` a configured path: (type column, id column) pointing at one of several tables
* ``global``      declared global: shared, never moved wholesale
* ``none``        none of the above: the plan refuses to move anything while such a table exists
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from residency.catalogue import WorkspaceSpec

from .introspect import ForeignKey, Schema, Table

MOVING_KINDS = ("root", "key", "fk", "reference", "polymorphic")


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
class GlobalRef:
    """A foreign key from a moving table into a global table."""

    fk: ForeignKey


@dataclass
class Graph:
    schema: Schema
    spec: WorkspaceSpec
    reach: dict[str, Reach]
    order: list[str]  # moving tables, parents before children
    global_order: list[str]  # global tables referenced by moving tables, parents first
    global_refs: dict[str, list[ForeignKey]]  # global table -> FKs from moving tables into it
    problems: list[str] = field(default_factory=list)

    def table(self, name: str) -> Table:
        return self.schema.tables[name]

    @property
    def moving(self) -> list[str]:
        return list(self.order)

    def reverse_order(self) -> list[str]:
        return list(reversed(self.order))

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
            p = spec.paths.get(name)
            if p is not None:
                parents = [p.references] if p.references else list(p.targets.values())
                if any(x not in tables or len(tables[x].primary_key) != 1 for x in parents):
                    continue
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
                        Link((p.column,), tgt, tables[tgt].primary_key, type_value=val) for val, tgt in p.targets.items()
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
        for link in reach[n].links:
            if link.parent != n and link.parent in deps:
                deps[n].add(link.parent)
    order, cycle = _toposort(deps)
    if cycle:
        problems.append(f"foreign keys form a cycle between tables {', '.join(sorted(cycle))}: no copy order exists")

    global_refs: dict[str, list[ForeignKey]] = {}
    for n in moving:
        for fk in tables[n].foreign_keys:
            if reach.get(fk.ref_table) and reach[fk.ref_table].kind == "global":
                global_refs.setdefault(fk.ref_table, []).append(fk)
    gdeps: dict[str, set[str]] = {g: set() for g in global_refs}
    for g in global_refs:
        for fk in tables[g].foreign_keys:
            if fk.ref_table in gdeps and fk.ref_table != g:
                gdeps[g].add(fk.ref_table)
    global_order, gcycle = _toposort(gdeps)
    if gcycle:
        problems.append(f"global tables {', '.join(sorted(gcycle))} reference each other in a cycle")
    for g in global_refs:
        if not tables[g].primary_key:
            problems.append(f"global table '{g}' has no primary key: missing rows cannot be told apart")
    return Graph(schema, spec, reach, order, global_order, global_refs, problems)


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
