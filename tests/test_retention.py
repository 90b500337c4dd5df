"""Retention rules (issue 14): a 1-hour rule on one workspace's messages deletes exactly the
expired messages with what hangs off them, leaves every other workspace alone, writes a deletion
record and an audit entry; plan counts what run deletes; a non-superuser runs it; writers keep
going while it runs; rules resolve per jurisdiction, region and workspace."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql

from residency import catalogue as catalogue_mod
from residency import retention_rules
from residency.errors import CatalogueError
from residency.expiry import plan, run

from conftest import REGIONS_YAML


def catalogue_with(section: str, base: str | None = None):
    """The repository's regions.yaml with its retention: section replaced by ``section``."""
    text = base or REGIONS_YAML.read_text(encoding="utf-8")
    head = text.split("\nretention:", 1)[0]
    return catalogue_mod.loads(head.rstrip("\n") + "\n\n" + section, "regions.yaml")


def one_hour_rule(ws: int, dependants: str = "delete") -> str:
    return (f'retention:\n  workspaces:\n    "{ws}":\n      tables:\n'
            f"        messages: {{column: created_at, older_than: 1h, dependants: {dependants}}}\n")


def age_messages(dsn: str, ws: int) -> dict[str, int]:
    """Make about half of the workspace's messages two hours old and the rest five minutes old;
    return how many of each, and the dependants of the old ones."""
    now = datetime.now(timezone.utc)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("UPDATE messages SET created_at = CASE WHEN id %% 2 = 0 THEN %s ELSE %s END WHERE workspace_id = %s",
                  (now - timedelta(hours=2), now - timedelta(minutes=5), ws))
        old = sql.SQL("SELECT id FROM messages WHERE workspace_id = %(ws)s AND id %% 2 = 0")
        q = {
            "old": sql.SQL("SELECT count(*) FROM ({old}) o"),
            "new": sql.SQL("SELECT count(*) FROM messages WHERE workspace_id = %(ws)s AND id %% 2 = 1"),
            "attachments": sql.SQL("SELECT count(*) FROM attachments WHERE message_id IN ({old})"),
            "previews": sql.SQL("SELECT count(*) FROM attachment_previews WHERE attachment_id IN (SELECT id FROM attachments WHERE message_id IN ({old}))"),
            "reactions": sql.SQL("SELECT count(*) FROM reactions WHERE subject_type = 'message' AND subject_id IN ({old})"),
            "replies": sql.SQL("SELECT count(*) FROM messages WHERE parent_id IN ({old}) AND id %% 2 = 1"),
        }
        q = {k: v.format(old=old) for k, v in q.items()}
        return {k: c.execute(v, {"ws": ws}).fetchone()[0] for k, v in q.items()}


def table_counts(dsn: str, ws: int) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return {
            "messages": c.execute("SELECT count(*) FROM messages WHERE workspace_id = %s", (ws,)).fetchone()[0],
            "conversations": c.execute("SELECT count(*) FROM conversations WHERE workspace_id = %s", (ws,)).fetchone()[0],
            "all_messages": c.execute("SELECT count(*) FROM messages").fetchone()[0],
        }


@pytest.fixture
def world(env):
    s = env.seed(workspaces=3, rows=3000, seed=7)
    ws = s.smallest_in("us")
    return env, ws, age_messages(env.dsn("us"), ws)


def _parts(report, ws):
    (w,) = [w for w in report.workspaces if w.workspace_id == str(ws)]
    (rule,) = w.rules
    return w, rule, {(p.table, p.action, p.via.count("←")): p for p in rule.parts}


