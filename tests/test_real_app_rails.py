"""A Rails-style multi-tenant application nobody designed for the mover (issue 16).

Schema `rails` (Chatwoot-like): root `accounts`; global `users` and `tags` (unique names);
`agent_bots` whose `account_id IS NULL` rows are bots shared by every tenant; messages whose sender
is polymorphic without a foreign key (`sender_type`/`sender_id` → users or agent_bots);
ActiveStorage (`active_storage_attachments.record_type/record_id` → messages, or a global user's
avatar; `active_storage_blobs` owned only through `attachments.blob_id`); acts-as-taggable-on
`taggings` (polymorphic → conversations) pointing at global tags; `json` (not jsonb) columns; global
unique tokens. The target region `eu` already has a tenant of its own.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from residency.migrate import cleanup_move, plan_move, start_move, verify_workspace
from app16_support import PER_TENANT_SEQUENCE_TRIGGERS, apply_replica_identity_fixes, regions_file
from move_support import load_app

DDL = """
CREATE SCHEMA rails;
SET search_path = rails;
CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, settings json);
CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE);
CREATE TABLE account_users (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts, user_id bigint NOT NULL REFERENCES users,
                            role text NOT NULL DEFAULT 'agent');
CREATE TABLE agent_bots (id bigint PRIMARY KEY, account_id bigint REFERENCES accounts, name text NOT NULL);
CREATE TABLE inboxes (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts, name text NOT NULL,
                      widget_token text NOT NULL UNIQUE);
CREATE TABLE conversations (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts, inbox_id bigint NOT NULL REFERENCES inboxes,
                            uuid uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(), assignee_id bigint REFERENCES users,
                            additional_attributes json, display_id bigint NOT NULL);
CREATE UNIQUE INDEX conversations_display ON conversations (account_id, display_id);
CREATE TABLE portals (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts, slug text NOT NULL UNIQUE);
CREATE TABLE portals_members (portal_id bigint NOT NULL REFERENCES portals, user_id bigint NOT NULL REFERENCES users);  -- no primary key
CREATE TABLE messages (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts, conversation_id bigint NOT NULL REFERENCES conversations,
                       content text, sender_type text, sender_id bigint, content_attributes json);
