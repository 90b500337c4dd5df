"""Retention sweeps: what the rules would delete (:func:`plan`) and deleting it (:func:`run`).

A sweep covers the workspaces homed in a region (the directory, status ``active``, no open move),
or one workspace. For each, the rules in force (:func:`residency.retention_rules.effective`) are
applied to the region's database:

- **plan** counts, per rule, the expired rows and their time range, and every dependant
  (deleted, or unlinked) -- changing nothing;
- **run** deletes in batches: each batch is one short transaction (``lock_timeout`` 1 s,
  ``statement_timeout``) that picks the next keys of the rule's table in key order (``FOR
  UPDATE SKIP LOCKED``: a row a writer holds now waits for the next run), unlinks nullable
  references to them, deletes their dependants deepest first, then the rows. The batch size
  adapts to keep each transaction near ``target_seconds``. Only row locks are taken, so writers
  of other rows never wait; a writer of the same row waits for one batch at most.

Each workspace swept gets a deletion record in the control plane (``residency.retention_runs``):
per table rows, the sum of ``hash_record_extended(row, 0)`` over the deleted rows (the mover's
checksum) and, for the rule's table, the oldest and newest timestamp; and an audit entry
``retention.run`` carrying the record's SHA-256. The record is updated after every batch, so a
run killed midway still says what it had deleted.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import psycopg
from psycopg.types.json import Jsonb

from residency import audit, db
from residency.audit import Actor
from residency.catalogue import Catalogue
from residency.errors import InputError, first_line
from residency.retention_rules import Effective, TableRule, effective

from . import tree as tree_mod

LOCK_TIMEOUT = "1s"
STATEMENT_TIMEOUT = "30s"


@dataclass
class Part:
    """One table's share of a rule: the rule's rows, a dependant, or rows unlinked."""

    table: str
    action: str  # delete | unlink
    via: str
    rows: int = 0
    checksum: str = "0"
    oldest: str | None = None
    newest: str | None = None


@dataclass
class RuleResult:
    rule: dict[str, Any]
    cutoff: str
    parts: list[Part] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    batches: int = 0
    longest_batch_seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts if p.action == "delete")


@dataclass
class WorkspaceSweep:
    region: str
    workspace_id: str
    effective: dict[str, Any]
    rules: list[RuleResult] = field(default_factory=list)
    skipped: str | None = None
    record_id: int | None = None
    error: str | None = None
    purge: dict[str, Any] | None = None  # deleted_workspaces: rows per table (plan) or its record (run)

    @property
    def rows(self) -> int:
        if self.purge is not None:
            return int(self.purge.get("rows", 0))
        return sum(r.rows for r in self.rules)


@dataclass
class SweepReport:
    mode: str  # plan | run
    now: str
    workspaces: list[WorkspaceSweep] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    backups: dict[str, Any] | None = None  # run: the backups engine's expiry (residency.backups.expire_backups)

    @property
    def rows(self) -> int:
        return sum(w.rows for w in self.workspaces)

    @property
    def failed(self) -> list[str]:
        """One line per workspace whose run failed (its record says what it deleted before)."""
        return [f"retention run {w.record_id} for workspace {w.workspace_id} in {w.region} failed: {w.error}"
                for w in self.workspaces if w.error]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = self.rows
        d["failed"] = self.failed
        for w, wd in zip(self.workspaces, d["workspaces"]):
            wd["rows"] = w.rows
            for r, rd in zip(w.rules, wd["rules"]):
                rd["rows"] = r.rows
        return d


# --------------------------------------------------------------------------- which workspaces


def _targets(cat: Catalogue, cp: psycopg.Connection[Any], region: str | None, workspace: str | None) -> list[tuple[str, str, str | None]]:
    """(region, workspace id, why skipped or None) for every workspace the sweep covers."""
    if workspace is not None:
        row = cp.execute("SELECT region, status FROM residency.directory WHERE workspace_id = %s", (workspace,)).fetchone()
        if row is None:
            raise InputError(f"unknown workspace '{workspace}': not in the control plane's directory")
        if region is not None and row[0] != region:
            raise InputError(f"workspace {workspace} is homed in {row[0]}, not {region}")
        rows = [(workspace, row[0], row[1])]
    else:
        names = [region] if region is not None else list(cat.regions)
        rows = cp.execute("SELECT workspace_id, region, status FROM residency.directory WHERE region = ANY(%s) ORDER BY region, workspace_id",
                          (names,)).fetchall()
    open_moves = {r[0] for r in cp.execute(
        "SELECT workspace_id FROM residency.moves WHERE state IN ('planned', 'fenced', 'copied', 'verified', 'failed')").fetchall()}
    out = []
    for ws, reg, status in rows:
        why = None
        if status != "active":
            why = f"directory status {status}"
        elif ws in open_moves:
            why = "a move of it is open"
        out.append((reg, ws, why))
    return out


# --------------------------------------------------------------------------- plan and run


def _schema_graph(conn: psycopg.Connection[Any], cat: Catalogue) -> Any:
    import residency.migrate.graph as graph_mod
    from residency.migrate.introspect import introspect
    from residency.migrate.sqlbuild import Builder

    return Builder(graph_mod.build(introspect(conn), cat.workspace))


def sweep(cat: Catalogue, conns: Any, *, mode: str = "plan", region: str | None = None, workspace: object | None = None,
          now: datetime | None = None, batch_rows: int = 2000, target_seconds: float = 0.25, actor: Actor | None = None,
          progress: Callable[[str], None] | None = None, backups: bool = True) -> SweepReport:
    """Plan (``mode='plan'``) or run (``'run'``) the retention rules of a region's workspaces, or
    of one workspace; see the module's docstring."""
    if mode not in ("plan", "run"):
        raise InputError(f"mode must be plan or run, not '{mode}'")
    if region is not None:
        cat.region(region)
    ws = cat.workspace.parse_id(workspace) if workspace is not None else None
    now = now or datetime.now(timezone.utc)
    report = SweepReport(mode, now.isoformat(timespec="seconds"))
    say = progress or (lambda _m: None)
    with db.connect(conns.control_dsn, autocommit=True) as cp:
        if mode == "run":
            from residency import authz

            authz.require(cp, authz.OPERATOR, "running retention rules")
        targets = _targets(cat, cp, region, ws)
        by_region: dict[str, list[tuple[str, str | None]]] = {}
        for reg, w, why in targets:
            by_region.setdefault(reg, []).append((w, why))
        for reg, items in by_region.items():
            effs = {w: effective(cat, reg, w) for w, _ in items}
            if not any(e.tables or e.deleted_workspaces for e in effs.values()):
                continue
            try:
                conn = db.connect(conns.region(reg).dsn, autocommit=True, application_name="residency-retention")
            except Exception as exc:  # noqa: BLE001 - one region down does not stop the others
                from residency.redaction import redact

                report.problems.append(f"region {reg}: cannot connect: {redact(first_line(exc))}")
                continue
            with conn:
                b = _schema_graph(conn, cat)
                marked = _marked_deleted(conn, b, effs, now, report)
                for w, why in items:
                    eff = effs[w]
                    if not eff.tables and w not in marked:
                        continue
                    s = WorkspaceSweep(reg, w, eff.to_dict())
                    report.workspaces.append(s)
                    if why:
                        s.skipped = why
                        continue
                    if w in marked and eff.deleted_workspaces is not None:
                        _purge(cat, conns, conn, cp, b, eff, s, mode, actor)
                        continue
                    if mode == "plan":
                        _plan_workspace(conn, b, eff, s, now)
                    else:
                        _run_workspace(conn, cp, b, eff, s, now, batch_rows, target_seconds, actor, say)
    if mode == "run" and backups and workspace is None:
        report.backups = expire_backups(cat, conns, now)
    return report


