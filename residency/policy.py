"""Residency policy: what may live and flow where. Pure functions over the catalogue, no I/O.

The stacks, the mover and the request queue all ask these functions, so each rule is written
once. Every answer is a :class:`Decision` that says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .catalogue import Catalogue, Region


class Flow(str, Enum):
    MOVE = "move"          # a workspace's home changes region
    BACKUP = "backup"      # a backup copy (RDS automated-backup replication, S3 replication)
    REPLICA = "replica"    # a live read replica


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def may_live(cat: Catalogue, region: str) -> Decision:
    """May workspace data live (have its home) in ``region``? Only in an active region."""
    r = cat.region(region)
    if r.status != "active":
        return Decision(False, f"region '{r.name}' is {r.status}; workspace data may only live in an active region")
    return Decision(True, f"region '{r.name}' is active in jurisdiction {r.jurisdiction}")


def may_move(cat: Catalogue, source: str, target: str) -> Decision:
    """May a workspace move its home from ``source`` to ``target``?

    A move is the customer's choice of residency, so it may cross jurisdictions; it may not go
    to the region it is already in, nor to a region that is not active. The source may be in
    any state but ``planned`` (a draining region is exactly one being emptied).
    """
    s, t = cat.region(source), cat.region(target)
    if s.name == t.name:
        return Decision(False, f"the workspace is already in region '{s.name}'")
    if s.status == "planned":
        return Decision(False, f"source region '{s.name}' is planned; it holds no workspaces yet")
    live = may_live(cat, t.name)
    if not live:
        return Decision(False, f"target {live.reason}")
    return Decision(True, f"{s.name} ({s.jurisdiction}) → {t.name} ({t.jurisdiction})")


def may_copy(cat: Catalogue, region: str, aws_region: str) -> Decision:
    """May a copy of ``region``'s data (backup or replica) be kept in ``aws_region``?

    Copies never leave the region's jurisdiction.
    """
    r = cat.region(region)
    j = cat.jurisdictions[r.jurisdiction]
    if aws_region not in j.aws_regions:
        return Decision(False, f"{aws_region} is outside jurisdiction {j.name} of region '{r.name}' ({', '.join(j.aws_regions)})")
    return Decision(True, f"{aws_region} is inside jurisdiction {j.name}")


def may_flow(cat: Catalogue, source: str, target: str, flow: Flow | str) -> Decision:
    """May workspace data flow from region ``source`` to ``target`` as ``flow``?

    For ``move`` both are region names from the catalogue. For ``backup`` and ``replica`` the
    target may be a region name or an AWS region name; the copy must stay inside the source's
    jurisdiction.
    """
    flow = Flow(flow)
    if flow is Flow.MOVE:
        return may_move(cat, source, target)
    aws = cat.regions[target].aws_region if target in cat.regions else target
    src = cat.region(source)
    if aws == src.aws_region:
        return Decision(False, f"a {flow.value} of region '{src.name}' must be in another AWS region than {aws}")
    return may_copy(cat, source, aws)


def allowed_aws_regions(cat: Catalogue, region: str) -> tuple[str, ...]:
    """The AWS regions region ``region``'s stack may touch: its own and its backup region."""
    r = cat.region(region)
    return (r.aws_region, r.backup_region)


def stack_may_touch(cat: Catalogue, region: str, aws_region: str) -> Decision:
    allowed = allowed_aws_regions(cat, region)
    if aws_region in allowed:
        return Decision(True, f"{aws_region} is allowed for region '{region}'")
    return Decision(False, f"region '{region}' stack may only touch {', '.join(allowed)}, not {aws_region}")


def active_regions(cat: Catalogue) -> list[Region]:
    return [r for r in cat.regions.values() if r.status == "active"]
