"""The SQL backups and restores run, composed on the mover's :class:`~residency.migrate.sqlbuild.Builder`
(``carried``: the workspace's rows and the shared rows they reference; ``chunk_cond``: a key
range). Identifiers only through ``psycopg.sql.Identifier``, values only as parameters."""

from __future__ import annotations

from typing import Sequence

from psycopg import sql

from residency.migrate.sqlbuild import Builder

TEXTY = ("text", "character varying", "character", "citext")
ZONE_TYPES = ("smallint", "integer", "bigint", "text", "character varying")
"""Link columns whose min/max per chunk the key index records (types with min() and a plain order)."""


def _texty(b: Builder, table: str, col: str) -> bool:
    c = b.graph.table(table).column(col)
    return c is not None and c.type.startswith(TEXTY)


def _ordered(b: Builder, table: str, alias: sql.Composable, col: str) -> sql.Composable:
    ref = sql.SQL("{}.{}").format(alias, sql.Identifier(col))
    return sql.SQL("{} COLLATE \"C\"").format(ref) if _texty(b, table, col) else ref


def _cond(b: Builder, table: str, a: sql.Composable, lo: bool, hi: bool) -> sql.Composable:
    cond = b.carried(table, a, 0, frozenset())
    if lo or hi:
        cond = sql.SQL("{} AND {}").format(cond, b.chunk_cond(table, a, lo, hi))
    return cond


def rows(b: Builder, table: str, columns: Sequence[str], lo: bool = False, hi: bool = False) -> sql.Composed:
    t = sql.Identifier("t")
    return sql.SQL("SELECT {cols} FROM {tbl} {t} WHERE {cond}").format(
        cols=sql.SQL(", ").join(sql.SQL("{}.{}").format(t, sql.Identifier(c)) for c in columns),
        tbl=b.qname(table), t=t, cond=_cond(b, table, t, lo, hi))


def count(b: Builder, table: str) -> sql.Composed:
    t = sql.Identifier("t")
    return sql.SQL("SELECT count(*) FROM {tbl} {t} WHERE {cond}").format(tbl=b.qname(table), t=t, cond=_cond(b, table, t, False, False))


CUT_STEPS = 64
"""Chunk bounds are picked among the keys at every 1/64 of a table's rows (one sorted pass)."""


def cuts(b: Builder, table: str) -> sql.Composed:
    """The row count and the chunk key at ``%(fractions)s`` of the backed-up rows in key order,
    in one sorted pass (no window over the rows: cheaper, measured)."""
    x = sql.Identifier("x")
    key = b.chunk_key(table) or ""
    return sql.SQL("SELECT count(*), percentile_disc({f}::float8[]) WITHIN GROUP (ORDER BY {k}) FROM ({r}) {x}").format(
        f=sql.Placeholder("fractions"), k=_ordered(b, table, x, key), r=rows(b, table, [key]), x=x)


def copy_out(b: Builder, table: str, lo: bool, hi: bool) -> sql.Composed:
    """The chunk's rows as binary COPY, in the key index's order (row i is the index's line i),
    so that a restore can fetch a few blocks of rows instead of the chunk."""
    t = sql.Identifier("t")
    pk = b.graph.table(table).primary_key
    cols = b.graph.table(table).copy_columns
    if not pk:
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(rows(b, table, cols, lo, hi))
    return sql.SQL("COPY ({rows} ORDER BY {order}) TO STDOUT (FORMAT BINARY)").format(
        rows=rows(b, table, cols, lo, hi), order=sql.SQL(", ").join(_ordered(b, table, t, c) for c in pk))


def key_expr(b: Builder, table: str, a: sql.Composable) -> sql.Composable:
    """A row's key as the index writes it: the value of a one-column key, a JSON array of a
    composite key's values, NULL without a key (rows are then told apart by their hash)."""
    pk = b.graph.table(table).primary_key
    if len(pk) == 1:
        return sql.SQL("{}.{}").format(a, sql.Identifier(pk[0]))
    if pk:
        return sql.SQL("jsonb_build_array({})::text").format(sql.SQL(", ").join(sql.SQL("{}.{}").format(a, sql.Identifier(c)) for c in pk))
    return sql.SQL("NULL::text")


