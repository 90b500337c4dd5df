"""Jobs and workers on procrastinate: every periodic job and the move requests, on the control plane.

Procrastinate (a PostgreSQL-backed job queue) keeps its tables in the control-plane database, in
their own schema (:data:`JOBS_SCHEMA`), applied by ``residency controlplane init``
(:func:`apply_schema`). Any number of ``residency worker`` processes on any number of machines
share them:

- **periodic jobs** -- each is deferred once per period whatever the number of workers
  (procrastinate's ``procrastinate_periodic_defers`` is unique per task and time), with a
  queueing lock (at most one waiting) and a lock (at most one running):
  ``retention_sweep`` (:mod:`residency.expiry`), ``backups_due`` and ``backups_expire``
  (:mod:`residency.backups`), ``access_expire`` (operator access grants), ``audit_digest``
  (:mod:`residency.anchor`), ``recover_stalled`` (below) and ``prune_jobs`` (succeeded jobs older
  than a week);
- **move requests** -- ``move_requests`` claims one due, approved request with the request claim
  loop of :mod:`residency.ops.worker` (its ``FOR UPDATE SKIP LOCKED`` claim, lease and heartbeat
  stay: they are what makes a move run once, inside its window, resumed by whoever takes over an
  expired lease) and, when it got one, defers the next ``move_requests`` job before running it,
  so several workers run several moves at once. It is periodic too (a request approved in
  between is seen within a period).
- **a killed worker's job is recovered**: every worker heartbeats in ``procrastinate_workers``;
  ``recover_stalled`` hands a job whose worker stopped heartbeating back to the queue, and the
  next free worker runs it again (every job here is safe to run twice: a sweep or a backup starts
  over, a request is resumed through its lease).

Jobs that call code of another engine import it lazily through :data:`HOOKS` (module, function);
a hook whose module is absent makes its job end ``skipped`` naming what is missing.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import procrastinate
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from residency.catalogue import Catalogue
from residency.errors import first_line


JOBS_SCHEMA = "residency_jobs"
QUEUE = "residency"
KEEP_JOBS_HOURS = 24 * 7  # succeeded jobs are deleted after a week (prune_jobs)

HOOKS: dict[str, tuple[str, str]] = {
    # job -> (module, function) of the engine it runs; imported when the job runs
    "backups_due": ("residency.backups", "run_due_backups"),        # (cat, conns, now)
    "backups_expire": ("residency.backups", "expire_backups"),      # (cat, conns, now)
    "access_expire": ("residency.access.lifecycle", "sweep_expired"),  # (control connection, conns)
}


@dataclass(frozen=True)
class Schedule:
    """Cron expressions (5 fields, or 6 with seconds) per periodic job; ``None`` turns one off.
    ``$RESIDENCY_JOBS_<NAME>`` (e.g. ``RESIDENCY_JOBS_RETENTION_SWEEP="*/15 * * * *"``) overrides."""

    retention_sweep: str | None = "*/5 * * * *"
    backups_due: str | None = "*/10 * * * *"
    backups_expire: str | None = "17 * * * *"
    access_expire: str | None = "* * * * *"
    audit_digest: str | None = "0 * * * *"
    move_requests: str | None = "* * * * *"
    recover_stalled: str | None = "* * * * *"
    prune_jobs: str | None = "41 3 * * *"

    @classmethod
    def from_env(cls, **overrides: str | None) -> "Schedule":
        values: dict[str, str | None] = {}
        for name in cls.__dataclass_fields__:
            env = os.environ.get(f"RESIDENCY_JOBS_{name.upper()}")
            if env is not None:
                values[name] = None if env.strip().lower() in ("", "off", "none") else env
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class Outcome:
    """One job's end, as ``residency worker`` prints it."""

    job: str
    state: str  # done | skipped | failed
    detail: str
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def line(self) -> str:
        return f"{self.at} {self.job}: {self.state}" + (f" -- {self.detail}" if self.detail else "")


# --------------------------------------------------------------------------- schema


def jobs_conninfo(control_dsn: str) -> str:
    """The control-plane DSN with procrastinate's schema first on the search path."""
    d = conninfo_to_dict(control_dsn)
    d["options"] = ((d.get("options") or "") + f" -c search_path={JOBS_SCHEMA}").strip()
    return make_conninfo(**d)


_JOBS_LOCK = 0x7265_7369_6A6F_6273  # serialises applying the schema


