"""Backups and record-level restore (issue 14), in the sandbox fixtures, as the non-superuser
``residency_mover``: backed up to the region's backup AWS region with SSE-KMS, a deleted
conversation named by ``backup diff`` and brought back with its messages, attachments, previews
and reactions, verified; tamper, schema change, kill -9, policy refusal, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import psycopg
import pytest
from click.testing import CliRunner

from move_support import REPO, connections_env
from residency import audit
from residency.backups import create_backup, diff_backups, list_backups, restore, verify_backup
from residency.backups.create import BackupOptions
from residency.backups.records import get_backup
from residency.errors import InputError, OperationError

from bench.backupbench import DELETE as DELETE_CONVERSATION  # the statements the benchmark deletes a conversation with (pytest's pythonpath has the root)


def conversation_rows(dsn: str, c: int) -> dict[str, list]:
    """The conversation and everything hanging off it, as full rows (written independently of the engine)."""
    q = {
        "conversations": "SELECT * FROM conversations WHERE id = %(c)s",
        "messages": "SELECT * FROM messages WHERE conversation_id = %(c)s ORDER BY id",
        "attachments": "SELECT a.* FROM attachments a JOIN messages m ON m.id = a.message_id WHERE m.conversation_id = %(c)s ORDER BY a.id",
        "attachment_previews": "SELECT p.* FROM attachment_previews p JOIN attachments a ON a.id = p.attachment_id JOIN messages m ON m.id = a.message_id"
        " WHERE m.conversation_id = %(c)s ORDER BY p.id",
        "reactions": "SELECT r.* FROM reactions r WHERE (r.subject_type = 'conversation' AND r.subject_id = %(c)s) OR (r.subject_type = 'message'"
        " AND r.subject_id IN (SELECT id FROM messages WHERE conversation_id = %(c)s)) ORDER BY r.id",
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {t: conn.execute(s, {"c": c}).fetchall() for t, s in q.items()}


def rich_conversation(dsn: str, ws: int) -> int:
    """A conversation of ``ws`` with messages that have attachments with previews, and reactions."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT m.conversation_id FROM messages m JOIN attachments a ON a.message_id = m.id JOIN attachment_previews p ON p.attachment_id = a.id"
            " JOIN reactions r ON r.subject_type = 'message' AND r.subject_id = m.id WHERE m.workspace_id = %s"
            " GROUP BY 1 ORDER BY count(*) DESC LIMIT 1", (ws,)).fetchone()
        assert row, "the seed made no conversation with attachments, previews and reactions"
        # the seed's thread replies may sit in other conversations; keep this conversation's inside it
        conn.execute("UPDATE messages SET parent_id = NULL WHERE conversation_id <> %(c)s AND parent_id IN"
                     " (SELECT id FROM messages WHERE conversation_id = %(c)s)", {"c": row[0]})
    return int(row[0])


@pytest.fixture
def world(env):
    s = env.seed(workspaces=3, rows=3000, seed=14)
    ws = s.smallest_in("us")
    mover = env.grant_role("us")  # the non-superuser residency_mover
    return env, ws, env.connections_as({"us": mover})


