"""Strategies: which component drives each state of a move. ``snapshot`` fences first, then
copies, verifies and cuts over. An ``online`` strategy (logical replication with row filters,
fence only for the last catch-up, :mod:`.online`) has its own phases and reuses the rest.
:mod:`.strategies` knows them all by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


from residency.moves import MoveRecord

from . import phases
from .context import MoveContext

Phase = Callable[[MoveContext, MoveRecord], MoveRecord]


@dataclass(frozen=True)
class Strategy:
    name: str
    phases: dict[str, Phase] = field(default_factory=dict)
    """state → the component that takes a move out of that state (towards cut_over)."""
    teardown: Callable[[MoveContext, MoveRecord], object] | None = None
    """Removes what the strategy set up outside the target copy (e.g. replication); run before a rollback."""


SNAPSHOT = Strategy(
    "snapshot",
    {
        "planned": phases.fence_phase,
        "fenced": phases.snapshot_copy_phase,
        "copied": phases.snapshot_verify_phase,
        "verified": phases.cutover_phase,
    },
)
