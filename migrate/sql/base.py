"""What every statement of the mover shares: the table names of the region's schema, the
parameters (``%(ws)s`` is the workspace id; polymorphic type values go as ``%(tv_<i>)s``), and
the helpers that list identifiers. Identifiers only through ``psycopg.sql.Identifier``, values
only as parameters, never string formatting.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Sequence

from psycopg import sql

from ..graph import Graph

WS = sql.Placeholder("ws")


def _ident_list(names: Iterable[str], alias: sql.Composable | None = None) -> sql.Composed:
    if alias is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.SQL("{}.{}").format(alias, sql.Identifier(n)) for n in names)


def _tuple(names: Sequence[str], alias: sql.Composable) -> sql.Composable:
    cols = _ident_list(names, alias)
    return cols if len(names) == 1 else sql.SQL("({})").format(cols)


class Aliases:
    """Table aliases for the subqueries of one statement, each new (``p_1``, ``p_2``, ...): no
    subquery's alias can shadow one that a correlated subquery inside it refers to, however the
    predicates nest. Made afresh by each statement's outermost call, so a statement's text is the
    same every time it is built. (Fixed aliases elsewhere never end in ``_<digits>``.)"""

    def __init__(self) -> None:
        self._n = 0

    def new(self, prefix: str) -> sql.Identifier:
        self._n += 1
        return sql.Identifier(f"{prefix}_{self._n}")


def per_table_name(schema: str, prefix: str, table: str) -> sql.Identifier:
    """``schema.<prefix>_<table>`` for a function made per table, within PostgreSQL's 63
    characters (a long table name keeps its first 40 and a hash of the whole)."""
    name = f"{prefix}_{table}"
    if len(name) > 63:
        name = f"{prefix}_{table[:40]}_{hashlib.sha1(table.encode()).hexdigest()[:12]}"
    return sql.Identifier(schema, name)


class SqlBase:
    """The graph a builder composes over, its schema's table names and the statement parameters."""


    def __init__(self, graph: Graph):
        self.graph = graph
        self.schema = graph.schema.name
        self._type_params: dict[tuple[str, str], str] = {}
        for name, r in graph.reach.items():
            if r.kind == "polymorphic":
                for i, link in enumerate(r.links):
                    self._type_params[(name, link.type_value or "")] = f"tv_{len(self._type_params)}"

    def qname(self, table: str) -> sql.Identifier:
        return sql.Identifier(self.schema, table)

    def params(self, workspace_id: object, **extra: Any) -> dict[str, Any]:
        p: dict[str, Any] = {"ws": str(workspace_id)}
        for (_, value), name in self._type_params.items():
            p[name] = value
        p.update(extra)
        return p
