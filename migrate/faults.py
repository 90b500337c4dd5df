"""Named points where a test can make the mover die like ``kill -9`` would.

Set ``RESIDENCY_MOVE_KILL_AT=<point>`` (optionally ``RESIDENCY_MOVE_KILL_AFTER=<n>``: the n-th
time the point is reached, default 1) and the process SIGKILLs itself there. The points are listed
in :data:`POINTS`; production never sets the variable.
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "RESIDENCY_MOVE_KILL_AT"
AFTER_ENV = "RESIDENCY_MOVE_KILL_AFTER"

POINTS = (
    "planned",  # the move row exists, nothing else
    "fence_installed",  # fence committed in the source, state still planned
    "fenced",  # state fenced
    "copy_batch",  # in the middle of a table's COPY (a batch written, not committed)
    "table_copied",  # a table committed in the target, before its checkpoint
    "chunk_copied",  # a chunk committed in the target, before its checkpoint
    "rows_copied",  # every table copied (the objects copy meanwhile: maybe not all yet)
    "object_copied",  # one object copied
    "copied",  # state copied
    "verified",  # state verified
    "sequences_bumped",  # target sequences moved, directory not yet flipped
    "cut_over",  # state cut_over
    "cleanup_rows_deleted",  # source rows deleted, objects not yet
    "cleanup_objects_deleted",  # source objects deleted, state not yet cleaned
    "rollback_target_cleared",  # rollback: target rows removed, fence still there
    # online strategy (migrate.online)
    "online_synced",  # the subscription's initial copy finished, before the unfenced catch-up
    "online_catching_up",  # after a round of the unfenced catch-up
    "online_caught_up",  # fenced: the replication's catch-up settled (applied, or found unfinished), subscription not yet stopped
    "online_replication_removed",  # fenced: replication stopped or removed, its copy checkpoint recorded, copy_phase not yet run
    "online_cut_over",  # cut over, replication not yet removed
    # backups and restore (residency.backups)
    "backup_chunk_written",  # a chunk and its key index stored, the backup not yet complete
    "backup_before_manifest",  # every chunk and object stored, no manifest yet
    "restore_rows_written",  # every restored row written and checked in the target transaction, not committed
)

_counts: dict[str, int] = {}


def point(name: str) -> None:
    """Die here if the environment asks for it (used by the kill-9 tests)."""
    want = os.environ.get(KILL_ENV)
    if not want or want != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(os.environ.get(AFTER_ENV, "1") or 1):
        os.kill(os.getpid(), signal.SIGKILL)