def test_a_one_hour_rule_deletes_exactly_the_expired_messages_with_their_dependants(world):
    env, ws, before = world
    cat = catalogue_with(one_hour_rule(ws))
    others_before = table_counts(env.dsn("us"), ws)["all_messages"] - table_counts(env.dsn("us"), ws)["messages"]

    planned = plan(cat, env.connections, region="us")
    w, rule, parts = _parts(planned, ws)
    assert not rule.problems, rule.problems
    assert parts[("messages", "delete", 0)].rows == before["old"]
    assert parts[("attachments", "delete", 1)].rows == before["attachments"]
    assert parts[("attachment_previews", "delete", 2)].rows == before["previews"]
    assert parts[("reactions", "delete", 1)].rows == before["reactions"]
    assert parts[("messages", "unlink", 1)].rows == before["replies"]  # a reply outlives its expired parent, unlinked
    assert before["old"] > 0 and before["attachments"] > 0 and before["reactions"] > 0

    done = run(cat, env.connections, region="us", batch_rows=97)
    w2, rule2, parts2 = _parts(done, ws)
    assert done.backups is not None and done.backups["state"] in ("done", "not wired")  # the backups engine's expiry, when installed
    assert {k: p.rows for k, p in parts2.items()} == {k: p.rows for k, p in parts.items()}  # plan == run
    assert rule2.batches > 1

    after = table_counts(env.dsn("us"), ws)
    assert after["messages"] == before["new"]
    assert after["all_messages"] - after["messages"] == others_before  # other workspaces untouched
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM messages WHERE workspace_id = %s AND created_at < now() - interval '1 hour'", (ws,)).fetchone()[0] == 0
    assert plan(cat, env.connections, workspace=ws).rows == 0  # nothing left to expire

    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        rec_id, state, rows, record = c.execute(
            "SELECT id, state, rows_deleted, record FROM residency.retention_runs WHERE workspace_id = %s", (str(ws),)).fetchone()
        action, details = c.execute("SELECT action, details FROM residency.audit WHERE action = 'retention.run' AND subject = %s",
                                    (f"workspace:{ws}",)).fetchone()
    assert state == "done" and rec_id == w2.record_id
    assert rows == before["old"] + before["attachments"] + before["previews"] + before["reactions"]
    msg = next(p for p in record["rules"][0]["parts"] if p["table"] == "messages" and p["action"] == "delete")
    assert msg["rows"] == before["old"] and int(msg["checksum"]) != 0
    assert msg["oldest"] and msg["newest"] and msg["newest"] < rule2.cutoff
    assert details["retention_run"] == rec_id and details["rows"] == rows and len(details["record_sha256"]) == 64


def test_the_checksum_is_the_movers_checksum_of_the_deleted_rows(world):
    """The record's checksum of the deleted messages is what the mover's verify computes for the
    same rows (sum of hash_record_extended over its hashed columns), taken before they went."""
    env, ws, before = world
    from residency.migrate import graph as graph_mod
    from residency.migrate.introspect import introspect
    from residency.migrate.sqlbuild import Builder

    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        b = Builder(graph_mod.build(introspect(c), env.catalogue.workspace))
        x = sql.Identifier("x")
        q = sql.SQL("SELECT count(*), sum(hash_record_extended(h, 0)::numeric) FROM (SELECT {} FROM messages {} WHERE {}.workspace_id = %s AND {}.id %% 2 = 0) h").format(
            b._hash_columns(b.graph.table("messages"), x), x, x, x)
        n, expected = c.execute(q, (ws,)).fetchone()
    done = run(catalogue_with(one_hour_rule(ws)), env.connections, workspace=ws)
    _, rule, parts = _parts(done, ws)
    assert parts[("messages", "delete", 0)].rows == n == before["old"]
    assert int(parts[("messages", "delete", 0)].checksum) == int(expected)


def test_dependants_keep_leaves_expired_messages_something_points_at(world):
    env, ws, before = world
    cat = catalogue_with(one_hour_rule(ws, "keep"))
    done = run(cat, env.connections, workspace=ws)
    _, rule, parts = _parts(done, ws)
    assert set(parts) == {("messages", "delete", 0)}
    deleted = parts[("messages", "delete", 0)].rows
    for _ in range(5):  # a message held only by a reply that went in the same run goes in the next one
        more = run(cat, env.connections, workspace=ws).rows
        deleted += more
        if not more:
            break
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        left_old = c.execute("SELECT count(*) FROM messages WHERE workspace_id = %s AND id %% 2 = 0", (ws,)).fetchone()[0]
        held = c.execute("SELECT count(*) FROM messages m WHERE workspace_id = %s AND id %% 2 = 0 AND ("
                         " EXISTS (SELECT 1 FROM attachments a WHERE a.message_id = m.id)"
                         " OR EXISTS (SELECT 1 FROM reactions r WHERE r.subject_type = 'message' AND r.subject_id = m.id)"
                         " OR EXISTS (SELECT 1 FROM messages x WHERE x.parent_id = m.id))", (ws,)).fetchone()[0]
        assert c.execute("SELECT count(*) FROM attachments").fetchone()[0] > 0
    assert left_old == held > 0
    assert deleted == before["old"] - held