def schema_applied(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{JOBS_SCHEMA}.procrastinate_jobs",)).fetchone()
    return bool(row and row[0])


def apply_schema(conn: psycopg.Connection[Any]) -> bool:
    """Create procrastinate's tables in :data:`JOBS_SCHEMA` unless there, and let the worker roles
    use them (idempotent; commits). Needs CREATE on the database (no superuser). True if created."""
    from procrastinate.schema import SchemaManager

    created = False
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_JOBS_LOCK,))
        if not schema_applied(conn):
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(JOBS_SCHEMA)))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(JOBS_SCHEMA)))
            conn.execute(SchemaManager.get_schema())  # procrastinate's own DDL, shipped with it: static
            created = True
        roles = [r for (r,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname IN ('residency_operator', 'residency_admin')").fetchall()]
        for role in roles:
            r, s = sql.Identifier(role), sql.Identifier(JOBS_SCHEMA)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r))
            conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(s, r))
            conn.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, r))
    return created


# --------------------------------------------------------------------------- the app


@dataclass
class Runtime:
    """What the jobs of one worker process use: the catalogue, connections, an outcome callback."""

    cat: Catalogue
    conns: Any
    on_outcome: Callable[[Outcome], None] = lambda o: None
    extra: dict[str, Any] = field(default_factory=dict)  # tests: more tasks' state


_RUNTIMES: dict[int, Runtime] = {}  # id(app) -> its runtime (a process runs one app, tests several)
_lock = threading.Lock()


def _runtime(context: Any) -> Runtime:
    return _RUNTIMES[id(context.app)]


def _hook(name: str) -> Callable[..., Any] | None:
    module, func = HOOKS[name]
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError):
        return None


def _report(rt: Runtime, job: str, run: Callable[[], tuple[str, str]]) -> None:
    try:
        state, detail = run()
    except Exception as exc:
        rt.on_outcome(Outcome(job, "failed", first_line(exc)))
        raise
    rt.on_outcome(Outcome(job, state, detail))


def _retention(rt: Runtime) -> tuple[str, str]:
    from residency import expiry

    rep = expiry.run(rt.cat, rt.conns, backups=False)  # expired backups: the backups_expire job
    done = [w for w in rep.workspaces if w.record_id]
    if rep.failed:
        raise RuntimeError("; ".join(rep.failed))
    return "done", f"{rep.rows} rows deleted in {len(done)} workspaces" + (f"; {len(rep.problems)} problems" if rep.problems else "")


def _call_hook(rt: Runtime, name: str, timestamp: int) -> tuple[str, str]:
    fn = _hook(name)
    if fn is None:
        module, func = HOOKS[name]
        return "skipped", f"not wired: {module}.{func} is not installed"
    now = datetime.fromtimestamp(timestamp, timezone.utc)
    if name == "access_expire":
        from residency.db import connect

        with connect(rt.conns.control_dsn, autocommit=True) as cp:
            res = fn(cp, rt.conns)
    else:
        res = fn(rt.cat, rt.conns, now)
    return "done", _summary(res)


def _summary(res: Any) -> str:
    if isinstance(res, list):
        return f"{len(res)} items"
    for attr in ("summary", "line"):
        v = getattr(res, attr, None)
        if callable(v):
            return str(v())
        if isinstance(v, str):
            return v
    return type(res).__name__


def _digest(rt: Runtime) -> tuple[str, str]:
    from residency import anchor
    from residency.db import connect

    cfg = getattr(rt.conns, "anchor", None)
    if cfg is None:
        return "skipped", "no audit anchor configured"
    with connect(rt.conns.control_dsn, autocommit=True) as c:
        d = anchor.digest_if_due(c, cfg)
    return "done", "digest written" if d else "no digest due"


def _move_request(rt: Runtime, defer_next: Callable[[], None]) -> tuple[str, str]:
    from .worker import Worker, WorkerConfig

    cfg = rt.extra.get("worker_config") or WorkerConfig()
    w = Worker(rt.cat, rt.conns, mover_=rt.extra.get("mover"), notifier=rt.extra.get("notifier"), config=cfg)
    try:
        claimed = w.claim()
        if claimed is None:
            return "done", "no request due"
        defer_next()  # another worker may take the next due request meanwhile
        o = w.run_claimed(*claimed)
        return "done", f"request {o.request_id} ({o.workspace_id}) {o.state}" + (f": {o.reason}" if o.reason else "")
    finally:
        w.close()


async def _recover(app: procrastinate.App, seconds: float) -> int:
    jobs = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=seconds)
    n = 0
    for job in jobs:
        await app.job_manager.retry_job(job)
        n += 1
    return n


