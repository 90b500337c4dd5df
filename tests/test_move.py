"""The mover end to end on real PostgreSQL servers and a moto S3 server (tests/conftest.py)."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from residency.migrate import cleanup_move, move_report, plan_move, rollback_move, start_move, verify_workspace
from residency.migrate.report import render
from move_support import counts, home, objects


def test_small_move_us_to_eu(env):
    s = env.seed(workspaces=4, rows=2000, seed=3)
    ws = s.smallest_in("us")
    before = counts(env.dsn("us"), ws)
    objs = objects(env, "us", ws)
    plan = plan_move(env.catalogue, env.connections, ws, "eu")
    assert plan.ok, plan.refusals
    assert {t.table: t.rows for t in plan.tables} == before
    events = []
    rec = start_move(env.catalogue, env.connections, ws, "eu", progress=events.append)
    assert rec.state == "cut_over"
    assert counts(env.dsn("eu"), ws) == before
    assert objects(env, "eu", ws) == objs
    assert home(env, ws)[:2] == ("eu", "active")
    rep = move_report(env.connections, rec.id)
    assert rep["verified"] and all(t["ok"] for t in rep["tables"])
    assert rep["fence"]["seconds"] is not None
    text = render(rep)
    assert "verified: yes" in text
    assert any(e.phase == "copy" for e in events)


# ----------------------------------------------------------------------------- refusals


def _nothing_changed(env, ws, region="us"):
    assert home(env, ws)[:2] == (region, "active")
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM residency.moves").fetchone()[0] == 0
    with psycopg.connect(env.dsn(region), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'residency_mover'").fetchone()[0] == 0


def _with_region_status(cat, name, status):
    from dataclasses import replace
    from types import MappingProxyType

    regions = dict(cat.regions)
    regions[name] = replace(regions[name], status=status)
    return replace(cat, regions=MappingProxyType(regions))


def _refused(env, ws, target, cat=None):
    from residency.migrate import MoveRefused

    cat = cat or env.catalogue
    plan = plan_move(cat, env.connections, ws, target)
    assert not plan.ok
    with pytest.raises(MoveRefused):
        start_move(cat, env.connections, ws, target)
    return plan.refusals


def test_refusals_unknown_workspace_same_region_policy_inactive(env):
    s = env.seed(workspaces=3, rows=600, seed=5)
    ws = s.smallest_in("us")
    (r,) = _refused(env, 424242, "eu")
    assert r.startswith("unknown workspace '424242'")
    (r,) = _refused(env, ws, "us")
    assert r.startswith("target equals home")
    (r,) = _refused(env, ws, "au", _with_region_status(env.catalogue, "au", "draining"))
    assert r.startswith("target region 'au' is not active")
    (r,) = _refused(env, ws, "eu", _with_region_status(env.catalogue, "us", "retired"))
    assert r.startswith("policy forbids the move") and "retired" in r
    _nothing_changed(env, ws)


def test_refusals_schema_keys_unreached(env):
    s = env.seed(workspaces=3, rows=600, seed=6)
    ws = s.smallest_in("us")
    eu, us = env.dsn("eu"), env.dsn("us")
    with psycopg.connect(eu, autocommit=True) as c:
        c.execute("ALTER TABLE messages DROP COLUMN edited_at")
        c.execute("ALTER TABLE channels ALTER COLUMN topic TYPE varchar(200)")
        c.execute("DROP TABLE attachment_previews")
    rs = _refused(env, ws, "eu")
    assert "target schema differs: column messages.edited_at is missing in eu" in rs
    assert "target schema differs: column channels.topic is character varying(200) in eu, text in the source" in rs
    assert "target schema differs: table 'attachment_previews' is missing in eu" in rs
    assert len(rs) == 3
    _nothing_changed(env, ws)

    # primary keys already in the target
    with psycopg.connect(env.dsn("au"), autocommit=True) as c:
        c.execute("INSERT INTO workspaces (id, name, slug, plan) VALUES (%s, 'squatter', 'squatter', 'free')", (ws,))
    twin, r = _refused(env, ws, "au")  # the same id as another tenant's root row there (issue 16), and its key
    assert twin.startswith(f"workspace '{ws}' exists in two regions: its home us and au (workspaces.id = {ws} there")
    assert r == f"primary keys of moving rows already present in target au: workspaces has 1 (id = {ws})"
    _nothing_changed(env, ws)

    # a table that reaches no workspace and is not global
    with psycopg.connect(us, autocommit=True) as c:
        c.execute("CREATE TABLE feature_flags (id bigint PRIMARY KEY, name text)")
    rs = plan_move(env.catalogue, env.connections, ws, "eu").refusals
    assert any(x.startswith("table 'feature_flags' reaches no workspace") for x in rs)
    _nothing_changed(env, ws)


def test_same_workspace_twice_one_refused(env):
    from residency.migrate import MoveRefused

    s = env.seed(workspaces=3, rows=600, seed=7)
    ws = s.smallest_in("us")
    first = start_move(env.catalogue, env.connections, ws, "eu", stop_after="fenced")
    assert first.state == "fenced"
    with pytest.raises(MoveRefused) as exc:
        start_move(env.catalogue, env.connections, ws, "au")
    assert f"a move is already running for workspace '{ws}': move {first.id} (fenced" in str(exc.value)
    rec = rollback_move(env.catalogue, env.connections, first.id)
    assert rec.state == "rolled_back"


def test_concurrent_moves_of_two_workspaces(env):
    from concurrent.futures import ThreadPoolExecutor

    s = env.seed(workspaces=6, rows=6000, seed=8)
    a, b = s.workspaces["us"][:2]
    before = {w: counts(env.dsn("us"), w) for w in (a, b)}
    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(start_move, env.catalogue, env.connections, a, "eu")
        fb = pool.submit(start_move, env.catalogue, env.connections, b, "au")
        ra, rb = fa.result(), fb.result()
    assert (ra.state, rb.state) == ("cut_over", "cut_over")
    assert counts(env.dsn("eu"), a) == before[a]
    assert counts(env.dsn("au"), b) == before[b]
    # both fences stay until cleanup; cleaning one keeps the other's triggers in place
    cleanup_move(env.catalogue, env.connections, ra.id, grace=timedelta(0))
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        with psycopg.connect(env.dsn("us"), autocommit=True) as c:
            c.execute("UPDATE workspaces SET name = 'late' WHERE id = %s", (b,))
    cleanup_move(env.catalogue, env.connections, rb.id, grace=timedelta(0))
    assert counts(env.dsn("us"), a) == {k: 0 for k in before[a]}
    assert counts(env.dsn("us"), b) == {k: 0 for k in before[b]}


# ----------------------------------------------------------------------------- rollback and cleanup


def test_rollback_before_cutover_and_refused_after(env):
    s = env.seed(workspaces=3, rows=1500, seed=9)
    ws = s.smallest_in("us")
    before = counts(env.dsn("us"), ws)
    rec = start_move(env.catalogue, env.connections, ws, "eu", stop_after="verified")
    assert rec.state == "verified" and counts(env.dsn("eu"), ws) == before
    assert home(env, ws)[:2] == ("us", "moving")
    rec = rollback_move(env.catalogue, env.connections, rec.id)
    assert rec.state == "rolled_back"
    assert sum(counts(env.dsn("eu"), ws).values()) == 0
    assert sum(objects(env, "eu", ws).values()) == 0
    assert counts(env.dsn("us"), ws) == before
    assert home(env, ws)[:2] == ("us", "active")
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:  # the fence is lifted
        c.execute("UPDATE workspaces SET name = 'writable again' WHERE id = %s", (ws,))
        assert c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'residency_mover'").fetchone()[0] == 0

    rec2 = start_move(env.catalogue, env.connections, ws, "eu")
    assert rec2.state == "cut_over"
    from residency.errors import OperationError

    with pytest.raises(OperationError, match=rf"Move the workspace back instead: residency move start {ws} --to us"):
        rollback_move(env.catalogue, env.connections, rec2.id)


def test_cleanup_after_grace_records_deletion(env):
    s = env.seed(workspaces=6, rows=3000, seed=10)
    ws = s.smallest_in("us")
    other = [w for w in s.workspaces["us"] if w != ws][0]
    before, other_before = counts(env.dsn("us"), ws), counts(env.dsn("us"), other)
    objs = objects(env, "us", ws)
    rec = start_move(env.catalogue, env.connections, ws, "eu")
    from residency.errors import OperationError

    with pytest.raises(OperationError, match="grace period ends"):
        cleanup_move(env.catalogue, env.connections, rec.id)
    rec = cleanup_move(env.catalogue, env.connections, rec.id, grace=timedelta(0))
    assert rec.state == "cleaned"
    assert sum(counts(env.dsn("us"), ws).values()) == 0
    assert sum(objects(env, "us", ws).values()) == 0
    assert counts(env.dsn("us"), other) == other_before
    assert counts(env.dsn("eu"), ws) == before
    d = move_report(env.connections, rec.id)["deletion"]
    assert d["rows"] == sum(before.values()) and d["object_count"] == sum(objs.values())
    assert {t: v["rows"] for t, v in d["tables"].items()} == before
    assert all(v["checksum"] for v in d["tables"].values())
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'residency_fence%'").fetchone()[0] == 0


# ----------------------------------------------------------------------------- the fence


def test_fence_refuses_writes_from_a_client_ignoring_the_directory(env):
    s = env.seed(workspaces=4, rows=3000, seed=11)
    ws = s.smallest_in("us")
    other = [w for w in s.workspaces["us"] if w != ws][0]
    us = env.dsn("us")
    rec = start_move(env.catalogue, env.connections, ws, "eu", stop_after="fenced")
    q = lambda w: {"ws": w}  # noqa: E731
    refused = [
        ("INSERT INTO conversations (workspace_id, subject) VALUES (%(ws)s, 'sneaky')", q(ws)),
        ("UPDATE workspaces SET name = 'x' WHERE id = %(ws)s", q(ws)),
        ("DELETE FROM memberships WHERE workspace_id = %(ws)s", q(ws)),
        # FK path (attachments -> messages) and two hops (previews -> attachments -> messages)
        ("INSERT INTO attachments (message_id, filename, content_type, size_bytes)"
         " SELECT id, 'f', 'text/plain', 1 FROM messages WHERE workspace_id = %(ws)s LIMIT 1", q(ws)),
        ("UPDATE attachment_previews SET width = width + 1 WHERE attachment_id IN"
         " (SELECT a.id FROM attachments a JOIN messages m ON m.id = a.message_id WHERE m.workspace_id = %(ws)s)", q(ws)),
        # polymorphic path
        ("INSERT INTO reactions (subject_type, subject_id, emoji)"
         " SELECT 'conversation', id, '+1' FROM conversations WHERE workspace_id = %(ws)s LIMIT 1", q(ws)),
        ("TRUNCATE reactions", None),
    ]
    for stmt, params in refused:
        with psycopg.connect(us, autocommit=True) as c:
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as exc:
                c.execute(stmt, params)
            assert "fenced" in str(exc.value)
    with psycopg.connect(us, autocommit=True) as c:  # other workspaces keep writing
        c.execute("INSERT INTO conversations (workspace_id, subject) VALUES (%s, 'fine')", (other,))
        c.execute("INSERT INTO reactions (subject_type, subject_id, emoji)"
                  " SELECT 'conversation', id, '+1' FROM conversations WHERE workspace_id = %s LIMIT 1", (other,))
        c.execute("UPDATE workspaces SET name = 'still writable' WHERE id = %s", (other,))
    rollback_move(env.catalogue, env.connections, rec.id)


def test_writer_ignoring_directory_during_move_loses_nothing(env):
    """A writer keeps inserting into the moving workspace and another one throughout the move:
    every insert that succeeded for the moving workspace is in the target after cut-over, every
    one after the fence was refused by the database, the other workspace's inserts all succeed."""
    import threading
    import time

    s = env.seed(workspaces=4, rows=20000, seed=12)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    other = [w for w in s.workspaces["us"] if w != ws][0]
    us = env.dsn("us")
    stop = threading.Event()
    ok: dict[int, list[int]] = {ws: [], other: []}
    refused: dict[int, int] = {ws: 0, other: 0}

    def writer():
        with psycopg.connect(us, autocommit=True) as c:
            i = 0
            while not stop.is_set():
                for w in (ws, other):
                    try:
                        (cid,) = c.execute("INSERT INTO conversations (workspace_id, subject) VALUES (%s, %s) RETURNING id", (w, f"w{i}")).fetchone()
                        ok[w].append(cid)
                    except psycopg.errors.ObjectNotInPrerequisiteState:
                        refused[w] += 1
                i += 1
                time.sleep(0.002)

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.3)
    try:
        rec = start_move(env.catalogue, env.connections, ws, "eu")
        time.sleep(0.2)
    finally:
        stop.set()
        t.join()
    assert rec.state == "cut_over"
    assert ok[ws] and refused[ws] > 0 and refused[other] == 0 and len(ok[other]) > len(ok[ws])
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        there = {r[0] for r in c.execute("SELECT id FROM conversations WHERE workspace_id = %s", (ws,))}
    assert set(ok[ws]) <= there
    assert counts(env.dsn("eu"), ws) == counts(us, ws)
