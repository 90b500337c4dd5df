"""Bucketed checksums (:mod:`migrate.incremental`): verify under the fence only what changed.

A table with a one-column primary key is cut into key-range buckets by boundaries sampled
from the source (a jsonb array of key values, ``%(bounds)s``, typed back into the key's own
type through ``jsonb_populate_record(NULL::table, ...)``, so no type name is ever spelled
out). Bucket 0 is below the first boundary, bucket i (1..n) is [bounds[i], bounds[i+1]).
"""

from __future__ import annotations

from psycopg import sql

from .base import _ident_list, _tuple
from .changes import ChangesSql
from .checksums import ChecksumSql
from .unique import UniqueSql


class BucketSql(ChecksumSql, ChangesSql, UniqueSql):
    """Bucket boundaries and per-bucket checksums."""

    def _bounds_array(self, table: str) -> sql.Composed:
        (pk,) = self.graph.table(table).primary_key
        e, j, r = sql.Identifier("e"), sql.Identifier("j"), sql.Identifier("r")
        return sql.SQL(
            "ARRAY(SELECT {r}.{pk} FROM jsonb_array_elements(%(bounds)s::jsonb) WITH ORDINALITY {j}({e}, n)"
            " CROSS JOIN LATERAL jsonb_populate_record(NULL::{tbl}, jsonb_build_object({name}, {j}.{e})) {r} ORDER BY {j}.n)"
        ).format(r=r, pk=sql.Identifier(pk), j=j, e=e, tbl=self.qname(table), name=sql.Literal(pk))

    def bucket_bounds(self, table: str) -> sql.Composed:
        """Bucket boundaries, in key order, as a jsonb array: every ``%(every)s``-th key of the
        workspace's rows, and around every run of more than ``%(gap)s`` other rows between two of
        the workspace's keys (other workspaces' rows, say, between its old rows and those written
        during the move) a boundary at the first key of the run and at the workspace's next key:
        no bucket then makes a check under the fence walk through many rows that are not the
        workspace's. One pass over the table in key order (before the fence); the workspace's keys
        are picked by a semi-join with its predicate in a WHERE (the planner joins it as it sees
        fit), never by that predicate as a column: there an ``IN (SELECT ...)`` is a subplan,
        hashed only while it fits ``work_mem`` and otherwise scanned once per row (one online
        move of a 1M-row workspace: 811 s for its tables, attachments alone over 60 s; quadratic)."""
        (pk,) = self.graph.table(table).primary_key
        t, a, w, k, m = sql.Identifier("t"), sql.Identifier("a"), sql.Identifier("w"), sql.Identifier(pk), sql.Identifier("m")
        return sql.SQL(
            "SELECT coalesce(jsonb_agg(to_jsonb(b) ORDER BY b), '[]'::jsonb) FROM (SELECT DISTINCT b FROM ("
            " SELECT CASE WHEN {w}.rn %% %(every)s = 0 OR {w}.pos - {w}.prev_pos > %(gap)s THEN {w}.{k} END AS b1,"
            "        CASE WHEN {w}.next_pos - {w}.pos > %(gap)s THEN {w}.next_key END AS b2 FROM ("
            "  SELECT {a}.{k}, {a}.pos, {a}.next_key, row_number() OVER (ORDER BY {a}.{k}) AS rn,"
            "         lag({a}.pos) OVER (ORDER BY {a}.{k}) AS prev_pos, lead({a}.pos) OVER (ORDER BY {a}.{k}) AS next_pos FROM ("
            "   SELECT {t}.{k}, row_number() OVER (ORDER BY {t}.{k}) AS pos, lead({t}.{k}) OVER (ORDER BY {t}.{k}) AS next_key"
            "   FROM {tbl} {t}) {a} WHERE {a}.{k} IN (SELECT {m}.{k} FROM {tbl} {m} WHERE {mine})) {w}"
            " ) x CROSS JOIN LATERAL (VALUES (x.b1), (x.b2)) v(b) WHERE b IS NOT NULL) y"
        ).format(t=t, a=a, w=w, k=k, m=m, tbl=self.qname(table), mine=self.belongs(table, m))

    def key_extremes(self, table: str) -> sql.Composed:
        """The smallest and largest key of the workspace's rows (index probes from both ends)."""
        return self.key_range(table, self.graph.table(table).primary_key)

    def bucket_checksums(self, table: str) -> sql.Composed:
        """(bucket, count, sum of row hashes) of the workspace's rows, one pass, every bucket."""
        (pk,) = self.graph.table(table).primary_key
        h = sql.Identifier("h")
        return sql.SQL(
            "SELECT width_bucket({h}.{pk}, {bounds}) AS b, count(*), coalesce(sum(hash_record_extended({h}, 0)::numeric), 0)"
            " FROM ({rows}) {h} GROUP BY 1"
        ).format(h=h, pk=sql.Identifier(pk), bounds=self._bounds_array(table), rows=self._rows_for_hash(table, global_=False))

    def bucket_checksum(self, table: str, *, lo: bool = False, hi: bool = False, hi_inclusive: bool = False,
                        keys_below: bool = False, keys_above: bool = False) -> sql.Composed:
        """count and sum of row hashes of the workspace's rows with ``%(lo)s <= key < %(hi)s``
        (either bound optional; the key values as JSON gives them): an index range scan."""
        t = self.graph.table(table)
        (pk,) = t.primary_key
        x, h = sql.Identifier("x"), sql.Identifier("h")
        cond: list[sql.Composable] = []
        # the bounds as plain parameters (ints; strings go as "unknown" and take the key's type):
        # the planner sees the values, so even an open-ended bucket is an index range scan
        if lo:
            cond.append(sql.SQL("{x}.{pk} >= {v}").format(x=x, pk=sql.Identifier(pk), v=sql.Placeholder("lo")))
        if hi:
            op = sql.SQL("<=") if hi_inclusive else sql.SQL("<")
            cond.append(sql.SQL("{x}.{pk} {op} {v}").format(x=x, pk=sql.Identifier(pk), op=op, v=sql.Placeholder("hi")))
        # rows by key (``%(keys)s``) beyond the bounds: below ``%(lo)s`` or above ``%(hi)s``
        if keys_below or keys_above:
            cond = [self._keys_match(table, x), sql.SQL("{x}.{pk} {op} {v}").format(
                x=x, pk=sql.Identifier(pk), op=sql.SQL("<") if keys_below else sql.SQL(">"), v=sql.Placeholder("lo" if keys_below else "hi"))]
        rows = sql.SQL("SELECT {hc} FROM ({inner}) {x} WHERE {cond}").format(
            hc=self._hash_columns(t, x), inner=self.select_rows(table, rowwise=True), x=x,
            cond=sql.SQL(" AND ").join(cond) if cond else sql.SQL("true"),
        )
        return sql.SQL("SELECT count(*), coalesce(sum(hash_record_extended({h}, 0)::numeric), 0) FROM ({rows}) {h}").format(h=h, rows=rows)

    def buckets_of_keys(self, table: str) -> sql.Composed:
        """The buckets holding the keys in ``%(keys)s`` (jsonb key objects)."""
        (pk,) = self.graph.table(table).primary_key
        k, r = sql.Identifier("k"), sql.Identifier("r")
        return sql.SQL(
            "SELECT DISTINCT width_bucket({r}.{pk}, {bounds}) FROM unnest(%(keys)s::jsonb[]) {k}"
            " CROSS JOIN LATERAL jsonb_populate_record(NULL::{tbl}, {k}) {r}"
        ).format(r=r, pk=sql.Identifier(pk), bounds=self._bounds_array(table), k=k, tbl=self.qname(table))

    def children_of_keys(self, table: str, link_index: int) -> sql.Composed:
        """Keys (jsonb) of the rows of ``table`` whose link ``link_index`` points at a parent key in
        ``%(keys)s`` (whatever their workspace): the rows whose membership a parent's change can move."""
        r_ = self.graph.reach[table]
        link = r_.links[link_index]
        c, k, p = sql.Identifier("c"), sql.Identifier("k"), sql.Identifier("p")
        cond = sql.SQL("{lhs} IN (SELECT {rhs} FROM unnest(%(keys)s::jsonb[]) {k} CROSS JOIN LATERAL jsonb_populate_record(NULL::{ptbl}, {k}) {p})").format(
            lhs=_tuple(link.columns, c), rhs=_ident_list(link.parent_columns, p), k=k, ptbl=self.qname(link.parent), p=p
        )
        if r_.kind == "polymorphic":
            cond = sql.SQL("{c}.{tc} = {val} AND {cond}").format(c=c, tc=sql.Identifier(r_.type_column or ""), val=sql.Literal(link.type_value), cond=cond)
        return sql.SQL("SELECT {kj} FROM {tbl} {c} WHERE {cond}").format(kj=self._key_json(table, c), tbl=self.qname(table), c=c, cond=cond)
