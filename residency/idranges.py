"""Per-region id ranges: ids never collide across regions.

Each region has a small, permanent number *n* (recorded in the control plane's
``residency.region_numbers``; the sandbox keeps its own in its state file). Every identity or
serial sequence of region *n* is confined to ``[n·10¹², (n+1)·10¹² − 1]`` (MINVALUE/MAXVALUE,
NO CYCLE), so an id says where it was minted and a workspace moved to another region keeps its
ids without colliding with that region's own rows. The sandbox confines its sample app with
:func:`confine`; ``residency regions ids`` does the same for an existing application
(:func:`plan_ids`, :func:`apply_ids`), refusing a sequence that has already gone past its
region's range.

Sequences that no column owns (e.g. per-tenant counters an application creates itself) are not
id sequences and are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from .errors import OperationError

SPAN = 10**12
MAX_NUMBER = 9_222_000  # bigint holds (n + 1) * 10^12 - 1 up to here


def range_of(n: int) -> tuple[int, int]:
    """The ids region number ``n`` mints: ``(n·10¹², (n+1)·10¹² − 1)``."""
    if not 1 <= n <= MAX_NUMBER:
        raise ValueError(f"region number {n} is outside 1..{MAX_NUMBER}")
    return n * SPAN, (n + 1) * SPAN - 1


def number_of_range(lo: int, hi: int) -> int | None:
    """The region number whose range is exactly ``[lo, hi]``, if any."""
    if lo >= SPAN and lo % SPAN == 0 and hi == lo + SPAN - 1 and lo // SPAN <= MAX_NUMBER:
        return lo // SPAN
    return None


@dataclass
class SequenceRange:
    """One id sequence and what confining it to its region's range takes."""

    name: str  # schema.sequence
    table: str
    column: str
    type: str
    increment: int
    min: int
    max: int
    cycle: bool
    last_value: int | None
    status: str = ""  # confined | to confine | refused
    detail: str = ""
    statement: str = ""  # the ALTER SEQUENCE that confines it (text, for display)

    @property
    def number(self) -> int | None:
        """The region number this sequence is already confined to, if it is confined to one."""
        return number_of_range(self.min, self.max) if not self.cycle else None


_SEQUENCES = """
SELECT n.nspname, c.relname, t.relname, a.attname, format_type(s.seqtypid, NULL), format_type(a.atttypid, NULL),
       s.seqincrement, s.seqmin, s.seqmax, s.seqcycle, ps.last_value
  FROM pg_sequence s
  JOIN pg_class c ON c.oid = s.seqrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                  AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
  JOIN pg_class t ON t.oid = d.refobjid
  JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
  LEFT JOIN pg_sequences ps ON ps.schemaname = n.nspname AND ps.sequencename = c.relname
 WHERE n.nspname = %s
 ORDER BY t.relname, a.attname, c.relname
"""


def id_sequences(conn: psycopg.Connection[Any], schema: str) -> list[SequenceRange]:
    """Every identity or serial sequence (owned by a column) in ``schema``."""
    out = []
    for nsp, seq, table, column, typ, coltyp, inc, lo, hi, cyc, last in conn.execute(_SEQUENCES, (schema,)):
        out.append(SequenceRange(f"{nsp}.{seq}", table, column, typ if typ == coltyp else f"{typ} (column {coltyp})",
                                 int(inc), int(lo), int(hi), bool(cyc), None if last is None else int(last)))
    return out


def _statement(s: SequenceRange, lo: int, hi: int, restart: bool) -> sql.Composed:
    schema, name = s.name.split(".", 1)
    parts = [sql.SQL("ALTER SEQUENCE {} MINVALUE {} MAXVALUE {} START {}").format(
        sql.Identifier(schema, name), sql.Literal(lo), sql.Literal(hi), sql.Literal(lo))]
    if restart:
        parts.append(sql.SQL("RESTART {}").format(sql.Literal(lo)))
    parts.append(sql.SQL("NO CYCLE"))
    return sql.SQL(" ").join(parts)


def judge(s: SequenceRange, region: str, n: int, conn: psycopg.Connection[Any] | None = None) -> sql.Composed | None:
    """Set ``s.status``/``detail``/``statement`` for confining it to region ``n``'s range; the
    statement to run, or None (already confined, or refused)."""
    lo, hi = range_of(n)
    if (s.min, s.max, s.cycle) == (lo, hi, False):
        s.status, s.detail = "confined", f"{lo}..{hi}" + (f", at {s.last_value}" if s.last_value is not None else ", unused")
        return None
    if s.type != "bigint":
        s.status = "refused"
        s.detail = (f"sequence {s.name} ({s.table}.{s.column}) is {s.type}: region {region}'s range starts at {lo};"
                    f" make the column bigint first (ALTER TABLE {s.table} ALTER COLUMN {s.column} TYPE bigint;"
                    f" ALTER SEQUENCE {s.name} AS bigint)")
        return None
    if s.increment < 0:
        s.status, s.detail = "refused", f"sequence {s.name} ({s.table}.{s.column}) counts down (increment {s.increment}); only ascending id sequences can be confined"
        return None
    if s.last_value is not None and s.last_value > hi:
        s.status = "refused"
        s.detail = (f"sequence {s.name} ({s.table}.{s.column}) is already at {s.last_value}, past region {region}'s range"
                    f" {lo}..{hi} (number {n}); its ids would collide with another region's")
        return None
    restart = s.last_value is None or s.last_value < lo
    stmt = _statement(s, lo, hi, restart)
    s.status = "to confine"
    s.detail = (f"{s.min}..{s.max} → {lo}..{hi}, " + ("next id " + str(lo) if restart else f"keeps its position {s.last_value}"))
    s.statement = stmt.as_string(conn) if conn is not None else ""
    return stmt