def test_a_non_superuser_runs_it(world):
    env, ws, before = world
    dsn = env.grant_role("us", f"ret_{env.token}", owner=True, set_replication_role=False)
    with psycopg.connect(dsn, autocommit=True) as c:
        assert c.execute("SELECT current_setting('is_superuser')").fetchone()[0] == "off"
    done = run(catalogue_with(one_hour_rule(ws)), env.connections_as({"us": dsn}), workspace=ws)
    assert done.rows == before["old"] + before["attachments"] + before["previews"] + before["reactions"]
    assert table_counts(env.dsn("us"), ws)["messages"] == before["new"]


def test_writers_keep_going_while_it_runs(world):
    """A writer inserting messages into the same workspace (and table) throughout the run is never
    blocked by it: each insert completes (no timing asserted here; bench/retentionbench.py measures)."""
    env, ws, before = world
    stop = threading.Event()
    done_inserts: list[int] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with psycopg.connect(env.dsn("us"), autocommit=True) as c:
                c.execute("SET lock_timeout = '5s'")  # a wait this long would fail the insert
                conv = c.execute("SELECT id FROM conversations WHERE workspace_id = %s LIMIT 1", (ws,)).fetchone()[0]
                while not stop.is_set():
                    c.execute("INSERT INTO messages (workspace_id, conversation_id, body) VALUES (%s, %s, 'live')", (ws, conv))
                    done_inserts.append(1)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    try:
        while not done_inserts:
            time.sleep(0.01)
        report = run(catalogue_with(one_hour_rule(ws)), env.connections, workspace=ws, batch_rows=50)
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert report.rows >= before["old"]
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM messages WHERE workspace_id = %s AND body = 'live'", (ws,)).fetchone()[0] == len(done_inserts)


def test_workspaces_being_moved_are_skipped_and_bad_tables_are_problems(world):
    env, ws, before = world
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        c.execute("UPDATE residency.directory SET status = 'frozen' WHERE workspace_id = %s", (str(ws),))
    p = plan(catalogue_with(one_hour_rule(ws)), env.connections, workspace=ws)
    assert p.workspaces[0].skipped == "directory status frozen"
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        c.execute("UPDATE residency.directory SET status = 'active' WHERE workspace_id = %s", (str(ws),))
    bad = ('retention:\n  regions:\n    us:\n      tables:\n'
           '        messages: {column: body, older_than: 1h}\n        threads: {column: created_at, older_than: 1h}\n')
    p = plan(catalogue_with(bad), env.connections, workspace=ws)
    problems = [x for r in p.workspaces[0].rules for x in r.problems]
    assert any("column 'body' is text, not a timestamp" in x for x in problems)
    assert any("table 'threads' does not exist" in x for x in problems)


# --------------------------------------------------------------------------- rules resolution (no database)


def test_rules_combine_shortest_wins_and_backups_most_specific():
    cat = catalogue_with(
        "retention:\n"
        "  jurisdictions:\n"
        "    EU: {backups: 35d, deleted_workspaces: {after: 30d, marked_by: deleted_at}, tables: {messages: {column: created_at, older_than: 400d}}}\n"
        "  regions:\n"
        "    eu: {tables: {messages: {column: created_at, older_than: 90d}}}\n"
        "  workspaces:\n"
        '    "7": {backups: 180d, tables: {messages: {column: created_at, older_than: 1h}}}\n'
        '    "8": {tables: {messages: {column: created_at, older_than: 2000d}}}\n'
    )
    e7 = retention_rules.effective(cat, "eu", 7)
    assert [(t.table, t.older_than, t.scope) for t in e7.tables] == [("messages", timedelta(hours=1), "workspace 7")]
    assert e7.backups == timedelta(days=180) and e7.backups_from == "workspace 7"
    e8 = retention_rules.effective(cat, "eu", 8)  # asks for more than region and law allow: capped
    assert [(t.older_than, t.scope) for t in e8.tables] == [(timedelta(days=90), "region eu")]
    assert e8.deleted_workspaces.after == timedelta(days=30) and e8.backups == timedelta(days=35)
    us = retention_rules.effective(cat, "us", 8)  # the same workspace in the US: only its own rule
    assert [(t.older_than, t.scope) for t in us.tables] == [(timedelta(days=2000), "workspace 8")]
    assert us.backups == timedelta(days=35) and us.backups_from == "environment.retention.backups_days"
    assert "messages older than 1h by created_at, with their dependants (workspace 7)" in e7.summary()


