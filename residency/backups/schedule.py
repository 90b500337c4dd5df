"""What a job engine runs on a schedule: :func:`run_due_backups` (every workspace whose last
backup is older than its ``every``) and :func:`expire_backups` (backups past their ``keep``, and
backups killed halfway). Each is safe to run on several machines at once: a workspace's backup
holds a control-plane advisory lock, an expiry claims its row before deleting."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from residency import audit, db
from residency.catalogue import Catalogue
from residency.connections import Connections
from residency.controlplane import ensure_schema
from residency.errors import ResidencyError, first_line
from residency.migrate.progress import Progress
from residency.redaction import redact

from . import records, store
from .rules import Rule, rule_for  # noqa: F401 - rule_for is part of this module's interface

STALE_AFTER = timedelta(hours=6)
"""A ``running`` backup older than this was killed: its objects are removed by the expiry sweep."""


def _lock_key(workspace_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"residency-backup:{workspace_id}".encode()).digest()[:8], "big", signed=True)


@dataclass
class DueResult:
    created: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _noop(_: Progress) -> None:
    return None


def run_due_backups(cat: Catalogue, conns: Connections, now: datetime | None = None, *, options: Any = None,
                    emit: Callable[[Progress], None] = _noop) -> DueResult:
    """Back up every active workspace whose rule has ``every`` and whose newest complete backup
    is older than that (or that has none). A workspace another machine is backing up is skipped."""
    from .create import create_backup

    now = now or datetime.now(timezone.utc)
    out = DueResult()
    with db.connect(conns.control_dsn, autocommit=True) as cp:
        ensure_schema(cp)
        homes = cp.execute("SELECT workspace_id, region FROM residency.directory WHERE status = 'active' ORDER BY workspace_id").fetchall()
        for ws, region in homes:
            if region not in cat.regions or region not in conns.regions:
                continue
            rule = rule_for(cat, region, ws)
            if rule.every is None:
                continue
            last = records.latest(cp, ws)
            if last is not None and last.snapshot_at is not None and last.snapshot_at + rule.every > now:
                out.skipped.append({"workspace_id": ws, "reason": f"not due until {(last.snapshot_at + rule.every).isoformat()}"})
                continue
            (got,) = cp.execute("SELECT pg_try_advisory_lock(%s)", (_lock_key(ws),)).fetchone()
            if not got:
                out.skipped.append({"workspace_id": ws, "reason": "another machine is backing it up"})
                continue
            try:
                res = create_backup(cat, conns, ws, options=options, emit=emit)
                out.created.append({"workspace_id": ws, "backup_id": res.id, "rows": res.rows})
            except ResidencyError as exc:
                out.failed.append({"workspace_id": ws, "error": redact(first_line(exc))})
            finally:
                cp.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(ws),))
    return out


@dataclass
class ExpireResult:
    expired: list[dict[str, Any]] = field(default_factory=list)
    abandoned: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _target_of(conns: Connections, rec: records.BackupRecord) -> store.BackupTarget:
    return store.BackupTarget(rec.region, rec.aws_region, rec.bucket, store.kms_alias(rec.bucket), conns.region(rec.region))


def expire_backups(cat: Catalogue, conns: Connections, now: datetime | None = None, *, stale_after: timedelta = STALE_AFTER) -> ExpireResult:
    """Delete every complete backup past its ``expires_at`` (objects first, then the row becomes
    ``expired`` with its deletion record and an audit entry), and the objects of backups killed
    halfway (``running`` for longer than ``stale_after``: ``abandoned``)."""
    now = now or datetime.now(timezone.utc)
    out = ExpireResult()
    with db.connect(conns.control_dsn, autocommit=True) as cp:
        ensure_schema(cp)
        due = cp.execute("SELECT id FROM residency.backups WHERE state = 'complete' AND expires_at <= %s ORDER BY id", (now,)).fetchall()
        cp.commit()
        stale = records.abandoned(cp, now - stale_after)
        cp.commit()
        for (bid,) in due:
            _expire_one(cp, conns, bid, "expired", out.expired, out.failed, now)
        for rec in stale:
            _expire_one(cp, conns, rec.id, "abandoned", out.abandoned, out.failed, now)
    return out


def _expire_one(cp: Any, conns: Connections, bid: int, state: str, done: list[dict[str, Any]], failed: list[dict[str, Any]], now: datetime) -> None:
    try:
        with cp.transaction():
            want = "complete" if state == "expired" else "running"
            row = cp.execute("SELECT id FROM residency.backups WHERE id = %s AND state = %s FOR UPDATE SKIP LOCKED", (bid, want)).fetchone()
            if row is None:
                return  # another machine has it, or it changed meanwhile
            rec = records.get_backup(cp, bid, complete_only=False)
            t = _target_of(conns, rec)
            keys = store.list_keys(t, rec.prefix)
            deleted = store.delete_prefix(t, rec.prefix)
            left = store.list_keys(t, rec.prefix)
            if left:
                raise RuntimeError(f"{len(left)} objects of backup {bid} remain in s3://{rec.bucket}/{rec.prefix}")
            deletion = {
                "backup_id": bid, "workspace_id": rec.workspace_id, "bucket": rec.bucket, "aws_region": rec.aws_region,
                "prefix": rec.prefix, "objects_deleted": deleted, "keys": len(keys), "rows": rec.rows, "bytes": rec.bytes,
                "tables": (rec.summary or {}).get("tables", {}), "manifest_sha256": rec.manifest_sha256,
                "snapshot_at": rec.snapshot_at.isoformat() if rec.snapshot_at else None,
                "expires_at": rec.expires_at.isoformat() if rec.expires_at else None, "deleted_at": now.isoformat(),
                "reason": "kept as long as its retention rule says (retention: ... backups:)" if state == "expired" else "interrupted before it completed",
            }
            records.mark_deleted(cp, bid, state, deletion)
            audit.append(cp, f"backup.{state}", f"workspace:{rec.workspace_id}", deletion)
        done.append(deletion)
    except Exception as exc:  # noqa: BLE001 - one backup's failure must not stop the sweep
        failed.append({"backup_id": bid, "error": redact(first_line(exc))})