CREATE TABLE tags (id bigint PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE taggings (id bigint PRIMARY KEY, tag_id bigint NOT NULL REFERENCES tags, taggable_type text NOT NULL, taggable_id bigint NOT NULL);
CREATE TABLE active_storage_blobs (id bigint PRIMARY KEY, key text NOT NULL UNIQUE, filename text NOT NULL, byte_size bigint NOT NULL);
CREATE TABLE active_storage_attachments (id bigint PRIMARY KEY, name text NOT NULL, record_type text NOT NULL, record_id bigint NOT NULL,
                                         blob_id bigint NOT NULL REFERENCES active_storage_blobs);
""" + PER_TENANT_SEQUENCE_TRIGGERS  # one sequence per tenant, made by a trigger; conversations numbered from it

WORKSPACE = """workspace:
  root_table: accounts
  key_column: account_id
  global_tables: [users, tags]
  shared_key_values: [null]        # agent_bots.account_id IS NULL: a bot every tenant may use
  paths:
    taggings: {column: taggable_id, type_column: taggable_type, targets: {Conversation: conversations}}
    active_storage_attachments:
      column: record_id
      type_column: record_type
      targets: {Message: messages, User: users}
  references:
    messages.sender_id: {type_column: sender_type, targets: {User: users, AgentBot: agent_bots}}
  owned_through:
    active_storage_blobs: active_storage_attachments.blob_id
  natural_keys:
    tags: [name]
  tenant_objects:
    sequences: ["conv_dpid_seq_{workspace_id}"]
  object_prefix: "accounts/{workspace_id}/"
"""


def _fill(dsn: str, accounts: list[int], base: int, tags: tuple[str, str]) -> None:
    """Each account: 2 inboxes, 6 conversations (skewed: account 1 has 5x more), messages from users,
    tenant bots and the shared bot, attachments with blobs; user avatars; taggings."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET search_path = rails")
        c.execute("INSERT INTO users VALUES (%s, 'Ada', %s), (%s, 'Bob', %s)", (base + 10, f"ada{base}@x.example", base + 11, f"bob{base}@x.example"))
        c.execute("INSERT INTO agent_bots VALUES (%s, NULL, 'shared helper')", (base + 900,))
        c.execute("INSERT INTO active_storage_blobs VALUES (%s, %s, 'ada.png', 10)", (base + 77, f"avatar-{base}"))
        c.execute("INSERT INTO active_storage_attachments VALUES (%s, 'avatar', 'User', %s, %s)", (base + 77, base + 10, base + 77))
        c.execute("INSERT INTO tags VALUES (%s, %s), (%s, %s)", (base + 6, tags[0], base + 7, tags[1]))
        n = base + 1000
        shared_blob = base + 500
        c.execute("INSERT INTO active_storage_blobs VALUES (%s, %s, 'shared.pdf', 99)", (shared_blob, f"shared-{base}"))
        for acc in accounts:
            c.execute("INSERT INTO accounts VALUES (%s, %s, %s)", (acc, f"Account {acc}", '{"tz": "UTC"}'))
            c.execute("INSERT INTO account_users VALUES (%s, %s, %s, 'admin')", (n, acc, base + 10)); n += 1
            c.execute("INSERT INTO agent_bots VALUES (%s, %s, 'own bot')", (n, acc)); own_bot = n; n += 1
            c.execute("INSERT INTO portals VALUES (%s, %s, %s)", (n, acc, f"help-{acc}"))
            c.execute("INSERT INTO portals_members VALUES (%s, %s), (%s, %s)", (n, base + 10, n, base + 11)); n += 1
            for i in range(2):
                c.execute("INSERT INTO inboxes VALUES (%s, %s, %s, %s)", (n, acc, f"inbox {i}", f"tok-{acc}-{i}-{base}")); inbox = n; n += 1
                for j in range(3 * (5 if acc == accounts[0] else 1)):
                    c.execute("INSERT INTO conversations (id, account_id, inbox_id, assignee_id, additional_attributes, display_id) VALUES (%s, %s, %s, %s, %s, 0)",
                              (n, acc, inbox, base + 11, '{"browser": "Firefox"}')); conv = n; n += 1
                    c.execute("INSERT INTO taggings VALUES (%s, %s, 'Conversation', %s)", (n, base + 6 + j % 2, conv)); n += 1
                    for k, (stype, sid) in enumerate([("User", base + 10), ("AgentBot", own_bot), ("AgentBot", base + 900), (None, None)]):
                        c.execute("INSERT INTO messages VALUES (%s, %s, %s, %s, %s, %s, %s)", (n, acc, conv, f"m{k}", stype, sid, '{"k": 1}')); msg = n; n += 1
                        if k == 0:
                            c.execute("INSERT INTO active_storage_blobs VALUES (%s, %s, 'file.txt', 5)", (n, f"blob-{n}"))
                            c.execute("INSERT INTO active_storage_attachments VALUES (%s, 'file', 'Message', %s, %s)", (n, msg, n)); n += 1
            # a blob two tenants attach (deduplicated upload)
            c.execute("INSERT INTO active_storage_attachments SELECT %s, 'file', 'Message', id, %s FROM messages WHERE account_id = %s LIMIT 1", (n, shared_blob, acc)); n += 1


def _q(dsn: str, query: str, *params):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET search_path = rails")
        return c.execute(query, params).fetchall()


def _tenant(dsn: str, acc: int) -> dict[str, int]:
    one = lambda q: _q(dsn, q, acc)[0][0]  # noqa: E731
    return {
        "conversations": one("SELECT count(*) FROM conversations WHERE account_id = %s"),
        "messages": one("SELECT count(*) FROM messages WHERE account_id = %s"),
        "taggings": one("SELECT count(*) FROM taggings t JOIN conversations c ON c.id = t.taggable_id WHERE c.account_id = %s"),
        "attachments": one("SELECT count(*) FROM active_storage_attachments a JOIN messages m ON a.record_type = 'Message' AND m.id = a.record_id WHERE m.account_id = %s"),
        "portals_members": one("SELECT count(*) FROM portals_members m JOIN portals p ON p.id = m.portal_id WHERE p.account_id = %s"),
        "blobs": one("SELECT count(DISTINCT b.id) FROM active_storage_blobs b JOIN active_storage_attachments a ON a.blob_id = b.id"
                     " JOIN messages m ON a.record_type = 'Message' AND m.id = a.record_id WHERE m.account_id = %s"),
    }


@pytest.fixture
def rails(env, monkeypatch):
    cat = load_app(env, monkeypatch, "rails", DDL, WORKSPACE, {"1": "us", "2": "us", "3": "eu"})
    _fill(env.dsn("us"), [1, 2], 1_000_000, ("churn-risk", "vip"))
    _fill(env.dsn("eu"), [3], 5_000_000, ("feature-request", "billing"))
    return cat


