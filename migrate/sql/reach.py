"""Which rows are a workspace's: the predicate every phase composes.

:meth:`ReachSql.belongs` is "row ``alias`` of table T belongs to workspace ``%(ws)s``" for every
reach kind (root, own key column, foreign-key path, configured reference path, polymorphic path),
composed recursively through the graph (:mod:`migrate.graph`); :meth:`ReachSql.belongs_rowwise` is
the same test probed row by row, and :meth:`ReachSql.workspace_of` its mirror, a single row's
workspace (for the fence and change-log triggers, where it must be cheap per row).
"""

from __future__ import annotations

from typing import Callable, Sequence

from psycopg import sql

from ..graph import LINK_KINDS, Link, Reach
from .base import WS, Aliases, SqlBase, _ident_list, _tuple


class ReachSql(SqlBase):
    """The rows of a workspace: select, count and delete them."""

    def _by_reach(self, table: str, alias: sql.Composable, each_link: Callable[[Reach, Link], sql.Composable]) -> sql.Composable:
        """What every form of the predicate shares: a root or key table tests its own key column;
        a linked one is any of its links (``each_link`` composes one link's test)."""
        r: Reach = self.graph.reach[table]
        if r.by_column:
            return sql.SQL("{}.{} = {}").format(alias, sql.Identifier(r.key_column or ""), WS)
        if r.kind in LINK_KINDS:
            parts = [each_link(r, link) for link in r.links]
            return parts[0] if len(parts) == 1 else sql.SQL("({})").format(sql.SQL(" OR ").join(parts))
        raise ValueError(f"table {table} does not belong to a workspace ({r.kind})")

    def belongs(self, table: str, alias: sql.Composable, names: Aliases | None = None) -> sql.Composable:
        """The predicate: the row ``alias`` of ``table`` belongs to workspace ``%(ws)s``
        (``names``: the statement's aliases, when it is part of a bigger predicate)."""
        names = names or Aliases()

        def through(r: Reach, link: Link) -> sql.Composable:
            p = names.new("p")
            if len(r.links) == 1:
                sub = sql.SQL("{lhs} IN (SELECT {rhs} FROM {parent} {p} WHERE {cond})").format(
                    lhs=_tuple(link.columns, alias),
                    rhs=_ident_list(link.parent_columns, p),
                    parent=self.qname(link.parent),
                    p=p,
                    cond=self.belongs(link.parent, p, names),
                )
            else:
                # OR'ed "x IN (SELECT ...)" cannot become a semi-join: each is a SubPlan, hashed only
                # while its keys fit in work_mem, else a materialised list rescanned for every row
                # (quadratic: minutes per statement on a 1M-row workspace once ANALYZEd). A correlated
                # EXISTS probes the parent's unique key instead; same rows in a WHERE clause.
                sub = sql.SQL("EXISTS (SELECT 1 FROM {parent} {p} WHERE {match} AND {cond})").format(
                    parent=self.qname(link.parent),
                    p=p,
                    match=sql.SQL(" AND ").join(
                        sql.SQL("{}.{} = {}.{}").format(p, sql.Identifier(pc), alias, sql.Identifier(c))
                        for c, pc in zip(link.columns, link.parent_columns)
                    ),
                    cond=self.belongs(link.parent, p, names),
                )
            if r.kind == "polymorphic":
                sub = sql.SQL("({}.{} = {} AND {})").format(
                    alias,
                    sql.Identifier(r.type_column or ""),
                    sql.Placeholder(self._type_params[(table, link.type_value or "")]),
                    sub,
                )
            return sub

        return self._by_reach(table, alias, through)

    def not_belongs(self, table: str, alias: sql.Composable, names: Aliases | None = None) -> sql.Composable:
        """Row ``alias`` of ``table`` is not the workspace's: ``NOT`` :meth:`belongs`, with each link
        a ``NOT EXISTS`` on the parent's key, which PostgreSQL makes an anti-join (``NOT (x IN
        (SELECT ...))`` never is one: a SubPlan, rescanned for every row once it outgrows
        ``work_mem``). A row whose link is NULL is not the workspace's (``NOT IN`` gave NULL)."""
        names = names or Aliases()
        r: Reach = self.graph.reach[table]
        if r.by_column or r.kind not in LINK_KINDS:
            return sql.SQL("NOT {}").format(self.belongs(table, alias, names))
        parts: list[sql.Composable] = []
        for link in r.links:
            p = names.new("n")
            parts.append(sql.SQL("NOT EXISTS (SELECT 1 FROM {parent} {p} WHERE {match} AND {cond})").format(
                parent=self.qname(link.parent), p=p, match=self._link_match(table, r, link, p, alias), cond=self.belongs(link.parent, p, names)))
        return sql.SQL(" AND ").join(parts)

    def _link_match(self, table: str, r: Reach, link: Link, p: sql.Composable, alias: sql.Composable) -> sql.Composable:
        """Parent row ``p`` is the one row ``alias`` of ``table`` links to, inside a subquery on
        the parent (a polymorphic link's type test too: in the outer WHERE the planner would OR
        the type tests into a bitmap scan of every row of that type)."""
        match = [sql.SQL("{}.{} = {}.{}").format(p, sql.Identifier(pc), alias, sql.Identifier(c)) for c, pc in zip(link.columns, link.parent_columns)]
        if r.kind == "polymorphic":
            match.insert(0, sql.SQL("{}.{} = {}").format(
                alias, sql.Identifier(r.type_column or ""), sql.Placeholder(self._type_params[(table, link.type_value or "")])))
        return sql.SQL(" AND ").join(match)

    def belongs_rowwise(self, table: str, alias: sql.Composable, names: Aliases | None = None) -> sql.Composable:
        """The same predicate as :meth:`belongs`, evaluated row by row: each link is a scalar
        subquery probing the parent's (unique, hence indexed) key, which PostgreSQL never turns
        into a join. For a few rows picked by key (a bucket, changed keys) it is a handful of
        index probes, where the set form may hash every row of the workspace's parent tables
        (it does whenever the statistics underestimate the workspace)."""
        names = names or Aliases()

        def probe(r: Reach, link: Link) -> sql.Composable:
            p = names.new("q")
            return sql.SQL("coalesce((SELECT true FROM {parent} {p} WHERE {match} AND {cond} LIMIT 1), false)").format(
                parent=self.qname(link.parent), p=p, match=self._link_match(table, r, link, p, alias),
                cond=self.belongs_rowwise(link.parent, p, names),
            )

        return self._by_reach(table, alias, probe)

    def select_rows(self, table: str, columns: Sequence[str] | None = None, *, where: sql.Composable | None = None, rowwise: bool = False,
                    sample_first: sql.Composable | None = None) -> sql.Composed:
        """The workspace's rows of ``table`` (alias ``t``). ``sample_first``: the probability each
        row of the table is kept with, drawn before the workspace's predicate is evaluated (a
        subquery the planner cannot flatten: else it may join the whole table to its parents and
        sample after)."""
        t = self.graph.table(table)
        a = sql.Identifier("t")
        cols = columns if columns is not None else t.copy_columns
        cond = self.belongs_rowwise(table, a) if rowwise else self.belongs(table, a)
        if where is not None:
            cond = sql.SQL("{} AND {}").format(cond, where)
        tbl: sql.Composable = self.qname(table)
        if sample_first is not None:
            tbl = sql.SQL("(SELECT * FROM {} WHERE random() < {} OFFSET 0)").format(tbl, sample_first)
        return sql.SQL("SELECT {cols} FROM {tbl} {a} WHERE {cond}").format(
            cols=_ident_list(cols, a), tbl=tbl, a=a, cond=cond
        )

    def count_rows(self, table: str) -> sql.Composed:
        """Rows and bytes (sum of pg_column_size of each row)."""
        return sql.SQL("SELECT count(*), coalesce(sum(pg_column_size(x)), 0) FROM ({rows}) x").format(
            rows=self.select_rows(table)
        )

    def delete_rows(self, table: str) -> sql.Composed:
        a = sql.Identifier("t")
        return sql.SQL("DELETE FROM {tbl} {a} WHERE {cond}").format(tbl=self.qname(table), a=a, cond=self.belongs(table, a))

    def workspace_of(self, table: str, row: sql.Composable, names: Aliases | None = None) -> sql.Composable:
        """An expression giving the workspace id of one row (``row`` is an alias or NEW/OLD)."""
        names = names or Aliases()
        r = self.graph.reach[table]
        if r.by_column:
            return sql.SQL("{}.{}").format(row, sql.Identifier(r.key_column or ""))
        if r.kind in LINK_KINDS:
            parts = []
            for link in r.links:
                p = names.new("f")
                on = sql.SQL(" AND ").join(
                    sql.SQL("{}.{} = {}.{}").format(p, sql.Identifier(pc), row, sql.Identifier(c))
                    for c, pc in zip(link.columns, link.parent_columns)
                )
                # owned rows may have several owners: any one tells the workspace
                sub = sql.SQL("(SELECT ({ws})::text FROM {parent} {p} WHERE {on} LIMIT 1)").format(
                    ws=self.workspace_of(link.parent, p, names), parent=self.qname(link.parent), p=p, on=on
                )
                if r.kind == "polymorphic":
                    sub = sql.SQL("CASE WHEN {row}.{tc} = {val} THEN {sub} END").format(
                        row=row, tc=sql.Identifier(r.type_column or ""), val=sql.Literal(link.type_value), sub=sub
                    )
                parts.append(sub)
            return parts[0] if len(parts) == 1 else sql.SQL("COALESCE({})").format(sql.SQL(", ").join(parts))
        raise ValueError(table)
