"""What a backup is made of, read from the database and the catalogue: the mover's reach graph,
the tables it backs up, how rows depend on each other (for a restore's dependants and the key
index's link columns) and the schema's description and fingerprint (for a restore's mapping)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import psycopg

from residency.catalogue import WorkspaceSpec
from residency.errors import OperationError
import residency.migrate.graph as graph_mod
from residency.migrate.introspect import Schema, app_schema, introspect
from residency.migrate.sqlbuild import Builder


@dataclass(frozen=True)
class Edge:
    """Rows of ``child`` depend on a ``parent`` row: ``child.column`` holds the parent's key
    (and, for a polymorphic path, ``child.type_column`` is ``type_value``)."""

    child: str
    column: str
    parent: str
    parent_column: str
    type_column: str | None = None
    type_value: str | None = None
    origin: str = "foreign key"

    def describe(self) -> str:
        where = f" where {self.type_column} = '{self.type_value}'" if self.type_column else ""
        return f"{self.child}.{self.column} → {self.parent}{where}"


@dataclass
class Shape:
    schema: Schema
    graph: graph_mod.Graph
    builder: Builder
    tables: list[str]  # backed-up tables, parents first
    edges: list[Edge]

    def links(self, table: str) -> list[str]:
        """The key index's extra columns of ``table``: every column a dependency edge reads."""
        out: list[str] = []
        for e in self.edges:
            if e.child == table:
                for c in (e.type_column, e.column):
                    if c and c not in out:
                        out.append(c)
        return out


def read(conn: psycopg.Connection[Any], spec: WorkspaceSpec, schema: str | None = None) -> Shape:
    s = introspect(conn, schema or app_schema())
    g = graph_mod.build(s, spec)
    if g.problems:
        raise OperationError(f"cannot back up: {g.problems[0]}" + (f" (and {len(g.problems) - 1} more; see `residency move plan`)" if len(g.problems) > 1 else ""))
    b = Builder(g)
    tables = g.target_tables
    return Shape(s, g, b, tables, edges(g, tables))


def edges(g: graph_mod.Graph, tables: list[str]) -> list[Edge]:
    """Every single-column reference between backed-up tables to a parent's one-column key:
    foreign keys, declared references and configured paths (polymorphic ones per type value)."""
    have = set(tables)
    out: list[Edge] = []

    def add(e: Edge) -> None:
        if e.child in have and e.parent in have and e not in out:
            out.append(e)

    def pk(t: str) -> str | None:
        k = g.table(t).primary_key if t in g.schema.tables else ()
        return k[0] if len(k) == 1 else None

    for r in g.refs:
        if len(r.columns) == 1 and r.ref_table in g.schema.tables and tuple(r.ref_columns) == (pk(r.ref_table),):
            add(Edge(r.table, r.columns[0], r.ref_table, r.ref_columns[0], r.type_column, r.type_value, r.origin))
    for name, p in g.spec.paths.items():
        if p.references and pk(p.references):
            add(Edge(name, p.column, p.references, pk(p.references) or "", origin="path"))
        for val, tgt in p.targets.items():
            if tgt in g.schema.tables and pk(tgt):
                add(Edge(name, p.column, tgt, pk(tgt) or "", p.type_column, val, "path"))
    return out


def describe(s: Schema, tables: list[str]) -> dict[str, Any]:
    """Per table: columns (name, type, not null, has default, generated) and primary key."""
    out: dict[str, Any] = {}
    for name in tables:
        t = s.tables[name]
        out[name] = {"columns": [[c.name, c.type, c.not_null, c.has_default or bool(c.identity), c.generated] for c in t.columns],
                     "primary_key": list(t.primary_key)}
    return out


def fingerprint(description: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def differences(backup: dict[str, Any], s: Schema, tables: list[str]) -> dict[str, list[str]]:
    """Per table, how the database's schema differs from the backup's. A difference a restore
    cannot map starts with ``cannot:`` (a column gone or retyped, a new NOT NULL column without a
    default, a table gone, another primary key); the rest are notes (a new nullable column)."""
    out: dict[str, list[str]] = {}
    for name in tables:
        was = backup.get(name)
        if was is None:
            continue
        t = s.tables.get(name)
        if t is None:
            out[name] = [f"cannot: table {name} no longer exists"]
            continue
        notes: list[str] = []
        now = {c.name: c for c in t.columns}
        old = {c[0]: c for c in was["columns"]}
        for cname, ctype, *_rest in was["columns"]:
            if cname not in now:
                notes.append(f"cannot: column {name}.{cname} ({ctype}) was dropped since the backup")
            elif now[cname].type != ctype:
                notes.append(f"cannot: column {name}.{cname} was {ctype} in the backup, is {now[cname].type} now")
        for c in t.columns:
            if c.name not in old:
                if c.not_null and not (c.has_default or c.identity or c.generated):
                    notes.append(f"cannot: column {name}.{c.name} ({c.type}) is new and NOT NULL without a default")
                else:
                    notes.append(f"column {name}.{c.name} ({c.type}) is new: restored rows get its default")
        if list(t.primary_key) != list(was["primary_key"]):
            notes.append(f"cannot: primary key of {name} was ({', '.join(was['primary_key'])}), is ({', '.join(t.primary_key)}) now")
        if notes:
            out[name] = notes
    return out
