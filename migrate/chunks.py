"""The copy in key-range chunks on parallel streams.

A table with more rows than ``chunk_rows`` (by default about four chunks per stream for the
workspace, within 20,000..250,000 rows) and a one-column integer, text or uuid primary key is
cut into ranges ``lo < key <= hi`` at quantiles of the workspace's keys (one sorted pass on the
source); any other table is one chunk. The bounds are recorded in the move's checkpoints before
the first chunk is copied, every chunk is one COPY in one target transaction, and every finished
chunk is checkpointed, so a resumed copy redoes only the chunks that were not recorded: first it
deletes whatever an interrupted attempt committed of them (:func:`clear_unfinished`), then
copies them.

Chunks run on ``jobs`` streams (a thread each, its own source, target and control-plane
connections kept across its chunks), largest first; the referenced global rows are tasks of their
own beside them. With foreign-key triggers on (the role may not use ``replica``) a table waits
for every parent it has a foreign key to, and a table referencing itself is cut in two parts,
its roots in ranges side by side and then its other rows (:func:`plan_bounds`). A table whose
interrupted rows can only be found in the target through the tables it reaches its workspace
through (no chunk key, or an unfenced source) waits for them in a resumed copy, and always with
the triggers on (:func:`clearable_by_key`). The source side
reads one snapshot: a coordinating connection exports it (``pg_export_snapshot``) and every
stream imports it (``SET TRANSACTION SNAPSHOT``); the fence already keeps the workspace's rows
still, so a resume after a crash (a new snapshot) reads the same rows. Each stream holds a slot
of the source region's cap (:mod:`migrate.throttle`) while it copies.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import psycopg
from psycopg import sql

from residency import db
from residency.threads import start_and_wait

from .copy import _stream, copy_owned, one_backend
from .graph import Ref
from .load import LoadLimits
from .progress import Meter, Progress
from .retry import transient
from .rowhash import RowHashes
from .sqlbuild import Builder
from .triggers import TargetAccess, enter, leave


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name) or default)
    except ValueError:
        return default


CHUNK_MIN, CHUNK_MAX = 20_000, 250_000


@dataclass
class CopyOptions:
    """``jobs``: parallel streams of this move; ``chunk_rows``: tables above this many rows are
    chunked (None: sized per move, :meth:`rows_per_chunk`); ``streams_per_region``: the cap on copy streams out of one source region across the
    control plane; ``rows_per_second``: an optional rate limit for this move (None: none);
    ``load``: when the source counts as loaded, so the streams wait (:mod:`migrate.load`)."""

    jobs: int = field(default_factory=default_jobs)
    chunk_rows: int | None = field(default_factory=lambda: _env_int("RESIDENCY_COPY_CHUNK_ROWS", 0) or None)  # None: sized per move
    streams_per_region: int = field(default_factory=lambda: _env_int("RESIDENCY_COPY_STREAMS_PER_REGION", 8))
    rows_per_second: float | None = field(default_factory=lambda: float(os.environ["RESIDENCY_COPY_ROWS_PER_SECOND"]) if os.environ.get("RESIDENCY_COPY_ROWS_PER_SECOND") else None)
    load: LoadLimits = field(default_factory=LoadLimits)

    def __post_init__(self) -> None:
        self.jobs = max(1, int(self.jobs))
        self.chunk_rows = None if not self.chunk_rows else max(1, int(self.chunk_rows))
        self.streams_per_region = max(1, int(self.streams_per_region))

    def rows_per_chunk(self, total_rows: int) -> int:
        """The chunk size: the one given, else about four chunks per stream for the workspace's
        rows, within [CHUNK_MIN, CHUNK_MAX], so the largest table doesn't leave streams idle at
        the end while no chunk costs much more than its COPY."""
        if self.chunk_rows:
            return self.chunk_rows
        return max(CHUNK_MIN, min(CHUNK_MAX, total_rows // (4 * self.jobs) or CHUNK_MIN))

    def to_dict(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "chunk_rows": self.chunk_rows, "streams_per_region": self.streams_per_region, "rows_per_second": self.rows_per_second,
                "load": self.load.to_dict()}


@dataclass(frozen=True)
class Chunk:
    table: str
    index: int
    of: int
    lo: Any
    hi: Any
    rows: int  # expected (the table's planned rows shared out)
    kind: str = "rows"  # rows: a moving table's chunk; global: a global table's referenced rows (one task)
    part: str | None = None  # a self-referencing table's part (ChunkSql.part_cond)

    def params(self, b: Builder, ws: str) -> dict[str, Any]:
        return b.chunk_params(ws, [self.lo, self.hi])

    @property
    def unit(self) -> str:
        """What the scheduler waits for: a moving table's chunks, or a global table's rows (a table
        can be both: rows hanging off shared rows); a split table's roots are a unit of their own
        (:func:`roots_unit`)."""
        if self.kind == "global":
            return global_unit(self.table)
        return roots_unit(self.table) if self.part == "roots" else self.table

    @property
    def label(self) -> str:
        if self.kind == "global":
            return f"{self.table} (global)"
        return self.table if self.of == 1 else f"{self.table} [{self.index + 1}/{self.of}{', ' + self.part if self.part else ''}]"


def _self_referencing(b: Builder, table: str) -> bool:
    return any(fk.ref_table == table for fk in b.graph.table(table).foreign_keys)


SAMPLE_PER_CHUNK = 400  # sampled keys per chunk to cut at: each chunk within a few percent of its share
GRID = 8  # a part's cuts are picked among quantiles this many times finer than one per chunk


def plan_bounds(conn: psycopg.Connection[Any], b: Builder, ws: str, table: str, rows: int, chunk_rows: int, *, fk_order: bool,
                jobs: int = 1) -> list[list[Any]]:
    """[[lo, hi], ...] covering the table's keys (None: open end); [[None, None]] for one chunk.
    The cuts are quantiles of a random sample of the workspace's keys (about
    ``SAMPLE_PER_CHUNK`` per chunk; every key of a small table): one pass that sorts only the
    sample. They need not be reproducible: they are recorded before the first chunk is copied,
    and a resumed copy uses the recorded ones. Every chunk holds a row: each cut is a key, and
    none is the sample's largest. With foreign-key checks on, a table referencing itself cannot
    have its chunks in any order (a row's parent may be in another chunk): it is cut in two parts
    (:meth:`ChunkSql.part_cond`), its roots in ranges side by side (``[lo, hi, "roots"]``: as many
    as their sampled share of the rows needs, and at least one per stream (``jobs``) while each
    holds ``CHUNK_MIN`` rows, since the rest waits for them), then the rest in one chunk
    (``[None, None, "rest"]``). Otherwise the last of the ``n`` ranges is cut again in ``jobs``
    (:func:`_ranges`): the scheduler takes smaller chunks last, so the streams end together
    instead of one copying a whole chunk alone while the others wait."""
    if _one_chunk(b, table, rows, chunk_rows):
        return [[None, None]]
    n = math.ceil(rows / chunk_rows)
    sample = min(1.0, SAMPLE_PER_CHUNK * n / rows)
    if not (fk_order and _self_referencing(b, table)):
        return [[lo, hi] for lo, hi in _ranges(conn, b, ws, table, n, chunk_rows, sample, None, jobs)]
    roots = [[lo, hi, "roots"] for lo, hi in _ranges(conn, b, ws, table, n, chunk_rows, sample, "roots", jobs)]
    if len(roots) <= 1:  # the roots need one chunk: nothing would run side by side
        return [[None, None]]
    return roots + [[None, None, "rest"]]


def _one_chunk(b: Builder, table: str, rows: int, chunk_rows: int) -> bool:
    """The table is copied in one chunk: no more rows than a chunk, or no key to cut on."""
    return rows <= chunk_rows or b.chunk_key(table) is None


def plan_all_bounds(src_dsn: str, b: Builder, ws: str, tables: list[str], rows: dict[str, int], chunk_rows: int, *,
                    fk_order: bool, jobs: int) -> dict[str, list[list[Any]]]:
    """:func:`plan_bounds` of ``tables``, on ``jobs`` source connections side by side (each
    table's sample is a pass over its workspace rows: ~3.4 s one after another at 10M rows). No
    snapshot is needed: any cuts cover the key space, and the bounds are recorded before a chunk."""
    def one(t: str) -> list[list[Any]]:
        if _one_chunk(b, t, rows.get(t, 0), chunk_rows):
            return [[None, None]]  # no sample to take
        with one_backend(db.connect(src_dsn, autocommit=True, application_name="residency-mover-bounds")) as conn:
            return plan_bounds(conn, b, ws, t, rows.get(t, 0), chunk_rows, fk_order=fk_order, jobs=jobs)

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(tables)))) as pool:
        return dict(zip(tables, pool.map(one, tables)))


def _ranges(conn: psycopg.Connection[Any], b: Builder, ws: str, table: str, n: int, chunk_rows: int, sample: float,
            part: str | None, jobs: int = 1) -> list[tuple[Any, Any]]:
    """The key ranges of the table's rows (of one ``part``; none if the sample holds none of its
    rows): the sample's ``n``-quantiles, the last range cut in ``jobs`` equal ones; of a part, as
    many as its share of the sample needs (:func:`plan_bounds`), cut at quantiles of a grid
    ``GRID`` times finer."""
    tail = max(1, jobs) if part is None else 1
    grid = n * GRID if part is not None else n * tail
    vals, sampled = conn.execute(b.chunk_bounds(table, part),
                                 b.params(ws, fractions=[i / grid for i in range(1, grid)] + [1.0], sample=sample)).fetchone()
    if not sampled:
        return [] if part is not None else [(None, None)]
    m = n
    if part is not None:
        est = sampled / sample
        m = min(n, max(1, math.ceil(est / chunk_rows), min(jobs, int(est // min(CHUNK_MIN, chunk_rows)))))
    top = vals[-1]
    cuts: list[Any] = []
    at = [round(j * grid / m) for j in range(1, m)] + [(m - 1) * tail + i for i in range(1, tail)]
    for i in at:
        v = vals[i - 1]
        if v is None or v == top:
            continue
        v = v if isinstance(v, int) else str(v)
        if not cuts or cuts[-1] != v:
            cuts.append(v)
    ends = [None, *cuts, None]
    return [(ends[i], ends[i + 1]) for i in range(len(ends) - 1)]


def chunks_of(table: str, bounds: list[list[Any]], rows: int) -> list[Chunk]:
    n = len(bounds)
    out = []
    for i, bound in enumerate(bounds):
        lo, hi, part = Builder.bound_parts(bound)
        out.append(Chunk(table, i, n, lo, hi, max(1, rows // n), part=part))
    return out


def split_tables(plans: dict[str, dict[str, Any]]) -> set[str]:
    """The tables whose recorded bounds cut them in roots and rest (:func:`plan_bounds`)."""
    return {t for t, p in plans.items() if any(Builder.bound_parts(x)[2] for x in p.get("bounds") or [])}


def global_unit(table: str) -> str:
    return f"global:{table}"


def roots_unit(table: str) -> str:
    """The scheduling unit of a split table's roots; its rest is the table itself, which other
    tables wait for."""
    return f"{table}:roots"


def dependencies(b: Builder, tables: list[str], globals_: list[str], *, fk_order: bool, reach: bool = True,
                 fenced: bool = False, split: set[str] | frozenset[str] = frozenset(),
                 landed: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Per scheduling unit (a moving table, or ``global:<table>`` for a global table's referenced
    rows, streamed beside the chunks), the units that must be complete in the target before it
    starts: for a moving table (``reach``) the tables it reaches its workspace through (a resumed
    copy finds an interrupted attempt's rows in the target through them) and, with foreign-key
    checks on, its FK parents (a global parent's rows included); for a global table's rows, with
    the checks on, the global tables it references. Only units earlier in the copy order count
    (global rows first), so there is never a cycle; with ``replica`` nothing waits for the
    global rows, and in a first attempt (``reach`` False) nothing waits at all. A ``split``
    table's roots wait for what the table waits for, and its rest for its roots. ``landed``:
    global tables whose rows are copied by the values the chunks of the given tables gathered
    (:mod:`migrate.globalkeys`): they wait for those tables."""
    order, gorder = list(b.graph.order), list(b.graph.global_order)
    pos = {t: i for i, t in enumerate(order)}
    gpos = {t: i for i, t in enumerate(gorder)}
    out: dict[str, set[str]] = {}
    for t in tables:
        waits = reach and not clearable_by_key(b, t, fenced)
        deps = {link.parent for link in b.graph.reach[t].links if waits and link.parent in pos and pos[link.parent] < pos[t]}
        if fk_order:
            for fk in b.graph.table(t).foreign_keys:
                if fk.ref_table in pos and pos[fk.ref_table] < pos[t]:
                    deps.add(fk.ref_table)
                if fk.ref_table in gpos:
                    deps.add(global_unit(fk.ref_table))
        out[t] = {d for d in deps if d != t}
        if t in split:
            out[roots_unit(t)], out[t] = out[t], {roots_unit(t)}
    for g in globals_:
        deps = set()
        if fk_order:
            deps = {global_unit(fk.ref_table) for fk in b.graph.table(g).foreign_keys
                    if fk.ref_table != g and fk.ref_table in gpos and gpos[fk.ref_table] < gpos[g]}
        out[global_unit(g)] = deps | set((landed or {}).get(g, ()))
    return out


# ------------------------------------------------------------------------------ one chunk


class SourceSnapshot:
    """A REPEATABLE READ transaction on the source whose snapshot the streams import."""

    def __init__(self, dsn: str):
        self.conn = one_backend(db.connect(dsn, autocommit=True, application_name="residency-mover-snapshot"))
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        (self.id,) = self.conn.execute("SELECT pg_export_snapshot()").fetchone()

    def close(self) -> None:
        try:
            self.conn.execute("COMMIT")
        except psycopg.Error:
            pass
        self.conn.close()


def _begin_snapshot(src: psycopg.Connection[Any], snapshot: str | None) -> bool:
    src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    if snapshot is None:
        return False
    try:
        src.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        return True
    except psycopg.Error:
        # the exporting transaction is gone (its connection dropped): the fence still keeps the
        # workspace's rows as they were, so a fresh snapshot reads the same rows
        src.execute("ROLLBACK")
        src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return False


def records_target_sums(b: Builder, table: str) -> bool:
    """Whether a chunk of ``table`` counts and checksums its rows in the target as it lands (in its
    own transaction, :func:`target_sum_query`): every table but owned rows (``workspace.owned_through``,
    written through a temporary table and summed by verify)."""
    r = b.graph.reach.get(table)
    return r is not None and r.kind != "owned"


def by_workspace_column(b: Builder, table: str) -> bool:
    """The table holds its workspace's id (``root``, ``key``): its rows are found by that column."""
    return b.graph.reach[table].by_column


def target_sum_query(b: Builder, table: str, lo: bool, hi: bool, part: str | None = None, found: Sequence[Ref] = ()) -> Any:
    """The target's sums of a chunk that just landed, in its transaction. A table holding its
    workspace's id (``root``, ``key``): the workspace's rows in the chunk's range, found by that
    column (its index) as verify finds them. A table reached through others: the rows this
    transaction wrote in the range (``checksum_landed``), since evaluating its predicate costs a
    join per row. Both count exactly the chunk's rows: the target held none of the workspace's
    keys before the copy (the plan refuses otherwise), nothing else writes them before cut-over,
    and verify compares the parents' rows too, so a child is reached in the target as in the
    source. ``RESIDENCY_VERIFY_TARGET=recompute`` has verify read the target again through the
    workspace's predicate. ``found``: references whose values the same pass gathers
    (:mod:`migrate.globalkeys`), one more column each."""
    if by_workspace_column(b, table):
        return b.checksum_chunk(table, lo, hi, part, found)
    return b.checksum_landed(table, lo, hi, part, found)


class StreamConnections:
    """Each stream's (thread's) own source and target connections, kept across its chunks: a
    chunk then costs no connection set-up (three or four connections each, ~15 ms apiece here).
    A connection that failed is dropped and opened again by the retried chunk."""

    def __init__(self, src_dsn: str, dst_dsn: str, control_dsn: str | None = None):
        self.src_dsn, self.dst_dsn, self.control_dsn = src_dsn, dst_dsn, control_dsn
        self._local = threading.local()
        self._all: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def control(self) -> psycopg.Connection[Any] | None:
        """The stream's autocommit control-plane connection (its copy-stream slot is held on it)."""
        if self.control_dsn is None:
            return None
        c = getattr(self._local, "control", None)
        if c is None or c.closed:
            c = db.connect(self.control_dsn, autocommit=True, application_name="residency-mover-stream-slot")
            self._local.control = c
            with self._lock:
                self._all.append(c)
        return c

    def discard_control(self) -> None:
        db.close_quietly(getattr(self._local, "control", None))
        self._local.control = None

    def get(self) -> tuple[psycopg.Connection[Any], psycopg.Connection[Any]]:
        pair = getattr(self._local, "pair", None)
        if pair is None or pair[0].closed or pair[1].closed:
            self.discard()
            pair = (one_backend(db.connect(self.src_dsn, autocommit=True, application_name="residency-mover-copy")),
                    db.connect(self.dst_dsn, application_name="residency-mover-copy"))
            self._local.pair = pair
            with self._lock:
                self._all.extend(pair)
        return pair

    def discard(self) -> None:
        db.close_quietly(*(getattr(self._local, "pair", None) or ()))
        self._local.pair = None

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        db.close_quietly(*conns)


@transient
def copy_chunk(src_dsn: str, dst_dsn: str, b: Builder, c: Chunk, ws: str, emit: Callable[[Progress], None], access: TargetAccess,
               *, snapshot: str | None = None, should_stop: Callable[[], bool] = lambda: False, on_batch: Callable[[int], None] | None = None,
               target_sums: bool = True, source_sums: bool = False, pool: StreamConnections | None = None,
               found: Sequence[Ref] = ()) -> dict[str, Any]:
    """One chunk: one COPY out of the source snapshot, one COPY into one target transaction; then,
    in that same transaction, the chunk's count and checksum as the target holds it (``target``:
    [rows, sum], the same sum verify computes), so it is recorded with the chunk's checkpoint and
    only with it: a chunk redone after a crash records its sums again. ``source_sums``: the
    source's count and checksum of the chunk too (``source``), taken from the COPY stream itself
    (:mod:`migrate.rowhash`): sound only while the source is fenced. ``pool``: the stream's kept
    connections (else the chunk opens and closes its own). ``found``: references whose distinct
    values in the landed rows the target's sums gather (``found_values``: a list per reference; needs
    ``target_sums``)."""
    if pool is None:
        with db.connect(src_dsn, autocommit=True, application_name="residency-mover-copy") as src, db.connect(
            dst_dsn, application_name="residency-mover-copy"
        ) as dst:
            return _copy_chunk_on(src, dst, b, c, ws, emit, access, snapshot, should_stop, on_batch, target_sums, source_sums, found)
    src, dst = pool.get()
    try:
        return _copy_chunk_on(src, dst, b, c, ws, emit, access, snapshot, should_stop, on_batch, target_sums, source_sums, found)
    except BaseException:
        pool.discard()  # in an unknown state: the retry (or the next chunk) opens new ones
        raise


def _copy_chunk_on(src: psycopg.Connection[Any], dst: psycopg.Connection[Any], b: Builder, c: Chunk, ws: str, emit: Callable[[Progress], None],
                   access: TargetAccess, snapshot: str | None, should_stop: Callable[[], bool], on_batch: Callable[[int], None] | None,
                   target_sums: bool, source_sums: bool, found: Sequence[Ref] = ()) -> dict[str, Any]:
    t0 = time.monotonic()
    params = c.params(b, ws)
    meter = Meter(emit, "copy", c.label, c.rows)
    lo, hi = c.lo is not None, c.hi is not None
    imported = _begin_snapshot(src, snapshot)
    sums = None
    values: list[Any] = []
    source: list[Any] = []
    # the source's sums: a table holding the workspace's id is read again by that column's index
    # in the same snapshot (cheaper than taking each row's hash off in Python); any other table
    # carries the hashes in its stream, so its joins are not evaluated a second time
    read_again = source_sums and by_workspace_column(b, c.table)
    hashes = RowHashes() if source_sums and not read_again else None
    out_q = b.copy_out_chunk(c.table, lo, hi, hashed=hashes is not None, part=c.part)
    with dst.transaction():
        enter(dst, access, b.schema, c.table)
        if b.graph.reach[c.table].kind == "owned":
            rows, _ = copy_owned(src, dst, b, out_q, c.table, params, meter, should_stop, on_batch, hashes)
        else:
            rows = _stream(src, dst, out_q, b.copy_in(c.table), params, meter, should_stop, on_batch, hashes)
        leave(dst, access, b.schema, c.table)
        if read_again:
            n, total = src.execute(b.checksum_chunk(c.table, lo, hi, c.part), params).fetchone()
            source = [int(n), str(total)]
        src.execute("COMMIT")  # the source side is done: no snapshot held while the target sums
        if target_sums and records_target_sums(b, c.table):
            n, s, *values = dst.execute(target_sum_query(b, c.table, lo, hi, c.part, found), params).fetchone()
            sums = [int(n), str(s)]
    meter.finish(rows)
    out = {"rows": rows, "bytes": meter.bytes, "seconds": round(time.monotonic() - t0, 3), "snapshot": imported}
    if sums is not None:
        out["target"] = sums
    if found:
        out["found_values"] = values
    if source_sums:
        out["source"] = hashes.sums if hashes is not None else source
    return out


def clearable_by_key(b: Builder, table: str, fenced: bool) -> bool:
    """Whether an interrupted attempt's rows of ``table`` are found in the target without the
    tables it is reached through: it holds its workspace's id (that column), or it has a chunk key
    and the source is ``fenced`` (a snapshot move: the keys of the chunk's rows in the source are
    the keys the attempt copied). Any other table's rows are found through its parents in the
    target, so it waits for them (:func:`dependencies`)."""
    return by_workspace_column(b, table) or (fenced and b.chunk_key(table) is not None and b.graph.reach[table].kind != "owned")


@transient
def clear_unfinished(src_dsn: str, dst_dsn: str, b: Builder, ws: str, plans: dict[str, dict[str, Any]], tables: list[str],
                     access: TargetAccess, *, fenced: bool) -> dict[str, int]:
    """Delete from the target what an interrupted attempt committed of ``tables``' unrecorded
    chunks (a table with no recorded bounds: all its rows), children first, in one transaction.
    A table holding its workspace's id is cleared by that column in the chunk's range; one reached
    through others, by the keys the chunk's rows have in the source (fenced: they are the keys
    the attempt copied), so it need not find them through its parents; a table with neither, through
    its parents (:func:`clearable_by_key`)."""
    out: dict[str, int] = {}
    src: psycopg.Connection[Any] | None = None  # opened only for a table cleared by its source keys
    try:
        with db.connect(dst_dsn, application_name="residency-mover-copy") as dst, dst.transaction():
            for table in reversed(b.graph.order):
                if table not in tables:
                    continue
                enter(dst, access, b.schema, table)
                plan = plans.get(table) or {}
                done = plan.get("done") or {}
                left = [c for c in chunks_of(table, plan.get("bounds") or [[None, None]], 0) if str(c.index) not in done]
                n = 0
                by_source_keys = clearable_by_key(b, table, fenced) and not by_workspace_column(b, table)
                for c in reversed(left):  # a split table's rest before its roots: it references them
                    lo, hi = c.lo is not None, c.hi is not None
                    if not by_source_keys:
                        if lo or hi or c.part:
                            n += dst.execute(b.delete_chunk(table, lo, hi, c.part), c.params(b, ws)).rowcount
                        else:
                            n += dst.execute(b.delete_rows(table), b.params(ws)).rowcount
                    else:
                        if src is None:
                            src = db.connect(src_dsn, autocommit=True, application_name="residency-mover-copy")
                        keys = [r[0] for r in src.execute(b.chunk_keys(table, lo, hi, c.part), c.params(b, ws))]
                        if keys:
                            n += dst.execute(b.delete_keys(table), {"keys": keys}).rowcount
                out[table] = n
                leave(dst, access, b.schema, table)
    finally:
        db.close_quietly(src)
    return out


# ------------------------------------------------------------------------------ the streams


def priority(tasks: list[Chunk], deps: dict[str, set[str]]) -> Callable[[Chunk], tuple[Any, ...]]:
    """The order streams take ready chunks in (a sort key): global rows first (a few rows found by
    joins: their cost is not their size), then the longest path to the end first, as list
    schedulers do: a chunk's rows plus the longest chain of units waiting for its unit (a unit
    counted by its largest chunk, since its chunks run side by side). Largest first alone let a
    chain (attachments, then their previews) start last and run alone at the end."""
    largest: dict[str, int] = {}
    for c in tasks:
        largest[c.unit] = max(largest.get(c.unit, 0), c.rows)
    waiting: dict[str, set[str]] = {}
    for unit, before in deps.items():
        for d in before:
            waiting.setdefault(d, set()).add(unit)
    memo: dict[str, int] = {}

    def tail(unit: str, seen: frozenset[str] = frozenset()) -> int:
        """The longest chain of units after ``unit`` (rows)."""
        if unit not in memo:
            nxt = [u for u in waiting.get(unit, ()) if u not in seen]
            memo[unit] = max((largest.get(u, 0) + tail(u, seen | {unit}) for u in nxt), default=0)
        return memo[unit]

    return lambda c: (c.kind != "global", -(c.rows + tail(c.unit)), c.table, c.index)


def run(tasks: list[Chunk], *, jobs: int, deps: dict[str, set[str]], exclusive: Callable[[str], bool],
        work: Callable[[Chunk], dict[str, Any]], on_done: Callable[[Chunk, dict[str, Any]], None]) -> None:
    """Copy ``tasks`` on ``jobs`` threads, in :func:`priority` order among the ready ones, a chunk
    of a table no other stream is copying first. A chunk is ready when every unit in ``deps`` of
    its unit (:attr:`Chunk.unit`) has no task left, and (``exclusive`` tables) no other task of its
    table is running. ``on_done`` runs under the
    scheduler's lock (checkpoints). The first failure stops the others from taking new chunks and
    is raised."""
    pending = sorted(tasks, key=priority(tasks, deps))
    left = Counter(c.unit for c in tasks)
    running: Counter[str] = Counter()
    cond = threading.Condition()
    errors: list[BaseException] = []

    def ready(c: Chunk) -> bool:
        if any(left[d] for d in deps.get(c.unit, ())):
            return False
        return not (exclusive(c.table) and running[c.table])

    def take() -> Chunk | None:
        with cond:
            while True:
                if errors or not pending:
                    return None
                # a ready chunk of a table no stream is writing, if any: two streams loading one
                # table write its key-ordered indexes at two places, and the lower one's pages
                # split half full (~20% more of the target's CPU for that table, measured)
                c = next((x for x in pending if ready(x) and not running[x.table]), None) or next((x for x in pending if ready(x)), None)
                if c is not None:
                    pending.remove(c)
                    running[c.table] += 1
                    return c
                cond.wait(0.5)

    def worker() -> None:
        while True:
            c = take()
            if c is None:
                return
            try:
                res = work(c)
            except BaseException as exc:  # noqa: BLE001 - raised by run() in the caller's thread
                with cond:
                    errors.append(exc)
                    cond.notify_all()
                return
            with cond:
                running[c.table] -= 1
                left[c.unit] -= 1
                try:
                    on_done(c, res)
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
                cond.notify_all()

    threads = [threading.Thread(target=worker, name=f"residency-copy-{i}", daemon=True) for i in range(max(1, min(jobs, len(tasks))))]
    try:
        start_and_wait(threads)
    except BaseException as exc:  # e.g. KeyboardInterrupt in the caller: stop taking chunks
        with cond:
            errors.append(exc)
            cond.notify_all()
        raise
    if errors:
        raise errors[0]


def table_summary(results: Iterator[dict[str, Any]] | list[dict[str, Any]], removed_first: int) -> dict[str, Any]:
    rs = list(results)
    return {"rows": sum(r["rows"] for r in rs), "bytes": sum(r["bytes"] for r in rs),
            "seconds": round(sum(r["seconds"] for r in rs), 3), "removed_first": removed_first, "chunks": len(rs)}
