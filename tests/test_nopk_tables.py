"""Tables without a primary key (join tables) move like the others (issue 16, item 1).

Schema `jt` of the test's databases, written for this module: root `accounts`, a global `users`,
`portals` (foreign key to accounts), the join table `portal_members(portal_id, user_id)` with no
primary key and no unique key, reaching accounts through portals (and pointing at the global
users), `labels` with no primary key but a unique index, `audit_lines` with the key column and
nothing else. The target region (eu) already holds a tenant of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta

import psycopg
import pytest

from residency.migrate import cleanup_move, move_status, plan_move, resume_move, start_move, verify_workspace
from move_support import REPO, connections_env

DDL = """
CREATE SCHEMA jt;
SET search_path = jt;
CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);
CREATE TABLE portals (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts, slug text NOT NULL);
CREATE TABLE portal_members (portal_id bigint NOT NULL REFERENCES portals, user_id bigint NOT NULL REFERENCES users);
CREATE TABLE labels (account_id bigint NOT NULL REFERENCES accounts, name text NOT NULL, color text);
CREATE UNIQUE INDEX labels_account_name ON labels (account_id, name);
CREATE TABLE audit_lines (account_id bigint NOT NULL, line text);
"""

WORKSPACE = """workspace:
  root_table: accounts
  key_column: account_id
  global_tables: [users]
  object_prefix: "accounts/{workspace_id}/"
"""

MEMBERS_PER_PORTAL = 200  # 60 portals: 12,000 join rows per account, more than one copy batch (256 KB)


def _catalogue(workspace=WORKSPACE):
    from residency import catalogue

    text = (REPO / "regions.yaml").read_text()
    return catalogue.loads(text[: text.index("workspace:")] + workspace, "jt-regions.yaml")


def _fill(dsn, accounts):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET search_path = jt")
        c.execute("INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 300) g ON CONFLICT DO NOTHING")
        for acc in accounts:
            c.execute("INSERT INTO accounts VALUES (%s, %s)", (acc, f"account {acc}"))
            c.execute("INSERT INTO portals SELECT %s * 1000 + g, %s, 'p' || g FROM generate_series(1, 60) g", (acc, acc))
            c.execute("INSERT INTO portal_members SELECT p.id, 1 + (p.id * 7 + g) %% 300 FROM portals p, generate_series(1, %s) g"
                      " WHERE p.account_id = %s", (MEMBERS_PER_PORTAL, acc))
            # exact duplicates: a multiset, not a set
            c.execute("INSERT INTO portal_members SELECT id, 1 FROM portals WHERE account_id = %s ORDER BY id LIMIT 3", (acc,))
            c.execute("INSERT INTO portal_members SELECT id, 1 FROM portals WHERE account_id = %s ORDER BY id LIMIT 3", (acc,))
            c.execute("INSERT INTO labels SELECT %s, 'label ' || g, CASE WHEN g %% 3 = 0 THEN NULL ELSE 'red' END FROM generate_series(1, 40) g", (acc,))
            c.execute("INSERT INTO audit_lines SELECT %s, 'line ' || (g %% 5) FROM generate_series(1, 30) g", (acc,))


def _rows(dsn, acc):
    """The account's rows per table, as sorted lists (test-side SQL, independent of the mover)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET search_path = jt")
        q = {
            "accounts": "SELECT id, name FROM accounts WHERE id = %(a)s",
            "portals": "SELECT id, slug FROM portals WHERE account_id = %(a)s",
            "portal_members": "SELECT m.portal_id, m.user_id FROM portal_members m JOIN portals p ON p.id = m.portal_id WHERE p.account_id = %(a)s",
            "labels": "SELECT name, color FROM labels WHERE account_id = %(a)s",
            "audit_lines": "SELECT line FROM audit_lines WHERE account_id = %(a)s",
        }
        return {t: sorted(c.execute(s + " ORDER BY 1, 2" if t != "audit_lines" else s + " ORDER BY 1", {"a": acc}).fetchall()) for t, s in q.items()}


@pytest.fixture
def world(env, monkeypatch):
    from residency import directory

    monkeypatch.setenv("RESIDENCY_APP_SCHEMA", "jt")
    for r in ("us", "eu"):
        with psycopg.connect(env.dsn(r), autocommit=True) as c:
            c.execute(DDL)
    _fill(env.dsn("us"), [1, 2, 3])
    _fill(env.dsn("eu"), [900])
    with psycopg.connect(env.control_dsn) as c:
        for acc, region in ((1, "us"), (2, "us"), (3, "us"), (900, "eu")):
            directory.register(c, str(acc), region)
        c.commit()
    return env, _catalogue()


