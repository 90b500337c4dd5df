"""Strategies: which component drives each state of a move. ``snapshot`` fences first, then
copies, verifies and cuts over. An ``online`` strategy (logical replication with row filters,
fence only for the last catch-up) registers its own phases here and reuses the rest."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from residency.errors import InputError
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

STRATEGIES: dict[str, Strategy] = {"snapshot": SNAPSHOT}


def register(strategy: Strategy) -> None:
    STRATEGIES[strategy.name] = strategy


def get(name: str) -> Strategy:
    _load_builtin()
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InputError(f"unknown strategy '{name}' (known: {', '.join(STRATEGIES)})") from None


def _load_builtin() -> None:
    from . import online  # noqa: F401 - registers the ``online`` strategy