def build_app(cat: Catalogue, conns: Any, *, schedule: Schedule | None = None, on_outcome: Callable[[Outcome], None] | None = None,
              stalled_after: float = 30.0, extra: dict[str, Any] | None = None,
              extra_tasks: Callable[[procrastinate.App, Runtime], None] | None = None, pool_size: int = 4) -> procrastinate.App:
    """A procrastinate app on the control plane with every job registered (see the module doc)."""
    sched = schedule or Schedule.from_env()
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=jobs_conninfo(conns.control_dsn), min_size=1, max_size=pool_size))
    rt = Runtime(cat, conns, on_outcome or (lambda o: None), dict(extra or {}))
    with _lock:
        _RUNTIMES[id(app)] = rt

    def periodic(name: str, *, lock: bool = True) -> Callable[[Callable[..., Any]], Any]:
        def deco(fn: Callable[..., Any]) -> Any:
            t = app.task(name=name, queue=QUEUE, pass_context=True, queueing_lock=name, lock=name if lock else None)(fn)
            cron = getattr(sched, name)
            if cron:
                app.periodic(cron=cron, periodic_id=name)(t)
            return t
        return deco

    @periodic("retention_sweep")
    def retention_sweep(context: Any, timestamp: int) -> None:
        _report(_runtime(context), "retention_sweep", lambda: _retention(_runtime(context)))

    for hook in HOOKS:
        def make(name: str) -> None:
            @periodic(name)
            def hooked(context: Any, timestamp: int) -> None:
                _report(_runtime(context), name, lambda: _call_hook(_runtime(context), name, timestamp))
        make(hook)

    @periodic("audit_digest")
    def audit_digest(context: Any, timestamp: int) -> None:
        _report(_runtime(context), "audit_digest", lambda: _digest(_runtime(context)))

    @periodic("move_requests", lock=False)
    def move_requests(context: Any, timestamp: int | None = None) -> None:
        def defer_next() -> None:
            try:
                move_requests.configure(task_kwargs={"timestamp": None}).defer()
            except procrastinate.exceptions.AlreadyEnqueued:
                pass  # one is waiting already
        _report(_runtime(context), "move_requests", lambda: _move_request(_runtime(context), defer_next))

    @periodic("recover_stalled")
    async def recover_stalled(context: Any, timestamp: int) -> None:
        n = await _recover(context.app, stalled_after)
        _runtime(context).on_outcome(Outcome("recover_stalled", "done", f"{n} stalled jobs handed back"))

    @periodic("prune_jobs")
    async def prune_jobs(context: Any, timestamp: int) -> None:
        await context.app.job_manager.delete_old_jobs(nb_hours=KEEP_JOBS_HOURS)  # succeeded ones; failed stay to be read
        _runtime(context).on_outcome(Outcome("prune_jobs", "done", f"succeeded jobs older than {KEEP_JOBS_HOURS} h deleted"))

    if extra_tasks is not None:
        extra_tasks(app, rt)
    return app


def run_worker(cat: Catalogue, conns: Any, *, concurrency: int = 1, once: bool = False, schedule: Schedule | None = None,
               on_outcome: Callable[[Outcome], None] | None = None, name: str | None = None, heartbeat: float = 10.0,
               stalled_after: float = 30.0, extra: dict[str, Any] | None = None, signals: bool = True,
               extra_tasks: Callable[[procrastinate.App, Runtime], None] | None = None) -> None:
    """Run a job worker until stopped (SIGINT/SIGTERM), or, with ``once``, until the queue is empty.
    Periodic jobs are deferred by every worker; the database keeps one per period."""
    from residency import authz
    from residency.db import connect

    with connect(conns.control_dsn, autocommit=True) as c:
        authz.require(c, authz.OPERATOR, "running the worker")
        if not schema_applied(c):
            from residency.errors import OperationError

            raise OperationError("the job engine's schema is missing from the control plane: run `residency controlplane init` (admin)")
    app = build_app(cat, conns, schedule=schedule, on_outcome=on_outcome, stalled_after=stalled_after, extra=extra,
                    extra_tasks=extra_tasks, pool_size=concurrency + 3)
    try:
        app.run_worker(queues=[QUEUE], concurrency=concurrency, wait=not once, name=name,
                       update_heartbeat_interval=heartbeat, stalled_worker_timeout=stalled_after,
                       install_signal_handlers=signals, listen_notify=True)
    finally:
        with _lock:
            _RUNTIMES.pop(id(app), None)


def defer(cat: Catalogue, conns: Any, job: str) -> int:
    """Queue one run of a job now (``residency worker --defer NAME``); returns the job id."""
    app = build_app(cat, conns, schedule=Schedule(**{k: None for k in Schedule.__dataclass_fields__}))
    try:
        with app.open():
            task = app.tasks.get(job)
            if task is None:
                from residency.errors import InputError

                raise InputError(f"unknown job '{job}'; jobs: {', '.join(sorted(app.tasks))}")
            kwargs = {"timestamp": int(datetime.now(timezone.utc).timestamp())}
            try:
                return task.defer(**kwargs)
            except procrastinate.exceptions.AlreadyEnqueued:
                return 0
    finally:
        with _lock:
            _RUNTIMES.pop(id(app), None)
