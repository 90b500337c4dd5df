"""Helpers shared by the mover's tests (tests/test_move*.py, test_verify*.py, test_audit*.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]

WS_TABLES = ("workspaces", "memberships", "channels", "conversations", "messages", "attachments", "attachment_previews", "reactions")


def counts(dsn: str, ws: int) -> dict[str, int]:
    """Rows of workspace ``ws`` per table of the sample schema (test-side, written independently
    of the mover's SQL so it checks it)."""
    q = {
        "workspaces": "SELECT count(*) FROM workspaces WHERE id = %(ws)s",
        "memberships": "SELECT count(*) FROM memberships WHERE workspace_id = %(ws)s",
        "channels": "SELECT count(*) FROM channels WHERE workspace_id = %(ws)s",
        "conversations": "SELECT count(*) FROM conversations WHERE workspace_id = %(ws)s",
        "messages": "SELECT count(*) FROM messages WHERE workspace_id = %(ws)s",
        "attachments": "SELECT count(*) FROM attachments a JOIN messages m ON m.id = a.message_id WHERE m.workspace_id = %(ws)s",
        "attachment_previews": "SELECT count(*) FROM attachment_previews p JOIN attachments a ON a.id = p.attachment_id"
        " JOIN messages m ON m.id = a.message_id WHERE m.workspace_id = %(ws)s",
        "reactions": "SELECT count(*) FROM reactions r WHERE (r.subject_type = 'message' AND r.subject_id IN"
        " (SELECT id FROM messages WHERE workspace_id = %(ws)s)) OR (r.subject_type = 'conversation' AND"
        " r.subject_id IN (SELECT id FROM conversations WHERE workspace_id = %(ws)s))",
    }
    with psycopg.connect(dsn, autocommit=True) as c:
        return {t: c.execute(q[t], {"ws": ws}).fetchone()[0] for t in WS_TABLES}


# the users a workspace's rows point at in the sample app, written independently of the mover's SQL
NEEDED_USERS = """
SELECT created_by FROM channels WHERE workspace_id = %(ws)s
UNION SELECT user_id FROM memberships WHERE workspace_id = %(ws)s
UNION SELECT author_id FROM messages WHERE workspace_id = %(ws)s AND author_id IS NOT NULL
UNION SELECT r.user_id FROM reactions r WHERE (r.subject_type = 'message' AND r.subject_id IN
  (SELECT id FROM messages WHERE workspace_id = %(ws)s)) OR (r.subject_type = 'conversation' AND
  r.subject_id IN (SELECT id FROM conversations WHERE workspace_id = %(ws)s))
"""


def needed_users(dsn: str, ws: Any) -> set[int]:
    """The ids of the users workspace ``ws``'s rows point at (:data:`NEEDED_USERS`)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        return {r[0] for r in c.execute(NEEDED_USERS, {"ws": ws}) if r[0] is not None}


def objects(env: Any, region: str, ws: int) -> dict[str, int]:
    prefix = env.catalogue.workspace.prefix_for(ws)
    out = {}
    client = env.s3(region)
    for logical, bucket in env.buckets[region].items():
        n = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            n += page.get("KeyCount", 0)
        out[logical] = n
    return out


def home(env: Any, ws: int) -> tuple[str, str, int]:
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        return c.execute("SELECT region, status, version FROM residency.directory WHERE workspace_id = %s", (str(ws),)).fetchone()


def run_mover(env: Any, *args: str, kill_at: str | None = None, kill_after: int = 1, timeout: float = 120, extra_env: dict[str, str] | None = None,
              regions: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tests_move_driver`` style code in a subprocess with the env's connections."""
    e = dict(os.environ)
    e.update(connections_env(env))
    if kill_at:
        e["RESIDENCY_MOVE_KILL_AT"] = kill_at
        e["RESIDENCY_MOVE_KILL_AFTER"] = str(kill_after)
    e.update(extra_env or {})
    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "--regions", str(regions or REPO / "regions.yaml"), *args],
        env=e, capture_output=True, text=True, timeout=timeout, cwd=str(REPO),
    )


def connections_env(env: Any) -> dict[str, str]:
    """Environment variables + a connections file pointing the CLI at this test's world."""
    import yaml

    path = Path(env.sandbox.home) / f"connections-{env.token}.yaml"
    data = {
        "control": {"dsn": env.control_dsn},
        "regions": {
            r: {"dsn": ep.dsn, "s3_endpoint": ep.s3_endpoint, "buckets": dict(ep.buckets)}
            for r, ep in env.connections.regions.items()
        },
        "audit": {"kms_key": env.anchor.kms_key_id, "bucket": env.anchor.bucket, "aws_region": env.anchor.aws_region,
                  "endpoint": env.anchor.endpoint},
    }
    path.write_text(yaml.safe_dump(data))
    return {"RESIDENCY_CONNECTIONS": str(path), "RESIDENCY_CONTROL_DSN": env.control_dsn, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def exec_sql(dsn: str, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        cur = c.execute(query, params)
        return cur.fetchall() if cur.description else []


def load_app(env: Any, monkeypatch: Any, schema: str, ddl: str, workspace: str, homes: dict[str, str]) -> Any:
    """Another application in schema ``schema`` of every region of this test's world: its DDL run
    in us and eu, its tenants (``homes``: id -> region) registered, and the catalogue with its own
    ``workspace:`` section (the rest of the repository's regions.yaml). The caller fills the rows."""
    from app16_support import catalogue_with
    from residency import directory

    monkeypatch.setenv("RESIDENCY_APP_SCHEMA", schema)
    for r in ("us", "eu"):
        with psycopg.connect(env.dsn(r), autocommit=True) as c:
            c.execute(ddl)
    with psycopg.connect(env.control_dsn) as c:
        for ws, region in homes.items():
            directory.register(c, ws, region)
        c.commit()
    return catalogue_with(workspace, f"{schema}-regions.yaml")
