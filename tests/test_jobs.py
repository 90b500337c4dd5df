"""The job engine (procrastinate on the control plane, residency.ops.jobs): its schema applied by
`controlplane init` without a superuser, worker processes sharing it (a periodic job runs once per
period; a killed worker's job is run again by another), the retention sweep and move requests
run as jobs, and engines not installed yet reported as not wired."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from residency.controlplane import ensure_roles
from residency.ops import jobs

from conftest import REGIONS_YAML
from jobs_support import LOG_DDL

HERE = Path(__file__).resolve().parent
OFF = {k: None for k in jobs.Schedule.__dataclass_fields__}


def _as(dsn: str, user: str) -> str:
    d = conninfo_to_dict(dsn)
    d["user"] = user
    return make_conninfo(**d)


@pytest.fixture
def cp(env):
    """The world's control plane with its roles and the job schema, as `controlplane init` leaves it."""
    with psycopg.connect(env.control_dsn) as c:
        ensure_roles(c)
        jobs.apply_schema(c)
        assert jobs.apply_schema(c) is False and jobs.schema_applied(c)  # idempotent
        c.execute(LOG_DDL)
        c.execute("GRANT ALL ON public.job_log, public.job_log_id_seq TO residency_operator")
        c.commit()
    return env


def _log(dsn: str, task: str) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute("SELECT at, pid, attempt FROM public.job_log WHERE task = %s ORDER BY id", (task,)).fetchall()


def _spawn(env, tmp_path: Path, name: str, **spec) -> subprocess.Popen:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"regions": str(REGIONS_YAML), "control_dsn": _as(env.control_dsn, "sandbox_operator"), "name": name, **spec}))
    out = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, str(HERE / "jobs_support.py"), str(path)], stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(HERE.parent)})


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _wait(pred, timeout: float = 60.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _drop_job_schema(env) -> None:
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(jobs.JOBS_SCHEMA)))


def test_the_controlplane_init_command_applies_it(env, monkeypatch):
    from click.testing import CliRunner

    from move_support import connections_env
    from residency.cli import main

    _drop_job_schema(env)
    for k, v in connections_env(env).items():
        monkeypatch.setenv(k, v)
    r = CliRunner().invoke(main, ["--regions", str(REGIONS_YAML), "controlplane", "init", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["job_schema"] == jobs.JOBS_SCHEMA
    with psycopg.connect(env.control_dsn) as c:
        assert jobs.schema_applied(c)


def test_the_schema_is_applied_by_a_non_superuser_with_create_on_the_database(env):
    role = f"jobadmin_{env.token}"
    with psycopg.connect(env.admin_dsn("control"), autocommit=True) as a:
        a.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEROLE").format(sql.Identifier(role)))
        a.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(env.dbname), sql.Identifier(role)))
    try:
        _drop_job_schema(env)
        with psycopg.connect(env.control_dsn) as c:
            ensure_roles(c)
            c.commit()
        with psycopg.connect(_as(env.control_dsn, role)) as c:
            assert c.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0] is False
            assert jobs.apply_schema(c) is True
        with psycopg.connect(_as(env.control_dsn, "sandbox_operator"), autocommit=True) as c:
            c.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(jobs.JOBS_SCHEMA)))
            assert c.execute("SELECT count(*) FROM procrastinate_jobs").fetchone()[0] == 0
    finally:
        with psycopg.connect(env.control_dsn, autocommit=True) as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(jobs.JOBS_SCHEMA)))
            c.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
            c.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(env.admin_dsn("control"), autocommit=True) as a:
            a.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM {}").format(sql.Identifier(env.dbname), sql.Identifier(role)))
            a.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_two_worker_processes_run_a_periodic_job_once_per_period(cp, tmp_path):
    env = cp
    a = _spawn(env, tmp_path, "wa", tick_cron="* * * * * */2")
    b = _spawn(env, tmp_path, "wb", tick_cron="* * * * * */2")
    try:
        _wait(lambda: _workers(env) == 2, what="both workers registered")
        _wait(lambda: len(_log(env.control_dsn, "tick")) >= 5, what="five ticks")
        assert _workers(env) == 2  # both alive throughout, sharing the control plane
    finally:
        _stop(a, b)
    ticks = _log(env.control_dsn, "tick")
    periods = [at for at, _, _ in ticks]
    assert len(periods) == len(set(periods)), f"a period ran twice: {periods}"
    assert all(p % 2 == 0 for p in periods)
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        deferred = c.execute(sql.SQL("SELECT count(*) FROM {}.procrastinate_jobs WHERE task_name = 'tick'").format(sql.Identifier(jobs.JOBS_SCHEMA))).fetchone()[0]
    assert deferred == len(set(periods)) or deferred == len(set(periods)) + 1  # + one deferred as they stopped
    for name in ("wa", "wb"):
        assert "Traceback" not in (tmp_path / f"{name}.log").read_text()