def test_join_tables_move_verify_and_cleanup(world):
    env, cat = world
    plan = plan_move(cat, env.connections, "2", "eu")
    assert plan.ok, plan.refusals
    kinds = {t.table: t.kind for t in plan.tables}
    assert kinds == {"accounts": "root", "portals": "key", "labels": "key", "audit_lines": "key", "portal_members": "fk"}
    assert next(t.rows for t in plan.tables if t.table == "portal_members") == 60 * MEMBERS_PER_PORTAL + 6
    before, theirs = _rows(env.dsn("us"), 2), _rows(env.dsn("eu"), 900)

    rec = start_move(cat, env.connections, "2", "eu")
    assert rec.state == "cut_over"
    assert _rows(env.dsn("eu"), 2) == before  # duplicates included
    assert _rows(env.dsn("eu"), 900) == theirs
    checks = {t["table"]: t for t in rec.report["verify"]["tables"]}
    assert checks["portal_members"]["ok"] and checks["portal_members"]["target_rows"] == 60 * MEMBERS_PER_PORTAL + 6
    assert verify_workspace(cat, env.connections, "2", "us", "eu").ok

    rec = cleanup_move(cat, env.connections, rec.id, grace=timedelta(0))
    assert rec.state == "cleaned"
    assert all(v == [] for v in _rows(env.dsn("us"), 2).values())
    assert _rows(env.dsn("us"), 1)["portal_members"] and len(_rows(env.dsn("us"), 3)["portal_members"]) == 60 * MEMBERS_PER_PORTAL + 6
    assert rec.report["deletion"]["deleted_now"]["rows"]["portal_members"] == 60 * MEMBERS_PER_PORTAL + 6


def test_corrupted_target_row_of_a_table_without_primary_key_fails_verify(world):
    env, cat = world
    rec = start_move(cat, env.connections, "2", "eu")
    assert rec.state == "cut_over"
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        c.execute("SET search_path = jt")
        # one join row now points at another user; one label's colour changed; one duplicate dropped
        c.execute("UPDATE portal_members SET user_id = 299 WHERE ctid = (SELECT ctid FROM portal_members WHERE portal_id = 2010 AND user_id <> 299 LIMIT 1)")
        c.execute("UPDATE labels SET color = 'blue' WHERE account_id = 2 AND name = 'label 7'")
        c.execute("DELETE FROM portal_members WHERE ctid = (SELECT ctid FROM portal_members WHERE portal_id = 2001 AND user_id = 1 LIMIT 1)")
    res = verify_workspace(cat, env.connections, "2", "us", "eu")
    assert not res.ok
    bad = {t.table: t for t in res.tables if not t.ok}
    assert set(bad) == {"portal_members", "labels"}
    lines = res.problems()
    members = next(p for p in lines if p.startswith("portal_members:"))
    # no unique key: narrowed to groups of its reach column
    assert "portal_id=2010 (200 rows in source, 200 in target, contents differ)" in members
    assert "portal_id=2001" in members
    assert bad["portal_members"].source_rows == bad["portal_members"].target_rows + 1
    # a unique index on NOT NULL columns: narrowed to the row's key
    labels = next(p for p in lines if p.startswith("labels:"))
    assert "(2, 'label 7') (differs)" in labels


def _cli(env, regions, *args, kill_at=None, kill_after=1):
    e = dict(os.environ)
    e.update(connections_env(env))
    e["RESIDENCY_APP_SCHEMA"] = "jt"
    if kill_at:
        e["RESIDENCY_MOVE_KILL_AT"], e["RESIDENCY_MOVE_KILL_AFTER"] = kill_at, str(kill_after)
    return subprocess.run([sys.executable, str(REPO / "cli.py"), "--regions", str(regions), *args],
                          env=e, capture_output=True, text=True, timeout=180, cwd=str(REPO))


@pytest.mark.parametrize("point,after", [("copy_batch", 1), ("table_copied", 5)])
def test_kill9_while_copying_a_join_table_then_resume_copies_each_row_once(world, tmp_path, point, after):
    """copy_batch: killed inside portal_members' COPY (the first table above one batch);
    table_copied 5: portal_members (the fifth table) committed in eu, its checkpoint not written."""
    env, cat = world
    regions = tmp_path / "regions.yaml"
    text = (REPO / "regions.yaml").read_text()
    regions.write_text(text[: text.index("workspace:")] + WORKSPACE)
    before = _rows(env.dsn("us"), 2)
    # one stream, so the kill points fall in copy order (parallel chunks are tested in test_move_chunks)
    p = _cli(env, regions, "move", "start", "2", "--to", "eu", "--yes", "--strategy", "snapshot", "--jobs", "1", kill_at=point, kill_after=after)
    assert p.returncode == -signal.SIGKILL, p.stderr
    (rec,) = move_status(env.connections, None, open_only=False)[:1]
    assert rec.state == "fenced"
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        (n,) = c.execute("SELECT count(*) FROM jt.portal_members WHERE portal_id BETWEEN 2000 AND 2999").fetchone()
    assert n in (0, 60 * MEMBERS_PER_PORTAL + 6)  # one COPY transaction: committed whole, or rolled back with the kill
    rec = resume_move(cat, env.connections, rec.id)
    assert rec.state == "cut_over"
    assert _rows(env.dsn("eu"), 2) == before
    assert verify_workspace(cat, env.connections, "2", "us", "eu").ok


