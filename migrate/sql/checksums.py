"""Verification (:mod:`migrate.verify`): row counts and order-independent checksums (a sum of
``hash_record_extended(row, 0)``), optionally in a key range, and the narrowing of a mismatch.
"""

from __future__ import annotations

from psycopg import sql

from ..introspect import Table
from .base import _ident_list
from .globals import GlobalsSql


class ChecksumSql(GlobalsSql):
    """Counts and checksums of the workspace's rows."""

    def _hashed(self, t: Table, a: sql.Composable, *, named: bool) -> list[sql.Composable]:
        """The columns as hashed: as they are, or as text where the type has no hash function
        (generated columns left out: the target computes them)."""
        parts: list[sql.Composable] = []
        for c in t.columns:
            if c.generated:
                continue
            ref = sql.SQL("{}.{}").format(a, sql.Identifier(c.name))
            if not c.hashable:
                ref = sql.SQL("{}::text AS {}").format(ref, sql.Identifier(c.name)) if named else sql.SQL("{}::text").format(ref)
            parts.append(ref)
        return parts

    def _hash_columns(self, t: Table, a: sql.Composable) -> sql.Composed:
        return sql.SQL(", ").join(self._hashed(t, a, named=True))

    def row_hash(self, table: str, a: sql.Composable) -> sql.Composed:
        """One row's hash, the very value :meth:`checksum` sums (``hash_record_extended`` of the
        same columns, an anonymous record hashing like the named one)."""
        return sql.SQL("hash_record_extended(ROW({}), 0)").format(sql.SQL(", ").join(self._hashed(self.graph.table(table), a, named=False)))

    def _key_params(self, prefix: str, n: int) -> sql.Composed:
        return sql.SQL(", ").join(sql.Placeholder(f"{prefix}{i}") for i in range(n))

    def _range_cond(self, t: Table, a: sql.Composable, lo: bool, hi: bool) -> sql.Composable:
        """``%(lo..)s < key <= %(hi..)s`` on the table's narrowing key (:meth:`Graph.narrow_key`)."""
        cond: list[sql.Composable] = []
        if lo or hi:
            key = self.graph.narrow_key(t.name)[0]
            if lo:
                cond.append(sql.SQL("ROW({}) > ROW({})").format(_ident_list(key, a), self._key_params("lo", len(key))))
            if hi:
                cond.append(sql.SQL("ROW({}) <= ROW({})").format(_ident_list(key, a), self._key_params("hi", len(key))))
        return sql.SQL(" AND ").join(cond) if cond else sql.SQL("true")

    def _rows_for_hash(self, table: str, *, global_: bool, lo: bool = False, hi: bool = False) -> sql.Composed:
        t = self.graph.table(table)
        x = sql.Identifier("x")
        inner = self.global_referenced(table) if global_ else self.select_rows(table)
        return sql.SQL("SELECT {hc} FROM ({inner}) {x} WHERE {cond}").format(
            hc=self._hash_columns(t, x), inner=inner, x=x, cond=self._range_cond(t, x, lo, hi)
        )

    def checksum(self, table: str, *, global_: bool = False, lo: bool = False, hi: bool = False) -> sql.Composed:
        """count(*) and sum(hash_record_extended(row, 0)) of the workspace's rows (optionally in a key range)."""
        h = sql.Identifier("h")
        return sql.SQL("SELECT count(*), coalesce(sum(hash_record_extended({h}, 0)), 0) FROM ({rows}) {h}").format(
            h=h, rows=self._rows_for_hash(table, global_=global_, lo=lo, hi=hi)
        )

    def key_hashes(self, table: str, *, lo: bool = False, hi: bool = False) -> sql.Composed:
        """(key..., rows, sum of row hashes) per narrowing key in a key range: the leaves of the
        bisection (one row per key when the key is unique; a group of rows when it is not)."""
        key = self.graph.narrow_key(table)[0]
        h, x = sql.Identifier("h"), sql.Identifier("x")
        hashed = sql.SQL("SELECT {keys}, hash_record_extended({h}, 0)::numeric AS {hv} FROM ({rows}) {h}").format(
            keys=_ident_list(key, h), h=h, hv=sql.Identifier("residency_hash"), rows=self._rows_for_hash(table, global_=False, lo=lo, hi=hi)
        )
        return sql.SQL("SELECT {keys}, count(*), sum({x}.{hv}) FROM ({hashed}) {x} GROUP BY {keys} ORDER BY {keys}").format(
            keys=_ident_list(key, x), x=x, hv=sql.Identifier("residency_hash"), hashed=hashed
        )

    def median_key(self, table: str, *, lo: bool = False, hi: bool = False) -> sql.Composed:
        t = self.graph.table(table)
        key = self.graph.narrow_key(table)[0]
        x = sql.Identifier("x")
        return sql.SQL("SELECT {keys} FROM ({rows}) {x} WHERE {cond} ORDER BY {keys} OFFSET {off} LIMIT 1").format(
            keys=_ident_list(key, x),
            rows=self.select_rows(table, list(t.copy_columns) + [c for c in key if c not in t.copy_columns]),
            x=x,
            cond=self._range_cond(t, x, lo, hi),
            off=sql.Placeholder("offset"),
        )