def test_backup_diff_restore_a_deleted_conversation(world, monkeypatch):
    env, ws, conns = world
    monkeypatch.setenv("RESIDENCY_BACKUP_BLOCK_ROWS", "16")  # blocks of 16 rows: a restore reads a few by byte range
    cat = env.catalogue
    c = rich_conversation(env.dsn("us"), ws)
    res = create_backup(cat, conns, ws, options=BackupOptions(chunk_rows=300))  # small chunks: several per table
    assert res.aws_region == "us-west-2" and res.rows > 0
    assert res.tables["messages"]["chunks"] > 2
    # stored in the backup bucket of the backup AWS region, every object SSE-KMS with the region's key there
    s3 = env.s3("us", backup=True)
    assert s3.get_bucket_location(Bucket=res.bucket)["LocationConstraint"] == "us-west-2"
    keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=res.bucket, Prefix=res.prefix) for o in p.get("Contents", [])]
    assert f"{res.prefix}manifest.json" in keys and len(keys) > 2 * len(res.tables)
    head = s3.head_object(Bucket=res.bucket, Key=keys[0])
    assert head["ServerSideEncryption"] == "aws:kms"
    assert res.tables["users"]["rows"] > 0  # the shared rows it references came along
    before = conversation_rows(env.dsn("us"), c)
    assert all(before[t] for t in before), {t: len(v) for t, v in before.items()}
    with psycopg.connect(env.dsn("us"), autocommit=True) as conn:
        for stmt in DELETE_CONVERSATION:
            conn.execute(stmt, {"c": c})
        # a dependant that changed since the backup is never overwritten... (a message of another conversation, untouched)
    d = diff_backups(cat, conns, ws, res.id, "now")
    by = {t.table: t for t in d.tables}
    assert c in by["conversations"].keys["deleted"] and by["conversations"].deleted == 1
    assert by["messages"].deleted == len(before["messages"]) and by["messages"].added == 0
    assert by["reactions"].deleted == len(before["reactions"])
    # restore the conversation: back with everything that hangs off it, verified
    r = restore(cat, conns, ws, res.id, table="conversations", keys=[str(c)])
    assert r.verified
    assert conversation_rows(env.dsn("us"), c) == before
    got = {t.table: t.restored for t in r.tables}
    assert got == {t: len(v) for t, v in before.items()}
    assert r.chunks_read < r.chunks_total  # only the chunks holding the records were read
    man = json.loads(env.s3("us", backup=True).get_object(Bucket=res.bucket, Key=res.prefix + "manifest.json")["Body"].read())
    assert all(len(c["data"]["blocks"]) == -(-c["rows"] // 16) for c in man["tables"]["messages"]["chunks"])
    # nothing differs from the backup any more
    assert diff_backups(cat, conns, ws, res.id).changes == 0
    # again: nothing to do, nothing overwritten
    again = restore(cat, conns, ws, res.id, table="conversations", keys=[str(c)])
    assert again.restored == 0 and all(t.unchanged for t in again.tables)
    with psycopg.connect(env.control_dsn, autocommit=True) as cp:
        actions = [e.action for e in audit.entries(cp, f"workspace:{ws}")]
        assert {"backup.created", "restore.started", "restore.done"} <= set(actions)
        assert [b.id for b in list_backups(cp, str(ws))] == [res.id]


def test_restore_never_overwrites_a_dependant_changed_since_the_backup(world):
    env, ws, conns = world
    c = rich_conversation(env.dsn("us"), ws)
    res = create_backup(env.catalogue, conns, ws)
    with psycopg.connect(env.dsn("us"), autocommit=True) as conn:
        (m,) = conn.execute("SELECT min(id) FROM messages WHERE conversation_id = %s", (c,)).fetchone()
        conn.execute("UPDATE messages SET body = 'edited after the backup' WHERE id = %s", (m,))
        conn.execute("UPDATE conversations SET subject = 'renamed' WHERE id = %s", (c,))
    r = restore(env.catalogue, conns, ws, res.id, table="conversations", keys=[str(c)])
    t = {x.table: x for x in r.tables}
    assert t["conversations"].overwritten == 1  # asked for: put back as it was
    assert t["messages"].skipped == [str(m)]  # not asked for: left as it is, and said
    with psycopg.connect(env.dsn("us"), autocommit=True) as conn:
        assert conn.execute("SELECT body FROM messages WHERE id = %s", (m,)).fetchone()[0] == "edited after the backup"
        assert conn.execute("SELECT subject FROM conversations WHERE id = %s", (c,)).fetchone()[0] != "renamed"


def test_verify_names_a_flipped_byte(world, monkeypatch):
    env, ws, conns = world
    monkeypatch.setenv("RESIDENCY_BACKUP_BLOCK_ROWS", "50")
    res = create_backup(env.catalogue, conns, ws, options=BackupOptions(chunk_rows=500))
    assert verify_backup(env.catalogue, conns, res.id).ok
    s3 = env.s3("us", backup=True)
    key = f"{res.prefix}t/messages/0.copy.z"
    body = bytearray(s3.get_object(Bucket=res.bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    s3.put_object(Bucket=res.bucket, Key=key, Body=bytes(body), ServerSideEncryption="aws:kms", SSEKMSKeyId=f"alias/{res.bucket}")
    check = verify_backup(env.catalogue, conns, res.id)
    assert not check.ok
    assert any("messages [1/" in p and key in p and "sha256" in p for p in check.problems), check.problems


def test_restore_refuses_a_schema_it_cannot_map(world):
    env, ws, conns = world
    c = rich_conversation(env.dsn("us"), ws)
    res = create_backup(env.catalogue, conns, ws)
    with psycopg.connect(env.admin_dsn("us").replace("/postgres", f"/{env.dbname}"), autocommit=True) as conn:
        for stmt in DELETE_CONVERSATION:
            conn.execute(stmt, {"c": c})
        conn.execute("ALTER TABLE messages ALTER COLUMN body TYPE varchar(4000)")
        conn.execute("ALTER TABLE attachments ADD COLUMN scanned boolean")
    with pytest.raises(OperationError, match=r"messages\.body was text in the backup, is character varying\(4000\) now"):
        restore(env.catalogue, conns, ws, res.id, table="conversations", keys=[str(c)])
    with psycopg.connect(env.dsn("us"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM conversations WHERE id = %s", (c,)).fetchone()[0] == 0  # nothing half-written


def test_bad_input_is_one_line(world, tmp_path):
    env, ws, conns = world
    res = create_backup(env.catalogue, conns, ws)
    with pytest.raises(InputError, match="is not in backup"):
        restore(env.catalogue, conns, ws, res.id, table="conversations", keys=["999999999"])
    with pytest.raises(InputError, match="unknown backup 424242"):
        restore(env.catalogue, conns, ws, 424242, table="conversations", keys=["1"])
    with pytest.raises(InputError, match="needs --table"):
        restore(env.catalogue, conns, ws, res.id, keys=["1"])
    with pytest.raises(InputError, match="not in backup"):
        restore(env.catalogue, conns, ws, res.id, table="nope", keys=["1"])
    e = {**os.environ, **connections_env(env)}
    p = subprocess.run([sys.executable, str(REPO / "cli.py"), "backup", "verify", "x1"], env=e, capture_output=True, text=True, cwd=str(REPO))
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "not a number" in p.stderr


def test_a_backup_region_outside_the_jurisdiction_is_refused(world, tmp_path):
    env, ws, conns = world
    # the regions file itself refuses it, line-exact (exit 2)
    text = (REPO / "regions.yaml").read_text().replace("backup_region: us-west-2", "backup_region: eu-central-1")
    bad = tmp_path / "regions.yaml"
    bad.write_text(text)
    e = {**os.environ, **connections_env(env)}
    p = subprocess.run([sys.executable, str(REPO / "cli.py"), "--regions", str(bad), "backup", "create", str(ws)], env=e,
                       capture_output=True, text=True, cwd=str(REPO))
    assert p.returncode == 2 and "backup_region eu-central-1 is in jurisdiction EU, not US" in p.stderr
    # and the library asks policy.may_copy before writing anything, whatever catalogue it is given
    us = env.catalogue.region("us")
    cat = dataclasses.replace(env.catalogue, regions={**env.catalogue.regions, "us": dataclasses.replace(us, backup_region="eu-central-1")})
    with pytest.raises(OperationError, match="eu-central-1 is outside jurisdiction US"):
        create_backup(cat, conns, ws)
    s3 = env.s3("us", backup=True)
    assert s3.list_objects_v2(Bucket=env.backup_buckets["us"]).get("KeyCount", 0) == 0
    with psycopg.connect(env.control_dsn, autocommit=True) as cp:
        assert list_backups(cp, str(ws), states=("running", "complete", "failed")) == []


def test_kill9_during_a_backup_leaves_no_backup_listed(world):
    env, ws, conns = world
    e = {**os.environ, **connections_env(env), "RESIDENCY_MOVE_KILL_AT": "backup_chunk_written", "RESIDENCY_MOVE_KILL_AFTER": "3"}
    p = subprocess.run([sys.executable, str(REPO / "cli.py"), "backup", "create", str(ws)], env=e, capture_output=True, text=True, cwd=str(REPO), timeout=300)
    assert p.returncode == -9, p.stderr
    s3 = env.s3("us", backup=True)
    assert s3.list_objects_v2(Bucket=env.backup_buckets["us"]).get("KeyCount", 0) > 0  # it had written chunks
    with psycopg.connect(env.control_dsn, autocommit=True) as cp:
        assert list_backups(cp, str(ws)) == []
    r = CliRunner().invoke(__import__("residency.cli", fromlist=["main"]).main, ["backup", "list", str(ws), "--json"], env=connections_env(env))
    assert r.exit_code == 0 and json.loads(r.output) == []
    # the expiry sweep removes what the killed backup left
    from datetime import timedelta

    from residency.backups import expire_backups

    out = expire_backups(env.catalogue, conns, stale_after=timedelta(0))
    assert len(out.abandoned) == 1 and out.ok
    assert s3.list_objects_v2(Bucket=env.backup_buckets["us"]).get("KeyCount", 0) == 0


def test_kill9_during_a_restore_rolls_back(world):
    env, ws, conns = world
    c = rich_conversation(env.dsn("us"), ws)
    res = create_backup(env.catalogue, conns, ws)
    before = conversation_rows(env.dsn("us"), c)
    with psycopg.connect(env.dsn("us"), autocommit=True) as conn:
        for stmt in DELETE_CONVERSATION:
            conn.execute(stmt, {"c": c})
    e = {**os.environ, **connections_env(env), "RESIDENCY_MOVE_KILL_AT": "restore_rows_written"}
    args = [sys.executable, str(REPO / "cli.py"), "restore", str(ws), "--from", str(res.id), "--table", "conversations", "--key", str(c)]
    p = subprocess.run(args, env=e, capture_output=True, text=True, cwd=str(REPO), timeout=300)
    assert p.returncode == -9
    assert all(not v for v in conversation_rows(env.dsn("us"), c).values())  # one transaction: nothing of it committed
    e.pop("RESIDENCY_MOVE_KILL_AT")
    p = subprocess.run(args, env=e, capture_output=True, text=True, cwd=str(REPO), timeout=300)
    assert p.returncode == 0, p.stderr
    assert conversation_rows(env.dsn("us"), c) == before


def test_expire_deletes_with_a_record_and_run_due_backs_up(world):
    from datetime import datetime, timedelta, timezone

    from residency.backups import expire_backups, run_due_backups
    from residency import catalogue

    env, ws, conns = world
    text = (REPO / "regions.yaml").read_text().split("\nretention:")[0] + ("\nretention:\n  jurisdictions: {US: {backups: 2d}, EU: {backups: 2d}, AU: {backups: 2d}}\n"  # kept 2 days
                                                                           "\nbackups:\n  every: 1d\n  workspaces:\n    \"%s\": {every: 1h}\n") % ws
    cat = catalogue.loads(text)
    due = run_due_backups(cat, conns)
    assert ws in [x["workspace_id"] for x in due.created] or str(ws) in [x["workspace_id"] for x in due.created]
    assert due.ok
    again = run_due_backups(cat, conns)
    assert not again.created  # none due any more
    later = datetime.now(timezone.utc) + timedelta(days=3)
    out = expire_backups(cat, conns, later)
    assert out.ok and len(out.expired) == len(due.created)
    rec = out.expired[0]
    assert rec["objects_deleted"] > 0 and rec["rows"] > 0
    with psycopg.connect(env.control_dsn, autocommit=True) as cp:
        b = get_backup(cp, rec["backup_id"], complete_only=False)
        assert b.state == "expired" and b.deletion["objects_deleted"] == rec["objects_deleted"]
        assert "backup.expired" in [e.action for e in audit.entries(cp)]


def test_backups_policy_errors_are_line_exact():
    from residency import catalogue
    from residency.errors import CatalogueError

    text = (REPO / "regions.yaml").read_text().split("\nbackups:")[0]
    n = text.count("\n")
    bad = text + "\nbackups:\n  every: sometimes\n  regions:\n    mars: {every: 2d}\n  keep: 2d\n"
    with pytest.raises(CatalogueError) as exc:
        catalogue.loads(bad, "r.yaml")
    problems = exc.value.problems
    assert any(p.startswith(f"r.yaml:{n + 3}:10: backups: every 'sometimes' is not understood") for p in problems), problems
    assert any(p.startswith(f"r.yaml:{n + 5}:5: backups.regions: unknown region 'mars'") for p in problems), problems
    assert any(p.startswith(f"r.yaml:{n + 6}:3: backups: how long backups are kept is a retention rule") for p in problems), problems


def test_the_done_when_scenario_through_the_cli(world):
    """`backup create`, `backup diff` naming the deleted conversation, `restore --table conversations
    --key K`, `backup verify`, each with --json, as a user runs them."""
    from residency.cli import main

    env, ws, _ = world
    c = rich_conversation(env.dsn("us"), ws)
    before = conversation_rows(env.dsn("us"), c)
    ce = connections_env(env)

    def run(*args: str) -> dict:
        r = CliRunner().invoke(main, [*args, "--json"], env=ce)
        assert r.exit_code == 0, r.output
        return json.loads(r.output)

    made = run("backup", "create", str(ws))
    assert made["aws_region"] == "us-west-2" and made["kms_key"] == f"alias/{env.backup_buckets['us']}"
    with psycopg.connect(env.dsn("us"), autocommit=True) as conn:
        for stmt in DELETE_CONVERSATION:
            conn.execute(stmt, {"c": c})
    d = run("backup", "diff", str(ws), str(made["id"]))
    conv = next(t for t in d["tables"] if t["table"] == "conversations")
    assert conv["keys"]["deleted"] == [c]
    r = run("restore", str(ws), "--from", str(made["id"]), "--table", "conversations", "--key", str(c))
    assert r["verified"] and r["restored"] == sum(len(v) for v in before.values())
    assert conversation_rows(env.dsn("us"), c) == before
    assert run("backup", "verify", str(made["id"]))["ok"]
    shown = run("backup", "show", str(made["id"]))
    assert shown["state"] == "complete" and shown["summary"]["tables"]["messages"]["rows"] > 0
    # bad input: one line, exit 2
    r = CliRunner().invoke(main, ["restore", str(ws), "--from", str(made["id"]), "--table", "conversations", "--key", "123456789"], env=ce)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "is not in backup" in r.output
