"""Deploys are evidence: a `stacks up` leaves one audit entry per stack with the regions.yaml commit
and the digest of the stack's outputs (orchestration with a stand-in engine, a real control plane)."""

from __future__ import annotations

import os
import subprocess

import psycopg

from residency.catalogue import load
from residency.stacks import deploys, orchestrate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGIONS = os.path.join(ROOT, "regions.yaml")


class Engine:
    def __init__(self, fail=()):
        self.fail = set(fail)

    def ensure_available(self):
        pass

    def select(self, stack):
        return stack.partition("-")[2]  # <env>-<region>: the handle is the region

    def run(self, handle, op):
        if handle in self.fail:
            raise RuntimeError("error: boom")
        return {"create": 3}

    def outputs(self, handle):
        return {"region": handle, "buckets": {"attachments": f"residency-{handle}-attachments"}}


def test_stacks_up_records_each_deploy_with_the_regions_commit_and_outputs_digest(env):
    cat = load(REGIONS)
    summary = orchestrate.run(cat, "up", ["us", "eu", "au"], engine=Engine(fail={"au"}), canary="us", parallel=1)
    entries = deploys.record(env.control_dsn, summary, REGIONS)
    assert [e.subject for e in entries] == ["stack/production-us", "stack/production-eu"]  # au failed: not deployed, not recorded
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        rows = c.execute("SELECT subject, details FROM residency.audit WHERE action = 'stack.deployed' ORDER BY seq").fetchall()
    d = dict(rows)["stack/production-eu"]
    assert (d["stack"], d["env"], d["region"]) == ("production-eu", "production", "eu")
    expected_commit = subprocess.run(["git", "log", "-1", "--format=%H", "--", "regions.yaml"], cwd=ROOT,
                                     capture_output=True, text=True).stdout.strip()
    assert d["regions_yaml"]["commit"] == expected_commit and len(expected_commit) == 40
    assert d["outputs_sha256"] == deploys.outputs_digest({"buckets": {"attachments": "residency-eu-attachments"}, "region": "eu"})
    assert d["outputs_sha256"] != dict(rows)["stack/production-us"]["outputs_sha256"]
    assert deploys.record(env.control_dsn, orchestrate.run(cat, "preview", ["us"], engine=Engine()), REGIONS) == []
