"""The CI workflow generated from regions.yaml, and the committed copy kept fresh."""

from __future__ import annotations

import os

import pytest
import yaml
from click.testing import CliRunner

from residency.catalogue import load, loads
from residency.stacks import workflow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGIONS = os.path.join(ROOT, "regions.yaml")
COMMITTED = os.path.join(ROOT, ".github", "workflows", "deploy.yml")


def test_committed_workflow_is_up_to_date():
    cat = load(REGIONS)
    assert not workflow.is_stale(cat, COMMITTED), (
        "the committed .github/workflows/deploy.yml is stale; run: residency ci workflow --output .github/workflows/deploy.yml")


def test_a_new_region_makes_the_committed_workflow_stale(tmp_path):
    text = open(REGIONS, encoding="utf-8").read().replace(
        "\nworkspace:", "\n  de: {aws_region: eu-central-1, jurisdiction: EU, cidr: 10.40.0.0/16, backup_region: eu-north-1, status: active}\n\nworkspace:", 1)
    cat = loads(text)
    assert workflow.is_stale(cat, COMMITTED)
    out = tmp_path / "deploy.yml"
    assert workflow.write(cat, out) is True and workflow.write(cat, out) is False
    assert not workflow.is_stale(cat, out)
    from residency.cli import main

    result = CliRunner().invoke(main, ["--regions", REGIONS, "ci", "workflow", "--check", str(out)])
    assert result.exit_code == 1 and "stale" in result.output


def test_workflow_previews_on_pull_requests_and_deploys_canary_first():
    cat = load(REGIONS)
    doc = yaml.safe_load(workflow.render(cat))
    jobs = doc["jobs"]
    assert set(jobs) == {"plan", "preview-production-us", "preview-production-eu", "preview-production-au",
                         "deploy-production-us", "deploy-production-eu", "deploy-production-au"}
    assert "needs" not in jobs["deploy-production-us"]
    assert jobs["deploy-production-eu"]["needs"] == ["deploy-production-us"] == jobs["deploy-production-au"]["needs"]
    assert all("pull_request" in jobs[j]["if"] for j in jobs if j.startswith(("plan", "preview")))
    assert all("push" in jobs[j]["if"] for j in jobs if j.startswith("deploy"))
    assert jobs["deploy-production-au"]["steps"][-1]["run"] == "residency stacks up --env production --region au"
    assert jobs["deploy-production-au"]["environment"] == "production-au"  # the GitHub environment is the stack
    assert workflow.render(cat, canary="eu") != workflow.render(cat)


def test_workflow_promotes_staging_then_production():
    """Both environments deploy: staging canary first, its other regions after it, and production's
    canary only once every staging stack is deployed."""
    cat = load(REGIONS)
    jobs = yaml.safe_load(workflow.render(cat, envs=["staging", "production"]))["jobs"]
    assert "needs" not in jobs["deploy-staging-us"]
    assert jobs["deploy-staging-eu"]["needs"] == ["deploy-staging-us"]
    assert jobs["deploy-production-us"]["needs"] == ["deploy-staging-us", "deploy-staging-eu", "deploy-staging-au"]
    assert jobs["deploy-production-au"]["needs"] == ["deploy-production-us"]
    assert jobs["deploy-staging-eu"]["steps"][-1]["run"] == "residency stacks up --env staging --region eu"
    assert jobs["preview-staging-au"]["steps"][-1]["run"] == "residency stacks preview --env staging --region au"
    from residency.errors import InputError

    with pytest.raises(InputError, match="given twice"):
        workflow.render(cat, envs=["staging", "staging"])


def test_generated_workflow_has_no_zizmor_finding(tmp_path):
    """Every action pinned to a commit, no persisted checkout credentials, id-token only where the
    deploy role is assumed: zizmor (offline audits) finds nothing in the generated file."""
    import shutil
    import subprocess
    import sys

    zizmor = shutil.which("zizmor") or os.path.join(os.path.dirname(sys.executable), "zizmor")
    assert os.path.exists(zizmor), "zizmor is a test dependency: pip install -e '.[test]'"
    out = tmp_path / ".github" / "workflows" / "deploy.yml"
    workflow.write(load(REGIONS), out, envs=["staging", "production"])
    p = subprocess.run([zizmor, "--offline", "--no-progress", "--format", "plain", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "No findings to report" in p.stdout + p.stderr


def test_workflow_pins_actions_and_grants_id_token_only_to_deploying_jobs():
    import re

    text = workflow.render(load(REGIONS))
    refs = re.findall(r"uses: (\S+)@(\S+)(?: # (\S+))?", text)
    assert refs and all(re.fullmatch(r"[0-9a-f]{40}", sha) and tag for _, sha, tag in refs)
    doc = yaml.safe_load(text)
    assert "id-token" not in doc["permissions"]
    for name, job in doc["jobs"].items():
        assumes_role = any("configure-aws-credentials" in s.get("uses", "") for s in job["steps"])
        assert (job.get("permissions", {}).get("id-token") == "write") == assumes_role, name
        for s in job["steps"]:
            if "actions/checkout" in s.get("uses", ""):
                assert s["with"]["persist-credentials"] is False
