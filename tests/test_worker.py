"""The worker: exactly-once claiming, takeover of a dead worker's move, windows. Real PostgreSQL;
the mover is FakeMover (real move records, no data), so these run in seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from request_helpers import ALICE, BOB, FakeMover, cp, wait_for  # noqa: F401  (cp is a fixture)
from residency import audit, directory, moves
from residency.ops import requests as rq
from residency.ops.worker import Worker, WorkerConfig, run_workers

TESTS = Path(__file__).resolve().parent


def _due_window(minutes_ago: int = 1, duration: str = "1h") -> str:
    start = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    return f"{start.isoformat(timespec='seconds')}/{duration}"


def _approved(cp, fm, workspaces, target="eu", window=None):
    out = []
    with cp.connect() as c:
        for ws in workspaces:
            r = rq.create(c, cp.cat, cp.conns, ws, target, window or _due_window(), "sales@example.com", "test", actor=ALICE, planner=fm.plan)
            assert r.state == "pending", r.state_reason
            out.append(rq.approve(c, cp.cat, r.id, actor=BOB))
    return out


def test_two_workers_racing_for_ten_requests_run_each_exactly_once(cp):
    wss = [f"ws-{i}" for i in range(10)]
    cp.register(*[(ws, "us") for ws in wss])
    fm = FakeMover(cp.dsn, pause=0.02)
    reqs = _approved(cp, fm, wss)
    cfg = WorkerConfig(lease_seconds=10)
    results: dict[str, list] = {}
    go = threading.Barrier(2)

    def work(name: str) -> None:
        w = Worker(cp.cat, cp.conns, worker_id=name, mover_=fm, config=cfg)
        go.wait()
        results[name] = w.run(once=True)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ran = [o for outs in results.values() for o in outs]
    assert sorted(o.request_id for o in ran) == sorted(r.id for r in reqs)
    assert all(o.state == "done" for o in ran)
    assert sorted(fm.started) == sorted(wss)          # each move started once
    assert all(results[n] for n in ("w1", "w2")), "both workers should have taken part"
    with cp.connect() as c:
        done = rq.list_requests(c)
        assert {(r.state, r.attempts) for r in done} == {("done", 1)}
        assert {r.worker for r in done} == {"w1", "w2"}
        assert len(moves.list_moves(c)) == 10 and {m.state for m in moves.list_moves(c)} == {"cut_over"}
        assert {e.region for e in directory.list_entries(c)} == {"eu"}
        actions = [e.action for e in audit.entries(c) if e.subject.startswith("request:")]
        assert actions.count("request.claim") == 10 and actions.count("request.done") == 10
        assert audit.verify(c).ok
        events = [n["event"] for n in rq.notices(c, reqs[0].id)]
        assert events[:3] == ["created", "approved", "started"] and events[-1] == "done"
        assert "move.cut_over" in events


def test_a_worker_killed_mid_move_is_taken_over_and_its_move_resumed(cp):
    cp.register(("ws-doomed", "us"))
    fm = FakeMover(cp.dsn, lease=1.0)
    (req,) = _approved(cp, fm, ["ws-doomed"])
    script = textwrap.dedent(f"""
        from types import MappingProxyType
        from request_helpers import FakeMover
        from residency import catalogue
        from residency.connections import Connections
        from residency.ops.worker import Worker, WorkerConfig
        dsn = {cp.dsn!r}
        cat = catalogue.load({str(cp.cat.path)!r})
        w = Worker(cat, Connections(dsn, MappingProxyType({{}})), worker_id="doomed",
                   mover_=FakeMover(dsn, hang_after="copied", lease=1.0), config=WorkerConfig(lease_seconds=1.0))
        w.run_one()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, env={**os.environ, "PYTHONPATH": str(TESTS)})
    try:
        def copied():
            with cp.connect() as c:
                m = moves.open_move_for(c, "ws-doomed")
                return m if m and m.state == "copied" else None
        wait_for(copied, timeout=30)
        os.kill(proc.pid, signal.SIGKILL)   # dies mid-move: no cleanup, no release
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    heir = Worker(cp.cat, cp.conns, worker_id="heir", mover_=fm, config=WorkerConfig(lease_seconds=5))
    time.sleep(1.2)                          # the dead worker's lease expires
    out = wait_for(heir.run_one, timeout=10, interval=0.2)
    assert (out.request_id, out.state, out.resumed) == (req.id, "done", True)
    assert fm.started == [] and len(fm.resumed) == 1   # resumed, never started twice
    with cp.connect() as c:
        r = rq.get(c, req.id)
        assert (r.state, r.worker, r.attempts) == ("done", "heir", 2)
        (m,) = moves.list_moves(c, workspace_id="ws-doomed")
        assert m.id == r.move_id and m.state == "cut_over"
        assert directory.require(c, "ws-doomed").region == "eu"
        take = [e for e in audit.entries(c, subject=r.subject) if e.action == "request.takeover"]
        assert take and take[0].details["previous_worker"] == "doomed"
        assert "resumed" in [n["event"] for n in rq.notices(c, req.id)]


