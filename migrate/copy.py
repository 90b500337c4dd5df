"""Copy a workspace's rows: binary COPY streamed from the source straight into the target.

``COPY (SELECT ...) TO STDOUT (FORMAT BINARY)`` on the source, ``COPY ... FROM STDIN (FORMAT
BINARY)`` on the target, one table at a time in foreign-key order, written in ~256 KB batches:
memory stays constant whatever the size. Each table is one target transaction that first deletes
whatever an interrupted attempt left of this workspace's rows in that table, so a retried or
resumed table never duplicates a row. Global tables: only the rows the workspace references that
the target lacks are inserted (ON CONFLICT DO NOTHING), never overwritten.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import psycopg
from psycopg import sql

from residency import db

from . import copyread, faults, triggers
from .progress import Meter, Progress
from .rowhash import RowHashes, batches
from .retry import transient
from .sqlbuild import Builder
from .triggers import TargetAccess

BATCH_BYTES = 256 * 1024
FOUND_LANDED, FOUND_PREDICATE = "as the chunks landed", "with the workspace's predicate"  # how a global table's needed rows were found


@dataclass
class TableCopy:
    table: str
    rows: int
    bytes: int
    seconds: float
    deleted_first: int = 0


def _stream(src: psycopg.Connection[Any], dst: psycopg.Connection[Any], out_q: Any, in_q: Any, params: dict[str, Any], meter: Meter,
            should_stop: Callable[[], bool], on_batch: Callable[[int], None] | None = None, hashes: RowHashes | None = None) -> int:
    """Pump one COPY into the other in ~256 KB batches; returns the rows the target accepted.
    ``hashes``: the source rows carry their hash as a last column (``copy_out_chunk(hashed=True)``),
    taken off on the way and summed there."""
    with src.cursor() as scur, dst.cursor() as dcur:
        with scur.copy(out_q, params), dcur.copy(in_q) as into:
            rows = copyread.messages(src)
            parts = batches(rows, BATCH_BYTES) if hashes is None else hashes.batches(rows, BATCH_BYTES)
            nb = 0
            pending: tuple[bytes, int] | None = None
            for part in parts:  # one batch behind, so the last one is known (it carries the trailer)
                if pending is not None:
                    nb += 1
                    _write(into, pending, meter, on_batch, should_stop, nb)
                pending = part
            if pending is not None:
                data, n = pending
                # plain batches count messages: the last one is the trailer
                _write(into, (data, n if hashes is not None else max(n - 1, 0)), meter, None, lambda: False, nb + 1)
        return dcur.rowcount


def _write(into: Any, part: tuple[bytes, int], meter: Meter, on_batch: Callable[[int], None] | None, should_stop: Callable[[], bool], nth: int) -> None:
    data, rows = part
    into.write(data)
    meter.add(rows, len(data))
    if on_batch is not None:
        on_batch(rows)  # e.g. a rate limit
    if nth == 1:
        faults.point("copy_batch")  # the first batch written, not committed
    if should_stop():
        raise InterruptedError("the move's lease was lost; stopping")


def one_backend(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """A source connection whose queries use no parallel workers: a stream is one backend on the
    source, so the cap on streams per source region (:mod:`migrate.throttle`) caps its processes
    too (and on a small server, workers cost more CPU than they save: ~0.1 CPU-s a 1M-row copy)."""
    conn.execute("SET max_parallel_workers_per_gather = 0")
    return conn


def target_access(dst_dsn: str, b: Builder) -> TargetAccess:
    """What the target role allows the copy (see migrate.triggers), for the moving and global tables.

    With ``replica`` no per-row foreign-key (or ordinary user trigger) checks run on the rows COPY
    writes, as pg_restore --disable-triggers does. They were ~80% of the target's time (1M-row
    benchmark, bench/). Sound here: the rows are the source's (where those keys held), copied
    after the referenced global rows, under the fence, and verify compares every table and the
    global rows before cut-over. CHECK, NOT NULL and unique constraints still apply."""
    names = b.graph.target_tables
    with db.connect(dst_dsn, autocommit=True, application_name="residency-mover-copy") as dst:
        return triggers.inspect(dst, b.schema, names)


@transient
def copy_table(src_dsn: str, dst_dsn: str, b: Builder, table: str, workspace_id: str, emit: Callable[[Progress], None], expected: int | None = None, should_stop: Callable[[], bool] = lambda: False, access: TargetAccess | None = None) -> TableCopy:
    t0 = time.monotonic()
    params = b.params(workspace_id)
    meter = Meter(emit, "copy", table, expected)
    with db.connect(src_dsn, autocommit=True, application_name="residency-mover-copy") as src, db.connect(
        dst_dsn, application_name="residency-mover-copy"
    ) as dst:
        with dst.transaction():
            if access is not None:
                triggers.enter(dst, access, b.schema, table)
            if b.graph.reach[table].kind == "owned":
                rows, deleted = copy_owned(src, dst, b, b.copy_out(table), table, params, meter, should_stop)
            else:
                deleted = dst.execute(b.delete_rows(table), params).rowcount
                rows = _stream(src, dst, b.copy_out(table), b.copy_in(table), params, meter, should_stop)
            if access is not None:
                triggers.leave(dst, access, b.schema, table)
    meter.finish(rows)
    return TableCopy(table, rows, meter.bytes, round(time.monotonic() - t0, 3), deleted)


def copy_owned(src: psycopg.Connection[Any], dst: psycopg.Connection[Any], b: Builder, out_query: sql.Composable, table: str,
               params: dict[str, Any], meter: Meter, should_stop: Callable[[], bool], on_batch: Callable[[int], None] | None = None,
               hashes: RowHashes | None = None) -> tuple[int, int]:
    """Copy owned rows (``workspace.owned_through``) inside the caller's target transaction. They
    are found through their owners, which the target doesn't have yet, so a previous attempt's rows
    are found by key instead (the plan refused keys the target already held): COPY into a temporary
    table, delete those keys, insert. Returns (rows, rows deleted first)."""
    dst.execute(b.temp_like(OWNED_TEMP, table))
    rows = _stream(src, dst, out_query, b.copy_in(table, into=sql.Identifier(OWNED_TEMP)), params, meter, should_stop, on_batch, hashes)
    deleted = dst.execute(b.delete_by_temp_keys(table, OWNED_TEMP)).rowcount
    dst.execute(b.insert_from_temp(table, OWNED_TEMP))
    dst.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(OWNED_TEMP)))
    return rows, deleted


@transient
def copy_global(src_dsn: str, dst_dsn: str, b: Builder, table: str, workspace_id: str, emit: Callable[[Progress], None], access: TargetAccess | None = None,
                keys: tuple[str, list[Any]] | None = None, with_keys: bool = False) -> dict[str, Any]:
    """Insert the referenced rows of global ``table`` missing in the target; returns counts.
    ``keys``: (column, values) the landed rows point at (:mod:`migrate.globalkeys`): the rows
    are read by those values instead of the workspace's predicate. ``with_keys``: the result's
    ``keys`` are the keys (jsonb, :meth:`~migrate.sql.changes.ChangesSql.temp_key_json`) of
    every row read, taken from the rows themselves in the target's temporary table, not by
    evaluating the predicate on the source again."""
    out_q, params = b.copy_out_global(table), b.params(workspace_id)
    if keys is not None:
        if not keys[1]:
            return {"referenced": 0, "inserted": 0, "found": FOUND_LANDED}
        out_q, params = b.copy_out_global_keys(table, keys[0]), {"keys": keys[1]}
    temp = "residency_global_rows"
    meter = Meter(emit, "copy", f"{table} (global)", None)
    with one_backend(db.connect(src_dsn, autocommit=True)) as src, db.connect(dst_dsn) as dst:
        with dst.transaction():
            dst.execute(b.temp_like(temp, table))
            referenced = _stream(src, dst, out_q, b.copy_in(table, into=sql.Identifier(temp)), params, meter, lambda: False)
            if access is not None:
                triggers.enter(dst, access, b.schema, table)
            inserted = dst.execute(b.insert_missing(table, temp)).rowcount
            if access is not None:
                triggers.leave(dst, access, b.schema, table)
            read = [r[0] for r in dst.execute(b.temp_key_json(table, temp))] if with_keys else None
    meter.finish(referenced)
    out = {"referenced": referenced, "inserted": inserted, "found": FOUND_PREDICATE if keys is None else FOUND_LANDED}
    if read is not None:
        out["keys"] = read
    return out


@transient
def clear_target(dst_dsn: str, b: Builder, workspace_id: str, tables: list[str]) -> dict[str, int]:
    """Delete the workspace's rows from ``tables`` (children first) in one transaction."""
    params = b.params(workspace_id)
    with db.connect(dst_dsn) as dst:
        with dst.transaction():
            return delete_workspace_rows(dst, b, params, tables)


