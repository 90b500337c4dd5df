"""The control plane on a real server: directory, the moves state machine, and the audit chain
(edits, deletions in the middle and at the end are all detected)."""

from __future__ import annotations

import psycopg
import pytest

from residency import audit, directory, moves
from residency.audit import Actor
from residency.errors import InputError, OperationError

WHO = Actor("ops@example.com", "laptop pid 1")


@pytest.fixture()
def cp(env):
    with psycopg.connect(env.control_dsn) as conn:
        yield conn


def test_directory_registers_and_flips_home_only_from_the_expected_region(cp):
    with cp.transaction():
        e = directory.register(cp, 42, "us")
        assert (e.workspace_id, e.region, e.status, e.version) == ("42", "us", "active", 1)
        assert directory.register(cp, "42", "us").version == 1  # same region again: no-op
    with pytest.raises(OperationError, match="already registered in region 'us'"):
        with cp.transaction():
            directory.register(cp, 42, "eu")
    with pytest.raises(OperationError, match="homed in 'us', not 'eu'"):
        with cp.transaction():
            directory.move_home(cp, 42, "eu", "au")
    with cp.transaction():
        moved = directory.move_home(cp, 42, "us", "eu")
    assert (moved.region, moved.version) == ("eu", 2)
    with pytest.raises(InputError, match="unknown workspace '7'"):
        directory.require(cp, 7)


def test_one_open_move_per_workspace_and_guarded_transitions(cp):
    with cp.transaction():
        m = moves.create(cp, 42, "us", "eu", "snapshot", {"tables": []}, "ops")
    with pytest.raises(OperationError, match=f"already has an open move: move {m.id} \\(planned\\)"):
        with cp.transaction():
            moves.create(cp, 42, "us", "au", "snapshot", {}, "ops")
    with pytest.raises(OperationError, match="is planned; it can go to cut_over only from verified"):
        with cp.transaction():
            moves.transition(cp, m.id, "cut_over", expect=["verified"])
    with cp.transaction():
        f = moves.transition(cp, m.id, "fenced", expect=["planned"])
        failed = moves.transition(cp, m.id, "failed", expect=["fenced"], error="connection lost")
    assert (f.state, failed.state, failed.resume_from, failed.error) == ("fenced", "failed", "fenced", "connection lost")
    with cp.transaction():
        back = moves.transition(cp, m.id, "rolled_back", expect=["failed"])
    assert back.resume_from is None and back.state == "rolled_back"
    with cp.transaction():  # a closed move no longer holds the workspace
        assert moves.create(cp, 42, "us", "au", "snapshot", {}, "ops").state == "planned"


def test_leases_exclude_a_second_owner_until_expiry(cp):
    with cp.transaction():
        m = moves.create(cp, 9, "us", "eu", "snapshot", {}, "ops")
        assert moves.claim(cp, m.id, "worker-a", 30)
        assert not moves.claim(cp, m.id, "worker-b", 30)
        assert moves.claim(cp, m.id, "worker-a", 30)  # renewal
        moves.release(cp, m.id, "worker-a")
        assert moves.claim(cp, m.id, "worker-b", 0.0)
        cp.execute("SELECT pg_sleep(0.01)")
    with cp.transaction():  # worker-b's zero-second lease has expired
        assert moves.claim(cp, m.id, "worker-c", 30)


def _chain(cp, n: int) -> None:
    for i in range(n):
        audit.record(cp, "test.step", f"thing/{i}", {"i": i, "note": "ünïcode ✓"}, WHO)


def _superuser_edit(dsn: str, *statements: tuple[str, tuple]) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("ALTER TABLE residency.audit DISABLE TRIGGER audit_append_only")
        for q, params in statements:
            c.execute(q, params)
        c.execute("ALTER TABLE residency.audit ENABLE TRIGGER audit_append_only")


def test_audit_chain_verifies_and_refuses_updates(env, cp):
    _chain(cp, 5)
    res = audit.verify(cp)
    assert res.ok and res.entries == 5 and res.head_seq == 5
    got = list(audit.entries(cp, subject="thing/3"))
    role = cp.execute("SELECT session_user").fetchone()[0]  # who is the role; the actor annotates
    assert [(e.actor, e.origin, e.details["i"]) for e in got] == [(role, "laptop pid 1 for ops@example.com", 3)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        with cp.transaction():
            cp.execute("DELETE FROM residency.audit WHERE seq = 2")


def test_audit_detects_a_deleted_middle_entry(env, cp):
    _chain(cp, 5)
    _superuser_edit(env.control_dsn, ("DELETE FROM residency.audit WHERE seq = 3", ()))
    res = audit.verify(cp)
    assert not res.ok
    assert "entries 3..3 are missing (deleted?)" in res.problems
    assert "entry 4: does not link to the entry before it (prev_hash differs)" in res.problems


def test_audit_detects_entries_deleted_from_the_end(env, cp):
    _chain(cp, 5)
    _superuser_edit(env.control_dsn, ("DELETE FROM residency.audit WHERE seq >= 4", ()))
    res = audit.verify(cp)
    assert not res.ok
    assert res.problems == ["the log ends at entry 3 but the head says 5 (entries deleted from the end?)"]


def test_audit_detects_an_edit_even_with_a_recomputed_link(env, cp):
    _chain(cp, 4)
    _superuser_edit(env.control_dsn, ("UPDATE residency.audit SET actor = 'mallory' WHERE seq = 2", ()))
    res = audit.verify(cp)
    assert res.problems == ["entry 2 (test.step thing/1): content does not match its hash (edited?)"]


def test_ensuring_the_schema_never_waits_for_an_open_audit_transaction(env, cp):
    from residency import controlplane

    with cp.transaction():  # an appender holds its transaction open (a move step, say)
        audit.append(cp, "test.step", "thing/1", {}, WHO)
        with psycopg.connect(env.control_dsn) as other:
            other.execute("SET lock_timeout = '1s'")
            controlplane.ensure_schema(other)  # every CLI command does this
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # and the guard is still in place
        with cp.transaction():
            cp.execute("DELETE FROM residency.audit")
