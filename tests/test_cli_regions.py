"""`residency regions list | show | validate`: human and JSON output, help, errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from residency.cli import main
from residency.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "regions.yaml"
RESIDENCY = Path(sys.executable).parent / "residency"


@pytest.fixture(autouse=True)
def _no_env_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESIDENCY_REGIONS", raising=False)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["--regions", str(SHIPPED), *args])


# --------------------------------------------------------------------------- list


def test_list_human() -> None:
    result = run("regions", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["REGION", "AWS", "REGION", "JURISDICTION", "LAW", "BACKUPS", "IN", "CIDR", "STATUS"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["us", "us-east-1", "US", "us-west-2", "10.10.0.0/16", "active"]
    assert lines[3].split() == ["eu", "eu-west-1", "EU", "GDPR", "eu-central-1", "10.20.0.0/16", "active"]
    assert lines[4].split() == ["au", "ap-southeast-2", "AU", "Privacy", "Act", "1988", "ap-southeast-4", "10.30.0.0/16", "active"]
    assert len(lines) == 5
    # columns line up
    assert lines[0].index("AWS REGION") == lines[2].index("us-east-1") == lines[4].index("ap-southeast-2")
    assert result.stderr == ""


def test_list_json() -> None:
    result = run("regions", "list", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["name"] for r in data] == ["us", "eu", "au"]
    assert data[1] == {
        "name": "eu",
        "aws_region": "eu-west-1",
        "jurisdiction": "EU",
        "law": "GDPR",
        "backup_region": "eu-central-1",
        "cidr": "10.20.0.0/16",
        "status": "active",
        "overrides": {},
    }
    assert data[0]["law"] is None
    assert data[2]["overrides"] == {"database": {"instance_class": "db.r6g.xlarge"}}


# --------------------------------------------------------------------------- show


def test_show_human() -> None:
    result = run("regions", "show", "au")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "region        au",
        "aws region    ap-southeast-2",
        "jurisdiction  AU (Privacy Act 1988)",
        "backups in    ap-southeast-4",
        "cidr          10.30.0.0/16",
        "status        active",
        "database      postgres 15, db.r6g.xlarge, 200 GB, multi-AZ yes",
        "buckets       attachments, exports",
        "queues        events",
        "retention     backups 35 days, deleted workspaces 30 days",
        "may touch     ap-southeast-2, ap-southeast-4",
        'overrides     {"database": {"instance_class": "db.r6g.xlarge"}}',
    ]


def test_show_json_has_the_effective_environment() -> None:
    result = run("regions", "show", "au", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["name"] == "au" and data["aws_region"] == "ap-southeast-2"
    assert data["environment"]["database"] == {
        "engine": "postgres",
        "version": "15",
        "instance_class": "db.r6g.xlarge",
        "storage_gb": 200,
        "multi_az": True,
    }
    assert data["environment"]["buckets"] == ["attachments", "exports"]
    assert data["environment"]["retention"] == {"backups_days": 35, "deleted_workspace_days": 30}
    assert data["stack_may_touch"] == ["ap-southeast-2", "ap-southeast-4"]
    us = json.loads(run("regions", "show", "us", "--json").stdout)
    assert us["environment"]["database"]["instance_class"] == "db.r6g.large"
    assert "overrides" in us and us["overrides"] == {}


def test_show_unknown_region_is_one_line_and_exit_2() -> None:
    result = run("regions", "show", "ue")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"error: unknown region 'ue' (regions in {SHIPPED}: us, eu, au); did you mean 'eu'?\n"
    assert "Traceback" not in result.output


def test_show_unknown_region_with_debug_raises() -> None:
    result = run("--debug", "regions", "show", "ue")
    assert isinstance(result.exception, InputError)
    assert result.exit_code != 0


def test_debug_shows_a_traceback_in_a_real_process() -> None:
    args = [str(RESIDENCY), "--regions", str(SHIPPED), "regions", "show", "nowhere"]
    plain = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 2
    assert plain.stderr == f"error: unknown region 'nowhere' (regions in {SHIPPED}: us, eu, au)\n"
    debug = subprocess.run([args[0], "--debug", *args[1:]], capture_output=True, text=True, timeout=60)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "residency.errors.InputError: unknown region 'nowhere'" in debug.stderr


# --------------------------------------------------------------------------- validate


def test_validate_default_file_human() -> None:
    result = run("regions", "validate")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{SHIPPED}: valid: 3 regions (us, eu, au), 3 jurisdictions\n"


def test_validate_json_valid() -> None:
    result = run("regions", "validate", "--json", str(SHIPPED))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"file": str(SHIPPED), "valid": True, "regions": ["us", "eu", "au"], "problems": []}


def test_validate_json_invalid(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = SHIPPED.read_text(encoding="utf-8").replace("backup_region: eu-central-1", "backup_region: us-west-2")
    bad.write_text(text, encoding="utf-8")
    # where the bad value is: line and column, 1-based
    offset = text.index("backup_region: us-west-2", text.index("\n  eu:")) + len("backup_region: ")
    line = text.count("\n", 0, offset) + 1
    column = offset - text.rfind("\n", 0, offset)
    result = run("regions", "validate", "--json", str(bad))
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["valid"] is False and data["file"] == str(bad)
    assert data["problems"] == [
        f"{bad}:{line}:{column}: region 'eu': backup_region us-west-2 is in jurisdiction US, not EU; choose one of eu-central-1, eu-north-1"
    ]


def test_validate_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = run("regions", "validate", str(missing))
    assert result.exit_code == 2
    assert result.stderr == f"error: {missing}: no such file\n"  # the file was named: no hint about --regions
    result = run("regions", "validate", "--json", str(missing))
    assert result.exit_code == 2
    assert json.loads(result.stdout)["problems"] == [f"{missing}: no such file"]


def test_a_broken_regions_file_fails_every_regions_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions: [\n", encoding="utf-8")
    for args in (["regions", "list"], ["regions", "show", "eu"]):
        result = CliRunner().invoke(main, ["--regions", str(bad), *args])
        assert result.exit_code == 2, args
        assert result.stderr.splitlines()[-1] == "1 problem found"
        assert result.stderr.startswith(f"{bad}:2:1: YAML syntax error:")


# --------------------------------------------------------------------------- help and usage


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], "Run one product in several data-residency regions"),
        (["regions"], "Inspect and validate the region definitions"),
        (["regions", "list"], "List every region with its AWS region, jurisdiction and status."),
        (["regions", "show"], "Show one region: its placement and the environment it gets"),
        (["regions", "validate"], "Check a regions file (default: --regions) and print every problem with its line."),
    ],
)
def test_help_explains(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0
    assert expected in " ".join(result.stdout.split())
    if args[-1:] in (["list"], ["show"], ["validate"]):
        assert "--json" in result.stdout
    if not args:
        assert "--regions FILE" in result.stdout and "RESIDENCY_REGIONS" in result.stdout and "--debug" in result.stdout


def test_usage_errors_exit_2() -> None:
    result = run("regions", "show")
    assert result.exit_code == 2
    assert "Missing argument 'NAME'" in result.stderr
    result = run("regions", "frobnicate")
    assert result.exit_code == 2


def test_json_rendering_handles_every_catalogue_object() -> None:
    """Catalogue objects hold read-only mappings; the CLI's JSON helper must render them all."""
    from residency.cli import core as cli
    from residency.catalogue import load

    cat = load(SHIPPED)
    data = json.loads(json.dumps(cli._jsonable(cat)))
    assert data["workspace"]["paths"]["reactions"]["targets"] == {"message": "messages", "conversation": "conversations"}
    assert data["regions"]["au"]["overrides"] == {"database": {"instance_class": "db.r6g.xlarge"}}
    assert data["regions"]["au"]["environment"]["database"]["instance_class"] == "db.r6g.xlarge"
