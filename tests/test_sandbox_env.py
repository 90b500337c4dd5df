"""The session sandbox and the per-test `env` fixture the other suites build on."""

from __future__ import annotations

import os

import psycopg
import pytest

from residency import directory
from residency import sandbox as sb
from residency.sandbox import seed as seedmod


def test_status_lists_every_region_and_s3_healthy(sandbox):
    st = sb.status(sandbox.home)
    names = [s.name for s in st.servers]
    assert names == ["control", *sandbox.catalogue.regions, "s3"]
    assert st.healthy, [(s.name, s.state, s.detail) for s in st.servers]
    assert {s.kind for s in st.servers} == {"control", "region", "s3"}


def test_tests_never_use_the_users_sandbox(sandbox):
    assert os.environ["RESIDENCY_SANDBOX_HOME"] == sandbox.home
    assert sb.default_home() == sb.core._home(sandbox.home)


def test_region_servers_have_logical_wal_and_room_for_moves(env):
    for r in env.regions:
        with psycopg.connect(env.dsn(r)) as c:
            s = dict(c.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                               "('wal_level','max_replication_slots','max_wal_senders','max_logical_replication_workers','listen_addresses')").fetchall())
        assert s["wal_level"] == "logical"
        assert int(s["max_replication_slots"]) >= 8 and int(s["max_wal_senders"]) >= 8
        assert int(s["max_logical_replication_workers"]) >= 4
        assert s["listen_addresses"] == "127.0.0.1"


def test_env_is_fresh_and_isolated(env, sandbox):
    for r in env.regions:
        with psycopg.connect(env.dsn(r)) as c:
            assert c.execute("SELECT current_database()").fetchone()[0] == env.dbname
            assert c.execute("SELECT count(*) FROM workspaces").fetchone()[0] == 0
    with psycopg.connect(env.control_dsn) as c:
        assert c.execute("SELECT count(*) FROM residency.directory").fetchone()[0] == 0
    for r in env.regions:
        names = {b["Name"] for b in env.s3(r).list_buckets()["Buckets"]}
        assert set(env.connections.region(r).buckets.values()) <= names
    assert env.connections.region("us").bucket("attachments") == f"t{env.token}-us-attachments"


def test_env_seed_exposes_what_the_mover_needs(env):
    res = env.seed(workspaces=6, rows=3000, seed=3)
    assert set(res.workspaces) == {"us", "eu", "au"}
    assert sum(len(v) for v in res.workspaces.values()) == 6
    assert res.biggest in res.workspaces["us"] and res.biggest_region == "us"
    assert res.rows_of(res.biggest) == max(res.rows_of(w) for w in res.rows)
    # row counts per table per workspace match the databases
    for region, wids in res.workspaces.items():
        with psycopg.connect(env.dsn(region)) as c:
            for w in wids:
                for t in ("memberships", "channels", "conversations", "messages"):
                    n = c.execute(f"SELECT count(*) FROM {t} WHERE workspace_id = %s", (w,)).fetchone()[0]
                    assert n == res.rows[w][t], (region, w, t)
                n = c.execute("SELECT count(*) FROM attachments a JOIN messages m ON m.id = a.message_id WHERE m.workspace_id = %s", (w,)).fetchone()[0]
                assert n == res.rows[w]["attachments"]
                n = c.execute(
                    "SELECT count(*) FROM reactions x WHERE (x.subject_type = 'message' AND x.subject_id IN (SELECT id FROM messages WHERE workspace_id = %s))"
                    " OR (x.subject_type = 'conversation' AND x.subject_id IN (SELECT id FROM conversations WHERE workspace_id = %s))", (w, w)).fetchone()[0]
                assert n == res.rows[w]["reactions"]
    # directory and objects
    with psycopg.connect(env.control_dsn) as c:
        homes = {e.workspace_id: e.region for e in directory.list_entries(c)}
        assert c.execute("SELECT count(*) FROM residency.audit WHERE action = 'sandbox.seed'").fetchone()[0] == 6
    assert homes == {str(w): r for w, r in res.home.items()}
    for w, objs in res.objects.items():
        region = res.home[w]
        prefix = env.catalogue.workspace.prefix_for(w)
        for bucket, key in objs:
            assert key.startswith(prefix)
            assert bucket in env.connections.region(region).buckets.values()
        listed = env.s3(region).list_objects_v2(Bucket=objs[0][0], Prefix=prefix)
        assert listed["KeyCount"] >= 1


def test_foreign_keys_hold_after_seed(env):
    env.seed(workspaces=4, rows=2000, seed=5)
    with psycopg.connect(env.dsn("us")) as c:
        # the load does not check foreign keys row by row: check them (and same-workspace links) here
        bad = c.execute(
            "SELECT (SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM conversations v WHERE v.id = m.conversation_id AND v.workspace_id = m.workspace_id))"
            " + (SELECT count(*) FROM messages m WHERE m.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM messages p WHERE p.id = m.parent_id AND p.workspace_id = m.workspace_id))"
            " + (SELECT count(*) FROM attachments a WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = a.message_id))"
            " + (SELECT count(*) FROM attachment_previews p WHERE NOT EXISTS (SELECT 1 FROM attachments a WHERE a.id = p.attachment_id))"
            " + (SELECT count(*) FROM memberships x WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = x.user_id))"
            " + (SELECT count(*) FROM conversations v JOIN channels ch ON ch.id = v.channel_id WHERE ch.workspace_id <> v.workspace_id)"
        ).fetchone()[0]
        assert bad == 0


def test_a_servers_buffer_pool_can_be_set_for_benchmarks_and_a_bad_size_is_refused(monkeypatch):
    """The benchmarks start their servers with a production-like buffer pool
    (``$RESIDENCY_SANDBOX_SHARED_BUFFERS``); tests keep the small one; a bad size is one line."""
    from residency import pgserver
    from residency.errors import OperationError

    monkeypatch.delenv(pgserver.SHARED_BUFFERS_ENV, raising=False)
    assert pgserver.settings()["shared_buffers"] == pgserver.SETTINGS["shared_buffers"] == "32MB"
    monkeypatch.setenv(pgserver.SHARED_BUFFERS_ENV, "256MB")
    assert pgserver.settings()["shared_buffers"] == "256MB"
    monkeypatch.setenv(pgserver.SHARED_BUFFERS_ENV, "lots")
    with pytest.raises(OperationError, match="RESIDENCY_SANDBOX_SHARED_BUFFERS='lots': expected a size such as 256MB"):
        pgserver.settings()