def test_a_killed_workers_job_is_run_again_by_another(cp, tmp_path):
    env = cp
    a = _spawn(env, tmp_path, "wa", slow_seconds=120)
    b = None
    try:
        _wait(lambda: _workers(env) == 1, what="worker wa registered")
        jid = _defer_slow(env)
        _wait(lambda: len(_log(env.control_dsn, "slow-start")) == 1, what="wa to start the slow job")
        (_, pid_a, _), = _log(env.control_dsn, "slow-start")
        assert pid_a == a.pid
        a.send_signal(signal.SIGKILL)
        a.wait()
        b = _spawn(env, tmp_path, "wb", slow_seconds=120, recover_cron="* * * * * *", stalled_after=2.0)
        _wait(lambda: len(_log(env.control_dsn, "slow-end")) == 1, timeout=90, what="wb to run the recovered job")
    finally:
        _stop(*(p for p in (a, b) if p is not None))
    starts = _log(env.control_dsn, "slow-start")
    assert [(pid, attempt) for _, pid, attempt in starts] == [(pid_a, 0), (b.pid, 1)]
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        assert c.execute(sql.SQL("SELECT status FROM {}.procrastinate_jobs WHERE id = %s").format(sql.Identifier(jobs.JOBS_SCHEMA)), (jid,)).fetchone()[0] == "succeeded"
    assert "recover_stalled: done -- 1 stalled jobs handed back" in (tmp_path / "wb.log").read_text()


def _workers(env) -> int:
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        return c.execute(sql.SQL("SELECT count(*) FROM {}.procrastinate_workers").format(sql.Identifier(jobs.JOBS_SCHEMA))).fetchone()[0]


def _defer_slow(env) -> int:
    from jobs_support import extra_tasks

    app = jobs.build_app(env.catalogue, env.connections, schedule=jobs.Schedule(**OFF), extra_tasks=extra_tasks(None, 0))
    with app.open():
        return app.tasks["slow"].defer()


def _run_once(env, outcomes: list, **kw) -> None:
    jobs.run_worker(env.catalogue, kw.pop("conns", env.connections), once=True, schedule=jobs.Schedule(**OFF), signals=False,
                    on_outcome=outcomes.append, **kw)


def test_the_retention_sweep_runs_as_a_job_as_an_operator(cp):
    env = cp
    from test_retention import age_messages, catalogue_with, one_hour_rule

    seed = env.seed(workspaces=2, rows=600, seed=3)
    ws = seed.smallest_in("us")
    before = age_messages(env.dsn("us"), ws)
    cat = catalogue_with(one_hour_rule(ws))
    ops = replace(env.connections, control_dsn=_as(env.control_dsn, "sandbox_operator"))
    assert jobs.defer(cat, ops, "retention_sweep") > 0
    assert jobs.defer(cat, ops, "retention_sweep") == 0  # queueing lock: one waiting at most
    outcomes: list = []
    jobs.run_worker(cat, ops, once=True, schedule=jobs.Schedule(**OFF), signals=False, on_outcome=outcomes.append)
    assert [(o.job, o.state) for o in outcomes] == [("retention_sweep", "done")]
    assert outcomes[0].detail.startswith(f"{before['old'] + before['attachments'] + before['previews'] + before['reactions']} rows deleted in 1 workspaces")
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        assert c.execute("SELECT run_by, state FROM residency.retention_runs").fetchall() == [("sandbox_operator", "done")]


