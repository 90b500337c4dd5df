"""Playbooks: every template renders for every region, in Markdown and HTML; a missing variable
fails loudly; the new-region checks run against the test sandbox."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import jinja2
import pytest

from residency import playbooks
from residency.ops import requests as rq
from request_helpers import REPO
from residency import catalogue, moves
from residency.migrate.plan import MovePlan, TablePlan
from residency.ops.requests import Request

CAT = catalogue.load(REPO / "regions.yaml")
NOW = datetime(2030, 5, 1, 12, 0, tzinfo=timezone.utc)


def fake_move(source: str, target: str, state: str = "cleaned") -> moves.MoveRecord:
    """A move record shaped like the mover's (plan, verify, cut-over and deletion reports)."""
    plan = MovePlan("ws-42", source, target, "snapshot",
                    tables=[TablePlan("workspaces", "key", "root", 1, 8192), TablePlan("messages", "key", "key", 12000, 3 * 1024**2)],
                    objects={"attachments": {"objects": 7, "bytes": 70000}, "exports": {"objects": 0, "bytes": 0}}).to_dict()
    report = {
        "verify": {"ok": True, "tables": [
            {"table": "workspaces", "source_rows": 1, "source_checksum": "-123", "target_rows": 1, "target_checksum": "-123", "ok": True, "kind": "table"},
            {"table": "messages", "source_rows": 12000, "source_checksum": "98765", "target_rows": 12000, "target_checksum": "98765", "ok": True, "kind": "table"},
            {"table": "users", "source_rows": 3, "source_checksum": "", "target_rows": 3, "target_checksum": "", "ok": True, "kind": "global"}],
            "objects": {"ok": True, "buckets": {"attachments": {"objects": 7}}, "problems": []}},
        "cut_over": {"at": "2030-05-01T22:10:00Z"},
        "fence": {"seconds": 42.5},
        "deletion": {"deleted_at": "2030-05-08T22:10:00Z", "region": source, "grace": "7 days, 0:00:00", "rows": 12001,
                     "tables": {"workspaces": {"rows": 1, "checksum": "-123"}, "messages": {"rows": 12000, "checksum": "98765"}},
                     "objects": {"attachments": {"objects": 7, "bytes": 70000}}, "object_count": 7},
    }
    return moves.MoveRecord(7, "ws-42", source, target, "snapshot", state, None, None, "ops", NOW, NOW, plan, {}, report, None, None)


def fake_request(source: str, target: str) -> Request:
    return Request(3, "ws-42", source, target, "online", NOW, NOW + timedelta(hours=2), "sales@example.com",
                   "GDPR request", "approved", None, "alice", NOW, NOW, "bob", NOW,
                   {"rows": 12001, "bytes": 3 * 1024**2, "objects": 7, "object_bytes": 70000, "tables": {"messages": {"rows": 12000, "bytes": 3 * 1024**2}}, "seconds": 31},
                   None, None, None, 0, {})


def pairs():
    names = list(CAT.regions)
    return [(names[(i + 1) % len(names)], r) for i, r in enumerate(names)]  # (source, target) with every region as target


@pytest.mark.parametrize("fmt", ["md", "html"])
@pytest.mark.parametrize("region", list(CAT.regions))
def test_new_region_renders_for_every_region(region, fmt):
    out = playbooks.render("new-region", cat=CAT, region=region, format=fmt)
    r = CAT.region(region)
    for needle in (r.aws_region, f"residency stacks up --region {region}", "residency regions validate", "Smoke move", "Announcement", "quotas"):
        assert needle.lower() in out.lower(), needle
    if fmt == "html":
        assert out.startswith("<!doctype html>") and "<pre><code>" in out and "<h2>" in out