def _order(b: Builder, table: str, a: sql.Composable, h: sql.Composable) -> sql.Composable:
    pk = b.graph.table(table).primary_key
    if not pk:
        return h
    return sql.SQL(", ").join(_ordered(b, table, a, c) for c in pk)


def key_index(b: Builder, table: str, links: Sequence[str], *, lo: bool = False, hi: bool = False, live: bool = False) -> sql.Composed:
    """``COPY ... TO STDOUT`` (text): one line per row, in key order — key, row hash (the mover's
    ``hash_record_extended`` over the same columns), then the ``links`` columns — and a last line
    with only its final field set: JSON ``{rows, sum, zone: {link: [min, max]}}``. ``live``: the
    whole table, no trailer (a diff against now)."""
    t = b.graph.table(table)
    x, r, u = sql.Identifier("x"), sql.Identifier("r"), sql.Identifier("u")
    inner = sql.SQL("SELECT {hc} FROM {tbl} {tt} WHERE {cond}").format(
        hc=b._hash_columns(t, sql.Identifier("tt")), tbl=b.qname(table), tt=sql.Identifier("tt"),
        cond=_cond(b, table, sql.Identifier("tt"), lo, hi))
    lcols = [sql.SQL("{}.{} AS {}").format(x, sql.Identifier(c), sql.Identifier(f"l{i}")) for i, c in enumerate(links)]
    pk = t.primary_key
    ocols = [sql.SQL("{} AS {}").format(_ordered(b, table, x, c), sql.Identifier(f"o{i}")) for i, c in enumerate(pk)]
    base = sql.SQL("SELECT {k} AS k, hash_record_extended({x}, 0) AS h{l}{o} FROM ({inner}) {x}").format(
        k=key_expr(b, table, x), x=x, inner=inner,
        l=sql.SQL("").join(sql.SQL(", {}").format(c) for c in lcols),
        o=sql.SQL("").join(sql.SQL(", {}").format(c) for c in ocols))
    out_cols = [sql.Identifier("k"), sql.Identifier("h")] + [sql.Identifier(f"l{i}") for i in range(len(links))]
    order = sql.SQL(", ").join([sql.Identifier(f"o{i}") for i in range(len(pk))] or [sql.Identifier("h")])
    if live:
        return sql.SQL("COPY (SELECT {cols} FROM ({base}) {r} ORDER BY {order}) TO STDOUT").format(
            cols=sql.SQL(", ").join(out_cols), base=base, r=r, order=order)
    zone = []
    for i, c in enumerate(links):
        col = t.column(c)
        if col is not None and col.type.startswith(ZONE_TYPES):
            zone.append(sql.SQL("{}, jsonb_build_array(min({}), max({}))").format(
                sql.Literal(c), sql.Identifier(f"l{i}"), sql.Identifier(f"l{i}")))
    trailer = sql.SQL("jsonb_build_object('rows', count(*), 'sum', coalesce(sum(h::numeric), 0)::text, 'zone', jsonb_build_object({z}))::text").format(
        z=sql.SQL(", ").join(zone))
    nulls = sql.SQL("").join(sql.SQL(", NULL") for _ in range(1 + len(links) + len(pk)))
    return sql.SQL(
        "COPY (WITH {r} AS MATERIALIZED ({base}) SELECT {cols}, {u}.tr FROM ("
        "SELECT 0 AS part, {r}.*, NULL::text AS tr FROM {r} UNION ALL SELECT 1, NULL{nulls}, {trailer} FROM {r}"
        ") {u} ORDER BY {u}.part, {order}) TO STDOUT"
    ).format(r=r, base=base, cols=sql.SQL(", ").join(sql.SQL("{}.{}").format(u, c) for c in out_cols), u=u,
             nulls=nulls, trailer=trailer, order=sql.SQL(", ").join(sql.SQL("{}.{}").format(u, sql.Identifier(f"o{i}")) for i in range(len(pk))) if pk else sql.SQL("{}.h").format(u))


# ------------------------------------------------------------------------------ restore side


def temp_table(temp: str, b: Builder, table: str, columns: Sequence[str]) -> sql.Composed:
    """A temporary table with ``columns`` of ``table`` (their types in the target), empty."""
    tt = sql.Identifier("t")
    return sql.SQL("CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {cols} FROM {tbl} {t} WITH NO DATA").format(
        tmp=sql.Identifier(temp), cols=sql.SQL(", ").join(sql.SQL("{}.{}").format(tt, sql.Identifier(c)) for c in columns),
        tbl=b.qname(table), t=tt)


