"""Incremental verification for online moves: checksum the workspace per key-range bucket on both
sides *before* the fence, then under the fence check again only the buckets that may have changed.

Before the fence (the workspace still writable), :func:`prepare`:

1. samples bucket boundaries from the source: every ``BUCKET_ROWS``-th primary key of the
   workspace's rows of each eligible table (one-column primary key of a plain sortable type);
2. reads ``C0``, the change log's high-water mark (the sequence its ids come from), then the
   source's snapshot ``xmax``, and waits until ``pg_snapshot_xmin`` passes that ``xmax``: every
   transaction that had taken a change id ≤ C0 has ended. (A change id is taken by an AFTER ROW
   trigger, i.e. by a transaction that already holds its xid, and xids below a later snapshot's
   xmax are exactly those assigned before it.) From here on every change of the workspace is
   committed with an id ≤ C0 or gets an id > C0;
3. waits until the target has applied the source's WAL up to a position taken after that;
4. checksums every bucket (count, sum of ``hash_record_extended``) on both sides in parallel, one
   ``GROUP BY width_bucket(pk, boundaries)`` pass per table and side. Buckets that differ are dirty.

Under the fence, after the final catch-up, :func:`verify`: a bucket is also dirty when it holds a
key the change log recorded since C0 (row-filtered tables) or at all (path tables: the fenced
copy of their changed rows rewrites exactly those keys in the target), or a row whose membership of
the workspace a change of a parent row can have moved (children of changed parent keys, found by
index lookups on both sides). Dirty buckets are checksummed again on both sides (index range
scans); the per-table totals are the pre-fence sums with the dirty buckets replaced.

Soundness: a clean bucket had no change of its rows since C0 in the source, and no change of the
membership of its rows; the target had applied every change up to C0 before its checksum, and
after it the target's rows are only written by replication (of source changes, all logged: the
trigger records the old and the new key) and by the fenced copy of logged path-table keys. So a
clean bucket that matched before the fence still matches. This needs the one assumption the whole
online strategy makes: nothing but the mover writes the workspace's rows in the target before
cut-over (the directory still routes the workspace to the source).

A table falls back to the full count and checksum (:mod:`migrate.verify`) when its key does not
qualify, when a link towards the workspace is not by the parent's primary key (changed parents
could not be followed to their children), when it has too few rows to bucket, or when more than
``MAX_DIRTY_FRACTION`` of its buckets are dirty. The report says which mode each table got.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

import psycopg
from psycopg.types.json import Jsonb

from residency import db

from . import copy as copy_mod
from . import replication as repl
from .graph import Graph
from .sqlbuild import Builder
from .verify import MAX_KEYS, TableCheck, VerifyResult, _checksums, _global_present, check_references, narrow

BUCKET_ROWS = int(os.environ.get("RESIDENCY_VERIFY_BUCKET_ROWS", "256"))
GAP_BUCKETS = 4  # more than this many buckets' worth of other rows between two keys: a boundary each side
MAX_DIRTY_FRACTION = float(os.environ.get("RESIDENCY_VERIFY_MAX_DIRTY", "0.2"))
XMIN_TIMEOUT = 30.0
_KEY_TYPES = ("smallint", "integer", "bigint", "text", "uuid")


class Skip(Exception):
    """Incremental verification is not possible this time (the full verification runs)."""


@dataclass
class Buckets:
    bounds: list[Any]
    source: dict[int, tuple[int, Decimal]]
    mismatched: set[int]
    # the smallest and largest key of the workspace's rows on either side before the fence: the
    # outer buckets (0: below the first boundary, n: from the last one) are rechecked as the
    # ranges [lo_key, bounds[0]) and [bounds[-1], hi_key] plus the touched keys beyond them (a
    # key beyond them in the workspace at the fence was inserted or moved in since, so touched),
    # never as an open-ended scan through other workspaces' rows
    lo_key: Any = None
    hi_key: Any = None

    @property
    def count(self) -> int:
        return len(self.bounds) + 1


@dataclass
class Prepared:
    move_id: int
    c0: int
    tables: dict[str, Buckets]
    fallback: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)
    usable: bool = False  # set when the fenced copy finished the replicated way in this process
    globals: dict[str, list[Any]] = field(default_factory=dict)  # global table → referenced keys after C0
    touched: dict[str, set[str] | None] | None = None  # computed under the fence (see _touched)
    fenced_globals: dict[str, dict[str, Any]] | None = None

    def summary(self) -> dict[str, Any]:
        return {"c0": self.c0, "bucket_rows": BUCKET_ROWS, "tables": {t: {"buckets": b.count, "differed_before_fence": len(b.mismatched)}
                                                                     for t, b in self.tables.items()},
                "fallback": self.fallback, "seconds": self.seconds}


# Pre-fence checksums live in this process only: a resumed move (another process) has none and
# verifies in full, which is always sound.
PREPARED: dict[int, Prepared] = {}


# ---------------------------------------------------------------------------- eligibility


def _link_reason(g: Graph, table: str, seen: tuple[str, ...] = ()) -> str | None:
    for link in g.reach[table].links:
        if link.parent in seen or link.parent == table:
            continue
        if set(link.parent_columns) != set(g.table(link.parent).primary_key):
            return f"its path goes through {link.parent} by columns other than its primary key"
        r = _link_reason(g, link.parent, seen + (table,))
        if r:
            return r
    return None


def fallback_reason(b: Builder, table: str) -> str | None:
    """Why ``table`` can't be verified incrementally (None: it can)."""
    t = b.graph.table(table)
    if len(t.primary_key) != 1:
        return "composite primary key" if t.primary_key else "no primary key"
    col = next(c for c in t.columns if c.name == t.primary_key[0])
    if not (col.type in _KEY_TYPES or col.type.startswith("character varying")) or not col.hashable or col.generated:
        return f"primary key of type {col.type}"
    return _link_reason(b.graph, table)


