"""The plan's clash checks (:mod:`migrate.plan`): moving keys and unique-index values the target
already holds.

A unique index's key parts and predicate are SQL text PostgreSQL itself printed
(pg_get_indexdef / pg_get_expr, see :class:`migrate.introspect.UniqueIndex`), composed as such;
they name the table's columns unqualified, so they are evaluated over a subquery whose columns
carry those names. Values go to a temp table in the target as ``residency_u<i>``.
"""

from __future__ import annotations

from typing import Sequence

from psycopg import sql

from .base import _ident_list
from .globals import GlobalsSql


class UniqueSql(GlobalsSql):
    """Keys and unique values of the moving rows, and their clashes in the target."""

    def count_present(self, table: str, temp: str, key: Sequence[str]) -> sql.Composed:
        a, b = sql.Identifier("a"), sql.Identifier("b")
        on = sql.SQL(" AND ").join(sql.SQL("{}.{} = {}.{}").format(a, sql.Identifier(k), b, sql.Identifier(k)) for k in key)
        return sql.SQL("SELECT count(*) FROM {tmp} {b} WHERE EXISTS (SELECT 1 FROM {tbl} {a} WHERE {on})").format(
            tmp=sql.Identifier(temp), b=b, tbl=self.qname(table), a=a, on=on
        )

    def present_keys(self, table: str, temp: str, key: Sequence[str], limit: int) -> sql.Composed:
        a, b = sql.Identifier("a"), sql.Identifier("b")
        on = sql.SQL(" AND ").join(sql.SQL("{}.{} = {}.{}").format(a, sql.Identifier(k), b, sql.Identifier(k)) for k in key)
        return sql.SQL("SELECT {keys} FROM {tmp} {b} WHERE EXISTS (SELECT 1 FROM {tbl} {a} WHERE {on}) ORDER BY {keys} LIMIT {n}").format(
            keys=_ident_list(key, b), tmp=sql.Identifier(temp), b=b, tbl=self.qname(table), a=a, on=on, n=sql.Placeholder("limit")
        )

    def temp_keys(self, temp: str, table: str, key: Sequence[str]) -> sql.Composed:
        """A temp table with just ``key`` columns of ``table`` (same types)."""
        a = sql.Identifier("t")
        return sql.SQL("CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {cols} FROM {tbl} {a} WITH NO DATA").format(
            tmp=sql.Identifier(temp), cols=_ident_list(key, a), tbl=self.qname(table), a=a
        )

    def copy_out_keys(self, table: str, key: Sequence[str], *, global_: bool = False) -> sql.Composed:
        rows = self.global_referenced(table, key) if global_ else self.select_rows(table, key)
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(rows)

    def key_range(self, table: str, key: Sequence[str]) -> sql.Composed:
        """min and max of the (single-column) key among the workspace's rows."""
        a = sql.Identifier("x")
        k = sql.Identifier(key[0])
        rows = self.select_rows(table, key)
        # ORDER BY ... LIMIT 1 rather than min()/max(): works for every orderable type (uuid has no min)
        return sql.SQL(
            "SELECT (SELECT {a}.{k} FROM ({rows}) {a} ORDER BY 1 LIMIT 1), (SELECT {a}.{k} FROM ({rows}) {a} ORDER BY 1 DESC LIMIT 1)"
        ).format(a=a, k=k, rows=rows)

    def count_key_between(self, table: str, key: str) -> sql.Composed:
        return sql.SQL("SELECT count(*) FROM {tbl} WHERE {k} BETWEEN {lo} AND {hi}").format(
            tbl=self.qname(table), k=sql.Identifier(key), lo=sql.Placeholder("lo"), hi=sql.Placeholder("hi")
        )

    @staticmethod
    def _unique_cols(n: int) -> list[str]:
        return [f"residency_u{i}" for i in range(n)]

    def unique_values(self, table: str, parts: Sequence[str], predicate: str | None) -> sql.Composed:
        """The index's key values of the workspace's rows (those the predicate admits)."""
        t = self.graph.table(table)
        x = sql.Identifier(table)
        return sql.SQL("SELECT {vals} FROM ({rows}) {x} WHERE {pred}").format(
            vals=sql.SQL(", ").join(sql.SQL("({}) AS {}").format(sql.SQL(p), sql.Identifier(c)) for p, c in zip(parts, self._unique_cols(len(parts)))),
            rows=self.select_rows(table, [c.name for c in t.columns]), x=x,
            pred=sql.SQL("({})").format(sql.SQL(predicate)) if predicate else sql.SQL("true"),
        )

    def copy_out_unique_values(self, table: str, parts: Sequence[str], predicate: str | None) -> sql.Composed:
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(self.unique_values(table, parts, predicate))

    def temp_unique_values(self, temp: str, table: str, parts: Sequence[str]) -> sql.Composed:
        """A temp table typed as the index's key parts evaluated over ``table`` (in the target)."""
        return sql.SQL("CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {vals} FROM {tbl} WITH NO DATA").format(
            tmp=sql.Identifier(temp), tbl=self.qname(table),
            vals=sql.SQL(", ").join(sql.SQL("({}) AS {}").format(sql.SQL(p), sql.Identifier(c)) for p, c in zip(parts, self._unique_cols(len(parts)))),
        )

    def copy_in_unique_values(self, temp: str, n: int) -> sql.Composed:
        return sql.SQL("COPY {tmp} ({cols}) FROM STDIN (FORMAT BINARY)").format(tmp=sql.Identifier(temp), cols=_ident_list(self._unique_cols(n)))

    def _unique_clash(self, table: str, temp: str, parts: Sequence[str], predicate: str | None, nulls_not_distinct: bool) -> sql.Composed:
        k = sql.Identifier("k")
        op = sql.SQL("IS NOT DISTINCT FROM") if nulls_not_distinct else sql.SQL("=")
        match = sql.SQL(" AND ").join(
            sql.SQL("({}) {} {}.{}").format(sql.SQL(p), op, k, sql.Identifier(c)) for p, c in zip(parts, self._unique_cols(len(parts)))
        )
        if predicate:
            match = sql.SQL("({}) AND {}").format(sql.SQL(predicate), match)
        # the subquery's FROM is the table itself, unaliased: the parts' column names resolve to it
        return sql.SQL("EXISTS (SELECT 1 FROM {tbl} WHERE {match})").format(tbl=self.qname(table), match=match)

    def count_unique_clashes(self, table: str, temp: str, parts: Sequence[str], predicate: str | None, nulls_not_distinct: bool) -> sql.Composed:
        return sql.SQL("SELECT count(*) FROM {tmp} {k} WHERE {clash}").format(
            tmp=sql.Identifier(temp), k=sql.Identifier("k"), clash=self._unique_clash(table, temp, parts, predicate, nulls_not_distinct))

    def unique_clashes(self, table: str, temp: str, parts: Sequence[str], predicate: str | None, nulls_not_distinct: bool) -> sql.Composed:
        """A sample (``%(limit)s``) of the moving key values the target's rows already hold."""
        k = sql.Identifier("k")
        cols = _ident_list(self._unique_cols(len(parts)), k)
        return sql.SQL("SELECT DISTINCT {cols} FROM {tmp} {k} WHERE {clash} ORDER BY {cols} LIMIT %(limit)s").format(
            cols=cols, tmp=sql.Identifier(temp), k=k, clash=self._unique_clash(table, temp, parts, predicate, nulls_not_distinct))
