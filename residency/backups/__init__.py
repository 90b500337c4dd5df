"""Per-workspace backups and record-level restore (issue 14): the engine, layer 1.

- :mod:`.create`: one REPEATABLE READ snapshot (exported, so parallel streams read the same rows),
  the mover's reach graph (the workspace's rows and the shared rows they reference), binary COPY
  per key-range chunk, compressed, written with SSE-KMS to the region's backup bucket in its
  backup AWS region (``policy.may_copy`` first), beside a per-row key and hash index; the manifest
  last, the control-plane row marked ``complete`` after it.
- :mod:`.verify`: every object re-read, every SHA-256, count and row checksum checked.
- :mod:`.diff`: records added, changed or deleted between two backups or a backup and now, from
  the key indexes (streamed merge, flat memory).
- :mod:`.restore`: records with the rows that depend on them, or a whole workspace into another
  database; one target transaction, verified before it commits.
- :mod:`.schedule`: ``run_due_backups`` and ``expire_backups``, what a job engine calls.
"""

from __future__ import annotations

from .create import create_backup
from .diff import diff_backups
from .records import get_backup, list_backups
from .restore import restore
from .schedule import expire_backups, run_due_backups
from .verify import verify_backup

__all__ = ["create_backup", "diff_backups", "expire_backups", "get_backup", "list_backups", "restore",
           "run_due_backups", "verify_backup"]
