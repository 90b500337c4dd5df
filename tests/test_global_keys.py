"""Shared rows found as the chunks land (migrate/globalkeys.py): with replica, the global users the
workspace's rows point at are copied by the values its landed chunks gathered, after them; the
target then holds exactly the users it needs, no other. Anything else (too many values, a
self-referencing global table, a resumed copy) takes the workspace's predicate, with the same
result."""

from __future__ import annotations

import psycopg
import pytest

from residency.errors import OperationError
from residency.migrate import globalkeys, move_report, resume_move, rollback_move, start_move, verify_workspace
from residency.migrate.chunks import CopyOptions
from residency.migrate.context import make_context
from residency.migrate.verify import NEEDED_BY_KEYS, NEEDED_BY_PREDICATE
from move_support import counts, needed_users

LANDED, PREDICATE = "as the chunks landed", "with the workspace's predicate"

def _users(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        return {r[0] for r in c.execute("SELECT id FROM users")}


def _needed(env, ws):
    return needed_users(env.dsn("us"), ws)


def _move(env, ws, conns=None):
    before_rows, before_users, needed = counts(env.dsn("us"), ws), _users(env.dsn("eu")), _needed(env, ws)
    assert needed - before_users  # the move has users to bring
    rec = start_move(env.catalogue, conns or env.connections, ws, "eu", strategy="snapshot", copy_options=CopyOptions(jobs=2, chunk_rows=300))
    assert rec.state == "cut_over"
    assert counts(env.dsn("eu"), ws) == before_rows
    assert _users(env.dsn("eu")) == before_users | needed  # every user it needs, and no other tenant's
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok
    return rec.report["copy"]["globals"]["users"], needed, before_users


def test_global_rows_go_by_the_values_the_chunks_landed_with(env):
    s = env.seed(workspaces=4, rows=3000, seed=31)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    users, needed, before = _move(env, ws)
    assert users["found"] == LANDED
    assert users["referenced"] == len(needed) and users["inserted"] == len(needed - before)


def test_too_many_values_fall_back_to_the_workspace_predicate(env, monkeypatch):
    s = env.seed(workspaces=4, rows=3000, seed=32)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    monkeypatch.setattr(globalkeys, "MAX_KEYS", 3)  # memory stays bounded: past it, the full query
    users, needed, _ = _move(env, ws)
    assert users["found"] == PREDICATE and users["referenced"] == len(needed)


def test_a_self_referencing_global_table_is_found_with_the_workspace_predicate(env):
    """A user invited by a user: the inviter is needed too, which no landed row points at."""
    s = env.seed(workspaces=4, rows=3000, seed=33)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    for r in ("us", "eu"):
        with psycopg.connect(env.dsn(r), autocommit=True) as c:
            c.execute("ALTER TABLE users ADD COLUMN invited_by bigint REFERENCES users (id)")
    needed = _needed(env, ws)
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        # a user no workspace row points at (global ids: the same in every region), inviting one it does
        outsider = c.execute("INSERT INTO users (id, email, display_name) VALUES ((SELECT max(id) + 1000 FROM users), 'inviter@example.com', 'Inviter')"
                             " RETURNING id").fetchone()[0]
        c.execute("UPDATE users SET invited_by = %s WHERE id = %s", (outsider, min(needed)))
    ctx = make_context(env.catalogue, env.connections, ws, "us", "eu")
    assert "users" not in globalkeys.direct_refs(ctx.graph)
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="snapshot", copy_options=CopyOptions(jobs=2, chunk_rows=300))
    assert rec.state == "cut_over"
    assert rec.report["copy"]["globals"]["users"]["found"] == PREDICATE
    assert outsider in _users(env.dsn("eu"))  # the inviter came along
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok


def test_a_reaction_pointing_at_a_user_the_target_lacks_fails_verify(env):
    """reactions reach their workspace through messages or conversations (polymorphic): verify
    finds the target's reactions whose user is missing first, then asks whether they are the
    workspace's, and names them."""
    s = env.seed(workspaces=4, rows=3000, seed=34)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="snapshot")
    assert rec.state == "cut_over"
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        (user,) = c.execute("SELECT r.user_id FROM reactions r JOIN messages m ON r.subject_type = 'message' AND m.id = r.subject_id"
                            " WHERE m.workspace_id = %s LIMIT 1", (ws,)).fetchone()
        c.execute("SET session_replication_role = replica")  # past the foreign keys, as a broken copy would be
        c.execute("DELETE FROM users WHERE id = %s", (user,))
    result = verify_workspace(env.catalogue, env.connections, ws, "us", "eu")
    assert not result.ok
    assert any("dangling reference reactions.user_id → users" in p and str(user) in p for p in result.problems()), result.problems()


