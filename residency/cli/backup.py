"""`residency backup ...` and `residency restore`: per-workspace backups and record-level restore
(residency.backups)."""

from __future__ import annotations

import sys
from typing import Any

import click

from .core import Context, _input_first, _jsonable, _ProgressPrinter, emit_json, json_option, main, pass_ctx, table, ResidencyGroup


def _report(as_json: bool, data: dict, ok: bool, lines: list[str]) -> None:
    """JSON or the lines; exit 1 when not ``ok``."""
    if as_json:
        emit_json(data)
    else:
        for line in lines:
            click.echo(line)
    if not ok:
        sys.exit(1)


def _json_or_notes(as_json: bool, res: Any) -> bool:
    """With --json, the result as JSON (True: nothing more to print); otherwise its notes."""
    if as_json:
        emit_json(res.to_dict())
        return True
    for n in res.notes:
        click.echo(f"note: {n}")
    return False


@main.group(cls=ResidencyGroup)
def backup() -> None:
    """Workspace backups in each region's backup AWS region: create, list, show, verify, diff."""


@backup.command("create")
@click.argument("workspace")
@click.option("--jobs", type=click.IntRange(1, 16), default=2, show_default=True, help="Chunks copied at once.")
@click.option("--objects", type=click.Choice(["copy", "list"]), default=None, help="Copy the objects, or list their versions (versioned buckets); default: regions.yaml backups: objects.")
@json_option
@pass_ctx
def backup_create(c: Context, workspace: str, jobs: int, objects: str | None, as_json: bool) -> None:
    """Back up WORKSPACE: one snapshot, every row it owns and the shared rows it references, its objects.

    \b
    Examples:
      residency backup create 1000000000001
      residency backup create 1000000000001 --jobs 4 --objects list
    """
    from residency.backups.create import BackupOptions, create_backup

    ws = _input_first(c, workspace)
    res = create_backup(c.catalogue, c.connections, ws, options=BackupOptions(jobs=jobs, objects=objects), emit=_ProgressPrinter(quiet=as_json))
    if as_json:
        emit_json(res.to_dict())
        return
    click.echo(f"backup {res.id} of workspace {res.workspace_id}: {res.rows:,} rows in {res.chunks} chunks, "
               f"{res.stored_bytes:,} bytes stored (from {res.raw_bytes:,}), s3://{res.bucket}/{res.prefix} in {res.aws_region}, "
               f"SSE-KMS {res.kms_key}; snapshot {res.snapshot_at:%Y-%m-%d %H:%M:%S} UTC"
               + (f", kept until {res.expires_at:%Y-%m-%d}" if res.expires_at else "") + f" ({res.seconds:.1f}s)")


@backup.command("list")
@click.argument("workspace")
@json_option
@pass_ctx
def backup_list(c: Context, workspace: str, as_json: bool) -> None:
    """Complete backups of WORKSPACE, oldest first (an interrupted backup is never listed).

    \b
    Examples:
      residency backup list 1000000000001
    """
    from residency.backups.records import list_backups
    from residency.controlplane import ensure_schema
    from residency.db import connect

    ws = _input_first(c, workspace)
    with connect(c.connections.control_dsn, autocommit=True) as cp:
        ensure_schema(cp)
        rows = list_backups(cp, ws)
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        click.echo(f"no complete backup of workspace {ws}")
        return
    click.echo(table(["id", "snapshot (UTC)", "region", "kept in", "rows", "bytes", "expires"],
                     [[r.id, f"{r.snapshot_at:%Y-%m-%d %H:%M:%S}", r.region, r.aws_region, r.rows, r.bytes,
                       f"{r.expires_at:%Y-%m-%d}" if r.expires_at else "-"] for r in rows]))


@backup.command("show")
@click.argument("backup_id")
@json_option
@pass_ctx
def backup_show(c: Context, backup_id: str, as_json: bool) -> None:
    """One backup: where it is, its tables, rows and chunks.

    \b
    Examples:
      residency backup show 7
    """
    from residency.backups.records import get_backup
    from residency.controlplane import ensure_schema
    from residency.db import connect

    with connect(c.connections.control_dsn, autocommit=True) as cp:
        ensure_schema(cp)
        r = get_backup(cp, backup_id, complete_only=False)
    if as_json:
        emit_json(r.to_dict())
        return
    click.echo(f"backup {r.id}: workspace {r.workspace_id}, {r.state}; region {r.region}, kept in s3://{r.bucket}/{r.prefix} ({r.aws_region})")
    click.echo(f"snapshot {r.snapshot_at}, finished {r.finished_at}, expires {r.expires_at}; {r.rows} rows, {r.bytes} bytes stored; manifest sha256 {r.manifest_sha256}")
    tabs = (r.summary or {}).get("tables", {})
    if tabs:
        click.echo(table(["table", "rows", "chunks"], [[n, v["rows"], v["chunks"]] for n, v in tabs.items()]))
    if r.deletion:
        click.echo(f"deleted {r.deleted_at}: {r.deletion.get('objects_deleted')} objects ({r.deletion.get('reason')})")