def test_a_window_that_closes_before_the_estimated_end_is_skipped_and_reported(cp):
    cp.register(("ws-big", "us"), ("ws-late", "us"))
    big = {"rows": 10**7, "bytes": 10 * 1024**3, "objects": 0, "object_bytes": 0, "tables": {"messages": {"rows": 10**7, "bytes": 10 * 1024**3}}}
    fm = FakeMover(cp.dsn, sizes=big)
    # the window opened 55 minutes ago and lasts an hour: 5 minutes left; 10 GB at 20 MB/s takes ~9 minutes
    (req,) = _approved(cp, fm, ["ws-big"], window=_due_window(55, "1h"))
    w = Worker(cp.cat, cp.conns, worker_id="w", mover_=fm, config=WorkerConfig(throughput=rq.Throughput(20 * 1024**2, 30)))
    out = w.run_one()
    assert out.state == "skipped" and "estimated 9m" in out.reason and "left" in out.reason
    assert fm.started == []
    with cp.connect() as c:
        r = rq.get(c, req.id)
        assert r.state == "skipped" and r.state_reason == out.reason and r.result["would_end"]
        assert moves.list_moves(c) == []
        skipped = [n for n in rq.notices(c, req.id) if n["event"] == "skipped"]
        assert skipped and "not started" in skipped[0]["body"]
        assert [e.action for e in audit.entries(c, subject=r.subject)][-1] == "request.skip"
    # a faster link (configurable throughput) would have fitted
    cp.register(("ws-big2", "us"))
    (req2,) = _approved(cp, fm, ["ws-big2"], window=_due_window(55, "1h"))
    fast = Worker(cp.cat, cp.conns, worker_id="fast", mover_=fm, config=WorkerConfig(throughput=rq.Throughput(200 * 1024**2, 30)))
    assert fast.run_one().state == "done"


def test_a_window_that_closed_before_pickup_is_skipped(cp):
    cp.register(("ws-1", "us"))
    fm = FakeMover(cp.dsn)
    (req,) = _approved(cp, fm, ["ws-1"], window=_due_window(10, "11m"))
    with cp.connect() as c:  # the window closes before any worker comes round
        c.execute("UPDATE residency.requests SET window_end = now() - interval '1 minute' WHERE id = %s", (req.id,))
        c.commit()
    assert Worker(cp.cat, cp.conns, mover_=fm).run(once=True) == []
    with cp.connect() as c:
        r = rq.get(c, req.id)
        assert r.state == "skipped" and "closed before a worker picked the request up" in r.state_reason


def test_requests_not_yet_due_or_not_approved_are_left_alone(cp):
    cp.register(("ws-future", "us"), ("ws-pending", "us"))
    fm = FakeMover(cp.dsn)
    later = (datetime.now(timezone.utc) + timedelta(hours=3)).isoformat(timespec="minutes") + "/2h"
    _approved(cp, fm, ["ws-future"], window=later)
    with cp.connect() as c:
        rq.create(c, cp.cat, cp.conns, "ws-pending", "eu", _due_window(), "s@example.com", actor=ALICE, planner=fm.plan)
    assert run_workers(cp.cat, cp.conns, concurrency=2, once=True, mover_=fm) == []
    assert fm.started == []


def test_a_plan_refused_at_run_time_fails_the_request_with_why(cp):
    cp.register(("ws-1", "us"))
    fm = FakeMover(cp.dsn)
    (req,) = _approved(cp, fm, ["ws-1"])
    fm.refuse["ws-1"] = "primary key conflict in target: messages id 7"
    (out,) = run_workers(cp.cat, cp.conns, concurrency=3, once=True, mover_=fm)
    assert out.state == "failed" and out.reason == "plan: primary key conflict in target: messages id 7"
    with cp.connect() as c:
        assert rq.get(c, req.id).state == "failed" and moves.list_moves(c) == []


def test_a_running_worker_tells_each_outcome_as_it_happens(cp):
    """A daemon's outcomes are heard while it runs (the CLI prints each line then), not only
    when it stops: here the worker only stops because both outcomes were heard."""
    cp.register(("ws-told-1", "us"), ("ws-told-2", "us"))
    fm = FakeMover(cp.dsn)
    reqs = _approved(cp, fm, ["ws-told-1", "ws-told-2"])
    stop = threading.Event()
    heard: list[tuple[int, str]] = []

    def on_outcome(o) -> None:
        heard.append((o.request_id, o.state))
        if len(heard) == len(reqs):
            stop.set()

    guard = threading.Timer(60, stop.set)  # never hang the suite
    guard.start()
    try:
        outs = run_workers(cp.cat, cp.conns, once=False, mover_=fm, config=WorkerConfig(poll_seconds=30), stop=stop, on_outcome=on_outcome)
    finally:
        guard.cancel()
    assert sorted(heard) == sorted((r.id, "done") for r in reqs)
    assert [(o.request_id, o.state) for o in outs] == heard
