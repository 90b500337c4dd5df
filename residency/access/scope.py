"""What a grant exposes: one security-barrier view per scoped table, in a schema of its own.

Each view selects exactly the rows the mover would call the workspace's (:meth:`Builder.belongs`:
key column, foreign-key path, configured and polymorphic paths, owned rows) plus, read-only, the
shared rows the workspace references (:meth:`Builder.carried`: a global user only when one of the
workspace's rows points at it). The views run with their owner's rights (the managing role), so
the operator's role needs no privilege on any application table, and the application's roles and
tables are not touched at all (no row-level security is enabled anywhere).

A writable grant's views of the workspace's own tables show only its own rows and carry
``WITH CASCADED CHECK OPTION``: an insert or update that would put a row outside the workspace is
refused. Views of global tables stay read-only.

DDL takes no bind parameters, so the workspace id and the polymorphic type values are bound
client-side by psycopg (``ClientCursor.mogrify``), never formatted into the text by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from residency.errors import InputError
from residency.migrate.graph import Graph
from residency.migrate.sqlbuild import Builder


@dataclass(frozen=True)
class ViewPlan:
    table: str
    kind: str  # the reach kind (key, fk, polymorphic, ..., global)
    writable: bool
    definition: sql.Composed


def exposable(graph: Graph) -> list[str]:
    """The tables a grant can expose: those that reach a workspace, and those holding shared rows."""
    return [t for t in sorted(graph.reach) if graph.reach[t].moves or t in graph.shared or graph.reach[t].kind == "global"]


def resolve_scope(graph: Graph, scope: list[str]) -> list[str]:
    """``['all']`` or table names → the tables, checked against the schema (InputError naming each
    unknown or unexposable table)."""
    can = exposable(graph)
    if scope == ["all"]:
        return can
    bad = [t for t in scope if t not in can]
    if bad:
        unknown = [t for t in bad if t not in graph.reach]
        what = (f"unknown table{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}" if unknown
                else f"table{'s' if len(bad) > 1 else ''} {', '.join(bad)} reach no workspace")
        raise InputError(f"--scope: {what}; tables a grant can show: {', '.join(can)}")
    return list(dict.fromkeys(scope))


def plan_views(graph: Graph, tables: list[str], schema: str, *, write: bool) -> list[ViewPlan]:
    """The view of each table in ``schema`` (its name is the table's)."""
    b = Builder(graph)
    a = sql.Identifier("t")
    out: list[ViewPlan] = []
    for t in tables:
        reach = graph.reach[t]
        writable = write and reach.moves
        cond = b.belongs(t, a) if writable else b.carried(t, a, 0, frozenset())
        definition = sql.SQL(
            "CREATE VIEW {view} WITH (security_barrier) AS SELECT {a}.* FROM {tbl} {a} WHERE {cond}{check}"
        ).format(view=sql.Identifier(schema, t), a=a, tbl=b.qname(t), cond=cond,
                 check=sql.SQL(" WITH CASCADED CHECK OPTION") if writable else sql.SQL(""))
        out.append(ViewPlan(t, reach.kind, writable, definition))
    return out


def create_views(conn: psycopg.Connection[Any], graph: Graph, views: list[ViewPlan], schema: str, role: str, workspace_id: str) -> None:
    """In ``conn``'s transaction: the schema, its views, and the role's rights on them."""
    params = Builder(graph).params(workspace_id)
    s, r = sql.Identifier(schema), sql.Identifier(role)
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(s))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r))
    mogrify = psycopg.ClientCursor(conn).mogrify
    for v in views:
        used = {k: val for k, val in params.items() if f"%({k})s" in v.definition.as_string(conn)}
        conn.execute(mogrify(v.definition, used))
        rights = sql.SQL("SELECT, INSERT, UPDATE, DELETE" if v.writable else "SELECT")
        conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(rights, sql.Identifier(schema, v.table), r))
