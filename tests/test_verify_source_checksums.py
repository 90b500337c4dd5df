"""Snapshot moves compute the source's counts and checksums during the copy (the source is fenced,
so its rows cannot change); verify uses them only while that very fence is still in place, and
computes the target side in full every time: a corrupted target row is still caught and named."""

from __future__ import annotations

import psycopg
import pytest

from residency.migrate import fence, move_report, resume_move, start_move, verify_workspace
from residency.migrate.context import make_context
from move_support import counts
from residency.errors import OperationError


@pytest.fixture
def world(env):
    s = env.seed(workspaces=3, rows=12000, seed=41)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    return env, ws, counts(env.dsn("us"), ws)


def _verify_report(env, move_id):
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        return c.execute("SELECT report->'verify' FROM residency.moves WHERE id = %s", (move_id,)).fetchone()[0]


def test_source_checksums_from_the_copy_and_a_target_corruption_named(world, monkeypatch):
    # the target is changed after the copy: only a verify that reads it again sees that (by
    # default verify compares the sums each chunk recorded as it landed)
    monkeypatch.setenv("RESIDENCY_VERIFY_TARGET", "recompute")
    env, ws, before = world
    rec = start_move(env.catalogue, env.connections, ws, "eu", stop_after="copied")
    stored = rec.checkpoints["source_checksums"]
    assert stored["fence_token"] == rec.checkpoints["fence_token"]
    assert stored["tables"]["messages"][0] == before["messages"]
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        mid = c.execute("SELECT id FROM messages WHERE workspace_id = %s ORDER BY id OFFSET 333 LIMIT 1", (ws,)).fetchone()[0]
        c.execute("UPDATE messages SET body = body || ' (tampered)' WHERE id = %s", (mid,))

    with pytest.raises(OperationError, match=str(mid)):
        resume_move(env.catalogue, env.connections, rec.id)
    v = _verify_report(env, rec.id)
    assert v["source_checksums"].startswith("computed during the copy")
    assert {"source_fence_check", "target_checksums"} <= set(v["timings"]) and not any(k.startswith("source_checksums") for k in v["timings"])
    bad = {t["table"]: t for t in v["tables"] if not t["ok"]}
    assert set(bad) == {"messages"}
    assert bad["messages"]["differences"] == [{"key": [mid], "kind": "differs"}]
    assert bad["messages"]["source_checksum"] != bad["messages"]["target_checksum"]

    # resumed: copied again (the source's checksums still hold: same fence), verified, cut over
    rec = resume_move(env.catalogue, env.connections, rec.id)
    assert rec.state == "cut_over"
    assert counts(env.dsn("eu"), ws) == before
    rep = move_report(env.connections, rec.id)
    assert rep["verified"] and rep["verify_timings"]["target_checksums"] >= 0
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok


def test_source_checksums_not_used_once_the_fence_was_lifted(world):
    """The fence lifted (a source row changed meanwhile) and installed again with the same token:
    the recorded checksums no longer prove anything, verify computes the source and catches it."""
    env, ws, _ = world
    rec = start_move(env.catalogue, env.connections, ws, "eu", stop_after="copied")
    assert rec.checkpoints.get("source_checksums")
    b = make_context(env.catalogue, env.connections, ws, "us", "eu").builder
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        assert fence.lift(c, b, str(ws), rec.id)
        mid = c.execute("SELECT id FROM messages WHERE workspace_id = %s ORDER BY id OFFSET 55 LIMIT 1", (ws,)).fetchone()[0]
        c.execute("UPDATE messages SET body = body || ' (changed unfenced)' WHERE id = %s", (mid,))
        fence.install(c, b, str(ws), rec.id, rec.checkpoints["fence_token"])

    with pytest.raises(OperationError, match=str(mid)):
        resume_move(env.catalogue, env.connections, rec.id)
    v = _verify_report(env, rec.id)
    assert v["source_checksums"].startswith("computed in verify")
    assert "no longer in place" in v["source_checksums"]
    bad = {t["table"]: t for t in v["tables"] if not t["ok"]}
    assert bad["messages"]["differences"] == [{"key": [mid], "kind": "differs"}]