@pytest.mark.parametrize("fmt", ["md", "html"])
@pytest.mark.parametrize("source, target", pairs())
def test_move_playbooks_and_notices_render_for_every_region(source, target, fmt):
    m = fake_move(source, target)
    wm = playbooks.render("workspace-move", cat=CAT, move=m, format=fmt)
    assert f"residency move rollback {m.id}" in wm and "messages" in wm and "12,000" in wm
    assert "Expected fence" in wm and "snapshot" in wm
    sched = playbooks.render("move-scheduled", cat=CAT, request=fake_request(source, target), format=fmt)
    assert "2030-05-01T12:00Z/2h" in sched and target.upper() in sched and f"Read-only period: about {rq.ONLINE_FENCE:.0f}s" in sched  # an online request's expected fence
    done = playbooks.render("move-completed", cat=CAT, move=m, format=fmt)
    assert "98765" in done and "42s" in done and "users" not in done  # global tables are not the customer's
    deleted = playbooks.render("source-deleted", cat=CAT, move=m, format=fmt)
    assert "12,001" in deleted and "2030-05-08T22:10:00Z" in deleted and source.upper() in deleted
    wr = playbooks.render("workspace-move", cat=CAT, request=fake_request(source, target), format=fmt)
    assert "request 3" in wr.lower() and "sales@example.com" in wr


def test_html_is_escaped():
    html = playbooks.to_html("# A <b>\n\n- `x<y>` and **bold & co**\n\n| a | b |\n|---|---|\n| <i> | 2 |\n")
    assert "<b>" not in html.split("<body>")[1] and "&lt;b&gt;" in html
    assert "<code>x&lt;y&gt;</code>" in html and "<strong>bold &amp; co</strong>" in html and "<td>&lt;i&gt;</td>" in html


def test_a_missing_variable_fails_loudly():
    with pytest.raises(playbooks.PlaybookError, match="workspace_id"):
        playbooks.render_template("move-scheduled", {"target": {"name": "eu"}})
    ctx = playbooks.move_context(CAT, fake_move("us", "eu"))
    del ctx["sizes"]
    with pytest.raises(playbooks.PlaybookError, match="sizes"):
        playbooks.render_template("workspace-move", {**ctx, "generated_at": "now"})
    assert isinstance(playbooks.environment().undefined, type) and issubclass(playbooks.environment().undefined, jinja2.StrictUndefined)


def test_every_template_on_disk_is_a_known_playbook():
    on_disk = {p.name.removesuffix(".md.j2") for p in Path(playbooks.TEMPLATES).glob("*.md.j2")}
    assert on_disk == set(playbooks.PLAYBOOKS)


def test_notices_need_a_state_that_has_them():
    with pytest.raises(playbooks.PlaybookError, match="has not completed"):
        playbooks.render("move-completed", cat=CAT, move=fake_move("us", "eu", state="copied"))
    m = fake_move("us", "eu", state="cut_over")
    m.report.pop("deletion")
    with pytest.raises(playbooks.PlaybookError, match="no deletion record"):
        playbooks.render("source-deleted", cat=CAT, move=m)
    with pytest.raises(playbooks.PlaybookError, match="unknown playbook"):
        playbooks.render("nope", cat=CAT, region="us")
    with pytest.raises(playbooks.PlaybookError, match="needs --region"):
        playbooks.render("new-region", cat=CAT)


def test_check_new_region_against_the_sandbox(env):
    from request_helpers import control_plane

    control_plane(env)
    res = playbooks.check_new_region(env.catalogue, env.connections, "au")
    st = {s.id: s.status for s in res.steps}
    assert st["validate"] == st["policy-backups"] == st["policy-moves"] == st["routing"] == "done"
    assert st["database"] == "done" and st["buckets"] == "done" and st["schema"] == "done", res.steps
    assert st["smoke-move"] == "not done" and st["quotas"] == st["stack"] == "manual"
    assert st["opt-in"] == "manual"  # au backs up to ap-southeast-4, an opt-in region
    assert not res.ok  # no smoke move yet
    # a drifted schema is named
    import psycopg

    with psycopg.connect(env.dsn("au"), autocommit=True) as c:
        c.execute("ALTER TABLE workspaces ADD COLUMN drift text")
    schema = playbooks.check_new_region(env.catalogue, env.connections, "au").by_id()["schema"]
    assert schema.status == "not done" and "workspaces.drift" in schema.detail
    md = playbooks.render("new-region", cat=env.catalogue, region="au", checks=res)
    assert "❌ not done: no completed move into au yet" in md and "✅ done: PostgreSQL" in md
