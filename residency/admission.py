"""Whether a workspace may start moving to a region, as far as the control plane can tell.

The one place for the refusals that need no region database: the workspace is known, it is not
already there, the target is active, policy allows the move, and no other move of the workspace
is open. The mover's plan lists them with its own (schema, objects, ...); a move request checks
them when it is created, before planning; starting a planned move checks them again, because the
directory and the open moves can change between plan and start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from . import directory, moves, policy
from .catalogue import Catalogue


@dataclass
class Admission:
    """What the control plane says about moving ``workspace_id`` to ``target``."""

    workspace_id: str
    target: str
    source: str | None = None
    """The workspace's home, or None when the directory does not know it."""
    policy: str = ""
    """The policy decision's reason (also when it allows the move)."""
    open_move: moves.MoveRecord | None = None
    refusals: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return not self.refusals


def check(conn: psycopg.Connection[Any], cat: Catalogue, workspace_id: object, target: str) -> Admission:
    """Every control-plane refusal of the move at once (an empty list: it may go on to planning)."""
    ws = str(workspace_id)
    a = Admission(ws, target)
    entry = directory.get(conn, ws)
    if entry is None:
        a.refusals.append(f"unknown workspace '{ws}': it is not in the directory")
        return a
    a.source = source = entry.region
    a.open_move = moves.open_move_for(conn, ws)
    if source not in cat.regions:
        a.refusals.append(f"workspace '{ws}' is homed in '{source}', which regions.yaml does not define")
        decision = policy.Decision(False, f"source region '{source}' is not defined")
    else:
        decision = policy.may_move(cat, source, target)  # the one place the rule lives
    a.policy = decision.reason
    if source == target:
        a.refusals.append(f"target equals home: workspace '{ws}' is already in region '{target}'")
    elif not cat.region(target).is_active:
        a.refusals.append(f"target region '{target}' is not active (status {cat.region(target).status}): {decision.reason}")
    elif source in cat.regions and not decision:
        a.refusals.append(f"policy forbids the move: {decision.reason}")
    if a.open_move is not None:
        om = a.open_move
        a.refusals.append(f"a move is already running for workspace '{ws}': move {om.id} ({om.state}, {om.source} → {om.target})")
    return a
