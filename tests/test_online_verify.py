"""Incremental verification of online moves (migrate/incremental.py): per key-range bucket
checksums on both sides before the fence, and under it only the buckets that may have changed.

These tests break the target on purpose at the moments that matter and check that the move does
not cut over, naming the key: a corruption made before the pre-fence checksum (its bucket differs
there), a corruption next to a source change made after C0 (the change makes the bucket dirty),
a parent row that moves into the workspace after C0 (its children's membership changes without a
change of their own). Plus the fallback to the full verification, and snapshot untouched.
"""

from __future__ import annotations

import psycopg
import pytest

from residency.migrate import incremental, move_report, resume_move, start_move, verify_workspace
from residency.migrate.context import make_context
from residency.migrate.replication import leftovers
from residency.migrate.verify import NEEDED_BY_KEYS
from move_support import counts, home, needed_users
from residency.errors import OperationError


@pytest.fixture
def world(env, monkeypatch):
    monkeypatch.setattr(incremental, "BUCKET_ROWS", 16)  # many buckets even in a small workspace
    s = env.seed(workspaces=4, rows=12000, seed=21)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    return env, ws


def _around_prepare(monkeypatch, before=None, after=None):
    real = incremental.prepare
    seen = []

    def wrapped(*a, **k):
        if before:
            before()
        p = real(*a, **k)
        seen.append(p)
        if after:
            after(p)
        return p

    monkeypatch.setattr(incremental, "prepare", wrapped)
    return seen


def _sql(dsn, q, params=()):
    with psycopg.connect(dsn, autocommit=True) as c:
        cur = c.execute(q, params)
        return cur.fetchall() if cur.description else None


def _first_messages(env, ws, n=2):
    return [r[0] for r in _sql(env.dsn("us"), "SELECT id FROM messages WHERE workspace_id = %s ORDER BY id LIMIT %s", (ws, n))]


def _table(rec_or_report, name):
    tables = rec_or_report["verify"]["tables"] if "verify" in rec_or_report else rec_or_report["tables"]
    (t,) = [t for t in tables if t["table"] == name]
    return t


def _the_move(env):
    from residency.migrate import move_status

    return move_status(env.connections, None)[0]


def _no_replication_left(env):
    assert [x for x in leftovers(env.connections) if x.kind != "trigger" or "online" in x.name] == []


def test_a_clean_move_verifies_incrementally(world):
    env, ws = world
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="online")
    assert rec.state == "cut_over"
    modes = {t["table"]: (t["verify_mode"], t["verify_detail"]) for t in rec.report["verify"]["tables"] if t["kind"] == "table"}
    assert modes["messages"][0] == "incremental" and "key-range buckets checked again" in modes["messages"][1]
    assert modes["attachments"][0] == "incremental"
    assert modes["memberships"] == ("full", "composite primary key")
    # the totals are exact: the same counts and checksums as a full verification of the final state
    full = verify_workspace(env.catalogue, env.connections, ws, "us", "eu", objects_too=False)
    by = {t.table: t for t in full.tables}
    for t in rec.report["verify"]["tables"]:
        assert (t["source_rows"], t["source_checksum"]) == (by[t["table"]].source_rows, by[t["table"]].source_checksum), t["table"]
    assert rec.report["online"]["verify_prepared"]["tables"]["messages"]["buckets"] > 10
    users = _table(rec.report, "users")
    assert users["kind"] == "global" and users["verify_mode"] == "incremental" and users["ok"]
    _no_replication_left(env)


# a table's rows in key order with whether each is the workspace's, written independently of the mover's SQL
MINE = {
    "messages": "SELECT id, workspace_id = %(ws)s FROM messages ORDER BY id",
    "attachments": "SELECT a.id, m.workspace_id = %(ws)s FROM attachments a JOIN messages m ON m.id = a.message_id ORDER BY a.id",
}

