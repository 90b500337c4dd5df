"""Refusals are listed all at once, one per line, in text and --json (issue 16, item 11).

Schema `rf` of the test's databases, written for this module, with one problem of every kind at
once: a table that reaches no workspace, a column whose type differs in the target, a primary
key and a unique value that the target's own tenant already holds, and objects already present
in the target under the workspace's prefix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest

from residency.migrate import move_status, plan_move
from residency.migrate.plan import render
from move_support import REPO, connections_env

DDL = """
CREATE SCHEMA rf;
SET search_path = rf;
CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE tickets (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts, uuid uuid NOT NULL UNIQUE, title text);
CREATE TABLE tags (account_id bigint NOT NULL REFERENCES accounts, name text NOT NULL);
CREATE TABLE settings (name text, value text);
"""

WORKSPACE = """workspace:
  root_table: accounts
  key_column: account_id
  object_prefix: "accounts/{workspace_id}/"
"""

CLASHING_UUID = "1f0e0000-0000-4000-8000-000000000001"


@pytest.fixture
def world(env, monkeypatch, tmp_path):
    from residency import catalogue, directory

    monkeypatch.setenv("RESIDENCY_APP_SCHEMA", "rf")
    for r in ("us", "eu"):
        with psycopg.connect(env.dsn(r), autocommit=True) as c:
            c.execute(DDL)
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        c.execute("ALTER TABLE rf.tags ALTER COLUMN name TYPE varchar(40)")
        c.execute("INSERT INTO rf.accounts VALUES (500, 'umbrella')")
        c.execute("INSERT INTO rf.tickets VALUES (10, 500, %s, 'theirs'), (11, 500, gen_random_uuid(), 'theirs')", (CLASHING_UUID,))
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        c.execute("INSERT INTO rf.accounts VALUES (1, 'acme')")
        c.execute("INSERT INTO rf.tickets VALUES (10, 1, gen_random_uuid(), 'a'), (12, 1, %s, 'b'), (13, 1, gen_random_uuid(), 'c')",
                  (CLASHING_UUID,))
        c.execute("INSERT INTO rf.tags VALUES (1, 'urgent'), (1, 'urgent')")
    with psycopg.connect(env.control_dsn) as c:
        directory.register(c, "1", "us")
        directory.register(c, "500", "eu")
        c.commit()
    bucket = env.connections.region("eu").bucket("attachments")
    env.s3("eu").put_object(Bucket=bucket, Key="accounts/1/left-over.txt", Body=b"x")
    text = (REPO / "regions.yaml").read_text()
    regions = tmp_path / "regions.yaml"
    regions.write_text(text[: text.index("workspace:")] + WORKSPACE)
    return env, catalogue.load(str(regions)), regions, bucket


def _expected(bucket):
    return [
        "table 'settings' reaches no workspace (no account_id column, no foreign key or configured path to a workspace table)"
        " and is not declared in workspace.global_tables",
        "target schema differs: column tags.name is character varying(40) in eu, text in the source",
        "primary keys of moving rows already present in target eu: tickets has 1 (id = 10)",
        f"unique constraint tickets_uuid_key on tickets (uuid): 1 moving row clashes with rows in eu (uuid = {CLASHING_UUID})",
        f"objects already present in target eu: 1 under accounts/1/ in bucket {bucket}",
    ]


def _cli(env, regions, *args):
    e = dict(os.environ)
    e.update(connections_env(env))
    e["RESIDENCY_APP_SCHEMA"] = "rf"
    return subprocess.run([sys.executable, str(REPO / "cli.py"), "--regions", str(regions), *args],
                          env=e, capture_output=True, text=True, timeout=120, cwd=str(REPO))


def test_plan_lists_every_problem_at_once(world):
    env, cat, _, bucket = world
    plan = plan_move(cat, env.connections, "1", "eu")
    assert sorted(plan.refusals) == sorted(_expected(bucket))
    # the tables that can still be counted are counted
    assert {t.table: t.rows for t in plan.tables} == {"accounts": 1, "tickets": 3, "tags": 2}
    text = render(plan).splitlines()
    i = text.index("REFUSED (5):")
    assert sorted(text[i + 1:]) == sorted(f"  - {r}" for r in _expected(bucket))


def test_cli_plan_and_start_print_one_refusal_per_line_and_json_lists(world):
    env, _, regions, bucket = world
    expected = sorted(_expected(bucket))

    p = _cli(env, regions, "move", "plan", "1", "--to", "eu", "--json")
    assert p.returncode == 1, p.stderr
    data = json.loads(p.stdout)
    assert data["ok"] is False and sorted(data["refusals"]) == expected

    p = _cli(env, regions, "move", "start", "1", "--to", "eu", "--yes")
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert lines[0] == "error: move refused (5 refusals):"
    assert sorted(lines[1:]) == sorted(f"  - {r}" for r in expected)

    p = _cli(env, regions, "move", "start", "1", "--to", "eu", "--yes", "--json")
    assert p.returncode == 1, p.stderr
    data = json.loads(p.stdout)
    assert data["refused"] is True and data["ok"] is False and sorted(data["refusals"]) == expected
    assert sorted(data["plan"]["refusals"]) == expected
    assert move_status(env.connections, None, open_only=False) == []  # nothing was recorded or fenced


def test_a_single_refusal_stays_one_line(world):
    env, _, regions, bucket = world
    for stmt in ("DROP TABLE rf.settings", "TRUNCATE rf.tickets", "ALTER TABLE rf.tags ALTER COLUMN name TYPE text"):
        with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
            c.execute(stmt)
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        c.execute("DROP TABLE rf.settings")
    p = _cli(env, regions, "move", "start", "1", "--to", "eu", "--yes")
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [f"error: move refused: objects already present in target eu: 1 under accounts/1/ in bucket {bucket}"]
