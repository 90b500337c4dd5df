"""The mover, as the orchestration layer sees it: plan, start and resume a move.

Requests plan with it to check a move is possible; the worker starts and resumes moves with it.
Tests hand the worker a fake :class:`Mover`; :func:`mover` adapts the real one (``residency.migrate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from residency import moves
from residency.audit import Actor
from residency.catalogue import Catalogue
from residency.errors import OperationError



@dataclass(frozen=True)
class Mover:
    """What the worker needs from the mover. ``plan`` returns the mover's plan (``sizes()``, or
    a dict with ``sizes``: :func:`residency.estimates.plan_sizes`); ``start`` (given that plan)
    and ``resume`` run the move through cut-over and return its final
    :class:`~residency.moves.MoveRecord`. The mover names its lease's owner itself."""

    plan: Callable[[Catalogue, Any, str, str, str], Any]
    start: Callable[..., moves.MoveRecord]
    resume: Callable[..., moves.MoveRecord]


def mover() -> Mover:
    """The real mover (``migrate``), adapted to :class:`Mover`."""
    try:
        from residency.migrate import plan_move, resume_move, start_move
    except ImportError as exc:
        missing = str(exc)

        def unavailable(*_a: Any, **_k: Any) -> Any:
            raise OperationError(f"the mover (migrate/) is not available: {missing}")

        return Mover(unavailable, unavailable, unavailable)

    def plan(cat: Catalogue, conns: Any, ws: str, target: str, strategy: str) -> Any:
        p = plan_move(cat, conns, ws, target, strategy=strategy)
        if not getattr(p, "ok", True):  # the mover returns its refusals; a request needs a reason
            raise OperationError("; ".join(p.refusals))
        return p

    def start(cat: Catalogue, conns: Any, ws: str, target: str, *, strategy: str, actor: Actor, progress: Any = None,
              plan: Any = None) -> moves.MoveRecord:
        return start_move(cat, conns, ws, target, strategy=strategy, actor=actor, progress=progress, plan=plan)

    def resume(cat: Catalogue, conns: Any, move_id: int, *, actor: Actor, progress: Any = None) -> moves.MoveRecord:
        return resume_move(cat, conns, move_id, actor=actor, progress=progress)

    return Mover(plan, start, resume)
