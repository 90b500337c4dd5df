"""A workspace's backup rule from regions.yaml's ``backups:`` section (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from residency.catalogue import BackupRule, Catalogue
from residency.retention_rules import backups_kept


@dataclass(frozen=True)
class Rule:
    every: timedelta | None
    keep: timedelta
    objects: str


def rule_for(cat: Catalogue, region: str, workspace_id: str) -> Rule:
    """The backup rule of a workspace: its own override, then its region's, then the section's;
    without a ``backups:`` section nothing is scheduled. How long a backup is kept comes from the
    retention rules (:func:`residency.retention_rules.backups_kept`), the one place that says it."""
    p = cat.backups
    chain: list[BackupRule] = []
    if p is not None:
        chain = [r for r in (p.workspaces.get(str(workspace_id)), p.regions.get(region), p.default) if r is not None]

    def first(name: str) -> Any:
        return next((getattr(r, name) for r in chain if getattr(r, name) is not None), None)

    every = first("every")
    return Rule(every or None, backups_kept(cat, region, workspace_id), first("objects") or "copy")


