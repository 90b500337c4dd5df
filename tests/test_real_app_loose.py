"""A Mattermost-like application with no foreign keys at all (issue 16).

Schema `mm`: text ids, composite primary keys, every reference a plain column: `posts.user_id` →
users, `team_members.role_name` → roles **by name**, `reactions.emoji_name` → custom emoji by name
(system emoji have no row anywhere), `emoji.creator_id` → users (a global row pointing at a global
row), `posts.root_id` → posts with '' meaning "no thread". Direct-message channels have
`team_id = ''`: they belong to the tenants of their members (policy `any`). The target region `eu`
has its own team, users and roles, whose names match but whose ids differ.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from residency.migrate import cleanup_move, plan_move, start_move, verify_workspace
from residency.migrate.context import make_context
from residency.migrate.plan import render
from move_support import load_app

DDL = """
CREATE SCHEMA mm;
SET search_path = mm;
CREATE TABLE teams (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE users (id text PRIMARY KEY, username text NOT NULL UNIQUE, invited_by text NOT NULL DEFAULT '');
CREATE TABLE roles (id text PRIMARY KEY, name text NOT NULL UNIQUE, permissions text NOT NULL DEFAULT '');
CREATE TABLE emoji (id text PRIMARY KEY, name text NOT NULL UNIQUE, creator_id text NOT NULL);
CREATE TABLE team_members (team_id text NOT NULL, user_id text NOT NULL, role_name text NOT NULL, PRIMARY KEY (team_id, user_id));
CREATE TABLE channels (id text PRIMARY KEY, team_id text NOT NULL DEFAULT '', type char(1) NOT NULL, name text NOT NULL);
CREATE TABLE channel_members (channel_id text NOT NULL, user_id text NOT NULL, PRIMARY KEY (channel_id, user_id));
CREATE TABLE posts (id text PRIMARY KEY, channel_id text NOT NULL, user_id text NOT NULL, root_id text NOT NULL DEFAULT '',
                    message text NOT NULL, props json);
CREATE TABLE reactions (user_id text NOT NULL, post_id text NOT NULL, emoji_name text NOT NULL, PRIMARY KEY (user_id, post_id, emoji_name));
"""

WORKSPACE = """workspace:
  root_table: teams
  key_column: team_id
  global_tables: [users, roles, emoji]
  paths:
    channel_members: {column: channel_id, references: channels}
    posts: {column: channel_id, references: channels}
    reactions: {column: post_id, references: posts}
  references:
    team_members.user_id: users
    team_members.role_name: roles.name
    channel_members.user_id: users
    posts.user_id: users
    posts.root_id: posts
    reactions.user_id: users
    reactions.emoji_name: emoji.name
    emoji.creator_id: users
    users.invited_by: users          # a global row pointing at another of its table
  shared_rows:
    channels: {policy: any, members: channel_members.channel_id, member: user_id, tenant_of_member: team_members.user_id}
  object_prefix: "teams/{workspace_id}/"
"""


def _x(c, q, *p):
    c.execute(q, p)


def _fill_us(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET search_path = mm")
        for u in ("u1", "u2", "u3"):
            _x(c, "INSERT INTO users VALUES (%s, %s)", u, f"user-{u}")
        for u, by in (("u8", ""), ("u9", "u8"), ("u4", "u9")):  # u4 was invited by u9, who was invited by u8
            _x(c, "INSERT INTO users VALUES (%s, %s, %s)", u, f"user-{u}", by)
        _x(c, "INSERT INTO roles VALUES ('r-us-admin', 'team_admin'), ('r-us-user', 'team_user')")
        _x(c, "INSERT INTO emoji VALUES ('e1', 'party', 'u4')")  # made by a user of no moving team
        for t in ("ta", "tb"):
            _x(c, "INSERT INTO teams VALUES (%s, %s)", t, f"Team {t}")
        for t, u, r in (("ta", "u1", "team_admin"), ("ta", "u2", "team_user"), ("tb", "u2", "team_user"), ("tb", "u3", "team_admin")):
            _x(c, "INSERT INTO team_members VALUES (%s, %s, %s)", t, u, r)
        # team channels, and two direct-message channels with team_id ''
        for ch, team, typ in (("c-ta-1", "ta", "O"), ("c-ta-2", "ta", "P"), ("c-tb-1", "tb", "O"), ("dm-u1-u3", "", "D"), ("dm-u3-u4", "", "D")):
            _x(c, "INSERT INTO channels VALUES (%s, %s, %s, %s)", ch, team, typ, ch)
        for ch, u in (("c-ta-1", "u1"), ("c-ta-1", "u2"), ("c-ta-2", "u1"), ("c-tb-1", "u3"), ("dm-u1-u3", "u1"), ("dm-u1-u3", "u3"),
                      ("dm-u3-u4", "u3"), ("dm-u3-u4", "u4")):
            _x(c, "INSERT INTO channel_members VALUES (%s, %s)", ch, u)
        n = 0
        for ch, users in (("c-ta-1", ("u1", "u2")), ("c-ta-2", ("u1",)), ("c-tb-1", ("u3",)), ("dm-u1-u3", ("u1", "u3")), ("dm-u3-u4", ("u3", "u4"))):
            root = ""
            for i in range(30):
                n += 1
                pid = f"p{n:04d}"
                _x(c, "INSERT INTO posts VALUES (%s, %s, %s, %s, %s, %s)", pid, ch, users[i % len(users)], root, f"msg {i}", '{"a": [1, 2]}')
                if i == 0:
                    root = pid  # the rest of the channel is one thread
                if i % 5 == 0:
                    _x(c, "INSERT INTO reactions VALUES (%s, %s, %s)", users[0], pid, "party" if i % 10 == 0 else "smile")


def _fill_eu(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET search_path = mm")
        _x(c, "INSERT INTO users VALUES ('eu-1', 'user-eu-1')")
        _x(c, "INSERT INTO roles VALUES ('r-eu-admin', 'team_admin'), ('r-eu-user', 'team_user')")  # same names, other ids
        _x(c, "INSERT INTO teams VALUES ('tc', 'Team tc')")
        _x(c, "INSERT INTO team_members VALUES ('tc', 'eu-1', 'team_admin')")
        _x(c, "INSERT INTO channels VALUES ('c-tc-1', 'tc', 'O', 'general')")
        _x(c, "INSERT INTO posts VALUES ('eu-p1', 'c-tc-1', 'eu-1', '', 'hallo', NULL)")


def _q(dsn, query, *p):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET search_path = mm")
        return c.execute(query, p).fetchall()


@pytest.fixture
def loose(env, monkeypatch):
    cat = load_app(env, monkeypatch, "mm", DDL, WORKSPACE, {"ta": "us", "tb": "us", "tc": "eu"})
    _fill_us(env.dsn("us"))
    _fill_eu(env.dsn("eu"))
    return cat


def test_plan_says_what_happens_to_shared_and_unreachable_rows(env, loose):
    plan = plan_move(loose, env.connections, "ta", "eu")
    assert plan.ok, plan.refusals
    shared = {g.table: (g.referenced_rows, g.missing_in_target) for g in plan.globals}
    # u1, u2 (members, authors), u3 (a DM partner), u4 (made the custom emoji a reaction names),
    # u9 and u8 (who invited u4, and who invited u9)
    assert shared["users"] == (6, 6)
    assert shared["roles"] == (2, 0)  # referenced by name: eu's roles of those names serve
    assert shared["emoji"] == (1, 1)
    assert shared["channels"] == (1, 1)  # dm-u1-u3 only: dm-u3-u4 has no member in ta
    text = render(plan)
    assert "channels: 2 rows have an empty team_id" in text and "policy any" in text
    # 'smile' is a system emoji: no row anywhere, already so in the source
    assert any("reactions.emoji_name → emoji" in n and "smile" in n for n in plan.notes), plan.notes


def test_tenant_of_a_schema_without_foreign_keys_moves_whole(env, loose):
    rec = start_move(loose, env.connections, "ta", "eu")
    assert rec.state == "cut_over"
    eu, us = env.dsn("eu"), env.dsn("us")
    assert _q(eu, "SELECT count(*) FROM posts WHERE channel_id IN ('c-ta-1', 'c-ta-2')") == [(60,)]
    # the DM between a moving member and a staying one came along, with its members and posts
    assert _q(eu, "SELECT count(*) FROM posts WHERE channel_id = 'dm-u1-u3'") == [(30,)]
    assert _q(eu, "SELECT user_id FROM channel_members WHERE channel_id = 'dm-u1-u3' ORDER BY 1") == [("u1",), ("u3",)]
    assert _q(eu, "SELECT count(*) FROM channels WHERE id = 'dm-u3-u4'") == [(0,)]
    # no post points at a user eu lacks; the role names resolve in eu
    assert _q(eu, "SELECT count(*) FROM posts p WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = p.user_id)") == [(0,)]
    assert _q(eu, "SELECT count(*) FROM team_members m JOIN roles r ON r.name = m.role_name WHERE m.team_id = 'ta'") == [(2,)]
    assert _q(eu, "SELECT creator_id FROM emoji WHERE name = 'party'") == [("u4",)]
    assert _q(eu, "SELECT id FROM users WHERE id IN ('u4', 'u8', 'u9') ORDER BY 1") == [("u4",), ("u8",), ("u9",)]
    result = verify_workspace(loose, env.connections, "ta", "us", "eu")
    assert result.ok, result.problems()
    # the report says what was decided for the rows with an empty key, and what the references gave
    from residency.migrate import report

    text = report.render(report.build(rec))
    assert "decided at plan: channels: 2 rows have an empty team_id" in text
    assert "shared rows channels (shared by several tenants, policy any): 1 referenced" in text
    assert "dangling in eu: 1, already dangling in us: 1" in text  # the system emoji 'smile'

    cleanup_move(loose, env.connections, rec.id, grace=timedelta(0))
    assert _q(us, "SELECT count(*) FROM posts WHERE channel_id IN ('c-ta-1', 'c-ta-2')") == [(0,)]
    assert _q(us, "SELECT count(*) FROM team_members WHERE team_id = 'ta'") == [(0,)]
    # what another tenant (or nobody) still needs stays: the shared DMs, the users, team tb
    assert _q(us, "SELECT count(*) FROM posts WHERE channel_id IN ('dm-u1-u3', 'dm-u3-u4', 'c-tb-1')") == [(90,)]
    assert _q(us, "SELECT count(*) FROM users") == [(6,)]


MANY_DMS = """
SET search_path = mm;
INSERT INTO users SELECT 'bulk' || i, 'bulk-user-' || i FROM generate_series(1, 400) i;
INSERT INTO team_members SELECT CASE WHEN i <= 200 THEN 'ta' ELSE 'tb' END, 'bulk' || i, 'team_user' FROM generate_series(1, 400) i;
INSERT INTO channels SELECT 'dm-bulk-' || i, '', 'D', 'dm' || i FROM generate_series(1, 2000) i;
-- each between a member of ta and one of tb; the last 500 between two of tb
INSERT INTO channel_members SELECT 'dm-bulk-' || i, 'bulk' || CASE WHEN i <= 1500 THEN 1 + i % 200 ELSE 201 + (i + 7) % 200 END
  FROM generate_series(1, 2000) i;
INSERT INTO channel_members SELECT 'dm-bulk-' || i, 'bulk' || (201 + i % 200) FROM generate_series(1, 2000) i ON CONFLICT DO NOTHING;
INSERT INTO posts SELECT 'bulk-p' || i, 'c-ta-1', 'bulk' || (1 + i % 200), '', 'm', NULL FROM generate_series(1, 20000) i;
INSERT INTO posts SELECT 'bulk-dp' || i, 'dm-bulk-' || (1 + i % 2000), 'bulk' || (201 + i % 200), '', 'd', NULL FROM generate_series(1, 4000) i;
INSERT INTO reactions SELECT 'bulk' || (1 + i % 200), 'bulk-p' || i, 'party' FROM generate_series(1, 20000, 2) i;
INSERT INTO reactions SELECT 'bulk' || (1 + i % 200), 'bulk-dp' || i, 'smile' FROM generate_series(1, 4000, 2) i;
ANALYZE;
"""

NEEDED_USERS = """
WITH RECURSIVE dms AS (SELECT ch.id FROM channels ch WHERE ch.team_id = '' AND EXISTS
                         (SELECT 1 FROM channel_members cm JOIN team_members tm ON tm.user_id = cm.user_id AND tm.team_id = %(ws)s
                          WHERE cm.channel_id = ch.id)),
  chans AS (SELECT id FROM channels WHERE team_id = %(ws)s UNION SELECT id FROM dms),
  ps AS (SELECT * FROM posts WHERE channel_id IN (SELECT id FROM chans)),
  rs AS (SELECT * FROM reactions WHERE post_id IN (SELECT id FROM ps)),
  direct AS (SELECT user_id AS u FROM team_members WHERE team_id = %(ws)s
             UNION SELECT user_id FROM channel_members WHERE channel_id IN (SELECT id FROM chans)
             UNION SELECT user_id FROM ps UNION SELECT user_id FROM rs
             UNION SELECT creator_id FROM emoji WHERE name IN (SELECT emoji_name FROM rs)),
  invited (u) AS (SELECT u FROM direct UNION SELECT x.invited_by FROM users x JOIN invited ON x.id = invited.u WHERE x.invited_by <> '')
SELECT u FROM invited ORDER BY 1
"""


def test_shared_rows_are_found_by_joins_however_many_direct_messages(env, loose):
    """A team with thousands of direct-message channels (shared rows, policy ``any``): the shared
    rows it needs are found by joins even when no list of keys fits ``work_mem``. Tests OR'ed
    into one WHERE (a moving table's own rows or the ones a shared row needs; a referenced key,
    the policy, or a shared parent) were SubPlans, each a list scanned again for every row once
    it outgrew ``work_mem``: the users of a team with 300k posts and 20k direct messages took
    0.26 s at 4MB and over a minute at 64kB. And the users found are the ones written here
    independently of the mover's SQL."""
    us = env.dsn("us")
    with psycopg.connect(us, autocommit=True) as c:
        c.execute(MANY_DMS)
    b = make_context(loose, env.connections, "ta", "us", "eu").builder
    with psycopg.connect(us, autocommit=True) as c:
        c.execute("SET search_path = mm")
        c.execute("SET work_mem = '64kB'")
        for t in sorted(b.graph.shared):
            plan = "\n".join(r[0] for r in c.execute(psycopg.sql.SQL("EXPLAIN ") + b.global_referenced(t), b.params("ta")))
            assert "SubPlan" not in plan, (t, plan)
        got = [r[0] for r in c.execute(b.global_referenced("users", ["id"]) + psycopg.sql.SQL(" ORDER BY 1"), b.params("ta"))]
        expected = [r[0] for r in c.execute(NEEDED_USERS, {"ws": "ta"})]
    assert got == expected
    assert len(expected) == 2 + 200 + 200 + 4  # u1, u2; ta's 200; tb's in DMs with them; u3 (a DM), u4 (the emoji), u9 and u8 (who invited)


def test_a_post_whose_author_is_missing_in_the_target_fails_verify(env, loose):
    rec = start_move(loose, env.connections, "ta", "eu")
    assert rec.state == "cut_over"
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        c.execute("DELETE FROM mm.users WHERE id = 'u2'")
    result = verify_workspace(loose, env.connections, "ta", "us", "eu")
    assert not result.ok
    assert any("dangling reference posts.user_id → users" in p and "u2" in p for p in result.problems()), result.problems()


def test_online_move_then_kill9_free_resume_of_cleanup(env, loose, tmp_path):
    """The online strategy on a schema without foreign keys: the plan's replica-identity fixes
    applied, the move follows the team while it stays writable, and a cleanup killed after the
    rows went is finished by running it again."""
    from app16_support import apply_replica_identity_fixes, regions_file
    from residency.migrate import move_status
    from move_support import run_mover

    plan = plan_move(loose, env.connections, "ta", "eu", "online")
    apply_replica_identity_fixes(env.dsn("us"), plan)
    plan = plan_move(loose, env.connections, "ta", "eu", "online")
    assert plan.ok, plan.refusals
    rec = start_move(loose, env.connections, "ta", "eu", strategy="online")
    assert rec.state == "cut_over" and rec.strategy == "online"
    assert _q(env.dsn("eu"), "SELECT count(*) FROM posts WHERE channel_id IN ('c-ta-1', 'c-ta-2', 'dm-u1-u3')") == [(90,)]
    assert verify_workspace(loose, env.connections, "ta", "us", "eu").ok

    regions = regions_file(tmp_path, WORKSPACE)
    p = run_mover(env, "move", "cleanup", str(rec.id), "--grace", "0", "--yes", kill_at="cleanup_rows_deleted", regions=regions,
                  extra_env={"RESIDENCY_APP_SCHEMA": "mm"})
    assert p.returncode == -9, p.stderr
    p = run_mover(env, "move", "cleanup", str(rec.id), "--grace", "0", "--yes", regions=regions, extra_env={"RESIDENCY_APP_SCHEMA": "mm"})
    assert p.returncode == 0, p.stderr + p.stdout
    (done,) = [m for m in move_status(env.connections, None, open_only=False) if m.id == rec.id]
    assert done.state == "cleaned"
    assert _q(env.dsn("us"), "SELECT count(*) FROM posts WHERE channel_id IN ('c-ta-1', 'c-ta-2')") == [(0,)]
    assert _q(env.dsn("us"), "SELECT count(*) FROM posts WHERE channel_id = 'dm-u1-u3'") == [(30,)]  # still u3's
