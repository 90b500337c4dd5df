"""Whole snapshot moves with non-superuser roles on source and target (managed PostgreSQL gives
no superuser). The target has a user BEFORE INSERT trigger that would rewrite every moved
message: the copy must not let it fire, by the best method the target role allows, and the
plan says which method and why (or which triggers would fire)."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from residency.migrate import cleanup_move, plan_move, resume_move, start_move, verify_workspace
from residency.migrate.plan import render
from move_support import counts, home

ALTERED = "rewritten by a target trigger"


def _add_trigger(env, region="eu"):
    with psycopg.connect(env.dsn(region), autocommit=True) as c:
        c.execute("CREATE FUNCTION rewrite_body() RETURNS trigger LANGUAGE plpgsql AS"
                  " $$BEGIN NEW.body := 'rewritten by a target trigger'; RETURN NEW; END$$")
        c.execute("CREATE TRIGGER rewrite_body BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION rewrite_body()")


def _altered(env, ws, region="eu"):
    with psycopg.connect(env.dsn(region), autocommit=True) as c:
        return c.execute("SELECT count(*) FROM messages WHERE workspace_id = %s AND body = %s", (ws, ALTERED)).fetchone()[0]


def _world(env, target_role, *, owner, set_replication_role):
    s = env.seed(workspaces=3, rows=3000, seed=5)
    ws = s.smallest_in("us")
    src = env.grant_role("us")  # the sandbox's standard mover role
    dst = env.grant_role("eu", f"{target_role}_{env.token}", owner=owner, set_replication_role=set_replication_role)
    for dsn in (src, dst):
        with psycopg.connect(dsn, autocommit=True) as c:
            assert c.execute("SELECT current_setting('is_superuser')").fetchone()[0] == "off"
    _add_trigger(env)
    return ws, env.connections_as({"us": src, "eu": dst})


def _moved_untouched(env, conns, ws, method):
    """Plan (expecting copy ``method``) and move ``ws`` to eu as the given roles: the target holds
    exactly the source's rows, none rewritten by its trigger. Returns the plan and the record."""
    before = counts(env.dsn("us"), ws)
    plan = plan_move(env.catalogue, conns, ws, "eu", "snapshot")
    assert plan.ok, plan.refusals
    assert plan.copy_method["method"] == method
    rec = start_move(env.catalogue, conns, ws, "eu", strategy="snapshot", plan=plan)
    assert rec.state == "cut_over"
    assert counts(env.dsn("eu"), ws) == before
    assert _altered(env, ws) == 0
    return plan, rec


def test_replica_by_parameter_grant_trigger_does_not_fire(env):
    ws, conns = _world(env, "mv_set", owner=False, set_replication_role=True)
    plan, rec = _moved_untouched(env, conns, ws, "replica")
    assert plan.copy_method["set_replication_role"] and not plan.copy_method["superuser"]
    assert plan.to_dict()["copy_method"]["would_fire"] == []
    assert "note: copy method: replica" in render(plan) and "SET privilege on session_replication_role" in render(plan)
    assert rec.report["copy"]["method"]["method"] == "replica"
    # nothing needs the users first: they went by the values the landed chunks pointed at
    assert rec.report["copy"]["globals"]["users"]["found"] == "as the chunks landed"
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok
    rec = cleanup_move(env.catalogue, conns, rec.id, grace=timedelta(0))
    assert rec.state == "cleaned"
    assert sum(counts(env.dsn("us"), ws).values()) == 0


def test_owner_disables_triggers_inside_the_copy(env):
    ws, conns = _world(env, "mv_own", owner=True, set_replication_role=False)
    plan, rec = _moved_untouched(env, conns, ws, "disable_triggers")
    # foreign-key checks fire: the users went first, found with the workspace's predicate
    assert rec.report["copy"]["globals"]["users"]["found"] == "with the workspace's predicate"
    assert "owns every target table with user triggers (messages)" in render(plan)
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        # the trigger is back (it was only disabled inside the copy's transactions) and works
        assert c.execute("SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'rewrite_body'").fetchone()[0] == "O"
        conv = c.execute("SELECT conversation_id FROM messages WHERE workspace_id = %s LIMIT 1", (ws,)).fetchone()[0]
        c.execute("INSERT INTO messages (workspace_id, conversation_id, body) VALUES (%s, %s, 'new')", (ws, conv))
    assert _altered(env, ws) == 1


def test_neither_plan_lists_the_trigger_and_verify_names_it(env):
    ws, conns = _world(env, "mv_none", owner=False, set_replication_role=False)
    before = counts(env.dsn("us"), ws)
    plan = plan_move(env.catalogue, conns, ws, "eu", "snapshot")
    assert plan.ok, plan.refusals
    assert plan.copy_method["method"] == "triggers_on"
    text = render(plan)
    assert "would fire during the copy (1): messages.rewrite_body (BEFORE INSERT FOR EACH ROW)" in text
    assert "GRANT SET ON PARAMETER session_replication_role TO mv_none_" in text
    # the copy runs with triggers on (foreign-key order); the trigger rewrites the rows and
    # verify refuses to cut over, naming the trigger
    with pytest.raises(Exception) as exc:
        start_move(env.catalogue, conns, ws, "eu", strategy="snapshot")
    assert "messages" in str(exc.value) and "rewrite_body" in str(exc.value)
    assert home(env, ws)[:2] == ("us", "frozen") or home(env, ws)[0] == "us"
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        c.execute("DROP TRIGGER rewrite_body ON messages")
    from residency.migrate import move_status

    rec = resume_move(env.catalogue, conns, move_status(conns, None)[0].id)
    assert rec.state == "cut_over"
    assert counts(env.dsn("eu"), ws) == before
    assert _altered(env, ws) == 0
