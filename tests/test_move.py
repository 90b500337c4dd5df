"""The mover end to end on real PostgreSQL servers and a moto S3 server (tests/conftest.py)."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from migrate import cleanup_move, move_report, plan_move, rollback_move, start_move, verify_workspace
from migrate.report import render
from move_support import counts, home, objects


def test_small_move_us_to_eu(env):
    s = env.seed(workspaces=4, rows=2000, seed=3)
    ws = s.smallest_in("us")
    before = counts(env.dsn("us"), ws)
    objs = objects(env, "us", ws)
    plan = plan_move(env.catalogue, env.connections, ws, "eu")
    assert plan.ok, plan.refusals
    assert {t.table: t.rows for t in plan.tables} == before
    events = []
    rec = start_move(env.catalogue, env.connections, ws, "eu", progress=events.append)
    assert rec.state == "cut_over"
    assert counts(env.dsn("eu"), ws) == before
    assert objects(env, "eu", ws) == objs
    assert home(env, ws)[:2] == ("eu", "active")
    rep = move_report(env.connections, rec.id)
    assert rep["verified"] and all(t["ok"] for t in rep["tables"])
    assert rep["fence"]["seconds"] is not None
    text = render(rep)
    assert "verified: yes" in text
    assert any(e.phase == "copy" for e in events)