def test_plan_lists_shared_rows_owned_rows_and_references(env, rails):
    plan = plan_move(rails, env.connections, "1", "eu")
    assert plan.ok, plan.refusals
    kinds = {t.table: t.kind for t in plan.tables}
    assert kinds["active_storage_blobs"] == "owned"
    assert kinds["active_storage_attachments"] == "polymorphic"
    shared = {g.table: (g.referenced_rows, g.missing_in_target, g.why) for g in plan.globals}
    # the shared bot, the users, the tags, and the avatar attachment and blob of the user the messages name
    assert shared["agent_bots"] == (1, 1, "shared key value")
    assert shared["users"][:2] == (2, 2)
    assert shared["tags"][:2] == (2, 2)
    assert shared["active_storage_attachments"][:2] == (1, 1)
    assert shared["active_storage_blobs"][:2] == (1, 1)
    assert any("messages.sender_id → agent_bots" in r for r in plan.references)


def test_tenant_moves_and_nothing_dangles_in_the_target(env, rails):
    before = _tenant(env.dsn("us"), 1)
    other = _tenant(env.dsn("us"), 2)
    rec = start_move(rails, env.connections, "1", "eu")
    assert rec.state == "cut_over"
    assert _tenant(env.dsn("eu"), 1) == before
    assert _tenant(env.dsn("eu"), 3)["messages"] > 0  # eu's own tenant untouched
    eu = env.dsn("eu")
    # every message's sender exists in eu: users, the tenant's own bot, and the shared bot
    assert _q(eu, "SELECT count(*) FROM messages m WHERE m.account_id = %s AND ((sender_type = 'User' AND sender_id NOT IN (SELECT id FROM users))"
                  " OR (sender_type = 'AgentBot' AND sender_id NOT IN (SELECT id FROM agent_bots)))", 1)[0][0] == 0
    assert _q(eu, "SELECT account_id FROM agent_bots WHERE id = %s", 1_000_900) == [(None,)]
    # the avatar of the user the messages name came along (attachment and blob)
    assert _q(eu, "SELECT b.key FROM active_storage_attachments a JOIN active_storage_blobs b ON b.id = a.blob_id WHERE a.record_type = 'User' AND a.record_id = %s",
              1_000_010) == [("avatar-1000000",)]
    result = verify_workspace(rails, env.connections, "1", "us", "eu")
    assert result.ok, result.problems()
    assert result.references and result.references["checked"] >= 8
    # the app works in eu: a new conversation of the moved tenant is numbered after its last one
    (last,) = _q(env.dsn("us"), "SELECT max(display_id) FROM conversations WHERE account_id = %s", 1)[0]
    with psycopg.connect(eu, autocommit=True) as c:
        (shown,) = c.execute("INSERT INTO rails.conversations (id, account_id, inbox_id, display_id) SELECT 9000001, 1, min(id), 0 FROM rails.inboxes"
                             " WHERE account_id = 1 RETURNING display_id").fetchone()
    assert shown == last + 1
    with psycopg.connect(eu, autocommit=True) as c:
        c.execute("DELETE FROM rails.conversations WHERE id = 9000001")

    # cleanup: the tenant's blobs leave us, the blob tenant 2 also attaches stays, shared rows stay
    cleanup_move(rails, env.connections, rec.id, grace=timedelta(0))
    us = env.dsn("us")
    assert _tenant(us, 1) == {"conversations": 0, "messages": 0, "taggings": 0, "attachments": 0, "portals_members": 0, "blobs": 0}
    assert _q(us, "SELECT count(*) FROM active_storage_blobs WHERE key LIKE 'blob-%%' AND id NOT IN (SELECT blob_id FROM active_storage_attachments)")[0][0] == 0
    assert _q(us, "SELECT count(*) FROM active_storage_blobs WHERE key = 'shared-1000000'")[0][0] == 1
    assert _tenant(us, 2) == other  # tenant 2 lost nothing, its shared blob included
    assert _q(us, "SELECT count(*) FROM agent_bots WHERE id = %s", 1_000_900)[0][0] == 1


def test_a_dangling_reference_in_the_target_fails_verify(env, rails):
    rec = start_move(rails, env.connections, "1", "eu")
    assert rec.state == "cut_over"
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        c.execute("DELETE FROM rails.agent_bots WHERE id = 1000900")  # no foreign key protects the polymorphic sender
    result = verify_workspace(rails, env.connections, "1", "us", "eu")
    assert not result.ok
    lines = [p for p in result.problems() if "dangling reference" in p]
    assert any("messages.sender_id → agent_bots" in p and "1000900" in p for p in lines), result.problems()