def _approved_request(env):
    """A control plane with one due, approved move request of ws-1 (made by the requester and
    approver logins) and a fake mover for it."""
    from datetime import datetime, timedelta, timezone

    from request_helpers import FakeMover, control_plane
    from residency.ops import requests as rq

    world = control_plane(env)
    world.register(("ws-1", "us"))
    fm = FakeMover(world.dsn)
    window = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat(timespec="seconds") + "/2h"
    with psycopg.connect(_as(world.dsn, "sandbox_requester")) as c:
        r = rq.create(c, world.cat, world.conns, "ws-1", "eu", window, "amy@example.com", planner=fm.plan)
    with psycopg.connect(_as(world.dsn, "sandbox_approver")) as c:
        rq.approve(c, world.cat, r.id)
    return world, fm, r


def test_move_requests_run_as_jobs(cp):
    """The request fleet on the job engine: a due, approved request is claimed by the
    move_requests job (the request's own claim and lease inside) and its move runs."""
    world, fm, r = _approved_request(cp)
    ops = replace(world.conns, control_dsn=_as(world.dsn, "sandbox_operator"))
    assert jobs.defer(world.cat, ops, "move_requests") > 0
    outcomes: list = []
    jobs.run_worker(world.cat, ops, once=True, schedule=jobs.Schedule(**OFF), signals=False, on_outcome=outcomes.append,
                    extra={"mover": fm})
    lines = [(o.job, o.state, o.detail) for o in outcomes]
    assert lines[0] == ("move_requests", "done", f"request {r.id} (ws-1) done")
    assert lines[1:] == [("move_requests", "done", "no request due")]  # the job it deferred for the next request
    with psycopg.connect(world.dsn) as c:
        assert c.execute("SELECT state, worker IS NOT NULL FROM residency.requests WHERE id = %s", (r.id,)).fetchone() == ("done", True)


def test_a_redelivered_request_job_does_not_start_a_second_move(cp):
    """Why the request claim stays inside the job: the job engine delivers a job at least once (a
    stalled-job recovery re-runs the job of a worker that is slow, not dead). A move_requests job
    run while another worker holds the request's live lease finds nothing due -- the request's own
    lease, not the job engine, keeps one move per request."""
    from residency.ops.worker import Worker, WorkerConfig

    world, fm, r = _approved_request(cp)
    slow = Worker(world.cat, world.conns, worker_id="slow-but-alive", mover_=fm, config=WorkerConfig(lease_seconds=300))
    try:
        claimed = slow.claim()  # the first delivery: its worker is still moving the workspace
        assert claimed is not None and claimed[0].id == r.id
        assert jobs.defer(world.cat, world.conns, "move_requests") > 0  # the redelivery
        outcomes: list = []
        jobs.run_worker(world.cat, world.conns, once=True, schedule=jobs.Schedule(**OFF), signals=False,
                        on_outcome=outcomes.append, extra={"mover": fm})
        assert [(o.job, o.detail) for o in outcomes] == [("move_requests", "no request due")]
        with psycopg.connect(world.dsn) as c:
            assert c.execute("SELECT count(*) FROM residency.moves WHERE workspace_id = 'ws-1'").fetchone()[0] == 0
            assert c.execute("SELECT worker, attempts FROM residency.requests WHERE id = %s", (r.id,)).fetchone() == ("slow-but-alive", 1)
    finally:
        slow.close()


