"""`residency` CLI: retention rules, planned and run (residency.expiry)."""

from __future__ import annotations

import sys
from typing import Any

import click

from .core import Context, _conns, _jsonable, emit_json, json_option, main, pass_ctx, ResidencyGroup, table


@main.group(cls=ResidencyGroup)
def retention() -> None:
    """Retention rules (regions.yaml retention:): what they would delete, and deleting it."""


def _render(report: Any) -> None:
    from residency.units import format_duration

    if not report.workspaces:
        click.echo("no workspace has retention table rules" + (f" ({'; '.join(report.problems)})" if report.problems else ""))
    for w in report.workspaces:
        head = f"{w.region} workspace {w.workspace_id}"
        if w.skipped:
            click.echo(f"{head}: skipped ({w.skipped})")
            continue
        if w.purge is not None:
            verb = "would purge" if report.mode == "plan" else "purged"
            tables = w.purge.get("tables", {})
            counts = {t: (v if isinstance(v, int) else v.get("deleted", 0)) for t, v in tables.items()}
            tail = f" (deletion record {w.record_id})" if w.record_id else ""
            click.echo(f"{head}: marked deleted past its rule: {verb} {w.rows} rows{tail}: "
                       + ", ".join(f"{t} {n}" for t, n in counts.items() if n))
            if w.purge.get("object_versions"):
                click.echo("  object versions deleted: " + ", ".join(f"{b} {n}" for b, n in w.purge["object_versions"].items()))
            continue
        rows = []
        for r in w.rules:
            for p in r.problems:
                click.echo(f"{head}: problem: {p}")
            for p in r.parts:
                span = f"{p.oldest or ''} .. {p.newest or ''}" if p.oldest or p.newest else ""
                rows.append((p.table, p.action, p.rows, span, p.via))
            for n in r.notes:
                click.echo(f"{head}: note: {n}")
        verb = "would delete" if report.mode == "plan" else "deleted"
        tail = f" (deletion record {w.record_id})" if w.record_id else ""
        click.echo(f"{head}: {verb} {w.rows} rows{tail}; rules: {', '.join(w.effective['summary'][:-1]) or 'none'}")
        if rows:
            click.echo(table(("table", "action", "rows", "time range", "via"), rows))
        if report.mode == "run":
            for r in w.rules:
                if r.batches:
                    click.echo(f"  {r.rule['table']}: {r.batches} batches, longest {format_duration(r.longest_batch_seconds)}")
    for p in report.problems:
        click.echo(f"problem: {p}")
    if report.backups is not None:
        click.echo(f"expired backups: {report.backups['state']} ({report.backups['detail']})")


def _options(fn: Any) -> Any:
    fn = click.option("--workspace", "workspace", metavar="WS", default=None, help="Only this workspace.")(fn)
    fn = click.option("--region", "region", metavar="R", default=None, help="Only the workspaces homed in region R.")(fn)
    return fn


@retention.command("plan")
@_options
@json_option
@pass_ctx
def retention_plan(c: Context, region: str | None, workspace: str | None, as_json: bool) -> None:
    """What the rules would delete now, per rule: table, rows, time range, dependants (changes nothing).

    \b
    Examples:
      residency retention plan --region eu
      residency retention plan --workspace 1000000000001 --json
    """
    from residency import expiry

    report = expiry.plan(c.catalogue, _conns(c), region=region, workspace=workspace)
    if as_json:
        emit_json(_jsonable(report.to_dict()))
        return
    _render(report)


@retention.command("run")
@_options
@click.option("--batch", "batch_rows", type=click.IntRange(1), default=2000, show_default=True, help="Rows per first batch (then sized to keep each short).")
@json_option
@pass_ctx
def retention_run(c: Context, region: str | None, workspace: str | None, batch_rows: int, as_json: bool) -> None:
    """Delete what the rules expire, in short batches, each workspace with a deletion record (operator).

    \b
    Examples:
      residency retention run --region eu
      residency retention run --workspace 1000000000001 --batch 500
    """
    from residency import expiry

    say = None if as_json else (lambda m: click.echo(m, err=True) if sys.stderr.isatty() else None)
    report = expiry.run(c.catalogue, _conns(c), region=region, workspace=workspace, batch_rows=batch_rows, progress=say)
    if as_json:
        emit_json(_jsonable(report.to_dict()))
    else:
        _render(report)
        for line in report.failed:
            click.echo(line, err=True)
    if report.failed:
        sys.exit(1)
