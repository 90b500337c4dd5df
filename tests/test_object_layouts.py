"""Object layouts where the tenant's id is not the first part of the key (issue 16, item 10):
`object_prefix: "{date}/teams/{workspace_id}/"`. Objects are listed by the literal prefix before
the first placeholder and filtered by the layout's pattern; copy, verify, cleanup and rollback
see exactly the same keys. Against the sandbox's moto S3 server."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from app16_support import catalogue_with
from move_support import load_app
from residency.migrate import cleanup_move, plan_move, rollback_move, start_move, verify_workspace
from residency.migrate.objects import list_objects
from residency.connections import s3_client
from residency.errors import CatalogueError

LAYOUT = "{date}/teams/{workspace_id}/"
WORKSPACE = f"""workspace:
  root_table: teams
  key_column: team_id
  object_prefix: "{LAYOUT}"
"""
DDL = """
CREATE SCHEMA chat;
CREATE TABLE chat.teams (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE chat.posts (id text PRIMARY KEY, team_id text NOT NULL REFERENCES chat.teams, body text);
"""
KEYS = [
    "2024-01-01/teams/t2/a.png", "2024-03-09/teams/t2/deep/er/b.txt", "2025-12-31/teams/t2/c",  # t2's
    "2024-01-01/teams/t21/a.png",      # another team whose id starts with t2
    "2024-01-01/teams/t3/a.png",       # another team
    "2024-01-01/teams/t2",             # no trailing '/': not under the layout
    "2024/01/teams/t2/x",              # two segments where {date} is one
    "exports/teams/t2/",               # a folder marker of its own? one segment 'exports': matches
]
T2 = {k for k in KEYS if k.split("/")[1:3] == ["teams", "t2"] and k.count("/") >= 3}


def _objects(env, region, bucket="attachments"):
    c = env.s3(region)
    out = set()
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=env.connections.region(region).bucket(bucket)):
        out |= {o["Key"] for o in page.get("Contents", [])}
    return out


@pytest.fixture
def chat(env, monkeypatch):
    cat = load_app(env, monkeypatch, "chat", DDL, WORKSPACE, {t: "us" for t in ("t2", "t21", "t3")})
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        for t in ("t2", "t21", "t3"):
            c.execute("INSERT INTO chat.teams VALUES (%s, %s)", (t, f"team {t}"))
            c.execute("INSERT INTO chat.posts VALUES (%s, %s, 'hi')", (f"p-{t}", t))
    s3 = env.s3("us")
    for k in KEYS:
        s3.put_object(Bucket=env.connections.region("us").bucket("attachments"), Key=k, Body=f"body of {k}".encode())
    return cat


def test_listing_filters_by_the_layout(env, chat):
    prefix = chat.workspace.prefix_for("t2")
    assert str(prefix) == "{date}/teams/t2/" and prefix.literal == ""
    ep = env.connections.region("us")
    assert set(list_objects(s3_client(ep), ep.bucket("attachments"), prefix)) == T2
    assert T2 == {"2024-01-01/teams/t2/a.png", "2024-03-09/teams/t2/deep/er/b.txt", "2025-12-31/teams/t2/c", "exports/teams/t2/"}
    # a layout whose placeholders come after the id lists by the literal part and filters the rest
    later = catalogue_with(WORKSPACE.replace(LAYOUT, "teams/{workspace_id}/{date}/")).workspace.prefix_for("t2")
    assert later.literal == "teams/t2/" and later.matches("teams/t2/2024/x") and not later.matches("teams/t2/x")


def test_a_move_copies_verifies_and_cleans_up_exactly_the_tenants_objects(env, chat):
    plan = plan_move(chat, env.connections, "t2", "eu")
    assert plan.ok, plan.refusals
    assert plan.objects["attachments"]["objects"] == len(T2)
    rec = start_move(chat, env.connections, "t2", "eu")
    assert rec.state == "cut_over"
    assert _objects(env, "eu") == T2
    assert rec.report["verify"]["objects"]["ok"]
    assert verify_workspace(chat, env.connections, "t2", "us", "eu").ok
    # an object of the tenant that differs in the target fails verify
    env.s3("eu").put_object(Bucket=env.connections.region("eu").bucket("attachments"), Key="2025-12-31/teams/t2/c", Body=b"changed")
    res = verify_workspace(chat, env.connections, "t2", "us", "eu")
    assert not res.ok and any("2025-12-31/teams/t2/c" in p for p in res.problems())
    # another tenant's object in the target is not the tenant's: verify does not see it
    env.s3("eu").put_object(Bucket=env.connections.region("eu").bucket("attachments"), Key="2025-12-31/teams/t21/z", Body=b"z")
    env.s3("eu").put_object(Bucket=env.connections.region("eu").bucket("attachments"), Key="2025-12-31/teams/t2/c", Body=b"body of 2025-12-31/teams/t2/c")
    assert verify_workspace(chat, env.connections, "t2", "us", "eu").ok

    rec = cleanup_move(chat, env.connections, rec.id, grace=timedelta(0))
    assert _objects(env, "us") == set(KEYS) - T2
    assert rec.report["deletion"]["object_count"] == len(T2)


def test_rollback_removes_only_the_tenants_objects_from_the_target(env, chat):
    other = "2024-05-05/teams/t30/keep.txt"  # eu's own tenant's object
    env.s3("eu").put_object(Bucket=env.connections.region("eu").bucket("attachments"), Key=other, Body=b"mine")
    rec = start_move(chat, env.connections, "t2", "eu", stop_after="copied")
    assert _objects(env, "eu") == T2 | {other}
    rollback_move(chat, env.connections, rec.id)
    assert _objects(env, "eu") == {other}
    assert _objects(env, "us") == set(KEYS)


def test_objects_already_in_the_target_under_the_layout_are_refused(env, chat):
    env.s3("eu").put_object(Bucket=env.connections.region("eu").bucket("attachments"), Key="2020-02-02/teams/t3/old", Body=b"x")
    plan = plan_move(chat, env.connections, "t3", "eu")
    assert any("objects already present in target eu: 1 under {date}/teams/t3/" in r for r in plan.refusals), plan.refusals
    assert plan_move(chat, env.connections, "t21", "eu").ok


@pytest.mark.parametrize("layout, message", [
    ("{date}/teams/", "must contain {workspace_id}, such as"),
    ("{workspace_id}/teams/{workspace_id}/", "must contain {workspace_id} once"),
    ("{Date}/teams/{workspace_id}/", "not {Date}"),
    ("{date}{workspace_id}/", "two placeholders must be separated by literal text"),
    ("{date}/teams/{workspace_id}", "must end with '/'"),
    ("teams/{workspace_id}/{x-y}/", "not {x-y}"),
])
def test_layouts_are_validated_with_their_line(layout, message):
    with pytest.raises(CatalogueError) as e:
        catalogue_with(WORKSPACE.replace(LAYOUT, layout), "l.yaml")
    (line,) = e.value.problems
    assert message in line and line.startswith("l.yaml:") and f"object_prefix '{layout}'" in line
    assert catalogue_with(WORKSPACE).workspace.object_prefix == LAYOUT