def copy_into_temp(temp: str, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(temp), sql.SQL(", ").join(sql.Identifier(c) for c in columns))


def keep_keys(temp: str, key: str) -> sql.Composed:
    """Delete from the temp table every row whose key is not in ``%(keys)s`` (text values)."""
    return sql.SQL("DELETE FROM {} WHERE NOT ({}::text = ANY(%(keys)s::text[]))").format(sql.Identifier(temp), sql.Identifier(key))


def hash_list(b: Builder, table: str, x: sql.Composable, columns: Sequence[str]) -> sql.Composed:
    """``columns`` of row ``x`` as the row hash reads them (as text where the type has no hash)."""
    return sql.SQL(", ").join(
        sql.SQL("{}.{}").format(x, sql.Identifier(c.name)) if c.hashable else sql.SQL("{}.{}::text AS {}").format(x, sql.Identifier(c.name), sql.Identifier(c.name))
        for c in b.graph.table(table).columns if c.name in columns)


def temp_hashes(temp: str, b: Builder, table: str, columns: Sequence[str]) -> sql.Composed:
    """(key text, row hash) of the temp table's rows, hashed like the key index."""
    x = sql.Identifier("x")
    (pk,) = b.graph.table(table).primary_key
    hc = hash_list(b, table, x, columns)
    return sql.SQL("SELECT h.{pk}::text, hash_record_extended(h, 0) FROM (SELECT {hc} FROM {tmp} {x}) h").format(
        pk=sql.Identifier(pk), hc=hc, tmp=sql.Identifier(temp), x=x)


def target_hashes(b: Builder, table: str, columns: Sequence[str]) -> sql.Composed:
    """(key text, row hash) of the target's rows of ``table`` whose key is in ``%(keys)s``."""
    x = sql.Identifier("x")
    (pk,) = b.graph.table(table).primary_key
    hc = hash_list(b, table, x, columns)
    return sql.SQL("SELECT h.{pk}::text, hash_record_extended(h, 0) FROM (SELECT {hc} FROM {tbl} {x} WHERE {x}.{pk}::text = ANY(%(keys)s::text[])) h").format(
        pk=sql.Identifier(pk), hc=hc, tbl=b.qname(table), x=x)


def insert_keys(b: Builder, table: str, temp: str, columns: Sequence[str], *, overwrite: bool) -> sql.Composed:
    """Insert the temp table's rows whose key is in ``%(keys)s``; ``overwrite``: replace the
    target's row of the same key (only for records the user asked to restore)."""
    t = b.graph.table(table)
    (pk,) = t.primary_key
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    rest = [c for c in columns if c != pk]
    action = sql.SQL("DO NOTHING")
    if overwrite and rest:
        action = sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in rest))
    return sql.SQL("INSERT INTO {tbl} ({cols}) SELECT {cols} FROM {tmp} WHERE {pk}::text = ANY(%(keys)s::text[]) ON CONFLICT ({pk}) {action}").format(
        tbl=b.qname(table), cols=cols, tmp=sql.Identifier(temp), pk=sql.Identifier(pk), action=action)


def dangling(b: Builder, table: str, column: str, parent: str, parent_column: str) -> sql.Composed:
    """Sample keys of ``table``'s rows in ``%(keys)s`` whose ``column`` points at no ``parent`` row."""
    t, p = sql.Identifier("t"), sql.Identifier("p")
    (pk,) = b.graph.table(table).primary_key
    return sql.SQL("SELECT {t}.{pk}::text, {t}.{c}::text FROM {tbl} {t} WHERE {t}.{pk}::text = ANY(%(keys)s::text[]) AND {t}.{c} IS NOT NULL"
                   " AND NOT EXISTS (SELECT 1 FROM {ptbl} {p} WHERE {p}.{pc} = {t}.{c}) LIMIT 5").format(
        t=t, pk=sql.Identifier(pk), c=sql.Identifier(column), tbl=b.qname(table), ptbl=b.qname(parent), p=p, pc=sql.Identifier(parent_column))
