"""The catalogue: the shipped regions.yaml, the broken-file corpus, and choosing a regions file.

Every corpus case in tests/corpus/cases.yaml is run through `residency regions validate FILE`
and must print exactly its expected lines on stderr and exit with 2.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from residency.cli import main
from residency import catalogue
from residency.catalogue import Catalogue, DatabaseSpec, Environment, Region, load, loads
from residency.errors import CatalogueError, InputError
from residency import yamlpos
from residency.yamlpos import Map, Scalar, Seq, YamlSyntaxError, parse

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "regions.yaml"
CORPUS = Path(__file__).resolve().parent / "corpus"
CASES: dict[str, dict] = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))
RESIDENCY = Path(sys.executable).parent / "residency"

FOURTH_REGION = """\
  ca:
    aws_region: ca-central-1
    jurisdiction: CA
    cidr: 10.40.0.0/16
    backup_region: ca-west-1
    status: planned
"""


def shipped_text() -> str:
    return SHIPPED.read_text(encoding="utf-8")


def with_fourth_region(text: str) -> str:
    """regions.yaml text with a Canadian jurisdiction and region added."""
    text = text.replace("\njurisdictions:\n", "\njurisdictions:\n  CA: {aws_regions: [ca-central-1, ca-west-1], law: PIPEDA}\n", 1)
    return text.replace("\nworkspace:", "\n" + FOURTH_REGION + "\nworkspace:", 1)


def problems_of(text: str, file: str = "regions.yaml") -> list[str]:
    with pytest.raises(CatalogueError) as info:
        loads(text, file)
    return info.value.problems


@pytest.fixture(autouse=True)
def _no_env_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their regions file explicitly; a developer's $RESIDENCY_REGIONS must not leak in."""
    monkeypatch.delenv(catalogue.ENV_VAR, raising=False)


# --------------------------------------------------------------------------- the shipped file


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    return load(SHIPPED)


def test_shipped_file_has_three_regions(cat: Catalogue) -> None:
    assert list(cat.regions) == ["us", "eu", "au"]
    assert [(r.aws_region, r.jurisdiction, r.backup_region, r.status) for r in cat.regions.values()] == [
        ("us-east-1", "US", "us-west-2", "active"),
        ("eu-west-1", "EU", "eu-central-1", "active"),
        ("ap-southeast-2", "AU", "ap-southeast-4", "active"),
    ]
    assert cat.jurisdictions["EU"].law == "GDPR"
    assert cat.jurisdictions["EU"].aws_regions == ("eu-west-1", "eu-central-1", "eu-north-1")
    assert cat.region("eu").cidr == "10.20.0.0/16"
    assert cat.jurisdictions[cat.region("au").jurisdiction].name == "AU"


def test_override_applies_only_to_its_region(cat: Catalogue) -> None:
    au, us = cat.region("au"), cat.region("us")
    assert au.environment.database.instance_class == "db.r6g.xlarge"
    assert us.environment.database.instance_class == "db.r6g.large"
    assert cat.environment.database.instance_class == "db.r6g.large"  # the shared one is untouched
    # everything not overridden is inherited
    assert au.environment.database == dataclasses.replace(cat.environment.database, instance_class="db.r6g.xlarge")
    assert au.environment.buckets == cat.environment.buckets == ("attachments", "exports")
    assert au.environment.retention == cat.environment.retention
    assert dict(au.overrides) == {"database": {"instance_class": "db.r6g.xlarge"}}
    assert not us.overrides


def test_workspace_section(cat: Catalogue) -> None:
    ws = cat.workspace
    assert (ws.root_table, ws.key_column, ws.global_tables) == ("workspaces", "workspace_id", ("users",))
    path = ws.paths["reactions"]
    assert (path.column, path.type_column, path.references) == ("subject_id", "subject_type", None)
    assert dict(path.targets) == {"message": "messages", "conversation": "conversations"}
    assert ws.prefix_for(42) == "workspaces/42/"