RUN = {  # some of the workspace's rows, consecutive in key order, made another workspace's
    "messages": "UPDATE messages SET workspace_id = %(other)s WHERE id IN"
                " (SELECT id FROM messages WHERE workspace_id = %(ws)s ORDER BY id OFFSET 100 LIMIT 300)",
    "attachments": "UPDATE attachments SET message_id = (SELECT min(id) FROM messages WHERE workspace_id = %(other)s) WHERE id IN"
                   " (SELECT a.id FROM attachments a JOIN messages m ON m.id = a.message_id WHERE m.workspace_id = %(ws)s"
                   " ORDER BY a.id OFFSET 20 LIMIT 100)",
}


def _expected_bounds(keys: list[tuple[int, bool]], every: int, gap: int) -> list[int]:
    """Every ``every``-th of the workspace's keys, and around each run of more than ``gap`` other
    rows between two of its keys a boundary at the run's first key and at its next key."""
    mine = [(pos, k) for pos, (k, m) in enumerate(keys) if m]
    out = set()
    for i, (pos, k) in enumerate(mine):
        if (i + 1) % every == 0 or (i > 0 and pos - mine[i - 1][0] > gap):
            out.add(k)
        if i + 1 < len(mine) and mine[i + 1][0] - pos > gap:
            out.add(keys[pos + 1][0])
    return sorted(out)


@pytest.mark.parametrize("table", sorted(MINE))
def test_bucket_bounds_cut_every_nth_key_and_around_other_workspaces_rows(world, table):
    """The bucket boundaries the pre-fence verification cuts (:meth:`BucketSql.bucket_bounds`),
    for a table holding the workspace's id and one reached through a join, in a table shared with
    other workspaces, where a run of their rows is put between the workspace's; and the
    workspace's rows are found by a join, not by a subplan per row of the table (one that does
    not fit ``work_mem`` is scanned again for every row: quadratic)."""
    env, ws = world
    (other,) = _sql(env.dsn("us"), "SELECT id FROM workspaces WHERE id <> %s LIMIT 1", (ws,))[0]
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:  # a long run of another tenant's rows inside ours
        c.execute(RUN[table], {"ws": ws, "other": other})
        keys = [(k, bool(m)) for k, m in c.execute(MINE[table], {"ws": ws})]
        b = make_context(env.catalogue, env.connections, ws, "us", "eu").builder
        every, gap = incremental.BUCKET_ROWS, incremental.GAP_BUCKETS * incremental.BUCKET_ROWS
        params = b.params(ws, every=every, gap=gap)
        got = c.execute(b.bucket_bounds(table), params).fetchone()[0]
        assert got == _expected_bounds(keys, every, gap)
        nth = [k for i, k in enumerate([k for k, m in keys if m]) if (i + 1) % every == 0]
        assert set(got) - set(nth)  # the run's boundaries are among them
        c.execute("SET work_mem = '64kB'")
        plan = "\n".join(r[0] for r in c.execute(psycopg.sql.SQL("EXPLAIN ") + b.bucket_bounds(table), params))
        assert "SubPlan" not in plan, plan


def test_the_users_copied_before_the_fence_are_kept_by_the_keys_of_the_rows_read(world, monkeypatch):
    """Before the fence the shared users the workspace needs are copied once (after C0) and their
    keys kept from the rows that copy read, with no second pass of the workspace's predicate:
    exactly the needed set, written independently of the mover's SQL."""
    env, ws = world
    needed = needed_users(env.dsn("us"), ws)
    seen = _around_prepare(monkeypatch)
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="online")
    assert rec.state == "cut_over"
    assert sorted(k["id"] for k in seen[0].globals["users"]) == sorted(needed)
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        assert needed <= {r[0] for r in c.execute("SELECT id FROM users")}


def test_a_global_row_referenced_after_c0_is_copied_under_the_fence(world, monkeypatch):
    env, ws = world
    (uid,) = _sql(env.dsn("us"), "INSERT INTO users (email, display_name) VALUES ('late@example.com', 'Late') RETURNING id")[0]
    assert _sql(env.dsn("eu"), "SELECT 1 FROM users WHERE id = %s", (uid,)) == []

    def after(prep):
        assert {"id": uid} not in prep.globals["users"]
        _sql(env.dsn("us"), "INSERT INTO memberships (workspace_id, user_id, role, joined_at) VALUES (%s, %s, 'guest', now())", (ws, uid))

    _around_prepare(monkeypatch, after=after)
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="online")
    assert rec.state == "cut_over"
    assert _sql(env.dsn("eu"), "SELECT 1 FROM users WHERE id = %s", (uid,)) == [(1,)]
    assert rec.report["copy"]["globals"]["users"]["referenced_by_touched_rows"] >= 1
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok


