"""Every unique constraint and unique index, not only primary keys, is checked for the moving rows
against the target before anything is fenced (issue 16, item 5).

Schema `uq` of the test's databases, written for this module: root `accounts`; `conversations`
with a global unique `uuid` (a unique index); `portals` with an expression unique index
(`lower(slug)`) and a partial one (`custom_domain` of live portals); `widgets` without a primary
key and a unique constraint on a nullable `token`; `inboxes` with a NULLS NOT DISTINCT unique
constraint. The target region (eu) already holds tenants of its own.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from residency.migrate import MoveRefused, move_status, plan_move, start_move
from move_support import REPO

DDL = """
CREATE SCHEMA uq;
SET search_path = uq;
CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE conversations (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts, uuid uuid NOT NULL);
CREATE UNIQUE INDEX conversations_uuid_key ON conversations (uuid);
CREATE TABLE portals (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts, slug text NOT NULL,
                      custom_domain text, archived boolean NOT NULL DEFAULT false);
CREATE UNIQUE INDEX portals_lower_slug ON portals (lower(slug));
CREATE UNIQUE INDEX portals_live_domain ON portals (custom_domain) WHERE NOT archived;
CREATE TABLE widgets (account_id bigint NOT NULL REFERENCES accounts, token text, CONSTRAINT widgets_token_key UNIQUE (token));
CREATE TABLE inboxes (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts, channel text);
"""

NULLS_NOT_DISTINCT = "ALTER TABLE uq.inboxes ADD CONSTRAINT inboxes_channel_key UNIQUE NULLS NOT DISTINCT (channel)"

WORKSPACE = """workspace:
  root_table: accounts
  key_column: account_id
  object_prefix: "accounts/{workspace_id}/"
