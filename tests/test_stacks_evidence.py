"""The evidence pack of a region's deploys: `stacks up` recorded with a stand-in engine (no pulumi
CLI) on a real control plane, the pack signed with moto's KMS and anchored in its Object Lock bucket,
then verified offline (no database, no network) by the same checker as a move's pack; any edit
fails, naming what."""

from __future__ import annotations

import json
import os
import random
import socket

import psycopg
import pytest

from audit_support import as_admin, rehash_from
from move_support import run_mover
from residency import evidence
from residency.catalogue import load
from residency.errors import InputError
from residency.stacks import deploys, orchestrate
from residency.stacks import evidence as stack_evidence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGIONS = os.path.join(ROOT, "regions.yaml")


class Engine:
    """Stands in for Pulumi: every stack deploys, with outputs named after it."""

    def ensure_available(self):
        pass

    def select(self, stack):
        return stack

    def run(self, handle, op):
        return {"create": 43} if op == "up" else {"same": 43}

    def outputs(self, handle):
        return {"stack": handle, "buckets": {"attachments": f"residency-{handle}-attachments"}}


def _up(env, regions, stack_env="production"):
    summary = orchestrate.run(load(REGIONS), "up", regions, engine=Engine(), env=stack_env, parallel=2)
    return deploys.record(env.control_dsn, summary, REGIONS)


@pytest.fixture
def deployed(env):
    """production: us and eu deployed, then eu again; staging: eu once."""
    first = _up(env, ["us", "eu"])
    again = _up(env, ["eu"])
    staging = _up(env, ["eu"], "staging")
    eu = [e for e in first + again if e.subject == "stack/production-eu"]
    return env, eu, staging[0], [e for e in first if e.subject == "stack/production-us"][0]