def test_a_referenced_global_row_lost_in_the_target_after_the_prefence_check_is_caught(world, monkeypatch):
    env, ws = world

    def after(prep):
        uid = prep.globals["users"][0]["id"]
        with psycopg.connect(env.dsn("eu"), autocommit=True) as c:  # behind the foreign keys' back
            with c.transaction():
                c.execute("SET LOCAL session_replication_role = replica")
                c.execute("DELETE FROM users WHERE id = %s", (uid,))

    _around_prepare(monkeypatch, after=after)
    with pytest.raises(OperationError) as exc:
        start_move(env.catalogue, env.connections, ws, "eu", strategy="online")
    assert "users: 1 referenced rows missing in eu" in str(exc.value)
    assert home(env, ws)[0] == "us"


def test_target_corrupted_before_the_prefence_checksum_is_caught(world, monkeypatch):
    env, ws = world
    bad = _first_messages(env, ws, 1)[0]

    def corrupt():  # a superuser session on the target, behind replication's back
        _sql(env.dsn("eu"), "UPDATE messages SET body = 'corrupted' WHERE id = %s", (bad,))

    seen = _around_prepare(monkeypatch, before=corrupt)
    with pytest.raises(OperationError) as exc:
        start_move(env.catalogue, env.connections, ws, "eu", strategy="online")
    assert "verification failed" in str(exc.value) and str(bad) in str(exc.value)
    assert seen and seen[0].tables["messages"].mismatched, "the bucket differed before the fence"
    rec = _the_move(env)
    assert rec.state == "failed" and home(env, ws)[0] == "us"  # never cut over
    m = _table(rec.report, "messages")
    assert m["verify_mode"] == "incremental" and not m["ok"]
    assert m["differences"] == [{"key": [bad], "kind": "differs"}]
    _no_replication_left(env)  # replication removed on the failed verification


def test_a_change_after_c0_makes_its_bucket_dirty_and_it_is_checked(world, monkeypatch):
    env, ws = world
    changed, bad = _first_messages(env, ws, 2)  # neighbours: the same bucket

    def after(prep):
        # after the pre-fence checksums: a source change (replicated, logged with an id > C0) and,
        # in the same bucket, a target row changed behind replication's back
        _sql(env.dsn("us"), "UPDATE messages SET body = 'changed after C0' WHERE id = %s", (changed,))
        _sql(env.dsn("eu"), "UPDATE messages SET body = 'corrupted' WHERE id = %s", (bad,))
        assert not prep.tables["messages"].mismatched

    _around_prepare(monkeypatch, after=after)
    with pytest.raises(OperationError) as exc:
        start_move(env.catalogue, env.connections, ws, "eu", strategy="online")
    assert "verification failed" in str(exc.value)
    rec = _the_move(env)
    m = _table(rec.report, "messages")
    assert m["verify_mode"] == "incremental" and m["differences"] == [{"key": [bad], "kind": "differs"}]
    assert home(env, ws)[0] == "us"
    # the replicated change itself arrived and verifies; a resume copies every table again
    assert _sql(env.dsn("eu"), "SELECT body FROM messages WHERE id = %s", (changed,)) == [("changed after C0",)]
    rec = resume_move(env.catalogue, env.connections, rec.id)
    assert rec.state == "cut_over" and _table(rec.report, "messages")["verify_mode"] == "full"
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok
    _no_replication_left(env)


