"""The worker with the real mover (migrate/) on the test sandbox: a request end to end, and a
worker process that dies mid-move (SIGKILL at the mover's "rows_copied" fault point, mid-copy) taken over by
another worker that resumes the move."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import psycopg
import yaml

from residency import playbooks
from request_helpers import ALICE, BOB, REPO, control_plane, wait_for
from residency import audit, directory, moves
from residency.ops import requests as rq
from residency.ops.worker import Worker, WorkerConfig, run_workers


def _window() -> str:
    return (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat(timespec="seconds") + "/1h"


def _request(env, cp, ws, target="eu"):
    with cp.connect() as c:
        r = rq.create(c, env.catalogue, env.connections, str(ws), target, _window(), "sales@example.com", "GDPR", actor=ALICE)
        assert r.state == "pending", r.state_reason
        # the request asked for no strategy: the plan chose one by size and the request records it
        assert r.strategy == "snapshot" and r.estimate["strategy"] == "snapshot"
        return rq.approve(c, env.catalogue, r.id, actor=BOB)


def _rows(dsn: str, ws: int) -> int:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT count(*) FROM messages WHERE workspace_id = %s", (ws,)).fetchone()[0]


def test_a_request_runs_a_real_move_and_its_playbooks_render(env):
    cp = control_plane(env)
    seed = env.seed(workspaces=3, rows=200, seed=7)
    ws = seed.workspaces["us"][0]
    req = _request(env, cp, ws)
    assert req.estimate["rows"] > 0 and req.estimate["tables"]
    (out,) = run_workers(env.catalogue, env.connections, concurrency=2, once=True, config=WorkerConfig(lease_seconds=20))
    assert out.state == "done", out.reason
    with cp.connect() as c:
        r = rq.get(c, req.id)
        m = moves.get(c, r.move_id)
        assert r.state == "done" and m.state == "cut_over" and directory.require(c, ws).region == "eu"
        # a playbook can start from either record: the move leads to its request and back
        assert [x.id for x in rq.move_and_request(c, move_id=m.id)] == [m.id, r.id]
        assert [x.id for x in rq.move_and_request(c, request_id=r.id)] == [m.id, r.id]
        events = [n["event"] for n in rq.notices(c, r.id)]
        assert events[:3] == ["created", "approved", "started"] and events[-1] == "done" and "move.cut_over" in events
        assert audit.verify(c).ok
    assert _rows(env.dsn("eu"), ws) == seed.rows[ws]["messages"]
    done = playbooks.render("move-completed", cat=env.catalogue, move=m, request=r)
    assert "messages" in done and f"{seed.rows[ws]['messages']:,}" in done
    wm = playbooks.render("workspace-move", cat=env.catalogue, move=m, request=r, format="html")
    assert f"residency move rollback {m.id}" in wm


def test_a_worker_process_killed_mid_move_is_resumed_by_another(env, tmp_path):
    cp = control_plane(env)
    seed = env.seed(workspaces=2, rows=200, seed=11)
    ws = seed.workspaces["us"][0]
    req = _request(env, cp, ws, target="au")
    conf = tmp_path / "connections.yaml"
    conf.write_text(yaml.safe_dump({
        "control": {"dsn": env.control_dsn},
        "regions": {r: {"dsn": ep.dsn, "s3_endpoint": ep.s3_endpoint, "buckets": dict(ep.buckets)} for r, ep in env.connections.regions.items()},
    }))
    penv = {**os.environ, "RESIDENCY_CONNECTIONS": str(conf), "RESIDENCY_MOVE_KILL_AT": "rows_copied", "RESIDENCY_ACTOR": "worker-a"}
    for k in [k for k in penv if k.endswith("_DSN") and k.startswith("RESIDENCY_")]:
        penv.pop(k)
    cli = [sys.executable, "-c", "import cli; cli.main()", "--regions", str(REPO / "regions.yaml"), "worker", "--once", "--lease", "2"]
    proc = subprocess.run(cli, env=penv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr  # it SIGKILLed itself in the middle of the move
    with cp.connect() as c:
        r = rq.get(c, req.id)
        m = moves.open_move_for(c, ws)
        assert r.state == "running" and m is not None and m.state == "fenced"  # killed mid-copy
        assert directory.require(c, ws).region == "us"
    time.sleep(2.2)  # the dead worker's request lease runs out
    heir = Worker(env.catalogue, env.connections, worker_id="heir", config=WorkerConfig(lease_seconds=20))
    out = wait_for(heir.run_one, timeout=20, interval=0.3)
    assert (out.request_id, out.state, out.resumed) == (req.id, "done", True), out.reason
    with cp.connect() as c:
        r = rq.get(c, req.id)
        assert (r.state, r.worker, r.attempts, r.move_id) == ("done", "heir", 2, m.id)
        assert [x.id for x in moves.list_moves(c, workspace_id=ws)] == [m.id]  # resumed, not started again
        assert moves.get(c, m.id).state == "cut_over" and directory.require(c, ws).region == "au"
        assert "resumed" in [n["event"] for n in rq.notices(c, r.id)]
    assert _rows(env.dsn("au"), ws) == seed.rows[ws]["messages"]
