"""Verify a workspace's copy: per table, row count and an order-independent checksum
(``sum(hash_record_extended(row, 0))``) computed inside each database, both sides at once in
parallel threads. On a mismatch, narrow down by primary-key ranges with the same checksum
(bisection around the median key) and name the differing keys without pulling whole tables.
A table without a primary key is compared as a multiset (the same count and sum) and narrowed by
a unique key it has, else by groups of the columns it reaches its workspace through.
Global tables: every referenced row must exist in the target (their content may legitimately
differ: the target's rows are never overwritten). Objects: keys, sizes, checksums."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Callable

import psycopg

from residency import db

from . import globalkeys
from . import references as refs_mod
from .retry import transient
from .sqlbuild import Builder

NEEDED_BY_KEYS = "needed rows read by the values the workspace's rows point at (kept by the copy under the same fence)"
NEEDED_BY_PREDICATE = "needed rows found with the workspace's predicate"
LEAF_ROWS = 128  # below this many rows in a key range, compare (key, hash) pairs directly
MAX_KEYS = 20  # differing keys named per table


@dataclass
class TableCheck:
    table: str
    source_rows: int
    source_checksum: str
    target_rows: int
    target_checksum: str
    ok: bool
    differences: list[dict[str, Any]] = field(default_factory=list)
    differing: int = 0
    kind: str = "table"  # table | global
    verify_mode: str = "full"  # full | incremental (see migrate.incremental)
    verify_detail: str = ""
    chunks: int = 0  # chunks compared (0: the table as a whole)
    bad_chunks: list[dict[str, Any]] = field(default_factory=list)  # {index, lo, hi, source: [n, sum], target: [n, sum]}


@dataclass
class VerifyResult:
    workspace_id: str
    a: str
    b: str
    ok: bool
    tables: list[TableCheck]
    objects: dict[str, Any] | None = None
    seconds: float = 0.0
    timings: dict[str, float] | None = None  # seconds per step, when the verifier measures them
    source_checksums: str = ""  # where the source side's counts/checksums came from (snapshot: see checksum_tables)
    references: dict[str, Any] | None = None  # dangling references and colliding shared rows (migrate.references)
    target_checksums: str = ""  # where the target side's came from: recorded as the chunks landed, or computed in verify

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def problems(self) -> list[str]:
        out = []
        for t in self.tables:
            if t.ok:
                continue
            if t.kind == "global":
                out.append(f"{t.table}: {t.source_rows - t.target_rows} referenced rows missing in {self.b}")
                continue
            keys = ", ".join(_fmt_diff(d) for d in t.differences[:MAX_KEYS])
            more = f" (+{t.differing - len(t.differences)} more)" if t.differing > len(t.differences) else ""
            bad = ", ".join(f"{c['index'] + 1}/{t.chunks} ({_fmt_end(c['lo'])}..{_fmt_end(c['hi'])}]" for c in t.bad_chunks[:MAX_KEYS])
            out.append(
                f"{t.table}: {t.source_rows} rows/{t.source_checksum} in {self.a}, {t.target_rows} rows/{t.target_checksum} in {self.b}"
                + (f"; differing chunks: {bad}" if bad else "")
                + (f"; differing keys: {keys}{more}" if keys else "")
            )
        if self.references:
            out.extend(self.references.get("problems", []))
        if self.objects is not None and not self.objects.get("ok", True):
            out.extend(f"objects: {p}" for p in self.objects.get("problems", []))
        return out


def _fmt_end(v: Any) -> str:
    return "" if v is None else str(v)


def _fmt_diff(d: dict[str, Any]) -> str:
    key = d["key"]
    if d.get("columns"):  # rows grouped by their reach columns (no unique key)
        return f"{', '.join(f'{c}={v}' for c, v in zip(d['columns'], key))} ({d['kind']})"
    k = key[0] if isinstance(key, (list, tuple)) and len(key) == 1 else tuple(key)
    return f"{k} ({d['kind']})"


def _checksums(dsn: str, b: Builder, ws: str, tables: list[str]) -> dict[str, tuple[int, Decimal]]:
    params = b.params(ws)
    out: dict[str, tuple[int, Decimal]] = {}
    with db.connect(dsn, autocommit=True, application_name="residency-verify") as conn:
        for t in tables:
            n, s = conn.execute(b.checksum(t), params).fetchone()
            out[t] = (int(n), Decimal(s))
    return out


def checksum_tables(dsn: str, b: Builder, ws: str, tables: list[str], *, workers: int = 1, sizes: dict[str, int] | None = None, stop: Callable[[], bool] = lambda: False, application_name: str = "residency-verify") -> dict[str, tuple[int, Decimal]]:
    """Count and checksum each of ``tables`` in one database over ``workers`` connections at once,
    biggest first (``sizes``: expected rows), so that several server processes work. ``stop``
    (checked between tables) raises InterruptedError."""
    todo = sorted(tables, key=lambda t: -(sizes or {}).get(t, 0))
    out: dict[str, tuple[int, Decimal]] = {}
    params = b.params(ws)

    @transient
    def worker() -> None:
        with db.connect(dsn, autocommit=True, application_name=application_name) as conn:
            while True:
                with lock:
                    if not todo:
                        return
                    t = todo.pop(0)
                if stop():
                    raise InterruptedError("checksums stopped")
                try:
                    n, s = conn.execute(b.checksum(t), params).fetchone()
                except BaseException:
                    with lock:
                        todo.insert(0, t)  # a retried worker takes it again
                    raise
                with lock:
                    out[t] = (int(n), Decimal(s))

    lock = threading.Lock()
    n = max(1, min(workers, len(todo)))
    if n == 1:
        worker()
    else:
        with ThreadPoolExecutor(max_workers=n) as pool:
            for f in [pool.submit(worker) for _ in range(n)]:
                f.result()
    return out


@transient
def _shared_rows(src_dsn: str, dst_dsn: str, b: Builder, ws: str, gtable: str, a_name: str, b_name: str,
                 keys: tuple[str, list[Any]] | None = None) -> tuple[int, int, list[Any]]:
    with db.connect(src_dsn, autocommit=True, application_name="residency-verify") as s, db.connect(dst_dsn, application_name="residency-verify") as d:
        try:
            return refs_mod.shared_rows_check(s, d, b, gtable, b.params(ws), a_name, b_name, keys=keys)
        finally:
            d.rollback()


@transient
def _global_present(src_dsn: str, dst_dsn: str, b: Builder, ws: str, gtable: str) -> tuple[int, int]:
    from psycopg import sql

    params = b.params(ws)
    key = b.graph.presence_key(gtable)
    temp = "residency_verify_keys"
    with db.connect(src_dsn, autocommit=True) as s, db.connect(dst_dsn) as d:
        d.execute(b.temp_keys(temp, gtable, key))
        with s.cursor().copy(b.copy_out_keys(gtable, key, global_=True), params) as out, d.cursor().copy(
            b.copy_in(gtable, key, into=sql.Identifier(temp))
        ) as into:
            for chunk in out:
                into.write(chunk)
        (total,) = d.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(temp))).fetchone()
        (present,) = d.execute(b.count_present(gtable, temp, key)).fetchone()
        d.rollback()
    return int(total), int(present)


def verify_tables(a_dsn: str, b_dsn: str, b: Builder, ws: str, a_name: str = "source", b_name: str = "target", *, with_globals: bool = True, emit: Callable[[Any], None] | None = None, a_sums: dict[str, tuple[int, Decimal]] | None = None, b_workers: int = 1, sizes: dict[str, int] | None = None, chunks: dict[str, list[list[Any]]] | None = None, b_recorded: dict[str, list[tuple[int, Decimal]]] | None = None,
                 shared_keys: dict[str, tuple[str, list[Any]]] | None = None) -> VerifyResult:
    """Counts and checksums of every table on both sides, compared; differing tables narrowed
    down to their keys. ``a_sums``: side a's counts and checksums already known (the caller
    proves they still hold, e.g. the snapshot's source computed under a fence that is still in
    place); then only side b is computed, over ``b_workers`` connections, biggest table first.
    ``b_recorded``: side b's sums per chunk (in the order of ``chunks``' bounds, or one for a
    table copied whole) recorded as the copy landed them; those tables are not read in b.
    ``shared_keys``: per global table, (column, values) that are exactly the shared rows the
    workspace needs (the values its rows point at, kept by the copy under a fence that still
    holds, :func:`migrate.phases.usable_shared_keys`): those rows are read by them, with no join."""
    t0 = time.monotonic()
    tables = list(b.graph.order)
    globals_ = list(b.graph.global_order) if with_globals else []
    timings: dict[str, float] = {}
    b_chunks: dict[str, list[tuple[int, Decimal]]] = {}
    recorded = {t: v for t, v in (b_recorded or {}).items() if t in tables and len(v) == len((chunks or {}).get(t) or [[None, None]])}
    b_tables = [t for t in tables if t not in recorded]

    def from_recorded() -> dict[str, tuple[int, Decimal]]:
        out = {}
        for t, vals in recorded.items():
            out[t] = (sum(v[0] for v in vals), sum((v[1] for v in vals), Decimal(0)))
            if len(vals) > 1:
                b_chunks[t] = list(vals)
        return out

    def b_side() -> dict[str, tuple[int, Decimal]]:
        if not b_tables:
            return {}
        if chunks and a_sums is not None:
            rb, per = checksum_chunked(b_dsn, b, ws, b_tables, chunks, workers=b_workers, sizes=sizes)
            b_chunks.update(per)
            return rb
        return checksum_tables(b_dsn, b, ws, b_tables, workers=b_workers, sizes=sizes)

    if a_sums is not None and all(t in a_sums for t in tables):
        ra = a_sums
        ts = time.monotonic()
        rb = {**b_side(), **from_recorded()}
        timings["target_checksums"] = round(time.monotonic() - ts, 3)
        origin = "given"
    else:
        @transient
        def side_a() -> tuple[dict[str, tuple[int, Decimal]], float]:
            ts = time.monotonic()
            return _checksums(a_dsn, b, ws, tables), round(time.monotonic() - ts, 3)

        @transient
        def side_b() -> tuple[dict[str, tuple[int, Decimal]], float]:
            ts = time.monotonic()
            return b_side(), round(time.monotonic() - ts, 3)

        with ThreadPoolExecutor(max_workers=2) as pool:
            fa, fb = pool.submit(side_a), pool.submit(side_b)
            (ra, timings["source_checksums"]), (rb, timings["target_checksums"]) = fa.result(), fb.result()
        rb.update(from_recorded())
        origin = "computed in verify"

    tn = time.monotonic()
    checks: list[TableCheck] = []
    for t in tables:
        (na, sa), (nb, sb) = ra[t], rb[t]
        ok = na == nb and sa == sb
        tc = TableCheck(t, na, str(sa), nb, str(sb), ok)
        if t in b_chunks:
            tc.chunks = len(b_chunks[t])
        if not ok and t in b_chunks:
            # compare the chunks, then narrow only the ones that differ
            a_chunks = _chunk_sums(a_dsn, b, ws, t, chunks[t])  # type: ignore[index]
            diffs = []
            for i, (bound, ca, cb) in enumerate(zip(chunks[t], a_chunks, b_chunks[t])):  # type: ignore[index]
                lo, hi, _part = b.bound_parts(bound)  # narrowed by range: the other part's rows there match
                if ca != cb:
                    tc.bad_chunks.append({"index": i, "lo": lo, "hi": hi, "source": [ca[0], str(ca[1])], "target": [cb[0], str(cb[1])]})
                    narrow_in = b.chunk_key(t) is not None and _integer_key(b, t)
                    diffs += narrow(a_dsn, b_dsn, b, ws, t, lo=(lo,) if narrow_in and lo is not None else None,
                                    hi=(hi,) if narrow_in and hi is not None else None)
            tc.differing = len(diffs)
            tc.differences = diffs[:MAX_KEYS]
        elif not ok:
            diffs = narrow(a_dsn, b_dsn, b, ws, t)
            tc.differing = len(diffs)
            tc.differences = diffs[:MAX_KEYS]
        checks.append(tc)
    timings["narrowing"] = round(time.monotonic() - tn, 3)
    # the shared rows' presence and the references are independent reads: side by side; the
    # shared rows are read from the source once for their presence and their content
    # (:func:`references.shared_rows_check`), so the references leave the content out
    def presence() -> tuple[list[TableCheck], list[refs_mod.Collision], float]:
        tg = time.monotonic()
        out, collided = [], []
        for g in globals_:
            keys = (shared_keys or {}).get(g)
            if b.graph.table(g).primary_key:  # (globals_ is empty without with_globals)
                total, present, found = _shared_rows(a_dsn, b_dsn, b, ws, g, a_name, b_name, keys)
                collided += found
            else:
                keys = None
                total, present = _global_present(a_dsn, b_dsn, b, ws, g)
            how = NEEDED_BY_KEYS if keys is not None else NEEDED_BY_PREDICATE
            out.append(TableCheck(g, total, "", present, "", total == present, kind="global", verify_detail=how))
        return out, collided, round(time.monotonic() - tg, 3)

    tr = time.monotonic()
    counted = kept_value_refs(b, shared_keys)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="residency-verify-globals") as pool:
        shared = pool.submit(presence)
        refs = check_references(a_dsn, b_dsn, b, ws, a_name, b_name, collisions=False, counted=counted) if with_globals else None
        timings["references"] = round(time.monotonic() - tr, 3)
        global_checks, collided, timings["globals"] = shared.result()
    if refs is not None and counted and not all(c.ok for c in global_checks if c.verify_detail == NEEDED_BY_KEYS):
        # a shared row the kept values count is missing: name the rows pointing at it
        refs = check_references(a_dsn, b_dsn, b, ws, a_name, b_name, collisions=False)
    checks += global_checks
    if refs is not None:
        refs["collisions"] = refs_mod.to_dicts(collided)
        refs["problems"] += [c.line(a_name, b_name) for c in collided]
    ok = all(c.ok for c in checks) and not (refs and refs["problems"])
    where_b = (f"{len(recorded)} of {len(tables)} tables recorded as their chunks landed in the copy, {len(b_tables)} computed in verify"
               if recorded else "computed in verify")
    return VerifyResult(ws, a_name, b_name, ok, checks, None, round(time.monotonic() - t0, 3), timings=timings, source_checksums=origin,
                        references=refs, target_checksums=where_b)


def kept_value_refs(b: Builder, shared_keys: dict[str, tuple[str, list[Any]]] | None) -> frozenset[str]:
    """The references (:meth:`Ref.describe`) into the shared tables read by kept values: those
    values are every value these references hold in the workspace's rows (gathered from them as
    they landed, :func:`migrate.globalkeys.direct_refs`), so the count of them the target holds
    (:func:`references.shared_rows_check`) tells whether any of these references dangles there,
    without reading the workspace's rows again."""
    direct = globalkeys.direct_refs(b.graph) if shared_keys else {}
    return frozenset(r.describe() for g in (shared_keys or {}) for r in direct.get(g, []))