def expire_backups(cat: Catalogue, conns: Any, now: datetime) -> dict[str, Any]:
    """Expired workspace backups deleted and recorded by the backups engine, when it is installed
    (``residency.backups.expire_backups(cat, conns, now)``); otherwise says it is not wired."""
    try:
        from residency.backups import expire_backups as engine_expire  # type: ignore[import-not-found, attr-defined, unused-ignore]
    except ImportError:
        return {"state": "not wired", "detail": "residency.backups.expire_backups is not installed"}
    res = engine_expire(cat, conns, now)
    summary = getattr(res, "summary", None)
    return {"state": "done", "detail": summary() if callable(summary) else str(summary or type(res).__name__)}


def _marked_deleted(conn: psycopg.Connection[Any], b: Any, effs: dict[str, Effective], now: datetime, report: SweepReport) -> set[str]:
    """The workspaces whose own purge rule (``deleted_workspaces``) has come due."""
    from .purge import expired_workspaces

    due: dict[Any, set[str]] = {}
    out: set[str] = set()
    for w, e in effs.items():
        rule = e.deleted_workspaces
        if rule is None:
            continue
        if rule not in due:
            ids, problem = expired_workspaces(conn, b, rule, now)
            due[rule] = set(ids)
            if problem and problem not in report.problems:
                report.problems.append(problem)
        if w in due[rule]:
            out.add(w)
    return out