def test_only_a_table_reaching_no_workspace_is_refused(world):
    env, cat = world
    for r in ("us", "eu"):
        with psycopg.connect(env.dsn(r), autocommit=True) as c:
            c.execute("CREATE TABLE jt.settings (name text, value text)")  # no key column, no foreign key, no primary key
    plan = plan_move(cat, env.connections, "2", "eu")
    assert plan.refusals == [
        "table 'settings' reaches no workspace (no account_id column, no foreign key or configured path to a workspace table)"
        " and is not declared in workspace.global_tables"
    ]
    assert {t.table for t in plan.tables} >= {"portal_members", "labels", "audit_lines"}  # still counted
    declared = _catalogue(WORKSPACE.replace("global_tables: [users]", "global_tables: [users, settings]"))
    plan = plan_move(declared, env.connections, "2", "eu")
    assert plan.ok, plan.refusals


def test_online_move_copies_join_tables_whole_under_the_fence(world):
    env, cat = world
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        # portals is row-filtered by account_id: its replica identity must carry it (the plan says so)
        c.execute("CREATE UNIQUE INDEX portals_account_id_id ON jt.portals (account_id, id)")
        c.execute("ALTER TABLE jt.portals REPLICA IDENTITY USING INDEX portals_account_id_id")
    plan = plan_move(cat, env.connections, "2", "eu", strategy="online")
    assert plan.ok, plan.refusals
    paths = {t.table: t.path for t in plan.tables}
    assert paths["accounts"].startswith("replication, row filter id = 2")
    assert paths["portals"].startswith("replication, row filter account_id = 2")
    for t in ("portal_members", "labels", "audit_lines"):
        assert paths[t].startswith("copied whole under the fence (no primary key"), (t, paths[t])

    wrote = []

    def progress(p):
        # while replication runs (the workspace writable): writes to join rows of the moving
        # tenant and of another one; the source accepts them (no replica identity is needed)
        if not wrote and "replicating:" in (p.message or ""):
            with psycopg.connect(env.dsn("us"), autocommit=True) as c:
                c.execute("SET search_path = jt")
                c.execute("UPDATE portal_members SET user_id = 7 WHERE portal_id = 2005")
                c.execute("DELETE FROM portal_members WHERE portal_id = 2006 AND user_id <> 1")
                c.execute("INSERT INTO portal_members VALUES (2007, 8), (2007, 8)")
                c.execute("UPDATE labels SET color = 'green' WHERE account_id = 2")
                c.execute("DELETE FROM portal_members WHERE portal_id = 1002")
            wrote.append(True)

    rec = start_move(cat, env.connections, "2", "eu", strategy="online", progress=progress)
    assert wrote and rec.state == "cut_over"
    after = _rows(env.dsn("us"), 2)
    assert ("green",) in {(c,) for _, c in after["labels"]}
    assert _rows(env.dsn("eu"), 2) == after
    copied = rec.report["copy"]["tables"]
    assert copied["accounts"].get("via") == "replication"
    assert "via" not in copied["portal_members"] and copied["portal_members"]["rows"] == len(after["portal_members"])
    assert verify_workspace(cat, env.connections, "2", "us", "eu").ok
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_publication").fetchone()[0] == 0


def test_a_join_row_changed_on_its_way_fails_the_moves_verify_naming_the_table(world):
    """A trigger in the target (ENABLE ALWAYS: it fires even in replica mode, and the mover doesn't
    own the table, so it can't disable it) rewrites one join row: the move's own verification
    fails, naming the table and the group, and never cuts over."""
    from residency.errors import OperationError

    env, cat = world
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        c.execute("SET search_path = jt")
        c.execute("CREATE FUNCTION bend() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                  " IF NEW.portal_id = 2033 AND NEW.user_id = 1 + (2033 * 7 + 1) % 300 THEN NEW.user_id := 300; END IF; RETURN NEW; END $$")
        c.execute("CREATE TRIGGER bend BEFORE INSERT ON portal_members FOR EACH ROW EXECUTE FUNCTION bend()")
        c.execute("ALTER TABLE portal_members ENABLE ALWAYS TRIGGER bend")
    # a mover that may not alter the target's tables (not their owner), so the ALWAYS trigger fires
    conns = env.connections_as({"eu": env.grant_role("eu", f"nopk_{env.token}", owner=False, set_replication_role=True)})
    with pytest.raises(OperationError) as exc:
        start_move(cat, conns, "2", "eu")
    msg = str(exc.value)
    assert "verification failed: portal_members:" in msg and "portal_id=2033 (200 rows in source, 200 in target, contents differ)" in msg
    (rec,) = move_status(env.connections, None, open_only=False)[:1]
    assert rec.state == "failed" and "cut_over_at" not in rec.checkpoints