def test_jobs_of_engines_not_installed_say_so_and_wired_ones_run(cp, monkeypatch):
    env = cp
    _CALLS.clear()
    monkeypatch.setitem(jobs.HOOKS, "backups_due", ("residency.no_such_engine", "run_due_backups"))
    monkeypatch.setitem(jobs.HOOKS, "backups_expire", (__name__, "_fake_expire"))
    for job in ("backups_due", "backups_expire"):
        assert jobs.defer(env.catalogue, env.connections, job) > 0
    outcomes: list = []
    _run_once(env, outcomes)
    got = {o.job: (o.state, o.detail) for o in outcomes}
    assert got["backups_due"] == ("skipped", "not wired: residency.no_such_engine.run_due_backups is not installed")
    assert got["backups_expire"] == ("done", "expired 0 backups")
    assert len(_CALLS) == 1 and _CALLS[0][0] is env.catalogue


_CALLS: list = []


class _Expired:
    def summary(self) -> str:
        return "expired 0 backups"


def _fake_expire(cat, conns, now):  # the shape of residency.backups.expire_backups
    _CALLS.append((cat, conns, now))
    return _Expired()


def test_old_succeeded_jobs_are_pruned(cp):
    env = cp
    assert jobs.defer(env.catalogue, env.connections, "audit_digest") > 0
    _run_once(env, [])
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        q = sql.SQL("UPDATE {}.procrastinate_events SET at = now() - interval '8 days'").format(sql.Identifier(jobs.JOBS_SCHEMA))
        c.execute(q)
    assert jobs.defer(env.catalogue, env.connections, "prune_jobs") > 0
    outcomes: list = []
    _run_once(env, outcomes)
    assert [(o.job, o.state) for o in outcomes] == [("prune_jobs", "done")]
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        left = c.execute(sql.SQL("SELECT task_name FROM {}.procrastinate_jobs ORDER BY id").format(sql.Identifier(jobs.JOBS_SCHEMA))).fetchall()
    assert left == [("prune_jobs",)]


def test_the_worker_refuses_without_the_job_schema(env):
    from residency.errors import OperationError

    _drop_job_schema(env)
    with pytest.raises(OperationError, match="controlplane init"):
        jobs.run_worker(env.catalogue, env.connections, once=True, signals=False)


def test_the_worker_command_prints_each_outcome_and_stops_on_sigterm(cp, tmp_path):
    """`residency worker`: `--defer` queues a job; the worker (a real process) runs it, prints the
    outcome as it happens, and a SIGTERM ends it cleanly."""
    from move_support import connections_env

    env = cp
    penv = {**os.environ, **connections_env(env), "RESIDENCY_ACTOR": "worker-cli"}
    for name in jobs.Schedule.__dataclass_fields__:  # only what is deferred by hand runs
        penv[f"RESIDENCY_JOBS_{name.upper()}"] = "off"
    base = [sys.executable, "-c", "import cli; cli.main()", "--regions", str(REGIONS_YAML), "worker"]
    d = subprocess.run(base + ["--defer", "retention_sweep", "--json"], env=penv, cwd=HERE.parent, capture_output=True, text=True, timeout=120)
    assert d.returncode == 0, d.stderr
    assert json.loads(d.stdout)["deferred"]["retention_sweep"] > 0
    bad = subprocess.run(base + ["--defer", "nope"], env=penv, cwd=HERE.parent, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "unknown job 'nope'" in bad.stderr
    out = open(tmp_path / "worker.out", "w")
    p = subprocess.Popen(base + ["--json"], env=penv, cwd=HERE.parent, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        _wait(lambda: "retention_sweep" in (tmp_path / "worker.out").read_text(), what="the worker's outcome line")
    finally:
        p.send_signal(signal.SIGTERM)
        code = p.wait(timeout=30)
    text = (tmp_path / "worker.out").read_text()
    assert "Traceback" not in text, text
    (line,) = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    assert line["job"] == "retention_sweep" and line["state"] == "done" and line["detail"].startswith("0 rows deleted")
    assert code == 0
