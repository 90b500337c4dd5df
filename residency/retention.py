"""What keeps a region's data after it is deleted, and for how long: one set of numbers for the
stacks (which configure them) and the mover's deletion record (which reports them).

- automated database backups (RDS point-in-time backups and automated snapshots) in the region,
  and their replicated copies in the backup region: ``retention.backups_days``;
- noncurrent object versions in every bucket and its replica: the lifecycle rule expires them after
  ``retention.deleted_workspace_days``.

Pure functions over the catalogue, no I/O.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .catalogue import Region


def backup_days(region: Region) -> int:
    """Days the automated backups and snapshots (and their copies in the backup region) are kept."""
    return int(region.environment.retention.backups_days)


def noncurrent_version_days(region: Region) -> int:
    """Days the buckets' lifecycle rule keeps a noncurrent object version."""
    return int(region.environment.retention.deleted_workspace_days)


def still_held(region: Region, deleted_at: datetime, *, versions_left: int = 0) -> list[dict[str, Any]]:
    """What still holds data of a workspace deleted from ``region`` at ``deleted_at``, and until when.

    ``versions_left``: object versions still under the prefix after the purge (0 when every version
    and delete marker was deleted); the lifecycle rule is listed either way, as the bound on any
    version the purge could not see (a replication still in flight)."""
    b = backup_days(region)
    nv = noncurrent_version_days(region)
    db = f"database {region.name}"
    return [
        {"what": "automated database backups and snapshots", "where": f"{db} ({region.aws_region})",
         "until": (deleted_at + timedelta(days=b)).isoformat(), "days": b,
         "note": f"backup_retention_period {b} days (regions.yaml retention.backups_days); they expire on their own"},
        {"what": "replicated automated backups", "where": f"{db} copy in {region.backup_region}",
         "until": (deleted_at + timedelta(days=b)).isoformat(), "days": b,
         "note": f"retention_period {b} days in the backup region"},
        {"what": "noncurrent object versions (bucket lifecycle)", "where": f"buckets of {region.name} and their replicas in {region.backup_region}",
         "until": (deleted_at + timedelta(days=nv)).isoformat(), "days": nv,
         "note": (f"every version and delete marker under the prefix was deleted; the lifecycle rule (noncurrent_days {nv}) bounds any version a replication still in flight adds"
                  if not versions_left else f"{versions_left} versions remain; the lifecycle rule expires them after {nv} days")},
    ]


def no_copy_after(held: list[dict[str, Any]], deleted_at: datetime) -> str:
    """The time after which nothing in ``held`` keeps a copy."""
    return max([h["until"] for h in held], default=deleted_at.isoformat())