def test_a_source_change_after_c0_is_verified_and_cut_over(world, monkeypatch):
    env, ws = world
    (changed,) = _first_messages(env, ws, 1)
    _around_prepare(monkeypatch, after=lambda p: _sql(env.dsn("us"), "UPDATE messages SET body = 'after C0' WHERE id = %s", (changed,)))
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="online")
    assert rec.state == "cut_over"
    m = _table(rec.report, "messages")
    assert m["verify_mode"] == "incremental" and m["verify_detail"].startswith("1 of ")
    assert _sql(env.dsn("eu"), "SELECT body FROM messages WHERE id = %s", (changed,)) == [("after C0",)]
    assert counts(env.dsn("eu"), ws) == counts(env.dsn("us"), ws)


def test_a_parent_moving_into_the_workspace_after_c0_dirties_its_children(world, monkeypatch):
    """A message of another workspace updated into this one: replication carries the message, but
    its attachments (a path table) change membership without a change of their own. The fenced
    copy of changed path rows does not bring them; the verification must not pass (a full
    verification would not either): the children of changed parent keys are dirty."""
    env, ws = world
    other = _sql(env.dsn("us"), "SELECT m.id, count(a.id) FROM messages m JOIN attachments a ON a.message_id = m.id"
                                " WHERE m.workspace_id <> %s GROUP BY m.id ORDER BY m.id LIMIT 1", (ws,))
    assert other, "the seed has attachments in another us workspace"
    mid, n = other[0]

    def after(prep):
        # with a conversation of this workspace: left in the other one's, the message would point at
        # a conversation the target never gets (verify names that dangling reference)
        _sql(env.dsn("us"), "UPDATE messages SET workspace_id = %s, conversation_id = (SELECT min(id) FROM conversations WHERE workspace_id = %s)"
                            " WHERE id = %s", (ws, ws, mid))

    _around_prepare(monkeypatch, after=after)
    with pytest.raises(OperationError) as exc:
        start_move(env.catalogue, env.connections, ws, "eu", strategy="online")
    assert "verification failed" in str(exc.value)
    rec = _the_move(env)
    a = _table(rec.report, "attachments")
    assert a["verify_mode"] == "incremental" and not a["ok"]
    assert a["differing"] >= n and all(d["kind"] == "missing in target" for d in a["differences"])
    assert home(env, ws)[0] == "us"
    rec = resume_move(env.catalogue, env.connections, rec.id)  # copies every table again
    assert rec.state == "cut_over" and verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok


def test_too_many_dirty_buckets_fall_back_to_the_full_verification(world, monkeypatch):
    env, ws = world
    monkeypatch.setattr(incremental, "MAX_DIRTY_FRACTION", 0.0)
    (changed,) = _first_messages(env, ws, 1)
    _around_prepare(monkeypatch, after=lambda p: _sql(env.dsn("us"), "UPDATE messages SET body = 'after C0' WHERE id = %s", (changed,)))
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="online")
    assert rec.state == "cut_over"
    m = _table(rec.report, "messages")
    assert m["verify_mode"] == "full" and "buckets changed" in m["verify_detail"] and m["ok"]
    assert _table(rec.report, "channels")["verify_mode"] == "incremental"  # nothing changed there
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok


def test_no_prefence_checksums_means_full_verification(world, monkeypatch):
    env, ws = world

    def skip(*a, **k):
        raise incremental.Skip("test: not prepared")

    monkeypatch.setattr(incremental, "prepare", skip)
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="online")
    assert rec.state == "cut_over"
    assert {t["verify_mode"] for t in rec.report["verify"]["tables"] if t["kind"] == "table"} == {"full"}
    assert rec.report["online"]["verify_prepared"] is None


def test_snapshot_moves_verify_in_full_as_before(world):
    env, ws = world
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="snapshot")
    assert rec.state == "cut_over" and "online" not in rec.report
    assert {(t["verify_mode"], t["verify_detail"]) for t in rec.report["verify"]["tables"] if t["kind"] == "table"} == {("full", "")}
    # the needed shared rows: read by the values the copy kept under the same fence
    assert {t["verify_detail"] for t in rec.report["verify"]["tables"] if t["kind"] == "global"} == {NEEDED_BY_KEYS}
    rep = move_report(env.connections, rec.id)
    assert rep["verified"] and all(t["verify_mode"] == "full" for t in rep["tables"])