def test_a_workspace_id_that_is_no_id_is_refused_at_its_line():
    with pytest.raises(CatalogueError) as exc:
        catalogue_with('retention:\n  workspaces:\n    "seven": {tables: {messages: {column: created_at, older_than: 1h}}}\n')
    (line,) = exc.value.problems
    assert line.startswith("regions.yaml:") and "retention.workspaces.seven" in line and "seven" in line


def test_the_cli_plans_and_runs_with_json(world, tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from move_support import connections_env
    from residency.cli import main

    env, ws, before = world
    regions = tmp_path / "regions.yaml"
    head = REGIONS_YAML.read_text(encoding="utf-8").split("\nretention:", 1)[0]
    regions.write_text(head.rstrip("\n") + "\n\n" + one_hour_rule(ws))
    for k, v in connections_env(env).items():
        monkeypatch.setenv(k, v)
    r = CliRunner().invoke(main, ["--regions", str(regions), "retention", "plan", "--region", "us"])
    assert r.exit_code == 0, r.output
    assert f"us workspace {ws}: would delete" in r.output and "messages older than 1h by created_at" in r.output
    r = CliRunner().invoke(main, ["--regions", str(regions), "retention", "run", "--workspace", str(ws), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    (w,) = data["workspaces"]
    assert w["rows"] == before["old"] + before["attachments"] + before["previews"] + before["reactions"] and w["record_id"]
    r = CliRunner().invoke(main, ["--regions", str(regions), "retention", "plan", "--workspace", "nope"])
    assert r.exit_code == 2 and r.output.count("\n") == 1


def test_a_move_plan_shows_and_checks_the_targets_retention(world):
    from residency.migrate import plan_move
    from residency.migrate.plan import render

    env, ws, before = world
    cat = catalogue_with("retention:\n  jurisdictions:\n    EU: {backups: 20d, tables: {messages: {column: created_at, older_than: 1h}}}\n")
    p = plan_move(cat, env.connections, ws, "eu")
    assert p.ok, p.refusals
    after = p.to_dict()["retention"]["after"]
    assert [(t["table"], t["older_than_seconds"], t["scope"]) for t in after["tables"]] == [("messages", 3600, "jurisdiction EU")]
    assert after["backups"] == "20d" and p.retention["before"]["tables"] == []
    assert p.retention["expire_at_once"][0]["rows"] == before["old"]
    text = render(p)
    assert "retention in eu after the move: messages older than 1h by created_at, with their dependants (jurisdiction EU)" in text
    assert f"{before['old']} rows of messages are older than eu's rule" in text
    assert ("retention changes from us: no longer: backups kept 35d (environment.retention.backups_days); now: messages older than 1h"
            in text and "now: backups kept 20d (jurisdiction EU)" in text)

    same = catalogue_with("retention:\n  jurisdictions:\n    EU: {backups: 35d}\n")  # the default's 35d, said by EU
    assert not any("retention changes" in n for n in plan_move(same, env.connections, ws, "eu").notes)

    bad = catalogue_with("retention:\n  regions:\n    eu: {tables: {messages: {column: body, older_than: 1h}}}\n")
    p = plan_move(bad, env.connections, ws, "eu")
    assert any(r.startswith("eu's retention: retention rule on messages (region eu): column 'body' is text") for r in p.refusals), p.refusals


def test_a_workspace_marked_deleted_past_its_rule_is_purged_with_its_objects(env):
    from residency.migrate.objects import version_inventory

    s = env.seed(workspaces=6, rows=1500, seed=9)
    gone, stays = sorted(s.workspaces["us"])[:2]
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        c.execute("ALTER TABLE workspaces ADD COLUMN deleted_at timestamptz")
        c.execute("UPDATE workspaces SET deleted_at = now() - interval '40 days' WHERE id = %s", (gone,))
        c.execute("UPDATE workspaces SET deleted_at = now() - interval '10 days' WHERE id = %s", (stays,))
    cat = catalogue_with("retention:\n  jurisdictions:\n    US: {deleted_workspaces: {after: 30d, marked_by: deleted_at}}\n")
    ep = env.connections.region("us")
    assert version_inventory(ep, cat.environment.buckets, cat.workspace.prefix_for(gone))  # it has objects
    planned = plan(cat, env.connections, region="us")
    (w,) = planned.workspaces
    assert w.workspace_id == str(gone) and w.purge["tables"]["messages"] == s.rows[gone]["messages"]
    assert w.purge["rows"] >= s.rows_of(gone)  # its rows of every table (the seed counts the main ones)
    done = run(cat, env.connections, region="us")
    (w,) = done.workspaces
    assert not done.failed and w.purge["tables"]["messages"]["deleted"] == s.rows[gone]["messages"]
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM messages WHERE workspace_id = %s", (gone,)).fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM workspaces WHERE id = %s", (gone,)).fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM messages WHERE workspace_id = %s", (stays,)).fetchone()[0] == s.rows[stays]["messages"]
    assert version_inventory(ep, cat.environment.buckets, cat.workspace.prefix_for(gone)) == []
    assert version_inventory(ep, cat.environment.buckets, cat.workspace.prefix_for(stays))
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        (details,) = c.execute("SELECT details FROM residency.audit WHERE action = 'retention.purge'").fetchone()
    assert details["rows"] == w.rows > 0 and details["object_versions"] > 0


def test_a_rule_on_conversations_of_a_rails_app_takes_their_messages_attachments_and_taggings(env, monkeypatch):
    """A schema nobody designed for the mover (tests/test_real_app_rails.py): conversations expire
    with what hangs off them -- their messages (a NOT NULL foreign key), the messages'
    ActiveStorage attachments (polymorphic path) and the conversations' taggings (polymorphic path);
    blobs (owned through attachments) and global tags stay; another account is untouched."""
    from test_real_app_rails import DDL, WORKSPACE, _fill, _q, _tenant

    from move_support import load_app

    rails = load_app(env, monkeypatch, "rails", DDL, WORKSPACE, {"1": "us", "2": "us", "3": "eu"})
    _fill(env.dsn("us"), [1, 2], 1_000_000, ("churn-risk", "vip"))
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        c.execute("ALTER TABLE rails.conversations ADD COLUMN created_at timestamptz NOT NULL DEFAULT now()")
        c.execute("UPDATE rails.conversations SET created_at = now() - interval '10 days' WHERE account_id = %s AND id %% 2 = 0", (1,))
    old = _q(env.dsn("us"), "SELECT count(*) FROM conversations WHERE account_id = %s AND id %% 2 = 0", 1)[0][0]
    gone = {
        "messages": _q(env.dsn("us"), "SELECT count(*) FROM messages WHERE conversation_id IN (SELECT id FROM conversations WHERE account_id = %s AND id %% 2 = 0)", 1)[0][0],
        "attachments": _q(env.dsn("us"), "SELECT count(*) FROM active_storage_attachments a JOIN messages m ON a.record_type = 'Message' AND a.record_id = m.id"
                                         " JOIN conversations v ON v.id = m.conversation_id WHERE v.account_id = %s AND v.id %% 2 = 0", 1)[0][0],
        "taggings": _q(env.dsn("us"), "SELECT count(*) FROM taggings WHERE taggable_type = 'Conversation' AND taggable_id IN"
                                      " (SELECT id FROM conversations WHERE account_id = %s AND id %% 2 = 0)", 1)[0][0],
    }
    before1, before2 = _tenant(env.dsn("us"), 1), _tenant(env.dsn("us"), 2)
    blobs = _q(env.dsn("us"), "SELECT count(*) FROM active_storage_blobs")[0][0]
    head = REGIONS_YAML.read_text(encoding="utf-8")
    cat = catalogue_with('retention:\n  workspaces:\n    "1": {tables: {conversations: {column: created_at, older_than: 7d}}}\n',
                         base=head[: head.index("workspace:")] + WORKSPACE)
    assert cat.workspace.root_table == rails.workspace.root_table == "accounts"
    planned = plan(cat, env.connections, workspace="1")
    (w,) = planned.workspaces
    (rule,) = w.rules
    assert not rule.problems, rule.problems
    counts = {p.table: p.rows for p in rule.parts if p.action == "delete"}
    assert counts == {"conversations": old, "messages": gone["messages"], "active_storage_attachments": gone["attachments"], "taggings": gone["taggings"]}
    assert any("active_storage_blobs" in n for n in rule.notes)
    done = run(cat, env.connections, workspace="1", batch_rows=3)
    assert {p.table: p.rows for p in done.workspaces[0].rules[0].parts if p.action == "delete"} == counts
    after1 = _tenant(env.dsn("us"), 1)
    assert after1["conversations"] == before1["conversations"] - old
    assert after1["messages"] == before1["messages"] - gone["messages"]
    assert after1["attachments"] == before1["attachments"] - gone["attachments"]
    assert after1["taggings"] == before1["taggings"] - gone["taggings"]
    assert _tenant(env.dsn("us"), 2) == before2
    assert _q(env.dsn("us"), "SELECT count(*) FROM active_storage_blobs")[0][0] == blobs