"""

UUIDS = [uuid.UUID(int=0x1F0E0000_0000_4000_8000_000000000000 + i) for i in range(20)]


def _catalogue():
    from residency import catalogue

    text = (REPO / "regions.yaml").read_text()
    return catalogue.loads(text[: text.index("workspace:")] + WORKSPACE, "uq-regions.yaml")


def _server_version(dsn):
    with psycopg.connect(dsn) as c:
        return c.info.server_version


@pytest.fixture
def world(env, monkeypatch):
    """us: account 1 (moving) with conversations UUIDS[0..9], portals 'help' (domain
    help.acme.example, live) and 'Docs' (domain docs.acme.example, archived), widgets 'tok-1' and
    two NULL tokens. eu: its own account 500, which nothing clashes with yet."""
    from residency import directory

    monkeypatch.setenv("RESIDENCY_APP_SCHEMA", "uq")
    nnd = _server_version(env.dsn("us")) >= 150000
    for r in ("us", "eu"):
        with psycopg.connect(env.dsn(r), autocommit=True) as c:
            c.execute(DDL)
            if nnd:
                c.execute(NULLS_NOT_DISTINCT)
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        c.execute("SET search_path = uq")
        c.execute("INSERT INTO accounts VALUES (1, 'acme'), (2, 'globex')")
        for i in range(10):
            c.execute("INSERT INTO conversations VALUES (%s, 1, %s)", (100 + i, UUIDS[i]))
        c.execute("INSERT INTO portals VALUES (11, 1, 'help', 'help.acme.example', false), (12, 1, 'Docs', 'docs.acme.example', true),"
                  " (21, 2, 'globex', 'globex.example', false)")
        c.execute("INSERT INTO widgets VALUES (1, 'tok-1'), (1, NULL), (1, NULL), (2, 'tok-2')")
        c.execute("INSERT INTO inboxes VALUES (1, 1, 'email'), (2, 1, NULL)")
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        c.execute("SET search_path = uq")
        c.execute("INSERT INTO accounts VALUES (500, 'umbrella')")
        c.execute("INSERT INTO conversations VALUES (5000, 500, %s)", (UUIDS[15],))
        # same domain as a moving archived portal, same slug as none: no clash
        c.execute("INSERT INTO portals VALUES (5001, 500, 'umbrella', 'docs.acme.example', false)")
        c.execute("INSERT INTO widgets VALUES (500, NULL), (500, 'tok-500')")
        c.execute("INSERT INTO inboxes VALUES (5001, 500, 'sms')")
    with psycopg.connect(env.control_dsn) as c:
        for acc, region in (("1", "us"), ("2", "us"), ("500", "eu")):
            directory.register(c, acc, region)
        c.commit()
    return env, _catalogue(), nnd


def _eu(env, *stmts):
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        c.execute("SET search_path = uq")
        for s, p in stmts:
            c.execute(s, p)


def test_no_clash_when_values_differ_nulls_and_partial_predicates_included(world):
    """NULL tokens on both sides and a domain shared with an archived (unindexed) moving portal are
    not clashes; the move goes ahead."""
    env, cat, _ = world
    plan = plan_move(cat, env.connections, "1", "eu")
    assert plan.ok, plan.refusals
    rec = start_move(cat, env.connections, "1", "eu")
    assert rec.state == "cut_over"


def test_each_unique_clash_is_refused_naming_the_index_and_values(world):
    env, cat, _ = world
    _eu(env,
        ("INSERT INTO conversations VALUES (5002, 500, %s), (5003, 500, %s)", (UUIDS[3], UUIDS[1])),
        ("INSERT INTO portals VALUES (5002, 500, 'HELP', NULL, false)", None),  # lower(slug) clashes
        ("INSERT INTO portals VALUES (5003, 500, 'other', 'help.acme.example', false)", None),  # live domain clashes
        ("INSERT INTO widgets VALUES (500, 'tok-1')", None))
    plan = plan_move(cat, env.connections, "1", "eu")
    assert not plan.ok
    assert sorted(plan.refusals) == sorted([
        f"unique index conversations_uuid_key on conversations (uuid): 2 moving rows clash with rows in eu (uuid = {UUIDS[1]}, {UUIDS[3]})",
        "unique index portals_live_domain on portals (custom_domain) WHERE NOT archived: 1 moving row clashes with rows in eu"
        " (custom_domain = 'help.acme.example')",
        "unique index portals_lower_slug on portals (lower(slug)): 1 moving row clashes with rows in eu (lower(slug) = 'help')",
        "unique constraint widgets_token_key on widgets (token): 1 moving row clashes with rows in eu (token = 'tok-1')",
    ])
    # move start refuses the same, before anything is fenced or recorded
    with pytest.raises(MoveRefused) as exc:
        start_move(cat, env.connections, "1", "eu")
    assert exc.value.refusals == plan.refusals
    assert move_status(env.connections, None, open_only=False) == []
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'residency_mover'").fetchone()[0] == 0
        c.execute("UPDATE uq.portals SET slug = 'help-center' WHERE id = 11")  # still writable


def test_a_sample_of_many_clashing_values(world):
    env, cat, _ = world
    _eu(env, *[("INSERT INTO conversations VALUES (%s, 500, %s)", (6000 + i, UUIDS[i])) for i in range(8)])
    (line,) = plan_move(cat, env.connections, "1", "eu").refusals
    assert line == ("unique index conversations_uuid_key on conversations (uuid): 8 moving rows clash with rows in eu"
                    f" (uuid = {', '.join(str(u) for u in UUIDS[:5])}, ...)")


def test_nulls_not_distinct_clash_on_null(world):
    env, cat, nnd = world
    if not nnd:
        pytest.skip("NULLS NOT DISTINCT needs PostgreSQL 15")
    _eu(env, ("INSERT INTO inboxes VALUES (5002, 500, NULL)", None))
    assert plan_move(cat, env.connections, "1", "eu").refusals == [
        "unique constraint inboxes_channel_key on inboxes (channel): 1 moving row clashes with rows in eu (channel = NULL)"
    ]
