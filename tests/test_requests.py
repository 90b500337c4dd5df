"""Move requests: windows, emails, creation checked against policy and plan, approval, CSV import."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from request_helpers import ALICE, BOB, FakeMover, cp  # noqa: F401  (cp is a fixture)
from residency import audit
from residency.ops import requests as rq
from residency.audit import Actor
from residency.errors import InputError, OperationError

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- parsing (no database)


def test_windows():
    w = rq.parse_window("2030-05-01T22:00Z/2h")
    assert w.start == datetime(2030, 5, 1, 22, tzinfo=timezone.utc) and w.duration == timedelta(hours=2)
    assert str(w) == "2030-05-01T22:00Z/2h"
    assert rq.parse_window("2030-05-01T23:00+01:00/PT90M").start == w.start
    assert rq.parse_window("2030-05-01T22:00Z/2030-05-02T00:30Z").duration == timedelta(hours=2, minutes=30)
    assert rq.parse_window("now/1h", NOW).start == NOW
    with pytest.raises(InputError, match="time zone"):
        rq.parse_window("2030-05-01T22:00/2h")
    with pytest.raises(InputError, match="START/DURATION"):
        rq.parse_window("2030-05-01T22:00Z")
    with pytest.raises(InputError, match="ISO 8601"):
        rq.parse_window("tomorrow/2h")


def test_emails():
    assert rq.validate_email(" Alice@Example.COM ") == "alice@example.com"
    for bad in ["alice", "alice@", "@example.com", "alice@example", "a b@example.com", ""]:
        with pytest.raises(InputError, match="email"):
            rq.validate_email(bad)


def test_estimate_uses_throughput_and_fences_online_moves_briefly():
    sizes = {"rows": 10, "bytes": 100 * 1024**2, "objects": 2, "object_bytes": 100 * 1024**2, "tables": {}}
    tp = rq.Throughput(bytes_per_second=10 * 1024**2, overhead_seconds=5)
    e = rq.estimate(sizes, "snapshot", tp)
    assert e["seconds"] == 25.0 and e["fence_seconds"] == 25.0
    assert rq.estimate(sizes, "online", tp)["fence_seconds"] == rq.ONLINE_FENCE
    assert rq.Throughput.parse("50MB/s").bytes_per_second == 50 * 1024**2


# --------------------------------------------------------------------------- the control plane


def _window(hours_from_now: float = 1, duration: str = "2h") -> str:
    start = datetime.now(timezone.utc) + timedelta(hours=hours_from_now)
    return f"{start.isoformat(timespec='minutes')}/{duration}"


def test_create_approve_and_everything_is_audited(cp):
    cp.register(("ws-1", "us"))
    fm = FakeMover(cp.dsn)
    with cp.connect() as c:
        r = rq.create(c, cp.cat, cp.conns, "ws-1", "eu", _window(), "Alice@Example.com", "GDPR request from customer",
                      actor=ALICE, planner=fm.plan)
        assert (r.state, r.source, r.target, r.requested_by) == ("pending", "us", "eu", "alice@example.com")
        assert r.estimate["rows"] == 101 and r.estimate["seconds"] > 0
        with pytest.raises(OperationError, match="someone else must approve"):
            rq.approve(c, cp.cat, r.id, actor=Actor("alice@example.com", "x"))
        a = rq.approve(c, cp.cat, r.id, actor=BOB)
        # who is the authenticated role (the test's superuser login); the actor only annotates
        role = c.execute("SELECT session_user").fetchone()[0]
        assert a.state == "approved" and (a.approved_by, a.approved_for) == (role, "bob-ops") and a.approved_at is not None
        with pytest.raises(OperationError, match="only a pending"):
            rq.approve(c, cp.cat, r.id, actor=BOB)
        entries = [(e.action, e.actor, e.origin, e.details.get("requested_by")) for e in audit.entries(c, subject=r.subject)]
        assert entries == [("request.create", role, f"{ALICE.origin} for {ALICE.who}", "alice@example.com"),
                           ("request.approve", role, f"{BOB.origin} for bob-ops", "alice@example.com")]
        assert audit.verify(c).ok
        # notices are kept with the request when no webhook is configured
        assert [(n["event"], n["delivery"]) for n in rq.notices(c, r.id)] == [("created", "kept"), ("approved", "kept")]
        assert "awaits approval" in rq.notices(c, r.id)[0]["subject"]


def test_refusals_are_recorded_with_why(cp):
    cp.register(("ws-a", "us"), ("ws-b", "us"), ("ws-c", "eu"))
    fm = FakeMover(cp.dsn, refuse={"ws-b": "table notes: target has no column 'body'"})
    with cp.connect() as c:
        same = rq.create(c, cp.cat, cp.conns, "ws-a", "us", _window(), "a@example.com", actor=ALICE, planner=fm.plan)
        assert same.state == "refused" and "already in region 'us'" in same.state_reason
        plan = rq.create(c, cp.cat, cp.conns, "ws-b", "eu", _window(), "a@example.com", actor=ALICE, planner=fm.plan)
        assert plan.state == "refused" and plan.state_reason == "plan: table notes: target has no column 'body'"
        short = rq.create(c, cp.cat, cp.conns, "ws-c", "au", _window(duration="20s"), "a@example.com", actor=ALICE, planner=fm.plan)
        assert short.state == "refused" and "shorter than the move's estimated" in short.state_reason
        ok = rq.create(c, cp.cat, cp.conns, "ws-c", "au", _window(), "a@example.com", actor=ALICE, planner=fm.plan)
        dup = rq.create(c, cp.cat, cp.conns, "ws-c", "us", _window(), "a@example.com", actor=ALICE, planner=fm.plan)
        assert ok.state == "pending" and dup.state == "refused" and f"already has request {ok.id}" in dup.state_reason
        assert [e.action for e in audit.entries(c, subject=same.subject)] == ["request.refuse"]
        assert {r.id for r in rq.list_requests(c, state="refused")} == {same.id, plan.id, short.id, dup.id}
        # bad input is an error and records nothing
        for args, msg in [(("ws-a", "mars", _window(), "a@example.com"), "unknown region"),
                          (("nope", "eu", _window(), "a@example.com"), "unknown workspace"),
                          (("ws-a", "eu", _window(), "not-an-email"), "email"),
                          (("ws-a", "eu", _window(-5, "1h"), "a@example.com"), "already closed")]:
            with pytest.raises(InputError, match=msg):
                rq.create(c, cp.cat, cp.conns, *args, actor=ALICE, planner=fm.plan)
        assert len(rq.list_requests(c)) == 5


def test_cancel(cp):
    cp.register(("ws-1", "us"))
    fm = FakeMover(cp.dsn)
    with cp.connect() as c:
        r = rq.create(c, cp.cat, cp.conns, "ws-1", "eu", _window(), "a@example.com", actor=ALICE, planner=fm.plan)
        x = rq.cancel(c, r.id, "customer changed their mind", actor=BOB)
        assert x.state == "cancelled" and x.state_reason == "customer changed their mind"
        with pytest.raises(OperationError, match="only a pending or approved"):
            rq.cancel(c, r.id, actor=BOB)
        # a cancelled request frees the workspace for a new one
        assert rq.create(c, cp.cat, cp.conns, "ws-1", "eu", _window(), "a@example.com", actor=ALICE, planner=fm.plan).state == "pending"
        with pytest.raises(InputError, match="unknown request"):
            rq.cancel(c, 99999, actor=BOB)


def test_csv_import_bad_rows_do_not_sink_the_others(cp, tmp_path):
    cp.register(("ws-1", "us"), ("ws-2", "us"), ("ws-3", "eu"), ("ws-4", "au"))
    fm = FakeMover(cp.dsn)
    w = _window()
    f = tmp_path / "batch.csv"
    f.write_text(
        "workspace,to,window,requested_by,reason\n"
        f"ws-1,eu,{w},sales@example.com,GDPR\n"            # 2 ok
        f"ws-2,eu,{w},not-an-email,GDPR\n"                  # 3 bad email
        f"ws-3,eu,{w},sales@example.com,already there\n"    # 4 refused by policy
        f"ws-9,eu,{w},sales@example.com,no such ws\n"       # 5 unknown workspace
        f"ws-4,us,tomorrow/2h,sales@example.com,\n"         # 6 bad window
        "\n"                                                # 7 blank: ignored
        f"ws-2,mars,{w},sales@example.com,typo\n"           # 8 unknown region
        f"ws-4,us,{w},sales@example.com,x,extra\n"          # 9 too many fields
        f"ws-2,au,{w},sales@example.com,\"quoted, reason\"\n"  # 10 ok
    )
    with cp.connect() as c:
        res = rq.import_csv(c, cp.cat, cp.conns, f, actor=ALICE, planner=fm.plan)
        by_line = {r.line: r for r in res}
        assert sorted(by_line) == [2, 3, 4, 5, 6, 8, 9, 10]
        assert by_line[2].ok and by_line[10].ok
        assert "email" in by_line[3].message and "already in region 'eu'" in by_line[4].message
        assert by_line[4].state == "refused" and by_line[4].request_id is not None
        assert "unknown workspace" in by_line[5].message and "ISO 8601" in by_line[6].message
        assert "unknown region 'mars'" in by_line[8].message and "more fields" in by_line[9].message
        assert all(r.message.startswith(f"{f}:{r.line}: ") for r in res)
        pending = rq.list_requests(c, state="pending")
        assert sorted(r.workspace_id for r in pending) == ["ws-1", "ws-2"]
        assert next(r for r in pending if r.workspace_id == "ws-2").reason == "quoted, reason"
    bad = tmp_path / "bad.csv"
    bad.write_text("ws,to\nws-1,eu\n")
    with cp.connect() as c, pytest.raises(InputError, match="header must have"):
        rq.import_csv(c, cp.cat, cp.conns, bad, actor=ALICE, planner=fm.plan)