def confine(conn: psycopg.Connection[Any], schema: str, region: str, n: int) -> list[SequenceRange]:
    """Confine every id sequence of ``schema`` to region ``n``'s range, in the caller's
    transaction; refuse (changing nothing) if any sequence can't be."""
    seqs = id_sequences(conn, schema)
    stmts = [judge(s, region, n, conn) for s in seqs]
    bad = [s for s in seqs if s.status == "refused"]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise OperationError(bad[0].detail + more)
    for st in stmts:
        if st is not None:
            conn.execute(st)
    return seqs


# --------------------------------------------------------------------------- every region of an app


@dataclass
class RegionIds:
    region: str
    number: int | None = None
    number_source: str = ""  # recorded | found in the database | new
    low: int | None = None
    high: int | None = None
    sequences: list[SequenceRange] = field(default_factory=list)
    error: str = ""
    skipped: str = ""  # no connection configured for it (not deployed yet): numbered when it is

    @property
    def confined(self) -> bool:
        """Nothing to do: a known number and every id sequence inside its range."""
        return not self.error and not self.skipped and self.number is not None and all(s.status == "confined" for s in self.sequences)

    @property
    def refusals(self) -> list[str]:
        return ([f"region {self.region}: {self.error}"] if self.error else []) + [s.detail for s in self.sequences if s.status == "refused"]


@dataclass
class IdsPlan:
    schema: str
    regions: list[RegionIds]

    @property
    def refusals(self) -> list[str]:
        return [r for x in self.regions for r in x.refusals]

    @property
    def ok(self) -> bool:
        return not self.refusals

    @property
    def changes(self) -> int:
        return sum(1 for x in self.regions for s in x.sequences if s.status == "to confine") + sum(
            1 for x in self.regions if x.number_source not in ("recorded", ""))

    def region(self, name: str) -> RegionIds:
        return next(x for x in self.regions if x.region == name)


def recorded_numbers(cp: psycopg.Connection[Any]) -> dict[str, int]:
    return {r: int(n) for r, n in cp.execute("SELECT region, number FROM residency.region_numbers")}


def plan_ids(cat: Any, conns: Any, schema: str, cp: psycopg.Connection[Any]) -> IdsPlan:
    """Every region's id sequences and the range each must be confined to; changes nothing.

    A region's number is the one recorded in the control plane; else the range its sequences are
    already confined to (a sandbox, or an earlier run whose record was lost), if that number is
    free; else the next free number (first come, first numbered, never renumbered)."""
    from .db import connect

    recorded = recorded_numbers(cp)
    out: list[RegionIds] = []
    from .errors import InputError

    for name in cat.regions:
        x = RegionIds(name)
        out.append(x)
        try:
            conns.region(name)
        except InputError as exc:
            x.skipped = str(exc)
            continue
        try:
            with connect(conns.region(name).dsn, autocommit=True) as c:
                x.sequences = id_sequences(c, schema)
        except Exception as exc:  # noqa: BLE001 - an unreachable region is one line, not a crash
            x.error = f"cannot read its database: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    taken = dict(recorded)
    for x in out:
        if x.region in recorded:
            x.number, x.number_source = recorded[x.region], "recorded"
    for x in out:
        if x.number is not None or x.error or x.skipped:
            continue
        found = {s.number for s in x.sequences if s.number is not None}
        if len(found) == 1:
            (k,) = found
            owner = next((r for r, v in taken.items() if v == k), None)
            if owner is None:
                x.number, x.number_source = k, "found in the database"
                taken[x.region] = k
    for x in out:
        if x.number is None and not x.error and not x.skipped:
            x.number = max(taken.values(), default=0) + 1
            x.number_source = "new"
            taken[x.region] = x.number
    for x in out:
        if x.number is None:
            continue
        x.low, x.high = range_of(x.number)
        for s in x.sequences:
            judge(s, x.region, x.number, cp)
    return IdsPlan(schema, out)


def apply_ids(cat: Any, conns: Any, schema: str, cp: psycopg.Connection[Any], actor: Any = None) -> IdsPlan:
    """Record every region's number and confine its id sequences; refuses (changing nothing) if
    any region can't be read or any sequence is past its range. One audit entry."""
    from . import audit
    from .db import connect

    plan = plan_ids(cat, conns, schema, cp)
    if not plan.ok:
        bad = plan.refusals
        raise OperationError(bad[0] + (f" (and {len(bad) - 1} more: see `residency regions ids`)" if len(bad) > 1 else ""))
    changed: dict[str, list[str]] = {}
    with cp.transaction():
        for x in plan.regions:
            if x.number_source not in ("recorded", "") and x.number is not None:
                try:
                    with cp.transaction():
                        cp.execute("INSERT INTO residency.region_numbers (region, number) VALUES (%s, %s)", (x.region, x.number))
                except psycopg.errors.UniqueViolation:
                    raise OperationError(f"region numbers changed while planning (region {x.region}, number {x.number}): run it again") from None
        for x in plan.regions:
            if x.skipped:
                continue
            assert x.number is not None
            with connect(conns.region(x.region).dsn) as c:
                with c.transaction():
                    seqs = confine(c, schema, x.region, x.number)
            changed[x.region] = [s.name for s in seqs if s.status == "to confine"]
        audit.append(cp, "regions.ids_applied", "regions/ids", {
            "schema": schema,
            "regions": {x.region: {"number": x.number, "range": [x.low, x.high], "number_was": x.number_source,
                                   "sequences": len(x.sequences), "confined_now": changed[x.region]} for x in plan.regions if not x.skipped},
            "skipped": [x.region for x in plan.regions if x.skipped],
        }, actor)
    return plan_ids(cat, conns, schema, cp)