def test_colliding_global_rows_are_refused_by_content_and_by_natural_key(env, rails):
    eu = env.dsn("eu")
    with psycopg.connect(eu, autocommit=True) as c:
        c.execute("SET search_path = rails")
        c.execute("INSERT INTO tags VALUES (1000006, 'feature-request-2')")  # same id as us's 'churn-risk', another tag
        c.execute("INSERT INTO tags VALUES (5000100, 'vip')")  # us's 'vip' is 1000007; eu's 'vip' is 5000100
    plan = plan_move(rails, env.connections, "1", "eu")
    assert not plan.ok
    content = [r for r in plan.refusals if "shared row tags id=1000006 differs in eu" in r]
    assert content and "churn-risk" in content[0] and "feature-request-2" in content[0], plan.refusals
    natural = [r for r in plan.refusals if "name='vip'" in r]
    assert natural and "1000007" in natural[0] and "5000100" in natural[0], plan.refusals


def test_kill9_during_the_copy_then_resume(env, rails, tmp_path):
    from residency.migrate import move_status
    from move_support import run_mover

    before = _tenant(env.dsn("us"), 1)
    regions = regions_file(tmp_path, WORKSPACE)
    schema = {"RESIDENCY_APP_SCHEMA": "rails"}
    p = run_mover(env, "move", "start", "1", "--to", "eu", "--yes", kill_at="table_copied", kill_after=4, regions=regions, extra_env=schema)
    assert p.returncode == -9, p.stderr
    (rec,) = move_status(env.connections, None, open_only=False)[:1]
    assert rec.state != "cut_over"
    p = run_mover(env, "move", "resume", str(rec.id), regions=regions, extra_env=schema)
    assert p.returncode == 0, p.stderr + p.stdout
    assert _tenant(env.dsn("eu"), 1) == before
    result = verify_workspace(rails, env.connections, "1", "us", "eu")
    assert result.ok, result.problems()


def test_online_move_and_rollback(env, rails):
    from residency.migrate import rollback_move

    # the plan names the replica identities the row filters need, with the statement that fixes each
    plan = plan_move(rails, env.connections, "1", "eu", "online")
    fixes = apply_replica_identity_fixes(env.dsn("us"), plan)
    assert fixes, plan.refusals
    plan = plan_move(rails, env.connections, "1", "eu", "online")
    assert plan.ok, plan.refusals

    rec = start_move(rails, env.connections, "1", "eu", strategy="online", stop_after="copied")
    assert rec.state == "copied"
    rec = rollback_move(rails, env.connections, rec.id)
    assert rec.state == "rolled_back"
    assert _tenant(env.dsn("eu"), 1) == {"conversations": 0, "messages": 0, "taggings": 0, "attachments": 0, "portals_members": 0, "blobs": 0}

    before = _tenant(env.dsn("us"), 1)
    rec = start_move(rails, env.connections, "1", "eu", strategy="online")
    assert rec.state == "cut_over" and rec.strategy == "online"
    assert _tenant(env.dsn("eu"), 1) == before
    result = verify_workspace(rails, env.connections, "1", "us", "eu")
    assert result.ok, result.problems()


def test_a_non_superuser_mover_moves_the_tenant_and_its_sequence(env, rails):
    """Managed PostgreSQL gives no superuser: the sandbox's mover role (SET on
    session_replication_role, member of the tables' owner) moves the tenant, triggers do not fire
    during the copy, and the per-tenant sequence arrives at its position."""
    src, dst = env.grant_role("us"), env.grant_role("eu")
    conns = env.connections_as({"us": src, "eu": dst})
    plan = plan_move(rails, conns, "1", "eu")
    assert plan.ok, plan.refusals
    before = _tenant(env.dsn("us"), 1)
    rec = start_move(rails, conns, "1", "eu")
    assert rec.state == "cut_over"
    assert _tenant(env.dsn("eu"), 1) == before
    # display ids are the source's, not renumbered by the BEFORE INSERT trigger
    assert _q(env.dsn("eu"), "SELECT array_agg(display_id ORDER BY id) FROM conversations WHERE account_id = %s", 1) == \
        _q(env.dsn("us"), "SELECT array_agg(display_id ORDER BY id) FROM conversations WHERE account_id = %s", 1)
    assert _q(env.dsn("eu"), "SELECT last_value FROM conv_dpid_seq_1") == _q(env.dsn("us"), "SELECT last_value FROM conv_dpid_seq_1")
    assert verify_workspace(rails, conns, "1", "us", "eu").ok
