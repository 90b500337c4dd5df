"""Online moves: logical replication with row filters (migrate/online.py, migrate/replication.py).

A writer inserts, updates and deletes the moving workspace's rows throughout; after cut-over the
target equals the source's final state, checksum for checksum. kill -9 during catch-up, then
resume; rollback during catch-up; TRUNCATE and schema changes during a move; plan preconditions
with the statement that fixes each. No test leaves a publication, subscription or slot behind.
"""

from __future__ import annotations

import signal

import psycopg
import pytest

from residency.migrate import move_report, move_status, plan_move, resume_move, rollback_move, start_move, verify_workspace
from residency.migrate.plan import render
from residency.migrate.replication import leftovers
from move_support import counts, home, objects, run_mover
from bench.online_fence import Writer


@pytest.fixture
def world(env):
    s = env.seed(workspaces=4, rows=12000, seed=21)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    return env, ws


def _slots(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        return [r[0] for r in c.execute("SELECT slot_name FROM pg_replication_slots WHERE database = current_database()")]


def _nothing_left(env):
    assert leftovers(env.connections) == []
    assert _slots(env.dsn("us")) == []
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_publication").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'residency_online'").fetchone()[0] == 0
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_subscription").fetchone()[0] == 0


def _the_move(env):
    return move_status(env.connections, None)[0]


def test_online_move_under_a_writer_equals_the_source(world):
    env, ws = world
    objs = objects(env, "us", ws)
    w = Writer(env.dsn("us"), ws, rate=300)
    w.start()
    events = []
    try:
        rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="online", progress=events.append)
    finally:
        stats = w.stop()
    assert rec.state == "cut_over" and rec.strategy == "online"
    assert stats["ok"] > 20 and stats["other_errors"] == 0, stats
    final = counts(env.dsn("us"), ws)
    assert counts(env.dsn("eu"), ws) == final
    res = verify_workspace(env.catalogue, env.connections, ws, "us", "eu")
    assert res.ok, res.problems()
    assert objects(env, "eu", ws) == objs
    assert home(env, ws)[:2] == ("eu", "active")
    rep = move_report(env.connections, rec.id)
    assert rep["verified"] and rep["fence"]["seconds"] is not None
    online = rec.report["online"]
    assert online["tables"]["messages"] == "replication (row filter)"
    assert online["tables"]["attachments"] == "snapshot copy under the fence"
    assert online["fenced_lsn"] and online["caught_up_lsn"]
    # the writer's changes during replication were carried by it, not by a copy under the fence
    assert rec.checkpoints["copy"]["tables"]["messages"]["via"] == "replication"
    _nothing_left(env)


@pytest.mark.parametrize("point", ["online_catching_up", "fence_installed", "online_caught_up", "online_cut_over"])
def test_kill9_during_catchup_then_resume(world, point):
    env, ws = world
    w = Writer(env.dsn("us"), ws, rate=200)
    w.start()
    try:
        p = run_mover(env, "move", "start", str(ws), "--to", "eu", "--yes", "--strategy", "online", kill_at=point)
        assert p.returncode == -signal.SIGKILL, p.stderr
        rec = _the_move(env)
        assert rec.strategy == "online"
        left = leftovers(env.connections)
        assert {x.kind for x in left} >= {"publication", "subscription", "slot"}, left
        st = run_mover(env, "move", "status")
        assert "replication leftovers" in st.stdout and f"residency_move_{rec.id}" in st.stdout
        rec = resume_move(env.catalogue, env.connections, rec.id)
    finally:
        w.stop()
    assert rec.state == "cut_over"
    assert counts(env.dsn("eu"), ws) == counts(env.dsn("us"), ws)
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok
    _nothing_left(env)


def test_rollback_during_catchup_leaves_nothing(world):
    env, ws = world
    before = counts(env.dsn("us"), ws)
    p = run_mover(env, "move", "start", str(ws), "--to", "eu", "--yes", "--strategy", "online", kill_at="online_catching_up")
    assert p.returncode == -signal.SIGKILL, p.stderr
    rec = _the_move(env)
    assert _slots(env.dsn("us")) == [f"residency_move_{rec.id}"]
    rec = rollback_move(env.catalogue, env.connections, rec.id)
    assert rec.state == "rolled_back"
    _nothing_left(env)
    assert sum(counts(env.dsn("eu"), ws).values()) == 0
    assert counts(env.dsn("us"), ws) == before
    assert home(env, ws)[:2] == ("us", "active")


def _on_replicating(action):
    done = []

    def progress(e):
        if not done and e.phase == "state" and e.message.startswith("replicating:"):
            done.append(True)
            action()

    return progress