@backup.command("verify")
@click.argument("backup_id")
@json_option
@pass_ctx
def backup_verify(c: Context, backup_id: str, as_json: bool) -> None:
    """Re-read every chunk and object of a backup and check every checksum and count (exit 1 naming what fails).

    \b
    Examples:
      residency backup verify 7
    """
    from residency.backups.verify import verify_backup

    res = verify_backup(c.catalogue, c.connections, backup_id)
    _report(as_json, res.to_dict(), res.ok, [f"FAIL {p}" for p in res.problems] + [f"note: {n}" for n in res.notes] + [
        f"backup {res.backup_id}: {'ok' if res.ok else 'DAMAGED'}: {res.chunks} chunks, {res.rows:,} rows, {res.objects} objects, {res.bytes_read:,} bytes read"])


@backup.command("diff")
@click.argument("workspace")
@click.argument("a")
@click.argument("b", required=False, default="now")
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True, help="Keys named per table and kind.")
@json_option
@pass_ctx
def backup_diff(c: Context, workspace: str, a: str, b: str, limit: int, as_json: bool) -> None:
    """Records added, changed or deleted between backups A and B (default: now), per table with keys.

    \b
    Examples:
      residency backup diff 1000000000001 7 now
      residency backup diff 1000000000001 6 7 --limit 100 --json
    """
    from residency.backups.diff import diff_backups

    ws = _input_first(c, workspace)
    res = diff_backups(c.catalogue, c.connections, ws, a, b, limit=limit)
    if _json_or_notes(as_json, res):
        return
    for t in res.tables:
        if not (t.added or t.changed or t.deleted):
            continue
        for kind in ("deleted", "changed", "added"):
            n = getattr(t, kind)
            if n:
                more = f" (+{n - len(t.keys[kind])} more)" if n > len(t.keys[kind]) else ""
                click.echo(f"{t.table}: {n} {kind}: {', '.join(str(k) for k in t.keys[kind])}{more}")
    click.echo(f"workspace {res.workspace_id}, backup {res.a} → {res.b}: {res.changes} records differ")


@backup.command("run-due")
@json_option
@pass_ctx
def backup_run_due(c: Context, as_json: bool) -> None:
    """Back up every workspace whose regions.yaml backups: rule says it is due (what the job engine runs).

    \b
    Examples:
      residency backup run-due --json
    """
    from residency.backups.schedule import run_due_backups

    res = run_due_backups(c.catalogue, c.connections, emit=_ProgressPrinter(quiet=as_json))
    _report(as_json, {**_jsonable(res), "ok": res.ok}, res.ok,
            [f"backed up workspace {x['workspace_id']}: backup {x['backup_id']} ({x['rows']:,} rows)" for x in res.created]
            + [f"FAILED workspace {x['workspace_id']}: {x['error']}" for x in res.failed]
            + [f"{len(res.created)} backed up, {len(res.failed)} failed, {len(res.skipped)} not due"])


@backup.command("expire")
@json_option
@pass_ctx
def backup_expire(c: Context, as_json: bool) -> None:
    """Delete backups past their keep (and interrupted ones), each with a deletion record and audit entry.

    \b
    Examples:
      residency backup expire
    """
    from residency.backups.schedule import expire_backups

    res = expire_backups(c.catalogue, c.connections)
    _report(as_json, {**_jsonable(res), "ok": res.ok}, res.ok,
            [f"deleted backup {x['backup_id']} of workspace {x['workspace_id']}: {x['objects_deleted']} objects ({x['reason']})"
             for x in res.expired + res.abandoned]
            + [f"FAILED backup {x['backup_id']}: {x['error']}" for x in res.failed]
            + [f"{len(res.expired)} expired, {len(res.abandoned)} interrupted removed, {len(res.failed)} failed"])


@main.command("restore", cls=ResidencyGroup.command_class)
@click.argument("workspace")
@click.option("--from", "backup_id", required=True, metavar="ID", help="The backup to restore from.")
@click.option("--table", default=None, metavar="T", help="The table of the records to restore.")
@click.option("--key", "keys", multiple=True, metavar="K", help="A primary key of T (repeat for several).")
@click.option("--into-dsn", default=None, metavar="DSN", help="Restore into this database instead of the workspace's home.")
@click.option("--as-workspace", default=None, metavar="ID", help="(refused: ids are never renumbered; use --into-dsn)")
@json_option
@pass_ctx
def restore_cmd(c: Context, workspace: str, backup_id: str, table: str | None, keys: tuple[str, ...], into_dsn: str | None,
                as_workspace: str | None, as_json: bool) -> None:
    """Bring back records (with every row that depends on them) or the whole workspace from a backup.

    \b
    Examples:
      residency restore 1000000000001 --from 7 --table conversations --key 1000000000042
      residency restore 1000000000001 --from 7 --into-dsn postgresql://inspect@localhost/scratch
    """
    from residency.backups.restore import restore

    ws = _input_first(c, workspace)
    res = restore(c.catalogue, c.connections, ws, backup_id, table=table, keys=keys, into_dsn=into_dsn, as_workspace=as_workspace)
    if _json_or_notes(as_json, res):
        return
    for t in res.tables:
        parts = [f"{t.restored} restored"] + ([f"{t.overwritten} put back as in the backup"] if t.overwritten else []) \
            + ([f"{t.unchanged} already there"] if t.unchanged else [])
        click.echo(f"{t.table}: {', '.join(parts)}")
        if t.skipped:
            click.echo(f"{t.table}: skipped {len(t.skipped)} changed since the backup (not asked for, not overwritten): {', '.join(t.skipped[:20])}")
    click.echo(f"restored {res.restored} rows from backup {res.backup_id} into {res.target}, verified (counts and checksums); "
               f"{res.chunks_read} of {res.chunks_total} chunks read ({res.seconds:.1f}s)")
