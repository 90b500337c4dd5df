"""The workspace mover: plan, fence, copy, verify, cut over, clean up, roll back.

Phases are explicit components (Ghostferry-style) driven by a state machine persisted in the
control plane's ``residency.moves``; see :mod:`migrate.mover` for the entry points.
"""

from .mover import (
    MoveRefused,
    cleanup_move,
    move_report,
    move_status,
    resume_move,
    rollback_move,
    start_move,
    verify_workspace,
)
from .plan import MovePlan, plan_move

__all__ = [
    "MovePlan",
    "MoveRefused",
    "plan_move",
    "start_move",
    "resume_move",
    "rollback_move",
    "cleanup_move",
    "move_report",
    "move_status",
    "verify_workspace",
]