def test_verify_reads_the_shared_rows_once_for_presence_and_content(env):
    """A user the workspace needs, present in the target under its id but with other content, and
    one missing: verify names both, from one read of the needed users in the source."""
    s = env.seed(workspaces=4, rows=3000, seed=35)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="snapshot")
    assert rec.state == "cut_over"
    changed, gone = sorted(_needed(env, ws))[:2]
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        c.execute("UPDATE users SET display_name = 'someone else' WHERE id = %s", (changed,))
        c.execute("SET session_replication_role = replica")
        c.execute("DELETE FROM users WHERE id = %s", (gone,))
    result = verify_workspace(env.catalogue, env.connections, ws, "us", "eu")
    assert not result.ok
    (users,) = [t for t in result.tables if t.table == "users"]
    assert (users.source_rows, users.target_rows) == (len(_needed(env, ws)), len(_needed(env, ws)) - 1)
    problems = result.problems()
    assert any(f"shared row users id={changed} differs in eu" in p and "someone else" in p for p in problems), problems
    assert [c["key"] for c in result.references["collisions"]] == [f"id={changed}"]


def _users_check(rec):
    (users,) = [t for t in rec.report["verify"]["tables"] if t["table"] == "users"]
    return users


def test_a_snapshot_verify_reads_the_needed_users_by_the_values_the_copy_kept(env):
    """The copy keeps the values its landed rows point at, with the fence they were gathered
    under; the move's verify reads the needed users by them (no join through the workspace's
    rows) and finds exactly the needed set, independently written here."""
    s = env.seed(workspaces=4, rows=3000, seed=36)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    needed = _needed(env, ws)
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="snapshot", copy_options=CopyOptions(jobs=2, chunk_rows=300))
    assert rec.state == "cut_over"
    kept = rec.checkpoints["shared_keys"]
    assert [kept["fence_token"], kept["fenced_at"]] == [rec.checkpoints["source_checksums"]["fence_token"], rec.checkpoints["source_checksums"]["fenced_at"]]
    assert set(kept["tables"]["users"]["values"]) == needed and kept["tables"]["users"]["column"] == "id"
    users = _users_check(rec)
    assert users["verify_detail"] == NEEDED_BY_KEYS
    assert users["source_rows"] == users["target_rows"] == len(needed) and users["ok"]


def test_a_needed_user_changed_in_the_target_after_the_copy_fails_the_verify_read_by_kept_values(env):
    """The target's users are live (other workspaces use them): one the workspace needs, changed
    there between the copy and verify, is named by verify read by the kept values as it is by
    the predicate; a missing one too."""
    s = env.seed(workspaces=4, rows=3000, seed=37)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="snapshot", stop_after="copied")
    assert rec.state == "copied" and rec.checkpoints["shared_keys"]["tables"]["users"]["values"]
    changed, gone = sorted(_needed(env, ws))[:2]
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        c.execute("UPDATE users SET display_name = 'someone else' WHERE id = %s", (changed,))
        c.execute("SET session_replication_role = replica")
        c.execute("DELETE FROM users WHERE id = %s", (gone,))
    with pytest.raises(OperationError, match="verification failed"):
        resume_move(env.catalogue, env.connections, rec.id)
    report = move_report(env.connections, rec.id)
    assert [c["key"] for c in report["references"]["collisions"]] == [f"id={changed}"]
    assert any(f"shared row users id={changed} differs in eu" in p and "someone else" in p for p in report["references"]["problems"])
    (users,) = [t for t in move_report(env.connections, rec.id)["tables"] if t["table"] == "users"]
    assert users["verify_detail"] == NEEDED_BY_KEYS and users["target_rows"] == users["source_rows"] - 1 and not users["ok"]
    rollback_move(env.catalogue, env.connections, rec.id)


def test_a_verify_that_recomputes_finds_the_needed_users_with_the_predicate(env, monkeypatch):
    """RESIDENCY_VERIFY_TARGET=recompute distrusts what the copy recorded, the kept values too:
    the needed users are found with the workspace's predicate, with the same result."""
    s = env.seed(workspaces=4, rows=3000, seed=38)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    needed = _needed(env, ws)
    monkeypatch.setenv("RESIDENCY_VERIFY_TARGET", "recompute")
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="snapshot")
    assert rec.state == "cut_over"
    users = _users_check(rec)
    assert users["verify_detail"] == NEEDED_BY_PREDICATE and users["source_rows"] == len(needed)