# ---------------------------------------------------------------------------- before the fence


def watermark(src: psycopg.Connection[Any], b: Builder, timeout: float = XMIN_TIMEOUT) -> int:
    """C0, once every transaction that may hold a change id ≤ C0 has ended (autocommit ``src``)."""
    (c0,) = src.execute(b.change_log_watermark()).fetchone()
    (xmax,) = src.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").fetchone()
    deadline = time.monotonic() + timeout
    while True:
        (xmin,) = src.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").fetchone()
        if int(xmin) >= int(xmax):
            return int(c0)
        if time.monotonic() > deadline:
            raise Skip(f"transactions older than xid {xmax} still running in the source after {timeout:.0f}s")
        time.sleep(0.005)


def _bucket_sums(dsn: str, b: Builder, ws: str, bounds: dict[str, list[Any]]) -> dict[str, tuple[dict[int, tuple[int, Decimal]], tuple[Any, Any]]]:
    out: dict[str, tuple[dict[int, tuple[int, Decimal]], tuple[Any, Any]]] = {}
    with db.connect(dsn, autocommit=True, application_name="residency-verify") as conn:
        for t, bs in bounds.items():
            sums = {int(k): (int(n), Decimal(s)) for k, n, s in conn.execute(b.bucket_checksums(t), b.params(ws, bounds=Jsonb(bs)))}
            lo, hi = conn.execute(b.key_extremes(t), b.params(ws)).fetchone()
            out[t] = (sums, (lo, hi))
    return out


def prepare(src: psycopg.Connection[Any], src_dsn: str, dst_dsn: str, b: Builder, ws: str, move_id: int,
            catch_up: Callable[[str], None]) -> Prepared:
    """Boundaries, C0, catch-up, then bucket checksums on both sides (see the module's doc)."""
    t0 = time.monotonic()
    fallback: dict[str, str] = {}
    bounds: dict[str, list[Any]] = {}
    for t in b.graph.order:
        why = fallback_reason(b, t)
        if why is None:
            bs = src.execute(b.bucket_bounds(t), b.params(ws, every=BUCKET_ROWS, gap=GAP_BUCKETS * BUCKET_ROWS)).fetchone()[0]
            if not bs:
                why = f"fewer than {BUCKET_ROWS} rows"
            else:
                bounds[t] = list(bs)
        if why is not None:
            fallback[t] = why
    seconds = {"bounds": round(time.monotonic() - t0, 3)}
    t1 = time.monotonic()
    c0 = watermark(src, b)
    seconds["watermark"] = round(time.monotonic() - t1, 3)
    t1 = time.monotonic()
    catch_up(repl.current_lsn(src))
    seconds["catch_up"] = round(time.monotonic() - t1, 3)
    t1 = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        fa, fb = pool.submit(_bucket_sums, src_dsn, b, ws, bounds), pool.submit(_bucket_sums, dst_dsn, b, ws, bounds)
        sa, sb = fa.result(), fb.result()
    seconds["checksums"] = round(time.monotonic() - t1, 3)
    tables = {}
    for t, bs in bounds.items():
        (a, (alo, ahi)), (z, (zlo, zhi)) = sa[t], sb[t]
        los, his = [v for v in (alo, zlo) if v is not None], [v for v in (ahi, zhi) if v is not None]
        tables[t] = Buckets(bs, a, {k for k in set(a) | set(z) if a.get(k) != z.get(k)},
                            min(los) if los else None, max(his) if his else None)
    # referenced global rows: copied now (after C0), their keys kept (those of the rows the copy
    # read: the workspace's predicate is evaluated once); under the fence only the rows
    # referenced by rows touched since C0 are copied, and all of them checked by key
    t1 = time.monotonic()
    refs: dict[str, list[Any]] = {}
    for g in b.graph.global_order:
        refs[g] = copy_mod.copy_global(src_dsn, dst_dsn, b, g, ws, lambda _e: None, with_keys=True)["keys"]
    seconds["globals"] = round(time.monotonic() - t1, 3)
    return Prepared(move_id, c0, tables, fallback, seconds, globals=refs)


def fenced_globals(a_dsn: str, b_dsn: str, b: Builder, ws: str, move_id: int, prep: Prepared) -> dict[str, dict[str, Any]] | None:
    """Under the fence, after the changed path rows: compute the touched keys (kept for
    :func:`verify`), copy the global rows that touched rows reference and the target lacks, and
    count how many of all referenced keys (after C0, plus these) the target has. Every global row
    referenced now is among them: a row referencing it either is touched or was unchanged, and in
    the workspace, when the keys were read after C0. None: not possible (full copy and check)."""
    from psycopg import sql

    t0 = time.monotonic()
    with db.connect(a_dsn, autocommit=True) as src, db.connect(b_dsn, autocommit=True) as dst_r, db.connect(b_dsn) as dst:
        prep.touched = _touched(src, dst_r, b, move_id, prep.c0)
        referencing = {fk.table for refs in b.graph.global_refs.values() for fk in refs}
        # a table without a primary key has no logged keys (it is copied whole under the fence):
        # it matters here only when it references a global table
        if any(v is None and (t in referencing or b.graph.table(t).primary_key) for t, v in prep.touched.items()):
            return None
        g_ = b.graph
        if any(g_.dependents.get(g) or any(not g_.reach[r.table].moves for r in g_.global_refs.get(g, [])) for g in g_.global_order):
            return None  # shared rows reached through other shared rows: the full copy and check
        out: dict[str, dict[str, Any]] = {}
        temp = "residency_global_touched"
        for g in b.graph.global_order:
            params = b.params(ws, **{f"keys_{i}": [Jsonb(json.loads(k)) for k in sorted(prep.touched.get(fk.table) or ())]
                                     for i, fk in enumerate(b.graph.global_refs.get(g, []))})
            with dst.transaction():
                dst.execute(b.temp_like(temp, g))
                with src.cursor().copy(b.global_referenced_by(g), params) as cout, dst.cursor().copy(b.copy_in(g, into=sql.Identifier(temp))) as cin:
                    for chunk in cout:
                        cin.write(chunk)
                new = [r[0] for r in dst.execute(b.temp_key_json(g, temp))]
                inserted = dst.execute(b.insert_missing(g, temp)).rowcount
                keys = {json.dumps(k, sort_keys=True) for k in prep.globals.get(g, [])} | {json.dumps(k, sort_keys=True) for k in new}
                (present,) = dst.execute(b.count_keys_present(g), {"keys": [Jsonb(json.loads(k)) for k in sorted(keys)]}).fetchone()
            out[g] = {"referenced": len(keys), "inserted": inserted, "present": int(present), "referenced_by_touched_rows": len(new),
                      "incremental": True}
    prep.fenced_globals = out
    prep.seconds["fenced_globals"] = round(time.monotonic() - t0, 3)
    return out


# ---------------------------------------------------------------------------- under the fence