def _purge(cat: Catalogue, conns: Any, conn: psycopg.Connection[Any], cp: psycopg.Connection[Any], b: Any, eff: Effective,
           s: WorkspaceSweep, mode: str, actor: Actor | None) -> None:
    from . import purge

    assert eff.deleted_workspaces is not None
    if mode == "plan":
        tables = purge.plan_workspace(conn, b, s.workspace_id)
        s.purge = {"tables": tables, "rows": sum(tables.values()), "rule": eff.deleted_workspaces.scope}
        return
    try:
        rec = purge.purge_workspace(cat, conn, cp, b, conns.region(s.region), s.region, s.workspace_id, eff.deleted_workspaces, actor)
    except psycopg.Error as exc:
        s.error = first_line(exc)
        return
    s.purge, s.record_id = rec, rec["record_id"]


def _cutoff(rule: TableRule, now: datetime) -> datetime:
    return now - rule.older_than


def _plan_workspace(conn: psycopg.Connection[Any], b: Any, eff: Effective, s: WorkspaceSweep, now: datetime) -> None:
    for rule in eff.tables:
        t = tree_mod.build(b.graph, rule)
        rr = RuleResult(rule.to_dict(), _cutoff(rule, now).isoformat(timespec="seconds"), problems=list(t.problems), notes=list(t.notes))
        s.rules.append(rr)
        if t.problems:
            continue
        q = tree_mod.SQL(b, t)
        params = q.params(s.workspace_id, cutoff=_cutoff(rule, now))
        for n in t.nodes:
            cnt, lo, hi = conn.execute(q.count(n), params).fetchone()  # type: ignore[misc]
            rr.parts.append(Part(n.table, "delete", n.path(), int(cnt), "-", _iso(lo), _iso(hi)))
            for u in n.nullify:
                (k,) = conn.execute(q.count_nullify(u), params).fetchone()  # type: ignore[misc]
                rr.parts.append(Part(u.table, "unlink", u.path() + " := NULL", int(k), "-"))
        for e in t.keep_edges:
            rr.notes.append(f"dependants: keep -- rows {e.table}.{','.join(e.columns)} still points at are kept")


def _iso(v: Any) -> str | None:
    return v.isoformat() if hasattr(v, "isoformat") else (None if v is None else str(v))


def _record(s: WorkspaceSweep) -> dict[str, Any]:
    return {"region": s.region, "workspace_id": s.workspace_id, "rules": [asdict(r) | {"rows": r.rows} for r in s.rules]}


def _save(cp: psycopg.Connection[Any], s: WorkspaceSweep, state: str) -> None:
    rec = _record(s)
    cp.execute(
        "UPDATE residency.retention_runs SET record = %s, rows_deleted = %s, state = %s, error = %s,"
        " finished_at = CASE WHEN %s = 'running' THEN NULL ELSE now() END WHERE id = %s",
        (Jsonb(rec), s.rows, state, s.error, state, s.record_id),
    )