def test_truncate_during_a_move_is_detected_and_resumable(world):
    from residency.errors import OperationError

    env, ws = world

    def truncate():
        with psycopg.connect(env.dsn("us"), autocommit=True) as c:
            c.execute("TRUNCATE reactions")

    with pytest.raises(OperationError) as exc:
        start_move(env.catalogue, env.connections, ws, "eu", strategy="online", progress=_on_replicating(truncate))
    assert "TRUNCATE reactions" in str(exc.value)
    rec = _the_move(env)
    assert rec.state == "failed" and rec.resume_from == "planned" and "TRUNCATE is not replicated" in rec.error
    _nothing_left(env)  # replication removed on failure
    rec = resume_move(env.catalogue, env.connections, rec.id)
    assert rec.state == "cut_over"
    assert counts(env.dsn("eu"), ws) == counts(env.dsn("us"), ws)
    assert counts(env.dsn("eu"), ws)["reactions"] == 0
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok
    _nothing_left(env)


def test_schema_change_during_a_move_stops_it(world):
    from residency.errors import OperationError

    env, ws = world

    def alter():
        with psycopg.connect(env.dsn("us"), autocommit=True) as c:
            c.execute("ALTER TABLE channels ADD COLUMN archived boolean")

    with pytest.raises(OperationError) as exc:
        start_move(env.catalogue, env.connections, ws, "eu", strategy="online", progress=_on_replicating(alter))
    assert "schema of the moving tables changed in the source" in str(exc.value) or "apply" in str(exc.value)
    rec = _the_move(env)
    assert rec.state == "failed"
    _nothing_left(env)
    rec = rollback_move(env.catalogue, env.connections, rec.id)
    assert rec.state == "rolled_back" and sum(counts(env.dsn("eu"), ws).values()) == 0


def test_plan_preconditions_explain_the_fix(world, monkeypatch):
    env, ws = world
    ok = plan_move(env.catalogue, env.connections, ws, "eu", "online")
    assert ok.ok and ok.strategy == "online", ok.refusals
    assert {p["check"] for p in ok.preconditions} >= {
        "source server version", "target server version", "source wal_level", "source REPLICATION privilege",
        "target subscription privilege", "replica identity of messages", "connectivity from target to source"}
    paths = {t.table: t.path for t in ok.tables}
    assert paths["messages"].startswith("replication, row filter workspace_id")
    assert paths["reactions"].startswith("snapshot copy under the fence")
    assert "strategy: online" in render(ok)

    # size decides by default
    auto = plan_move(env.catalogue, env.connections, ws, "eu", "auto")
    assert auto.strategy == "snapshot" and "chosen by size" in auto.strategy_reason
    monkeypatch.setattr("residency.migrate.online.ONLINE_THRESHOLD_BYTES", 1)
    auto = plan_move(env.catalogue, env.connections, ws, "eu", "auto")
    assert auto.strategy == "online" and "chosen by size" in auto.strategy_reason

    # replica identity without the key column, and an unreachable source (as seen by the target)
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        c.execute("ALTER TABLE channels REPLICA IDENTITY DEFAULT")
    monkeypatch.setenv("RESIDENCY_REPLICATION_DSN_US", "postgresql://residency@127.0.0.1:1/nowhere")
    bad = plan_move(env.catalogue, env.connections, ws, "eu", "online")
    assert not bad.ok
    (ri,) = [r for r in bad.refusals if "replica identity of channels" in r]
    assert "lacks workspace_id" in ri
    assert 'fix: CREATE UNIQUE INDEX CONCURRENTLY "channels_workspace_id_replident" ON "public"."channels" ("workspace_id", "id");' \
        ' ALTER TABLE "public"."channels" REPLICA IDENTITY USING INDEX "channels_workspace_id_replident";' in ri
    (conn,) = [r for r in bad.refusals if "connectivity from target to source" in r]
    assert "cannot open a replication connection" in conn and "RESIDENCY_REPLICATION_DSN_" in conn
    # auto falls back to snapshot and says why
    auto = plan_move(env.catalogue, env.connections, ws, "eu", "auto")
    assert auto.ok and auto.strategy == "snapshot" and "falling back to snapshot" in auto.strategy_reason
    assert any("replica identity of channels" in n for n in auto.notes)
    # the CLI: --strategy online refuses with the fix, exit 1
    p = run_mover(env, "move", "plan", str(ws), "--to", "eu", "--strategy", "online", extra_env={"RESIDENCY_REPLICATION_DSN_US": "postgresql://residency@127.0.0.1:1/x"})
    assert p.returncode == 1 and "REPLICA IDENTITY USING INDEX" in p.stdout
    _nothing_left(env)