def _touched(src: psycopg.Connection[Any], dst: psycopg.Connection[Any], b: Builder, move_id: int, c0: int) -> dict[str, set[str] | None]:
    """Per table, the keys (canonical JSON) whose rows or membership may have changed since C0:
    logged keys (row-filtered tables: id > C0; path tables: every logged key, as the fenced copy
    rewrote them), plus the rows of both sides whose link points at a touched parent key.
    None: can't tell (a parent that could not be followed)."""
    g = b.graph
    rf = set(repl.row_filtered(g))
    out: dict[str, set[str] | None] = {}
    for t in g.order:
        if not g.table(t).primary_key:  # no change log (copied whole under the fence): rows unknown
            out[t] = None
            continue
        keys: set[str] | None = {json.dumps(k, sort_keys=True) for k in repl.changed_keys(src, b, move_id, t, c0 if t in rf else 0)}
        for i, link in enumerate(g.reach[t].links):
            if link.parent == t:
                continue
            parent = out.get(link.parent, None) if link.parent in out else None
            if link.parent not in out or parent is None or keys is None:
                keys = None
                break
            if parent:
                params = {"keys": [Jsonb(json.loads(k)) for k in parent]}
                for conn in (src, dst):
                    keys |= {json.dumps(r[0], sort_keys=True) for r in conn.execute(b.children_of_keys(t, i), params)}
        out[t] = keys
    return out


def _recheck(dsn: str, b: Builder, ws: str, work: dict[str, tuple[Buckets, list[int], list[Any]]], full: list[str], timings: dict[str, float], side: str) -> tuple[dict[str, dict[int, tuple[int, Decimal]]], dict[str, tuple[int, Decimal]]]:
    """Checksums of the given buckets (pipelined index range scans) and full checksums of ``full``."""
    out: dict[str, dict[int, tuple[int, Decimal]]] = {}
    t0 = time.monotonic()
    with db.connect(dsn, autocommit=True, application_name="residency-verify") as conn:
        conn.prepare_threshold = None  # custom plans: each bucket's bounds are seen by the planner
        timings[f"{side}_connect"] = round(time.monotonic() - t0, 3)
        pending = []
        with conn.pipeline():
            for t, (bk, dirty, keys) in work.items():
                bounds, n = bk.bounds, len(bk.bounds)
                lo_key = bk.lo_key if bk.lo_key is not None else bounds[0]
                hi_key = bk.hi_key if bk.hi_key is not None else bounds[-1]
                for k in dirty:
                    q: list[tuple[Any, dict[str, Any]]] = []
                    if k == 0:
                        q.append((b.bucket_checksum(t, lo=True, hi=True), b.params(ws, lo=lo_key, hi=bounds[0])))
                        if keys:
                            q.append((b.bucket_checksum(t, keys_below=True), b.params(ws, lo=lo_key, keys=keys)))
                    elif k == n:
                        q.append((b.bucket_checksum(t, lo=True, hi=True, hi_inclusive=True), b.params(ws, lo=bounds[-1], hi=hi_key)))
                        if keys:
                            q.append((b.bucket_checksum(t, keys_above=True), b.params(ws, hi=hi_key, keys=keys)))
                    else:
                        q.append((b.bucket_checksum(t, lo=True, hi=True), b.params(ws, lo=bounds[k - 1], hi=bounds[k])))
                    for stmt, p in q:
                        cur = conn.cursor()
                        cur.execute(stmt, p)
                        pending.append((t, k, cur))
        for t, k, cur in pending:
            n_, s = cur.fetchone()
            n0, s0 = out.setdefault(t, {}).get(k, (0, Decimal(0)))
            out[t][k] = (n0 + int(n_), s0 + Decimal(s))
    timings[f"{side}_buckets"] = round(time.monotonic() - t0, 3)
    t0 = time.monotonic()
    fulls = _checksums(dsn, b, ws, full) if full else {}
    timings[f"{side}_full"] = round(time.monotonic() - t0, 3)
    return out, fulls