def _run_workspace(conn: psycopg.Connection[Any], cp: psycopg.Connection[Any], b: Any, eff: Effective, s: WorkspaceSweep,
                   now: datetime, batch_rows: int, target_seconds: float, actor: Actor | None, say: Callable[[str], None]) -> None:
    trees = [tree_mod.build(b.graph, r) for r in eff.tables]
    (s.record_id,) = cp.execute(  # type: ignore[misc]
        "INSERT INTO residency.retention_runs (region, workspace_id, state, rules) VALUES (%s, %s, 'running', %s) RETURNING id",
        (s.region, s.workspace_id, Jsonb([r.to_dict() for r in eff.tables])),
    ).fetchone()
    try:
        for t in trees:
            rr = RuleResult(t.rule.to_dict(), _cutoff(t.rule, now).isoformat(timespec="seconds"), problems=list(t.problems), notes=list(t.notes))
            s.rules.append(rr)
            if t.problems:
                continue
            _run_rule(conn, cp, b, t, rr, s, now, batch_rows, target_seconds, say)
        state = "done" if not any(r.problems for r in s.rules) else "failed"
        if state == "failed":
            s.error = "; ".join(p for r in s.rules for p in r.problems)
    except psycopg.Error as exc:
        s.error = first_line(exc)
        state = "failed"
    with cp.transaction():
        _save(cp, s, state)
        rec_hash = hashlib.sha256(json.dumps(_record(s), sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()
        audit.append(cp, "retention.run", f"workspace:{s.workspace_id}", {
            "region": s.region, "retention_run": s.record_id, "state": state, "rows": s.rows,
            "tables": {p.table: p.rows for r in s.rules for p in r.parts if p.action == "delete" and p.rows},
            "record_sha256": rec_hash, **({"error": s.error} if s.error else {}),
        }, actor)


def _merge(parts: dict[str, Part], key: str, table: str, action: str, via: str, cnt: int, checksum: Any = 0, lo: Any = None, hi: Any = None) -> None:
    p = parts.setdefault(key, Part(table, action, via))
    p.rows += int(cnt)
    p.checksum = str(int(p.checksum) + int(checksum or 0))
    if lo is not None:
        p.oldest = min(filter(None, [p.oldest, _iso(lo)]))  # type: ignore[type-var]
    if hi is not None:
        p.newest = max(filter(None, [p.newest, _iso(hi)]))  # type: ignore[type-var]


def _run_rule(conn: psycopg.Connection[Any], cp: psycopg.Connection[Any], b: Any, t: Any, rr: RuleResult, s: WorkspaceSweep,
              now: datetime, batch_rows: int, target_seconds: float, say: Callable[[str], None]) -> None:
    q = tree_mod.SQL(b, t)
    cutoff = _cutoff(t.rule, now)
    nodes = t.nodes
    parts: dict[str, Part] = {}
    for n in nodes:  # the record lists every part, also those with nothing to delete
        _merge(parts, "d:" + n.path(), n.table, "delete", n.path(), 0)
        for u in n.nullify:
            _merge(parts, "u:" + u.path(), u.table, "unlink", u.path() + " := NULL", 0)
    after: Any = None
    limit = max(1, batch_rows)
    while True:
        t0 = time.monotonic()
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '1s'")
            conn.execute("SET LOCAL statement_timeout = '30s'")
            params = q.params(s.workspace_id, cutoff=cutoff, limit=limit, after=after)
            ids = [r[0] for r in conn.execute(q.batch(after=after is not None), params).fetchall()]
            if not ids:
                break
            params["ids"] = ids if t.key != ("ctid",) else [str(i) for i in ids]
            for n in nodes:
                if n.parent is not None and n.children:
                    conn.execute(q.lock(n), params)
            for n in nodes:
                for u in n.nullify:
                    k = conn.execute(q.nullify(u), params).rowcount
                    _merge(parts, "u:" + u.path(), u.table, "unlink", u.path() + " := NULL", k)
            for n in reversed(nodes):  # deepest first
                cnt, ck, lo, hi = conn.execute(q.delete(n), params).fetchone()  # type: ignore[misc]
                _merge(parts, "d:" + n.path(), n.table, "delete", n.path(), cnt, ck, lo, hi)
        took = time.monotonic() - t0
        rr.batches += 1
        rr.longest_batch_seconds = max(rr.longest_batch_seconds, round(took, 3))
        if t.key != ("ctid",):
            after = ids[-1]
        rr.parts = list(parts.values())
        with cp.transaction():
            _save(cp, s, "running")
        say(f"{s.region} workspace {s.workspace_id}: {t.rule.table}: batch {rr.batches}, {len(ids)} rows in {took:.2f}s")
        # keep each transaction near target_seconds: a short lock for any writer of the same rows
        if took > 0:
            limit = int(max(100, min(limit * 2, limit * target_seconds / took)))
    rr.parts = list(parts.values())
