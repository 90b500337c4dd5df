"""Residency policy: what may live and flow where, and the reasons a person reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from residency.catalogue import Catalogue, load, loads
from residency.errors import InputError
from residency.policy import (
    Decision,
    Flow,
    active_regions,
    allowed_aws_regions,
    may_copy,
    may_flow,
    may_live,
    may_move,
    stack_may_touch,
)

SHIPPED = Path(__file__).resolve().parents[1] / "regions.yaml"

EXTRA_REGIONS = """\
  eu2: {aws_region: eu-north-1, jurisdiction: EU, cidr: 10.21.0.0/16, backup_region: eu-central-1, status: planned}
  us2: {aws_region: us-east-2, jurisdiction: US, cidr: 10.11.0.0/16, backup_region: us-west-2, status: draining}
  us3: {aws_region: us-west-2, jurisdiction: US, cidr: 10.12.0.0/16, backup_region: us-east-2, status: retired}
"""


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    """The shipped regions plus one planned, one draining and one retired region."""
    text = SHIPPED.read_text(encoding="utf-8").replace("\nworkspace:", "\n" + EXTRA_REGIONS + "\nworkspace:", 1)
    return loads(text, "policy-regions.yaml")


def test_decision_is_truthy_only_when_allowed() -> None:
    assert Decision(True, "ok") and not Decision(False, "no")


@pytest.mark.parametrize(
    "region, allowed, reason",
    [
        ("eu", True, "region 'eu' is active in jurisdiction EU"),
        ("eu2", False, "region 'eu2' is planned; workspace data may only live in an active region"),
        ("us2", False, "region 'us2' is draining; workspace data may only live in an active region"),
        ("us3", False, "region 'us3' is retired; workspace data may only live in an active region"),
    ],
)
def test_may_live(cat: Catalogue, region: str, allowed: bool, reason: str) -> None:
    d = may_live(cat, region)
    assert (d.allowed, d.reason) == (allowed, reason)


@pytest.mark.parametrize(
    "source, target, allowed, reason",
    [
        # a customer's choice of residency may cross jurisdictions
        ("us", "eu", True, "us (US) → eu (EU)"),
        ("eu", "au", True, "eu (EU) → au (AU)"),
        # draining is exactly a region being emptied
        ("us2", "us", True, "us2 (US) → us (US)"),
        ("eu", "eu", False, "the workspace is already in region 'eu'"),
        ("eu2", "eu", False, "source region 'eu2' is planned; it holds no workspaces yet"),
        ("us3", "us", False, "source region 'us3' is retired; it holds no workspaces any more"),
        ("us", "eu2", False, "target region 'eu2' is planned; workspace data may only live in an active region"),
        ("us", "us2", False, "target region 'us2' is draining; workspace data may only live in an active region"),
    ],
)
def test_may_move(cat: Catalogue, source: str, target: str, allowed: bool, reason: str) -> None:
    d = may_move(cat, source, target)
    assert (d.allowed, d.reason) == (allowed, reason)
    assert may_flow(cat, source, target, Flow.MOVE) == d
    assert may_flow(cat, source, target, "move") == d


@pytest.mark.parametrize("flow", [Flow.BACKUP, Flow.REPLICA, "backup", "replica"])
@pytest.mark.parametrize(
    "source, target, allowed, reason",
    [
        # inside the jurisdiction, by AWS region or by region name
        ("eu", "eu-central-1", True, "eu-central-1 is inside jurisdiction EU"),
        ("eu", "eu-north-1", True, "eu-north-1 is inside jurisdiction EU"),
        ("eu", "eu2", True, "eu-north-1 is inside jurisdiction EU"),
        ("au", "ap-southeast-4", True, "ap-southeast-4 is inside jurisdiction AU"),
        # outside it
        ("eu", "us-west-2", False, "us-west-2 is outside jurisdiction EU of region 'eu' (eu-west-1, eu-central-1, eu-north-1)"),
        ("eu", "us", False, "us-east-1 is outside jurisdiction EU of region 'eu' (eu-west-1, eu-central-1, eu-north-1)"),
        ("au", "ap-southeast-1", False, "ap-southeast-1 is outside jurisdiction AU of region 'au' (ap-southeast-2, ap-southeast-4)"),
        ("us", "ca-central-1", False, "ca-central-1 is outside jurisdiction US of region 'us' (us-east-1, us-east-2, us-west-2)"),
    ],
)
def test_copies_stay_inside_the_jurisdiction(cat: Catalogue, flow: Flow | str, source: str, target: str, allowed: bool, reason: str) -> None:
    d = may_flow(cat, source, target, flow)
    assert (d.allowed, d.reason) == (allowed, reason)


def test_a_copy_needs_another_aws_region(cat: Catalogue) -> None:
    d = may_flow(cat, "eu", "eu-west-1", Flow.BACKUP)
    assert not d
    assert d.reason == "a backup of region 'eu' must be in another AWS region than eu-west-1"
    d = may_flow(cat, "eu", "eu", Flow.REPLICA)
    assert d.reason == "a replica of region 'eu' must be in another AWS region than eu-west-1"


def test_may_copy_directly(cat: Catalogue) -> None:
    assert may_copy(cat, "us", "us-west-2")
    assert not may_copy(cat, "us", "eu-west-1")


def test_unknown_names_are_input_errors(cat: Catalogue) -> None:
    with pytest.raises(InputError, match="unknown region 'mars'"):
        may_live(cat, "mars")
    with pytest.raises(InputError, match="unknown region 'moon'"):
        may_move(cat, "eu", "moon")
    with pytest.raises(InputError) as info:
        may_flow(cat, "eu", "eu-centrl-1", Flow.BACKUP)
    assert str(info.value) == (
        "'eu-centrl-1' is neither a region (us, eu, au, eu2, us2, us3) nor an AWS region; did you mean 'eu-central-1'?"
    )
    with pytest.raises(ValueError):
        may_flow(cat, "eu", "eu2", "teleport")


def test_allowed_aws_regions(cat: Catalogue) -> None:
    assert allowed_aws_regions(cat, "us") == ("us-east-1", "us-west-2")
    assert allowed_aws_regions(cat, "eu") == ("eu-west-1", "eu-central-1")
    assert allowed_aws_regions(cat, "au") == ("ap-southeast-2", "ap-southeast-4")
    # every AWS region a stack may touch is inside its jurisdiction
    for name, region in cat.regions.items():
        assert set(allowed_aws_regions(cat, name)) <= set(cat.jurisdictions[region.jurisdiction].aws_regions)


def test_stack_may_touch(cat: Catalogue) -> None:
    assert stack_may_touch(cat, "eu", "eu-central-1").reason == "eu-central-1 is allowed for region 'eu'"
    d = stack_may_touch(cat, "eu", "eu-north-1")
    assert not d
    assert d.reason == "the stack of region 'eu' may only touch eu-west-1, eu-central-1, not eu-north-1"


def test_active_regions(cat: Catalogue) -> None:
    assert [r.name for r in active_regions(cat)] == ["us", "eu", "au"]
    assert [r.name for r in active_regions(load(SHIPPED))] == ["us", "eu", "au"]