def verify(a_dsn: str, b_dsn: str, b: Builder, ws: str, move_id: int, prep: Prepared, a_name: str = "source", b_name: str = "target") -> VerifyResult:
    """Under the fence: recheck the dirty buckets, verify the other tables in full, globals as usual."""
    t0 = time.monotonic()
    g = b.graph
    fallback = dict(prep.fallback)
    with db.connect(a_dsn, autocommit=True) as src, db.connect(b_dsn, autocommit=True) as dst:
        touched = prep.touched if prep.touched is not None else _touched(src, dst, b, move_id, prep.c0)
        work: dict[str, tuple[list[Any], list[int]]] = {}
        for t, bk in prep.tables.items():
            keys = touched.get(t)
            if keys is None:
                fallback[t] = "a changed parent could not be followed to its rows"
                continue
            dirty = set(bk.mismatched)
            if keys:
                params = b.params(ws, keys=[Jsonb(json.loads(k)) for k in keys], bounds=Jsonb(bk.bounds))
                dirty |= {int(r[0]) for r in src.execute(b.buckets_of_keys(t), params)}
            if len(dirty) > MAX_DIRTY_FRACTION * bk.count:
                fallback[t] = f"{len(dirty)} of {bk.count} buckets changed"
                continue
            work[t] = (bk, sorted(dirty), [Jsonb(json.loads(k)) for k in sorted(keys or ())])
    timings: dict[str, float] = {"dirty_buckets": round(time.monotonic() - t0, 3)}
    full = [t for t in g.order if t in fallback]
    fenced = prep.fenced_globals or {}
    t1 = time.monotonic()
    with ThreadPoolExecutor(max_workers=2 + len(g.global_order)) as pool:
        fa = pool.submit(_recheck, a_dsn, b, ws, work, full, timings, "source")
        fb = pool.submit(_recheck, b_dsn, b, ws, work, full, timings, "target")
        fg = {gt: pool.submit(_global_present, a_dsn, b_dsn, b, ws, gt) for gt in g.global_order if gt not in fenced}
        (ra, fulla), (rb, fullb) = fa.result(), fb.result()
        globals_ = {gt: f.result() for gt, f in fg.items()}
    timings["recheck"] = round(time.monotonic() - t1, 3)
    timings["rechecked_buckets"] = sum(len(d) for _, d, _k in work.values())
    checks: list[TableCheck] = []
    for t in g.order:
        if t in work:
            bk, dirty, _keys = work[t]
            sa, sb = dict(bk.source), dict(bk.source)  # clean buckets: equal on both sides (see above)
            for k in dirty:
                sa[k] = ra.get(t, {}).get(k, (0, Decimal(0)))
                sb[k] = rb.get(t, {}).get(k, (0, Decimal(0)))
            ok = all(sa[k] == sb[k] for k in dirty)
            na, nb = sum(v[0] for v in sa.values()), sum(v[0] for v in sb.values())
            xa, xb = sum((v[1] for v in sa.values()), Decimal(0)), sum((v[1] for v in sb.values()), Decimal(0))
            tc = TableCheck(t, na, str(xa), nb, str(xb), ok, verify_mode="incremental",
                            verify_detail=f"{len(dirty)} of {bk.count} key-range buckets checked again under the fence"
                                          f" ({len(bk.mismatched)} differed before it)")
        else:
            (na, xa), (nb, xb) = fulla[t], fullb[t]
            ok = na == nb and xa == xb
            tc = TableCheck(t, na, str(xa), nb, str(xb), ok, verify_mode="full", verify_detail=fallback.get(t, ""))
        if not tc.ok:
            diffs = narrow(a_dsn, b_dsn, b, ws, t)
            tc.differing = len(diffs)
            tc.differences = diffs[:MAX_KEYS]
        checks.append(tc)
    for gt in g.global_order:
        if gt in fenced:
            x = fenced[gt]
            checks.append(TableCheck(gt, x["referenced"], "", x["present"], "", x["referenced"] == x["present"], kind="global",
                                     verify_mode="incremental",
                                     verify_detail=f"keys referenced after C0 plus {x['referenced_by_touched_rows']} rows referenced by"
                                                   " rows changed since, checked by key under the fence"))
        else:
            total, present = globals_[gt]
            checks.append(TableCheck(gt, total, "", present, "", total == present, kind="global"))
    tr = time.monotonic()
    refs = check_references(a_dsn, b_dsn, b, ws, a_name, b_name)
    timings["references"] = round(time.monotonic() - tr, 3)
    ok = all(c.ok for c in checks) and not refs["problems"]
    return VerifyResult(ws, a_name, b_name, ok, checks, None, round(time.monotonic() - t0, 3), timings=timings, references=refs)