def _offline(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("evidence verify touched the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_pack_of_a_regions_deploys_verifies_offline(deployed, tmp_path, monkeypatch):
    env, eu, staging, us = deployed
    path = tmp_path / "eu-deploys.json"
    p = run_mover(env, "stacks", "evidence", "eu", "--out", str(path))
    assert p.returncode == 0, p.stderr
    assert "stack production-eu: evidence pack" in p.stdout and "2 deploys" in p.stdout
    pack = json.loads(path.read_text())
    assert pack["format"] == "residency-deploy-evidence/1"
    assert pack["stack"] == {"name": "production-eu", "env": "production", "region": "eu", "aws_region": "eu-west-1",
                             "backup_region": "eu-central-1", "jurisdiction": "EU"}
    assert [d["seq"] for d in pack["deploys"]] == [e.seq for e in eu]  # staging's and us's deploys are not this stack's
    last = pack["deploys"][-1]
    assert last["regions_yaml"]["commit"] and len(last["regions_yaml"]["sha256"]) == 64
    assert last["outputs_sha256"] == deploys.outputs_digest(Engine().outputs("production-eu"))
    assert {e["subject"] for e in pack["audit_entries"]} == {"stack/production-eu"}

    _offline(monkeypatch)
    res = evidence.verify(path.read_bytes())
    assert res.ok, res.problems
    assert res.label == "stack production-eu" and res.format == evidence.DEPLOY_FORMAT
    assert any(f.startswith("2 deploys of stack production-eu; the last at") and last["outputs_sha256"] in f for f in res.facts), res.facts
    from click.testing import CliRunner

    from residency.cli import main

    r = CliRunner().invoke(main, ["evidence", "verify", str(path)], env={"RESIDENCY_CONTROL_DSN": "postgresql://nowhere.invalid/x"})
    assert r.exit_code == 0, r.output
    assert "stack production-eu: evidence verified" in r.output


def test_one_deploy_the_last_n_and_another_environment(deployed):
    env, eu, staging, us = deployed
    cat = load(REGIONS)
    one = stack_evidence.build(env.connections, cat, "eu", "production", seq=eu[0].seq)
    assert [d["seq"] for d in one["deploys"]] == [eu[0].seq] and evidence.verify(evidence.dumps(one)).ok
    assert [d["seq"] for d in stack_evidence.build(env.connections, cat, "eu", last=1)["deploys"]] == [eu[-1].seq]
    st = stack_evidence.build(env.connections, cat, "eu", "staging")
    assert st["stack"]["name"] == "staging-eu" and [d["seq"] for d in st["deploys"]] == [staging.seq]
    assert evidence.verify(evidence.dumps(st)).ok
    with pytest.raises(InputError, match=f"entry {us.seq} is not a deploy of stack production-eu"):
        stack_evidence.build(env.connections, cat, "eu", seq=us.seq)
    for bad in (["--last", "1", "--seq", str(us.seq)], ["--last", "0"], ["--env", "Prod"]):
        p = run_mover(env, "stacks", "evidence", "eu", "--out", str(os.path.join(ROOT, "never-written")), *bad)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not os.path.exists(os.path.join(ROOT, "never-written"))
    p = run_mover(env, "stacks", "evidence", "au", "--out", os.devnull + "x")
    assert p.returncode == 1 and "stack production-au has no deploy in the audit log" in p.stderr


def test_any_edit_fails_naming_what(deployed):
    env, eu, staging, us = deployed
    good = stack_evidence.build(env.connections, load(REGIONS), "eu")
    data = evidence.dumps(good)
    rng = random.Random(17)
    spots = [data.index(b'"outputs_sha256": "') + 22, data.index(b'"commit": "') + 15, data.index(b'"signature": "') + 20] \
        + [rng.randrange(len(data)) for _ in range(40)]
    for pos in spots:
        b = data[pos]
        res = evidence.verify(data[:pos] + bytes([b + 1 if b < 0x7e else b - 1]) + data[pos + 1:])
        assert not res.ok and res.problems[0], f"an edit at byte {pos} ({data[pos - 20:pos + 20]!r}) passed"
    # the outputs digest of a deploy changed consistently (the file stays canonical): named by section and entry
    pack = json.loads(data)
    pack["deploys"][0]["outputs_sha256"] = "0" * 64
    res = evidence.verify(evidence.dumps(pack))
    assert "deploys: differs from the sealed hash (edited after the pack was made)" in res.problems
    assert f"deploy {eu[0].seq}: outputs_sha256 differs from the one entry {eu[0].seq} (stack.deployed) recorded" in res.problems
    # a deploy entry of another stack slipped in
    pack = json.loads(data)
    pack["stack"]["name"] = pack["stack"]["region"] = "us"
    assert any("not <env>-<region>" in p for p in evidence.verify(evidence.dumps(pack)).problems)


def test_a_rehashed_deploy_entry_is_caught_by_the_digest(deployed):
    env, eu, staging, us = deployed
    cat = load(REGIONS)
    assert evidence.verify(evidence.dumps(stack_evidence.build(env.connections, cat, "eu"))).ok  # writes the digest

    # a DBA rewrites what was deployed (the regions.yaml commit) and re-hashes the chain: the pack is
    # rebuilt and sealed from the database, but the digest still signs the entry's old hash
    def edit(c):
        c.execute("UPDATE residency.audit SET details = jsonb_set(details, '{regions_yaml,commit}', '\"f00d\"') WHERE seq = %s", (eu[0].seq,))
        rehash_from(c, eu[0].seq)

    as_admin(env, edit)
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        assert c.execute("SELECT details->'regions_yaml'->>'commit' FROM residency.audit WHERE seq = %s", (eu[0].seq,)).fetchone()[0] == "f00d"
    res = evidence.verify(evidence.dumps(stack_evidence.build(env.connections, cat, "eu")))
    assert any(p.startswith(f"entry {eu[0].seq} (stack.deployed stack/production-eu): differs from the hash signed in digest") for p in res.problems), res.problems