OWNED_TEMP = "residency_owned_rows"


def delete_workspace_rows(conn: psycopg.Connection[Any], b: Builder, params: dict[str, Any], tables: list[str]) -> dict[str, int]:
    """Delete the workspace's rows of ``tables``, children first, inside the caller's transaction.
    Owned rows (``workspace.owned_through``) are found before their owners go, and deleted only
    where no row is left pointing at them: a blob another tenant also uses stays."""
    out: dict[str, int] = {}
    owned = [t for t in b.graph.order if t in tables and b.graph.reach[t].kind == "owned"]
    for i, t in enumerate(owned):
        conn.execute(b.owned_keys_temp(t, f"{OWNED_TEMP}_{i}"), params)
    for table in reversed(b.graph.order):
        if table not in tables:
            continue
        if table in owned:
            out[table] = conn.execute(b.delete_owned_unreferenced(table, f"{OWNED_TEMP}_{owned.index(table)}")).rowcount
        else:
            out[table] = conn.execute(b.delete_rows(table), params).rowcount
    return out


@transient
def bump_sequences(dst_dsn: str, b: Builder) -> list[dict[str, Any]]:
    """Move every sequence behind a moving (or global) table's column past its largest value."""
    out = []
    names = b.graph.target_tables
    with db.connect(dst_dsn, autocommit=True) as dst:
        for name in names:
            for s in b.graph.table(name).sequences:
                row = dst.execute(b.bump_sequence(name, s.column, s.schema, s.name)).fetchone()
                out.append({"table": name, "column": s.column, "sequence": f"{s.schema}.{s.name}", "set_to": row[0] if row else None})
    return out
