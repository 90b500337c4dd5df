"""The CLI over requests, the worker and playbooks: exit codes, --json, one line per CSV row."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import yaml
from click.testing import CliRunner

from residency.cli import main
from request_helpers import REPO, control_plane


def test_request_cli_end_to_end(env, tmp_path, monkeypatch):
    control_plane(env)
    seed = env.seed(workspaces=2, rows=50, seed=3)
    ws = seed.workspaces["us"][0]
    conf = tmp_path / "connections.yaml"
    conf.write_text(yaml.safe_dump({
        "control": {"dsn": env.control_dsn},
        "regions": {r: {"dsn": ep.dsn, "s3_endpoint": ep.s3_endpoint, "buckets": dict(ep.buckets)} for r, ep in env.connections.regions.items()},
    }))
    monkeypatch.setenv("RESIDENCY_CONNECTIONS", str(conf))
    monkeypatch.delenv("RESIDENCY_WEBHOOK_URL", raising=False)
    run = CliRunner().invoke
    base = ["--regions", str(REPO / "regions.yaml")]
    window = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat(timespec="seconds") + "/1h"

    monkeypatch.setenv("RESIDENCY_ACTOR", "sales-desk")
    r = run(main, base + ["request", "create", str(ws), "--to", "eu", "--window", window, "--requested-by", "amy@example.com", "--reason", "GDPR", "--json"])
    assert r.exit_code == 0, r.output
    rid = json.loads(r.output)["id"]
    r = run(main, base + ["request", "create", str(ws), "--to", "us", "--window", window, "--requested-by", "amy@example.com"])
    assert r.exit_code == 1 and "refused" in r.output
    r = run(main, base + ["request", "create", str(ws), "--to", "eu", "--window", "tomorrow/2h", "--requested-by", "amy@example.com"])
    assert r.exit_code == 2 and "ISO 8601" in r.output
    r = run(main, base + ["request", "approve", str(rid)])
    assert r.exit_code == 1 and "someone else must approve" in r.output
    monkeypatch.setenv("RESIDENCY_ACTOR", "ops-oncall")
    r = run(main, base + ["request", "approve", str(rid)])
    assert r.exit_code == 0 and "approved by ops-oncall" in r.output

    f = tmp_path / "batch.csv"
    other = seed.workspaces["us"][1] if len(seed.workspaces["us"]) > 1 else seed.workspaces["eu"][0]
    f.write_text(f"workspace,to,window,requested_by\n{other},au,{window},amy@example.com\nnope,au,{window},amy@example.com\n")
    r = run(main, base + ["request", "import", str(f)])
    assert r.exit_code == 1 and f"{f}:2: request" in r.output and f"{f}:3: unknown workspace" in r.output

    r = run(main, base + ["worker", "--once", "--json"])
    assert r.exit_code == 0, r.output
    outs = json.loads(r.output)
    assert [(o["request_id"], o["state"]) for o in outs] == [(rid, "done")]
    r = run(main, base + ["request", "show", str(rid)])
    assert r.exit_code == 0 and "state         done" in r.output and "approved by   ops-oncall" in r.output and "move.cut_over" in r.output
    r = run(main, base + ["request", "list", "--state", "done", "--json"])
    assert [x["id"] for x in json.loads(r.output)] == [rid]

    r = run(main, base + ["playbook", "render", "move-completed", "--request", str(rid)])
    assert r.exit_code == 0 and "Verification" in r.output
    r = run(main, base + ["playbook", "render", "move-scheduled", "--request", str(rid), "--format", "html"])
    assert r.exit_code == 0 and r.output.startswith("<!doctype html>")
    r = run(main, base + ["playbook", "render", "source-deleted", "--request", str(rid)])
    assert r.exit_code == 2 and "no deletion record" in r.output
    r = run(main, base + ["playbook", "check", "new-region", "--region", "eu", "--json"])
    data = json.loads(r.output)
    assert r.exit_code == 0 and data["ok"] and {s["id"]: s["status"] for s in data["steps"]}["smoke-move"] == "done"