def test_objects_are_immutable(cat: Catalogue) -> None:
    au = cat.region("au")
    with pytest.raises(dataclasses.FrozenInstanceError):
        au.status = "retired"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        au.environment.database.storage_gb = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cat.regions["xx"] = au  # type: ignore[index]
    with pytest.raises(TypeError):
        cat.jurisdictions["EU"] = cat.jurisdictions["US"]  # type: ignore[index]
    with pytest.raises(TypeError):
        au.overrides["database"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):  # nested override mappings are read-only too
        au.overrides["database"]["instance_class"] = "db.t3.micro"  # type: ignore[index]
    with pytest.raises(TypeError):
        cat.workspace.paths["reactions"].targets["x"] = "y"  # type: ignore[index]
    assert isinstance(cat.environment.buckets, tuple)


def test_unknown_region_names_the_known_ones_and_suggests(cat: Catalogue) -> None:
    with pytest.raises(InputError) as info:
        cat.region("ue")
    assert str(info.value) == f"unknown region 'ue' (regions in {SHIPPED}: us, eu, au); did you mean 'eu'?"
    with pytest.raises(InputError) as info:
        cat.region("mars")
    assert str(info.value) == f"unknown region 'mars' (regions in {SHIPPED}: us, eu, au)"
    assert info.value.exit_code == 2


def test_a_fourth_region_added_to_a_copy_works(tmp_path: Path) -> None:
    copy = tmp_path / "regions.yaml"
    copy.write_text(with_fourth_region(shipped_text()), encoding="utf-8")
    cat = load(copy)
    assert list(cat.regions) == ["us", "eu", "au", "ca"]
    ca = cat.region("ca")
    assert (ca.aws_region, ca.jurisdiction, ca.backup_region, ca.status) == ("ca-central-1", "CA", "ca-west-1", "planned")
    assert ca.environment == cat.environment
    assert cat.jurisdictions["CA"].law == "PIPEDA"
    result = CliRunner().invoke(main, ["--regions", str(copy), "regions", "list"])
    assert result.exit_code == 0, result.output
    assert "ca-central-1" in result.stdout


def test_yaml_anchors_and_merge_keys_are_understood() -> None:
    text = shipped_text().replace(
        "  eu: {aws_region: eu-west-1, jurisdiction: EU, cidr: 10.20.0.0/16, backup_region: eu-central-1, status: active}",
        "  eu: &eu {aws_region: eu-west-1, jurisdiction: EU, cidr: 10.20.0.0/16, backup_region: eu-central-1, status: active}\n"
        "  eu2:\n    <<: *eu\n    aws_region: eu-north-1\n    cidr: 10.21.0.0/16\n    status: planned",
    )
    eu2 = loads(text).region("eu2")
    assert (eu2.aws_region, eu2.jurisdiction, eu2.backup_region, eu2.status) == ("eu-north-1", "EU", "eu-central-1", "planned")


def test_parse_keeps_positions() -> None:
    root = parse("a:\n  - x\n  - {b: 1}\n", "f.yaml")
    assert isinstance(root, Map) and str(root.keys["a"]) == "f.yaml:1:1"
    seq = root.items["a"]
    assert isinstance(seq, Seq) and str(seq.items[1].mark) == "f.yaml:3:5"
    inner = seq.items[1]
    assert isinstance(inner, Map) and inner.items["b"] == Scalar(1, inner.items["b"].mark, "1")
    assert str(inner.keys["b"]) == "f.yaml:3:6"


DEEP = "YAML syntax error: nested more than 32 levels deep; a regions file needs far fewer"


@pytest.mark.parametrize("levels", [33, 40, 1200, 5000])
def test_deep_flow_nesting_is_refused_by_our_guard_at_the_33rd_level(levels: int) -> None:
    """Whatever limit (and wording) the installed libyaml has, our guard speaks first, at the
    exact bracket: the top-level mapping is level 1, so the 32nd '[' opens level 33."""
    text = "regions: " + "[" * levels + "]" * levels + "\n"
    with pytest.raises(YamlSyntaxError) as exc:
        parse(text, "f.yaml")
    assert str(exc.value) == "f.yaml:1:41: " + DEEP


def test_deep_block_nesting_is_refused_at_its_line() -> None:
    """Block nesting never reaches libyaml's limit; the guard counts the key k31 on line 32 as
    level 33 (the root mapping is 1, each mapping and its keys one more)."""
    text = "".join(" " * i + f"k{i}:\n" for i in range(40)) + " " * 40 + "v\n"
    with pytest.raises(YamlSyntaxError) as exc:
        parse(text, "f.yaml")
    assert str(exc.value) == "f.yaml:32:32: " + DEEP


