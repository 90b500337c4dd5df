"""Verification: per-table count + order-independent checksum in both databases; a corrupted
target row is caught and its key named (found by bisecting key ranges); never cut over unverified."""

from __future__ import annotations

import json

import psycopg

from residency.migrate import move_report, resume_move, start_move, verify_workspace
from move_support import counts, run_mover


def test_corrupted_target_rows_are_named_and_block_cutover(env, monkeypatch):
    # the target is changed after the copy: the move's verify sees it only when it reads the
    # target again (by default it compares the sums each chunk recorded as it landed)
    monkeypatch.setenv("RESIDENCY_VERIFY_TARGET", "recompute")
    s = env.seed(workspaces=3, rows=30000, seed=31)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    before = counts(env.dsn("us"), ws)
    assert before["messages"] > 1000  # big enough that narrowing has to bisect
    rec = start_move(env.catalogue, env.connections, ws, "eu", stop_after="copied")
    eu = env.dsn("eu")
    with psycopg.connect(eu, autocommit=True) as c:
        mid = c.execute("SELECT id FROM messages WHERE workspace_id = %s ORDER BY id OFFSET 777 LIMIT 1", (ws,)).fetchone()[0]
        c.execute("UPDATE messages SET body = body || ' (tampered)' WHERE id = %s", (mid,))
        gone = c.execute("SELECT p.id FROM attachment_previews p JOIN attachments a ON a.id = p.attachment_id"
                         " JOIN messages m ON m.id = a.message_id WHERE m.workspace_id = %s ORDER BY p.id LIMIT 1", (ws,)).fetchone()[0]
        c.execute("DELETE FROM attachment_previews WHERE id = %s", (gone,))

    res = verify_workspace(env.catalogue, env.connections, ws, "us", "eu")
    assert not res.ok
    bad = {t.table: t for t in res.tables if not t.ok}
    assert set(bad) == {"messages", "attachment_previews"}
    assert bad["messages"].differences == [{"key": [mid], "kind": "differs"}]
    assert bad["messages"].source_rows == bad["messages"].target_rows
    assert bad["attachment_previews"].differences == [{"key": [gone], "kind": "missing in target"}]
    assert any(f"{mid} (differs)" in p for p in res.problems())

    # the CLI says the same and exits 1
    p = run_mover(env, "verify", str(ws), "--between", "us", "eu", "--json")
    assert p.returncode == 1
    data = json.loads(p.stdout)
    assert not data["ok"]

    # the move itself refuses to cut over: verify fails, the move is failed and resumable
    from residency.errors import OperationError
    import pytest

    with pytest.raises(OperationError, match=str(mid)):
        resume_move(env.catalogue, env.connections, rec.id)
    rep = move_report(env.connections, rec.id)
    assert rep["state"] == "failed" and not rep["verified"]
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        assert c.execute("SELECT region FROM residency.directory WHERE workspace_id = %s", (str(ws),)).fetchone()[0] == "us"
    # resuming copies again (after removing the bad copy) and verifies again
    rec = resume_move(env.catalogue, env.connections, rec.id)
    assert rec.state == "cut_over"
    assert counts(eu, ws) == before
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok
