"""kill -9 at every phase, then resume: exactly one copy of every row and object.

The mover runs in a subprocess (the real CLI) that SIGKILLs itself at a named point
(``RESIDENCY_MOVE_KILL_AT``, see migrate/faults.py); the test then resumes in-process and checks
the target against the source, row for row and object for object.
"""

from __future__ import annotations

import signal
from datetime import timedelta

import psycopg
import psycopg.sql
import pytest

from residency.migrate import cleanup_move, move_status, resume_move, rollback_move, verify_workspace
from move_support import counts, home, objects, run_mover


@pytest.fixture
def world(env):
    s = env.seed(workspaces=4, rows=12000, seed=21)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    return env, ws, counts(env.dsn("us"), ws), objects(env, "us", ws)


def _the_move(env):
    (rec,) = move_status(env.connections, None, open_only=False)[:1]
    return rec


@pytest.mark.parametrize(
    "point,after",
    [
        ("planned", 1),
        ("fence_installed", 1),
        ("fenced", 1),
        ("copy_batch", 1),
        ("table_copied", 3),
        ("rows_copied", 1),
        ("object_copied", 2),
        ("copied", 1),
        ("verified", 1),
        ("sequences_bumped", 1),
        ("cut_over", 1),
    ],
)
def test_kill9_then_resume_exactly_one_copy(world, point, after):
    env, ws, before, objs = world
    extra = {"copied": "fenced", "verified": "copied"}  # states reached: kill right after the transition
    p = run_mover(env, "move", "start", str(ws), "--to", "eu", "--yes", kill_at=_state_point(point), kill_after=after)
    assert p.returncode == -signal.SIGKILL, p.stderr
    rec = _the_move(env)
    assert rec.state not in ("cleaned", "rolled_back")
    rec = resume_move(env.catalogue, env.connections, rec.id)
    assert rec.state == "cut_over"
    assert counts(env.dsn("eu"), ws) == before
    assert objects(env, "eu", ws) == objs
    assert home(env, ws)[:2] == ("eu", "active")
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok
    rec = cleanup_move(env.catalogue, env.connections, rec.id, grace=timedelta(0))
    assert sum(counts(env.dsn("us"), ws).values()) == 0
    assert counts(env.dsn("eu"), ws) == before


def _state_point(point):
    return point


def test_kill9_during_cleanup_then_resume(world):
    env, ws, before, objs = world
    p = run_mover(env, "move", "start", str(ws), "--to", "eu", "--yes")
    assert p.returncode == 0, p.stderr
    rec = _the_move(env)
    p = run_mover(env, "move", "cleanup", str(rec.id), "--grace", "0", "--yes", kill_at="cleanup_rows_deleted")
    assert p.returncode == -signal.SIGKILL, p.stderr
    rec = resume_move(env.catalogue, env.connections, rec.id)
    assert rec.state == "cleaned"
    assert sum(counts(env.dsn("us"), ws).values()) == 0
    assert sum(objects(env, "us", ws).values()) == 0
    assert counts(env.dsn("eu"), ws) == before
    d = rec.report["deletion"]
    assert d["rows"] == sum(before.values())  # the evidence was taken before anything was deleted


def test_kill9_during_rollback_then_rollback_again(world):
    env, ws, before, objs = world
    p = run_mover(env, "move", "start", str(ws), "--to", "eu", "--yes", kill_at="copied")
    assert p.returncode == -signal.SIGKILL
    rec = _the_move(env)
    p = run_mover(env, "move", "rollback", str(rec.id), kill_at="rollback_target_cleared")
    assert p.returncode == -signal.SIGKILL, p.stderr
    rec = rollback_move(env.catalogue, env.connections, rec.id)
    assert rec.state == "rolled_back"
    assert sum(counts(env.dsn("eu"), ws).values()) == 0
    assert counts(env.dsn("us"), ws) == before
    assert home(env, ws)[:2] == ("us", "active")


def test_non_transient_failure_is_resumable(world):
    """A fault that is not transient (here: a CHECK constraint in the target that the copied rows
    violate) stops the move in `failed` with a clear one-line reason, the half-copied table rolled
    back; after the cause is gone, resume finishes it with exactly one copy."""
    env, ws, before, objs = world
    eu = env.dsn("eu")
    with psycopg.connect(eu, autocommit=True) as c:
        c.execute("ALTER TABLE messages ADD CONSTRAINT short_bodies CHECK (length(body) < 3) NOT VALID")
    p = run_mover(env, "move", "start", str(ws), "--to", "eu", "--yes")
    assert p.returncode == 1
    assert "failed in fenced" in p.stderr and "short_bodies" in p.stderr and "Traceback" not in p.stderr
    rec = _the_move(env)
    assert rec.state == "failed" and rec.resume_from == "fenced" and "short_bodies" in rec.error
    with psycopg.connect(eu, autocommit=True) as c:
        c.execute("ALTER TABLE messages DROP CONSTRAINT short_bodies")
    rec = resume_move(env.catalogue, env.connections, rec.id)
    assert rec.state == "cut_over"
    assert counts(eu, ws) == before
    assert objects(env, "eu", ws) == objs