def test_either_parser_gives_the_same_tree_and_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Text that looks deeply nested goes to PyYAML's pure-Python parser instead of libyaml's;
    both must give the same nodes and marks, up to exactly the limit."""
    at_limit = "regions: " + "[" * 30 + "1" + "]" * 30 + "\n"  # the mapping 1, the lists 2-31, the 1 is 32
    texts = [at_limit, shipped_text()]
    with_libyaml = [parse(t, "f.yaml") for t in texts]
    monkeypatch.setattr(yamlpos, "CParser", None)
    assert [parse(t, "f.yaml") for t in texts] == with_libyaml


def test_loads_reports_every_problem_sorted_by_position() -> None:
    text = shipped_text().replace("status: active}", "status: live}").replace("storage_gb: 200", "storage_gb: big")
    problems = problems_of(text)
    assert len(problems) == 3
    assert [p.split(":")[1] for p in problems] == ["11", "17", "18"]
    assert problems[0].endswith("'storage_gb' must be a whole number, got 'big' (a string)")
    assert all(p.endswith("status 'live' is not one of planned, active, draining, retired") for p in problems[1:])


def test_unreadable_paths_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nowhere\.yaml: no such file$"):
        load(tmp_path / "nowhere.yaml")
    with pytest.raises(InputError, match="is a directory"):
        load(tmp_path)


# --------------------------------------------------------------------------- choosing the file


def test_env_var_and_option_choose_the_regions_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    four = tmp_path / "four.yaml"
    four.write_text(with_fourth_region(shipped_text()), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # no ./regions.yaml here
    runner = CliRunner()

    result = runner.invoke(main, ["regions", "list", "--json"])
    assert result.exit_code == 2
    assert result.stderr == "error: regions.yaml: no such file here or in any folder above; pass --regions FILE or set RESIDENCY_REGIONS\n"

    result = runner.invoke(main, ["regions", "list", "--json"], env={"RESIDENCY_REGIONS": str(four)})
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in yaml.safe_load(result.stdout)] == ["us", "eu", "au", "ca"]

    # --regions wins over the environment variable
    result = runner.invoke(main, ["--regions", str(SHIPPED), "regions", "list", "--json"], env={"RESIDENCY_REGIONS": str(four)})
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in yaml.safe_load(result.stdout)] == ["us", "eu", "au"]

    # the library's default follows the same variable
    monkeypatch.setenv("RESIDENCY_REGIONS", str(four))
    assert catalogue.default_path() == str(four)
    assert list(load().regions) == ["us", "eu", "au", "ca"]


def test_default_is_regions_yaml_in_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(SHIPPED, tmp_path / "regions.yaml")
    monkeypatch.chdir(tmp_path)
    assert list(load().regions) == ["us", "eu", "au"]
    result = CliRunner().invoke(main, ["regions", "validate"])
    assert result.exit_code == 0
    assert result.stdout == "regions.yaml: valid: 3 regions (us, eu, au), 3 jurisdictions\n"


# --------------------------------------------------------------------------- the corpus


def test_corpus_is_complete() -> None:
    files = {p.name for p in CORPUS.iterdir() if p.name != "cases.yaml"}
    assert files == set(CASES), "every corpus file needs a case in cases.yaml, and every case a file"
    assert len(CASES) >= 28
    for name, case in CASES.items():
        assert case["rule"] and case["expect"], name
        for line in case["expect"]:
            file, lineno, col, message = line.split(":", 3)
            assert file == name and int(lineno) >= 1 and int(col) >= 1 and message.startswith(" "), line


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_case(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    result = CliRunner().invoke(main, ["regions", "validate", name])
    expected = CASES[name]["expect"]
    n = len(expected)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == [*expected, f"{n} problem{'s' if n != 1 else ''} found"]


def test_corpus_json_lists_the_same_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    result = CliRunner().invoke(main, ["regions", "validate", "--json", "several-problems.yaml"])
    assert result.exit_code == 2
    data = yaml.safe_load(result.stdout)
    assert data == {"file": "several-problems.yaml", "valid": False, "problems": CASES["several-problems.yaml"]["expect"]}


def test_corpus_case_through_the_installed_command() -> None:
    """The real console script, in a real process: same lines, exit code 2, no traceback."""
    assert RESIDENCY.exists(), f"{RESIDENCY} is missing; install the project into its venv"
    name = "several-problems.yaml"
    proc = subprocess.run([str(RESIDENCY), "regions", "validate", name], cwd=CORPUS, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [*CASES[name]["expect"], "7 problems found"]


def test_a_10_mb_file_is_refused_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.yaml"
    filler = "# " + "x" * 1021 + "\n"  # 1 KiB per line
    with big.open("w", encoding="utf-8") as f:
        f.write(shipped_text())
        f.write(filler * (10 * 1024))
    assert big.stat().st_size > 10 * 1024 * 1024
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["regions", "validate", "big.yaml"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["big.yaml:1:1: file is 10.0 MiB; a regions file is at most 1 MiB", "1 problem found"]


def test_a_file_just_under_the_limit_still_loads(tmp_path: Path) -> None:
    near = tmp_path / "near.yaml"
    near.write_text(shipped_text() + ("# " + "y" * 1021 + "\n") * 1000, encoding="utf-8")
    assert 1000 * 1024 < near.stat().st_size <= catalogue.MAX_BYTES
    assert list(load(near).regions) == ["us", "eu", "au"]


@pytest.mark.parametrize(
    "text, expected",
    [
        # a BOM is not a problem
        ("\ufeff" + "x: 1\n", "f.yaml:1:1: top level: unknown key 'x'"),
        # a null key
        ("~: 1\n", "f.yaml:1:1: top level: key nothing (null) must be a string"),
        # an alias to an undefined anchor
        ("a: *nowhere\n", "f.yaml:1:4: YAML syntax error: found undefined alias 'nowhere'; define the anchor (&name) before using it"),
        # a recursive alias
        ("a: &x [*x]\n", "f.yaml:1:4: YAML syntax error: an alias refers to a node that contains it (a recursive structure)"),
    ],
)
def test_odd_yaml_is_reported_not_crashed_on(text: str, expected: str) -> None:
    assert problems_of(text, "f.yaml")[0].startswith(expected)


def test_every_problem_is_one_line() -> None:
    for name, case in CASES.items():
        for line in case["expect"]:
            assert "\n" not in line and "Traceback" not in line, name


def test_known_aws_regions_come_from_botocore() -> None:
    """Every region botocore has endpoints for is known, in its own partition; its pseudo-regions
    (aws-global) are not regions a stack can be built in."""
    import json

    import botocore

    from residency.aws_regions import AWS_REGIONS, OTHER_PARTITIONS

    endpoints = json.loads((Path(botocore.__file__).parent / "data" / "endpoints.json").read_text())
    for p in endpoints["partitions"]:
        regions = set(p["regions"])
        if p["partition"] == "aws":
            assert regions <= AWS_REGIONS
        else:
            assert {OTHER_PARTITIONS.get(r) for r in regions} == {p["partition"]}
    assert "aws-global" not in AWS_REGIONS and not any(r.endswith("-global") for r in OTHER_PARTITIONS)
    assert not AWS_REGIONS & set(OTHER_PARTITIONS)


def test_regions_yaml_is_found_in_the_nearest_folder_above(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As git finds its repository: from a folder deep inside a project, its regions.yaml."""
    shutil.copy(SHIPPED, tmp_path / "regions.yaml")
    deep = tmp_path / "services" / "billing" / "src"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    monkeypatch.delenv("RESIDENCY_REGIONS", raising=False)
    assert catalogue.find() == os.path.join("..", "..", "..", "regions.yaml")
    assert list(load().regions) == ["us", "eu", "au"]
    result = CliRunner().invoke(main, ["regions", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in yaml.safe_load(result.stdout)] == ["us", "eu", "au"]
    # the nearest wins: a regions.yaml in between shadows the one at the top
    four = deep.parent / "regions.yaml"
    four.write_text(with_fourth_region(shipped_text()), encoding="utf-8")
    assert catalogue.find() == os.path.join("..", "regions.yaml")
    result = CliRunner().invoke(main, ["regions", "validate"])
    assert result.exit_code == 0 and result.stdout.startswith(f"{os.path.join('..', 'regions.yaml')}: valid: 4 regions")
