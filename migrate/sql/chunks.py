"""Chunks (:mod:`migrate.chunks`): a table with a one-column key is copied and verified in key
ranges, ``lo < key <= hi`` (either end open), text keys compared in the "C" collation so that
both regions cut at the same places.
"""

from __future__ import annotations

from typing import Any, Sequence

from psycopg import sql

from ..graph import Ref
from .base import _ident_list
from .checksums import ChecksumSql


class ChunkSql(ChecksumSql):
    """Chunk keys, bounds, and the per-chunk copy, delete and checksum."""

    CHUNK_KEY_TYPES = ("smallint", "integer", "bigint", "text", "uuid")

    def chunk_key(self, table: str) -> str | None:
        """The column a table's chunks are cut on, or None (stays one chunk)."""
        t = self.graph.table(table)
        if len(t.primary_key) != 1:
            return None
        c = t.column(t.primary_key[0])
        if c is None or not (c.type in self.CHUNK_KEY_TYPES or c.type.startswith("character varying")):
            return None
        return c.name

    def _chunk_key_expr(self, table: str, alias: sql.Composable) -> sql.Composed:
        key = self.chunk_key(table) or ""
        c = self.graph.table(table).column(key)
        ref = sql.SQL("{}.{}").format(alias, sql.Identifier(key))
        if c is not None and (c.type == "text" or c.type.startswith("character varying")):
            return sql.SQL("{} COLLATE \"C\"").format(ref)
        return ref

    @staticmethod
    def bound_parts(bound: Sequence[Any]) -> tuple[Any, Any, str | None]:
        """A recorded chunk bound as (lo, hi, part): ``[lo, hi]`` or ``[lo, hi, part]`` (``part``:
        :meth:`part_cond`)."""
        return bound[0], bound[1], (bound[2] if len(bound) > 2 else None)

    def chunk_params(self, workspace_id: object, bound: Sequence[Any]) -> dict[str, Any]:
        """The parameters of a chunk's statements: the workspace and the bound's open ends."""
        lo, hi, _ = self.bound_parts(bound)
        return self.params(workspace_id, **{k: v for k, v in (("chunk_lo", lo), ("chunk_hi", hi)) if v is not None})

    def _self_fks(self, table: str) -> list[Any]:
        return [fk for fk in self.graph.table(table).foreign_keys if fk.ref_table == table]

    def _unchecked(self, table: str, alias: sql.Composable) -> sql.Composable:
        return sql.SQL(" AND ").join(
            sql.SQL("({})").format(sql.SQL(" OR ").join(sql.SQL("{}.{} IS NULL").format(alias, sql.Identifier(c)) for c in fk.columns))
            for fk in self._self_fks(table))

    def part_cond(self, table: str, alias: sql.Composable, part: str | None) -> sql.Composable | None:
        """A self-referencing table copied with foreign-key checks on is cut in two parts, the
        second copied once the first is in the target: ``roots``, the rows none of its
        self-references checks (in each a column is NULL: MATCH SIMPLE), and ``rest``, every
        other row, one chunk (a reference between two of its rows is checked at the end of its
        one COPY). (A third part, the replies to a root in ranges side by side, measured slower
        on the 1M-row owner bench: each such row's check locks its parent row, and two chunks of
        them side by side took as long as one.)"""
        if part is None:
            return None
        if not self._self_fks(table):
            raise ValueError(f"{table} does not reference itself: no chunk part {part!r}")
        unchecked = self._unchecked(table, alias)
        if part == "roots":
            return sql.SQL("({})").format(unchecked)
        if part == "rest":
            return sql.SQL("NOT ({})").format(unchecked)
        raise ValueError(f"unknown chunk part {part!r}")

    def chunk_cond(self, table: str, alias: sql.Composable, lo: bool, hi: bool, part: str | None = None) -> sql.Composable:
        k = self._chunk_key_expr(table, alias)
        parts: list[sql.Composable] = []
        if lo:
            parts.append(sql.SQL("{} > {}").format(k, sql.Placeholder("chunk_lo")))
        if hi:
            parts.append(sql.SQL("{} <= {}").format(k, sql.Placeholder("chunk_hi")))
        pc = self.part_cond(table, alias, part)
        if pc is not None:
            parts.append(pc)
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")

    def chunk_bounds(self, table: str, part: str | None = None) -> sql.Composed:
        """The key values at ``%(fractions)s`` (a float8 array) of a random sample (each row kept
        with probability ``%(sample)s``; 1: all) of the workspace's rows (of one ``part``), in
        order (fraction 1: the sample's largest key; no ``max`` for every key type), and the
        sample's size. The sample is drawn before the workspace's predicate is evaluated: a
        table holding the workspace's id by a filter beside it (the planner orders conditions
        by cost; the column's index stays usable), a table reached through joins in a subquery
        of its own (:meth:`select_rows`), else the planner may join all of it to its parents and
        sample after (attachment previews at 10M rows: 1.9 s, now 0.05)."""
        x = sql.Identifier("x")
        k = self._chunk_key_expr(table, x)
        p = sql.Placeholder("sample")
        by_column = self.graph.reach[table].by_column
        rows = self.select_rows(table, [self.chunk_key(table) or ""], where=self.part_cond(table, sql.Identifier("t"), part),
                                sample_first=None if by_column else p)
        return sql.SQL("SELECT percentile_disc({f}::float8[]) WITHIN GROUP (ORDER BY {k}), count(*) FROM ({rows}) {x}{filter}").format(
            f=sql.Placeholder("fractions"), k=k, rows=rows, x=x,
            filter=sql.SQL(" WHERE random() < {}").format(p) if by_column else sql.SQL(""))

    def _chunk_rows(self, table: str, lo: bool, hi: bool, columns: Sequence[str] | None = None, part: str | None = None) -> sql.Composed:
        return self.select_rows(table, columns, where=self.chunk_cond(table, sql.Identifier("t"), lo, hi, part))

    def copy_out_chunk(self, table: str, lo: bool, hi: bool, *, hashed: bool = False, part: str | None = None) -> sql.Composed:
        """The chunk's rows as binary COPY; ``hashed``: each row carries its hash (:meth:`row_hash`)
        as one more, last, column, which the relay takes off (:mod:`migrate.rowhash`)."""
        if not hashed:
            return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(self._chunk_rows(table, lo, hi, part=part))
        x = sql.Identifier("x")
        return sql.SQL("COPY (SELECT {cols}, {h} FROM ({rows}) {x}) TO STDOUT (FORMAT BINARY)").format(
            cols=_ident_list(self.graph.table(table).copy_columns, x), h=self.row_hash(table, x), rows=self._chunk_rows(table, lo, hi, part=part), x=x)

    def delete_chunk(self, table: str, lo: bool, hi: bool, part: str | None = None) -> sql.Composed:
        a = sql.Identifier("t")
        return sql.SQL("DELETE FROM {tbl} {a} WHERE {cond} AND {rng}").format(
            tbl=self.qname(table), a=a, cond=self.belongs(table, a), rng=self.chunk_cond(table, a, lo, hi, part))

    def chunk_keys(self, table: str, lo: bool, hi: bool, part: str | None = None) -> sql.Composed:
        """The keys (:meth:`chunk_key`) of the workspace's rows in one chunk."""
        return self._chunk_rows(table, lo, hi, [self.chunk_key(table) or ""], part=part)

    def delete_keys(self, table: str) -> sql.Composed:
        """Delete the rows whose key is in ``%(keys)s`` (an array), found by the key's index alone."""
        return sql.SQL("DELETE FROM {tbl} WHERE {k} = ANY({keys})").format(
            tbl=self.qname(table), k=sql.Identifier(self.chunk_key(table) or ""), keys=sql.Placeholder("keys"))

    def checksum_chunk(self, table: str, lo: bool, hi: bool, part: str | None = None, found: Sequence[Ref] = ()) -> sql.Composed:
        """count(*) and sum(hash_record_extended(row, 0)) of one chunk (same hash as :meth:`checksum`);
        then, per reference in ``found``, the distinct values it points at (:meth:`_found`)."""
        t = self.graph.table(table)
        h, x = sql.Identifier("h"), sql.Identifier("x")
        return sql.SQL("SELECT count(*), coalesce(sum(hash_record_extended({h}, 0)), 0){found} FROM"
                       " (SELECT {hc} FROM ({rows}) {x}) {h}").format(
            h=h, found=self._found(found, h), hc=self._hash_columns(t, x), rows=self._chunk_rows(table, lo, hi, part=part), x=x)

    def _found(self, refs: Sequence[Ref], h: sql.Composable) -> sql.Composable:
        """One more column per reference (one column, hashed as is: :func:`migrate.globalkeys.direct_refs`):
        the distinct non-null values it holds in the summed rows (of its type, if polymorphic)."""
        parts: list[sql.Composable] = []
        for r in refs:
            col = sql.SQL("{}.{}").format(h, sql.Identifier(r.columns[0]))
            cond = sql.SQL("{} IS NOT NULL").format(col)
            if r.type_column:
                cond = sql.SQL("{} AND {}.{} = {}").format(cond, h, sql.Identifier(r.type_column), sql.Literal(r.type_value))
            parts.append(sql.SQL(", array_agg(DISTINCT {}) FILTER (WHERE {})").format(col, cond))
        return sql.Composed(parts)

    def checksum_landed(self, table: str, lo: bool, hi: bool, part: str | None = None, found: Sequence[Ref] = ()) -> sql.Composed:
        """count(*) and sum of row hashes of the rows the current transaction wrote into
        ``table`` in the chunk's key range (``xmin`` is this transaction's id): the chunk as it
        landed, found without the workspace's predicate (for a table reached through joins, those
        joins per row were most of the sum's cost). An old frozen row with the same 32-bit
        ``xmin`` would be counted too: the chunk then fails verify and is copied again, never
        the reverse."""
        t = self.graph.table(table)
        h, x = sql.Identifier("h"), sql.Identifier("x")
        return sql.SQL("SELECT count(*), coalesce(sum(hash_record_extended({h}, 0)), 0){found} FROM"
                       " (SELECT {hc} FROM {tbl} {x} WHERE {rng} AND {x}.xmin = pg_current_xact_id()::xid) {h}").format(
            h=h, found=self._found(found, h), hc=self._hash_columns(t, x), tbl=self.qname(table), x=x, rng=self.chunk_cond(table, x, lo, hi, part))