SOURCE_REF_WORKERS = 2  # connections resolving the references into the workspace's own tables in the source


@transient
def check_references(a_dsn: str, b_dsn: str, b: Builder, ws: str, a_name: str = "source", b_name: str = "target", *,
                     collisions: bool = True, counted: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Every reference the moved rows carry resolves in ``b`` wherever it resolved in ``a``, and
    every shared row they point at has the same content on both sides. References into tables
    holding shared rows are resolved in ``b`` itself, and in ``a`` only those ``b`` can't resolve
    (to tell a reference the source already left dangling from one the move broke); references
    into the workspace's own tables are resolved in ``a`` against the rows that go to ``b``
    (:func:`references.source_dangling`), over :data:`SOURCE_REF_WORKERS` connections, while ``b``
    is read. ``collisions`` False: the shared rows' content is left to the caller, which reads
    them once for presence and content (:func:`references.shared_rows_check`). ``counted``: the
    references (:meth:`Ref.describe`) into shared rows whose every value the caller counts in
    ``b`` itself (:func:`kept_value_refs`): not resolved here."""
    params = b.params(ws)
    queue = list(refs_mod.source_refs(b))
    in_target = [r for r in refs_mod.target_refs(b) if r.describe() not in counted]
    lock = threading.Lock()

    def source_side() -> tuple[list[Any], list[Any]]:
        missing: list[Any] = []
        foreign: list[Any] = []
        with db.connect(a_dsn, autocommit=True, application_name="residency-verify") as ca:
            while True:
                with lock:
                    if not queue:
                        return missing, foreign
                    r = queue.pop(0)
                m, f = refs_mod.source_dangling(ca, b, params, refs=[r])
                missing += m
                foreign += f

    def target_side() -> tuple[list[Any], list[Any], list[Any]]:
        """(unresolved in b, the same already unresolved in a, shared rows differing)"""
        with db.connect(b_dsn, application_name="residency-verify") as cb:
            found = refs_mod.dangling(cb, b, params, refs=in_target)
            cb.rollback()
            unresolved = [r for r in in_target if r.describe() in {d.ref for d in found}]
            if not (collisions or unresolved):
                return found, [], []  # the source is not needed
            collided: list[Any] = []
            with db.connect(a_dsn, autocommit=True) as ca:
                for g in (b.graph.global_order if collisions else []):
                    try:
                        collided += refs_mod.shared_collisions(ca, cb, b, g, params, a_name, b_name)
                    finally:
                        cb.rollback()
                # what the target can't resolve: did the source already leave it dangling?
                return found, refs_mod.dangling(ca, b, params, refs=unresolved), collided

    workers = max(1, min(SOURCE_REF_WORKERS, len(queue)))
    with ThreadPoolExecutor(max_workers=workers + 1) as pool:
        fb = pool.submit(target_side)
        fas = [pool.submit(source_side) for _ in range(workers)]
        in_a: list[Any] = []
        foreign: list[Any] = []
        for fa in fas:
            m, f = fa.result()
            in_a += m
            foreign += f
        in_b, before_b, collided = fb.result()
    in_a += before_b
    new, before = refs_mod.compare_dangling(in_a, in_b + foreign)
    problems = [d.line(b_name) + (f" (the source has {next((x.rows for x in before if x.ref == d.ref), 0)})" if any(x.ref == d.ref for x in before) else "")
                for d in new]
    problems += [c.line(a_name, b_name) for c in collided]
    return {"checked": len(refs_mod.checked_refs(b)), "counted_by_kept_values": sorted(counted), "dangling_in_target": refs_mod.to_dicts(in_b + foreign),
            "dangling_in_source": refs_mod.to_dicts(in_a), "collisions": refs_mod.to_dicts(collided), "problems": problems}


# ---------------------------------------------------------------------------- narrowing


def _kp(prefix: str, key: tuple[Any, ...] | None) -> dict[str, Any]:
    return {} if key is None else {f"{prefix}{i}": v for i, v in enumerate(key)}


def narrow(a_dsn: str, b_dsn: str, b: Builder, ws: str, table: str, max_keys: int = 200, *, lo: tuple[Any, ...] | None = None, hi: tuple[Any, ...] | None = None) -> list[dict[str, Any]]:
    """The keys whose rows differ between the two databases, found by bisecting key ranges
    (within ``lo < key <= hi`` when given, e.g. one chunk)."""
    cols, unique = b.graph.narrow_key(table)
    if not cols:
        return []
    with db.connect(a_dsn, autocommit=True) as ca, db.connect(b_dsn, autocommit=True) as cb:
        out: list[dict[str, Any]] = []

        def checksum(conn: psycopg.Connection[Any], lo: Any, hi: Any) -> tuple[int, Decimal]:
            p = b.params(ws, **_kp("lo", lo), **_kp("hi", hi))
            n, s = conn.execute(b.checksum(table, lo=lo is not None, hi=hi is not None), p).fetchone()
            return int(n), Decimal(s)

        def leaves(conn: psycopg.Connection[Any], lo: Any, hi: Any) -> dict[tuple[Any, ...], tuple[int, Decimal]]:
            p = b.params(ws, **_kp("lo", lo), **_kp("hi", hi))
            return {tuple(r[:-2]): (int(r[-2]), Decimal(r[-1])) for r in conn.execute(b.key_hashes(table, lo=lo is not None, hi=hi is not None), p)}

        def median(conn: psycopg.Connection[Any], lo: Any, hi: Any, n: int) -> tuple[Any, ...]:
            p = b.params(ws, offset=max(n // 2 - 1, 0), **_kp("lo", lo), **_kp("hi", hi))
            return tuple(conn.execute(b.median_key(table, lo=lo is not None, hi=hi is not None), p).fetchone())

        def walk(lo: Any, hi: Any, depth: int) -> None:
            if len(out) >= max_keys:
                return
            (na, sa), (nb, sb) = checksum(ca, lo, hi), checksum(cb, lo, hi)
            if na == nb and sa == sb:
                return
            mid = None
            if not (max(na, nb) <= LEAF_ROWS or depth > 60):
                mid = median(ca, lo, hi, na) if na >= nb else median(cb, lo, hi, nb)
                if not unique and hi is not None and tuple(mid) == tuple(hi):
                    mid = None  # one group of rows fills the range: it can't be split further
            if mid is None:
                la, lb = leaves(ca, lo, hi), leaves(cb, lo, hi)
                for k in sorted(set(la) | set(lb), key=repr):
                    if unique:
                        kind = "missing in target" if k not in lb else "only in target" if k not in la else "differs"
                    else:  # a group of rows sharing the narrowing columns (a table without a unique key)
                        (n1, _), (n2, _) = la.get(k, (0, 0)), lb.get(k, (0, 0))
                        kind = f"{n1} rows in source, {n2} in target" + ("" if n1 != n2 else ", contents differ")
                    if la.get(k) != lb.get(k):
                        out.append({"key": list(k), "kind": kind, **({} if unique else {"columns": list(cols)})})
                return
            walk(lo, mid, depth + 1)
            walk(mid, hi, depth + 1)

        walk(lo, hi, 0)
        return [{**d, "key": [_plain(v) for v in d["key"]]} for d in out]


def _plain(v: Any) -> Any:
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)


# ---------------------------------------------------------------------------- chunks


def _integer_key(b: Builder, table: str) -> bool:
    key = b.chunk_key(table)
    c = b.graph.table(table).column(key or "")
    return c is not None and c.type in ("smallint", "integer", "bigint")


@transient
def _chunk_sums(dsn: str, b: Builder, ws: str, table: str, bounds: list[list[Any]]) -> list[tuple[int, Decimal]]:
    out = []
    with db.connect(dsn, autocommit=True, application_name="residency-verify") as conn:
        for bound in bounds:
            lo, hi, part = b.bound_parts(bound)
            n, s = conn.execute(b.checksum_chunk(table, lo is not None, hi is not None, part), b.chunk_params(ws, bound)).fetchone()
            out.append((int(n), Decimal(s)))
    return out


def checksum_chunked(dsn: str, b: Builder, ws: str, tables: list[str], chunks: dict[str, list[list[Any]]], *, workers: int = 1,
                     sizes: dict[str, int] | None = None) -> tuple[dict[str, tuple[int, Decimal]], dict[str, list[tuple[int, Decimal]]]]:
    """Counts and checksums per chunk (``chunks``: a table's recorded bounds; other tables whole)
    over ``workers`` connections, biggest units first; also summed per table (the same sums as
    :func:`checksum_tables`, since the chunks cover the table exactly once)."""
    units: list[tuple[str, int, list[Any], int]] = []
    for t in tables:
        bounds = chunks.get(t) or [[None, None]]
        per = max(1, (sizes or {}).get(t, 0) // len(bounds))
        units += [(t, i, bound, per) for i, bound in enumerate(bounds)]
    units.sort(key=lambda u: -u[3])
    got: dict[tuple[str, int], tuple[int, Decimal]] = {}
    lock = threading.Lock()

    @transient
    def worker() -> None:
        with db.connect(dsn, autocommit=True, application_name="residency-verify") as conn:
            while True:
                with lock:
                    if not units:
                        return
                    u = units.pop(0)
                t, i, bound, _ = u
                lo, hi, part = b.bound_parts(bound)
                try:
                    if lo is None and hi is None and part is None:
                        n, s = conn.execute(b.checksum(t), b.params(ws)).fetchone()
                    else:
                        n, s = conn.execute(b.checksum_chunk(t, lo is not None, hi is not None, part), b.chunk_params(ws, bound)).fetchone()
                except BaseException:
                    with lock:
                        units.insert(0, u)
                    raise
                with lock:
                    got[(t, i)] = (int(n), Decimal(s))

    n = max(1, min(workers, len(units)))
    with ThreadPoolExecutor(max_workers=n) as pool:
        for f in [pool.submit(worker) for _ in range(n)]:
            f.result()
    per_table: dict[str, tuple[int, Decimal]] = {}
    per_chunk: dict[str, list[tuple[int, Decimal]]] = {}
    for t in tables:
        k = len(chunks.get(t) or [[None, None]])
        vals = [got[(t, i)] for i in range(k)]
        per_table[t] = (sum(v[0] for v in vals), sum((v[1] for v in vals), Decimal(0)))
        if k > 1:
            per_chunk[t] = vals
    return per_table, per_chunk
