"""Identity from the database (issue 15): the sandbox's one login per role, real grants and
row-level security in the control plane. A denied action is one line naming the role it needs
(exit 1); approving your own request is refused by the database itself; the audit's who is the
authenticated role whatever $RESIDENCY_ACTOR says.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from residency.cli import main
from move_support import connections_env
from request_helpers import REPO, FakeMover, control_plane
from residency import audit, authz, directory
from residency.ops import requests as rq
from residency.audit import Actor
from residency.errors import OperationError

BASE = ["--regions", str(REPO / "regions.yaml")]


def _as(dsn: str, user: str) -> str:
    d = conninfo_to_dict(dsn)
    d["user"] = user
    return make_conninfo(**d)


def _window() -> str:
    return (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat(timespec="seconds") + "/2h"


@pytest.fixture
def world(env):
    cp = control_plane(env)
    cp.register(("ws-1", "us"), ("ws-2", "us"))
    return cp


def _state(cp, rid):
    with psycopg.connect(cp.dsn) as c:
        return c.execute("SELECT state, approved_by FROM residency.requests WHERE id = %s", (rid,)).fetchone()


def test_sandbox_has_one_login_per_role(world):
    for login, role in {"sandbox_requester": authz.REQUESTER, "sandbox_approver": authz.APPROVER,
                        "sandbox_operator": authz.OPERATOR, "sandbox_admin": authz.ADMIN}.items():
        with psycopg.connect(_as(world.dsn, login)) as c:
            ident = authz.identity(c)
            assert ident.role == login and role in ident.member_of and not ident.superuser


def test_requester_asks_approver_approves_and_who_is_the_role(world, monkeypatch):
    monkeypatch.setenv("RESIDENCY_ACTOR", "mallory")  # says who it likes; the role is what counts
    fm = FakeMover(world.dsn)
    with psycopg.connect(_as(world.dsn, "sandbox_requester")) as c:
        r = rq.create(c, world.cat, world.conns, "ws-1", "eu", _window(), "amy@example.com", planner=fm.plan)
        assert (r.state, r.created_by, r.created_for) == ("pending", "sandbox_requester", "mallory")
        with pytest.raises(authz.Denied, match="approving a move request needs role residency_approver"):
            rq.approve(c, world.cat, r.id)
    with psycopg.connect(_as(world.dsn, "sandbox_approver")) as c:
        with pytest.raises(authz.Denied, match="needs role residency_requester"):
            rq.create(c, world.cat, world.conns, "ws-2", "eu", _window(), "amy@example.com", planner=fm.plan)
        a = rq.approve(c, world.cat, r.id)
        assert (a.state, a.approved_by, a.approved_for) == ("approved", "sandbox_approver", "mallory")
    with psycopg.connect(world.dsn) as c:
        who = [(e.action, e.actor) for e in audit.entries(c, subject=r.subject)]
        assert who == [("request.create", "sandbox_requester"), ("request.approve", "sandbox_approver")]
        assert all(e.origin.endswith(" for mallory") for e in audit.entries(c, subject=r.subject))
        assert audit.verify(c).ok


def test_approving_your_own_request_is_refused_by_the_database(world, sandbox):
    both = f"t_both_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(sandbox.server_dsn("control"), autocommit=True) as c:
        c.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(both)))
        c.execute(sql.SQL("GRANT residency_requester, residency_approver TO {}").format(sql.Identifier(both)))
    try:
        fm = FakeMover(world.dsn)
        with psycopg.connect(_as(world.dsn, both)) as c:
            r = rq.create(c, world.cat, world.conns, "ws-1", "eu", _window(), "amy@example.com", planner=fm.plan)
            with pytest.raises(OperationError, match="someone else must approve it"):
                rq.approve(c, world.cat, r.id, actor=Actor("somebody-else", "x"))
            # around the library, straight at the table: row-level security refuses it
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="someone else must approve it|row-level security"):
                c.execute("UPDATE residency.requests SET state = 'approved', approved_by = session_user WHERE id = %s", (r.id,))
            c.rollback()
        with psycopg.connect(_as(world.dsn, "sandbox_admin")) as c:  # not even an admin approves its own
            r2 = rq.create(c, world.cat, world.conns, "ws-2", "eu", _window(), "amy@example.com", planner=fm.plan)
            for q in ("UPDATE residency.requests SET state = 'approved', approved_by = session_user WHERE id = %s",
                      "UPDATE residency.requests SET state = 'approved', approved_by = 'someone-else' WHERE id = %s"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="someone else must approve it"):
                    c.execute(q, (r2.id,))
                c.rollback()
        assert _state(world, r.id) == ("pending", None) and _state(world, r2.id) == ("pending", None)
    finally:
        with psycopg.connect(sandbox.server_dsn("control"), autocommit=True) as c:
            c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(both)))


def test_grants_keep_each_role_to_its_tables(world):
    with psycopg.connect(_as(world.dsn, "sandbox_requester"), autocommit=True) as c:
        for q in ("UPDATE residency.directory SET region = 'eu' WHERE workspace_id = 'ws-1'",
                  "INSERT INTO residency.moves (workspace_id, source, target, strategy, state, created_by)"
                  " VALUES ('ws-1', 'us', 'eu', 'snapshot', 'planned', 'x')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(q)
    with psycopg.connect(world.dsn) as c:
        assert directory.require(c, "ws-1").region == "us"


def _cli(env, monkeypatch, login, *args):
    for k, v in connections_env(env).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("RESIDENCY_CONTROL_DSN", _as(env.control_dsn, login))
    return CliRunner().invoke(main, BASE + list(args))


@pytest.mark.parametrize("login, args, needs", [
    ("sandbox_requester", ["move", "start", "1", "--to", "eu", "--yes"], "starting a move needs role residency_operator"),
    ("sandbox_approver", ["move", "rollback", "1"], "rolling back a move needs role residency_operator"),
    ("sandbox_requester", ["move", "cleanup", "1", "--grace", "0", "--yes"], "cleaning up a move needs role residency_operator"),
    ("sandbox_approver", ["worker", "--once"], "running the worker needs role residency_operator"),
    ("sandbox_operator", ["request", "approve", "1"], "approving a move request needs role residency_approver"),
    ("sandbox_operator", ["request", "create", "1", "--to", "eu", "--window", "now/2h", "--requested-by", "a@example.com"],
     "creating a move request needs role residency_requester"),
    ("sandbox_operator", ["controlplane", "roles"], "needs role residency_admin"),
])
def test_a_denied_action_is_one_line_naming_the_role(env, monkeypatch, login, args, needs):
    control_plane(env)
    r = _cli(env, monkeypatch, login, *args)
    assert r.exit_code == 1, (r.output, r.exception)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and needs in lines[0] and login in lines[0], r.stderr


def test_whoami_and_roles(env, monkeypatch):
    control_plane(env)
    r = _cli(env, monkeypatch, "sandbox_approver", "controlplane", "whoami")
    assert r.exit_code == 0 and r.stdout.strip() == "sandbox_approver: residency_approver"
    r = _cli(env, monkeypatch, "sandbox_admin", "controlplane", "roles")  # holds admin, but owns nothing
    assert r.exit_code == 1 and len(r.stderr.splitlines()) == 1 and "owner of the control-plane schema" in r.stderr
    su = conninfo_to_dict(env.control_dsn)["user"]
    r = _cli(env, monkeypatch, su, "controlplane", "roles", "--login", f"t_{uuid.uuid4().hex[:6]}=approver", "--json")
    assert r.exit_code == 0, r.output
    assert "residency_requester" in r.stdout and "residency_approver" in r.stdout


def test_an_operator_login_moves_a_workspace_and_the_audit_names_it(env):
    from dataclasses import replace

    from residency.migrate import cleanup_move, start_move

    seed = env.seed(workspaces=2, rows=200, seed=7)
    ws = seed.smallest_in("us")
    control_plane(env)
    ops = replace(env.connections, control_dsn=_as(env.control_dsn, "sandbox_operator"))
    rec = start_move(env.catalogue, ops, ws, "eu", actor=Actor("oncall@example.com", "test"))
    assert rec.state == "cut_over" and rec.created_by == "sandbox_operator"
    done = cleanup_move(env.catalogue, ops, rec.id, grace=timedelta(0), actor=Actor("oncall@example.com", "test"))
    assert done.state == "cleaned"
    with psycopg.connect(env.control_dsn) as c:
        entries = list(audit.entries(c, subject=f"move/{rec.id}"))
        assert len(entries) >= 5 and {e.actor for e in entries} == {"sandbox_operator"}
        assert all(e.origin.endswith(" for oncall@example.com") for e in entries)
        assert audit.verify(c).ok


def test_the_worker_runs_requests_as_an_operator_login(world):
    from dataclasses import replace

    from residency.ops.worker import Worker, WorkerConfig

    fm = FakeMover(world.dsn)
    with psycopg.connect(_as(world.dsn, "sandbox_requester")) as c:
        r = rq.create(c, world.cat, world.conns, "ws-1", "eu", _window(), "amy@example.com", planner=fm.plan)
    with psycopg.connect(_as(world.dsn, "sandbox_approver")) as c:
        rq.approve(c, world.cat, r.id)
    ops = replace(world.conns, control_dsn=_as(world.dsn, "sandbox_operator"))
    w = Worker(world.cat, ops, worker_id="w-ops", mover_=fm, config=WorkerConfig(lease_seconds=10))
    try:
        outs = w.run(once=True)
    finally:
        w.close()
    assert [(o.request_id, o.state) for o in outs] == [(r.id, "done")]
    with psycopg.connect(world.dsn) as c:
        assert {e.actor for e in audit.entries(c, subject=r.subject)} == {"sandbox_requester", "sandbox_approver", "sandbox_operator"}
