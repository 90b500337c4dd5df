"""`residency` CLI: moves: plan, start, status, resume, rollback, cleanup, report, evidence; and verify."""

from __future__ import annotations

import sys
from typing import Any

import click

from residency.errors import InputError

from .core import _conns, Context, emit_json, _input_first, json_option, _jsonable, main, pass_ctx, _ProgressPrinter, ResidencyGroup, table, complete_region


def _move_row(m: Any) -> tuple[Any, ...]:
    return (m.id, m.workspace_id, f"{m.source} → {m.target}", m.strategy, m.state + (f" (in {m.resume_from})" if m.resume_from else ""),
            m.created_by, m.updated_at.strftime("%Y-%m-%d %H:%M:%S"), (m.error or "")[:80])


@main.group(cls=ResidencyGroup)
def move() -> None:
    """Move a workspace to another region: plan, start, watch, resume, roll back, clean up."""


@move.command("plan")
@click.argument("workspace")
@click.option("--to", "target", required=True, metavar="REGION", help="The region to move to.", shell_complete=complete_region)
@click.option("--strategy", default="auto", show_default=True, type=click.Choice(["auto", "online", "snapshot"]),
              help="online: logical replication, writable until a short fence; snapshot: fenced for the whole copy; auto: by size.")
@json_option
@pass_ctx
def move_plan(c: Context, workspace: str, target: str, strategy: str, as_json: bool) -> None:
    """Show what a move would do, or every reason it must not (exit 1 if refused). Changes nothing.

    \b
    Examples:
      residency move plan 42 --to eu
      residency move plan 42 --to eu --strategy online --json
    """
    from residency.migrate import plan_move
    from residency.migrate.mover import unknown_workspace
    from residency.migrate.plan import render

    workspace = _input_first(c, workspace, target)
    p = plan_move(c.catalogue, _conns(c), workspace, target, strategy)
    if as_json:
        emit_json(p.to_dict())
    else:
        click.echo(render(p))
    if not p.ok:
        sys.exit(2 if unknown_workspace(p) else 1)


@move.command("start")
@click.argument("workspace")
@click.option("--to", "target", required=True, metavar="REGION", help="The region to move to.", shell_complete=complete_region)
@click.option("--strategy", default="auto", show_default=True, type=click.Choice(["auto", "online", "snapshot"]),
              help="online: logical replication, writable until a short fence; snapshot: fenced for the whole copy; auto: by size.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the final report as JSON.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Parallel copy streams (default: min(4, CPUs)).")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=None, help="Tables above this many rows copy in key-range chunks (default 250000).")
@click.option("--rows-per-second", type=click.FloatRange(min=1), default=None, help="Limit this move's copy rate (default: none).")
@pass_ctx
def move_start(c: Context, workspace: str, target: str, strategy: str, yes: bool, as_json: bool, jobs: int | None = None, chunk_rows: int | None = None, rows_per_second: float | None = None) -> None:
    """Plan, fence, copy, verify and cut over a workspace (cleanup comes later, after a grace period).

    \b
    Examples:
      residency move start 42 --to eu
      residency move start 42 --to eu --yes --jobs 4 --json
    """
    from residency.migrate import move_report, plan_move, start_move
    from residency.migrate.plan import render
    from residency.migrate.mover import unknown_workspace
    from residency.migrate.report import render as render_report

    workspace = _input_first(c, workspace, target)
    if not yes and not sys.stdin.isatty():
        raise InputError("move start needs --yes when not run from a terminal")
    conns = _conns(c)
    p = None  # with --yes, start_move plans; else the plan shown is the one started
    if not yes:
        p = plan_move(c.catalogue, conns, workspace, target, strategy)
        click.echo(render(p))
        if not p.ok:
            sys.exit(2 if unknown_workspace(p) else 1)
        click.confirm(f"move workspace {workspace} from {p.source} to {target}? Writes to it are refused until cut-over", abort=True)
    from residency.migrate import MoveRefused

    try:
        rec = start_move(c.catalogue, conns, workspace, target, strategy=strategy, progress=_ProgressPrinter(as_json),
                         copy_options=_copy_options(jobs, chunk_rows, rows_per_second), plan=p)
    except MoveRefused as exc:
        if not as_json:
            raise  # one refusal per line (MoveRefused's message)
        emit_json({"ok": False, "refused": True, "refusals": exc.refusals, "plan": exc.plan.to_dict()})
        sys.exit(exc.exit_code)
    rep = move_report(conns, rec.id)
    emit_json(rep) if as_json else click.echo(render_report(rep))


@move.command("status")
@click.argument("move_id", required=False, type=int)
@click.option("--all", "show_all", is_flag=True, help="Include closed moves.")
@json_option
@pass_ctx
def move_status_cmd(c: Context, move_id: int | None, show_all: bool, as_json: bool) -> None:
    """Show one move, or the open moves (with --all, recent closed ones too).

    \b
    Examples:
      residency move status
      residency move status 17 --json
      residency move status --all
    """
    from residency.migrate import move_status

    recs = move_status(_conns(c), move_id, open_only=not show_all and move_id is None)
    if as_json:
        if move_id is None:
            emit_json([{k: v for k, v in _jsonable(r).items() if k not in ("plan",)} for r in recs])
        else:
            from residency.migrate.replication import leftovers

            emit_json({**_jsonable(recs[0]), "replication_leftovers": [x.to_dict() for x in leftovers(_conns(c)) if x.move_id == move_id]})
        return
    if not recs:
        click.echo("no open moves" + ("" if show_all else " (--all shows closed ones)"))
    else:
        click.echo(table(("ID", "WORKSPACE", "ROUTE", "STRATEGY", "STATE", "BY", "UPDATED", "ERROR"), [_move_row(r) for r in recs]))
    _show_replication_leftovers(c, recs if move_id is not None else None)


def _show_replication_leftovers(c: Context, only: Any) -> None:
    """Publications, subscriptions and slots named after moves (online strategy) still present."""
    from residency.migrate.replication import leftovers

    found = leftovers(_conns(c))
    if only:
        found = [x for x in found if x.move_id in {r.id for r in only}]
    if not found:
        return
    click.echo(f"replication leftovers ({len(found)}): removed by `move resume ID` / `move rollback ID`, or drop by hand:")
    for x in found:
        click.echo(f"  {x.region}: {x.kind} {x.name}" + (f" (move {x.move_id})" if x.move_id is not None else "")
                   + (f", {x.detail}" if x.detail else "") + (f"  -- {x.drop}" if x.drop else ""))


@move.command("resume")
@click.argument("move_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Parallel copy streams (default: min(4, CPUs)).")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=None, help="Chunk size for tables not yet cut (default 250000).")
@click.option("--rows-per-second", type=click.FloatRange(min=1), default=None, help="Limit this move's copy rate (default: none).")
@pass_ctx
def move_resume(c: Context, move_id: int, as_json: bool, jobs: int | None = None, chunk_rows: int | None = None, rows_per_second: float | None = None) -> None:
    """Continue a move from its last recorded state (after a crash or a failure).

    \b
    Examples:
      residency move resume 17
      residency move resume 17 --rows-per-second 50000
    """
    from residency.migrate import move_report, resume_move
    from residency.migrate.report import render as render_report

    conns = _conns(c)
    rec = resume_move(c.catalogue, conns, move_id, progress=_ProgressPrinter(as_json),
                      copy_options=_copy_options(jobs, chunk_rows, rows_per_second))
    rep = move_report(conns, rec.id)
    emit_json(rep) if as_json else click.echo(render_report(rep))


def _copy_options(jobs: int | None, chunk_rows: int | None, rows_per_second: float | None) -> Any:
    """The copy's options: flags over $RESIDENCY_COPY_* over the defaults (migrate.chunks)."""
    from residency.migrate.chunks import CopyOptions

    o = CopyOptions()
    if jobs is not None:
        o.jobs = jobs
    if chunk_rows is not None:
        o.chunk_rows = chunk_rows
    if rows_per_second is not None:
        o.rows_per_second = rows_per_second
    return o


@move.command("rollback")
@click.argument("move_id", type=int)
@pass_ctx
def move_rollback(c: Context, move_id: int) -> None:
    """Before cut-over: remove the target copy and lift the fence.

    \b
    Examples:
      residency move rollback 17
    """
    from residency.migrate import rollback_move

    rec = rollback_move(c.catalogue, _conns(c), move_id, progress=_ProgressPrinter())
    click.echo(f"move {rec.id}: {rec.state}; workspace {rec.workspace_id} stays in {rec.source} and is writable again")


@move.command("cleanup")
@click.argument("move_id", type=int)
@click.option("--grace", default="7d", show_default=True, help="Keep the source copy this long after cut-over (e.g. 7d, 2w, 1h30m, 0).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the deletion record as JSON.")
@pass_ctx
def move_cleanup(c: Context, move_id: int, grace: str, yes: bool, as_json: bool) -> None:
    """After the grace period: delete the source copy and record what was deleted.

    \b
    Examples:
      residency move cleanup 17
      residency move cleanup 17 --grace 7d --yes --json
    """
    from residency.migrate import cleanup_move, move_report
    from residency.units import parse_duration

    keep = parse_duration(grace, what="--grace", allow_zero=True)
    if not yes and not sys.stdin.isatty():
        raise InputError("move cleanup deletes the source copy: it needs --yes when not run from a terminal")
    conns = _conns(c)
    if not yes:
        from residency.migrate import move_status

        m = move_status(conns, move_id)[0]
        click.confirm(f"delete workspace {m.workspace_id}'s source copy in {m.source} (move {m.id}, {m.source} → {m.target})?"
                      " This cannot be undone", abort=True)
    rec = cleanup_move(c.catalogue, conns, move_id, grace=keep, progress=_ProgressPrinter(as_json))
    d = move_report(conns, rec.id)["deletion"] or {}
    if as_json:
        emit_json(d)
        return
    click.echo(f"move {rec.id}: {rec.state}; deleted from {d.get('region')} at {d.get('deleted_at')}: "
               f"{d.get('rows', 0):,} rows, {d.get('object_count', 0)} objects")
    for t, v in (d.get("tables") or {}).items():
        click.echo(f"  {t}: {v['rows']:,} rows, checksum {v['checksum']}")
    if "object_versions" in d:
        click.echo(f"  object versions: {d['versions_deleted']} deleted, delete markers: {d['delete_markers_deleted']} deleted,"
                   f" {d['versions_remaining']} remain (buckets and their replicas)")
    for h in d.get("still_held") or []:
        click.echo(f"  still held: {h['what']} in {h['where']} until {h['until']}")
    if d.get("no_copy_after"):
        click.echo(f"no copy remains in {d.get('jurisdiction') or d.get('region')} after {d['no_copy_after']}")


@move.command("report")
@click.argument("move_id", type=int)
@json_option
@pass_ctx
def move_report_cmd(c: Context, move_id: int, as_json: bool) -> None:
    """A move's report: counts and checksums on both sides, objects, fence duration, timings.

    \b
    Examples:
      residency move report 17
      residency move report 17 --json
    """
    from residency.migrate import move_report
    from residency.migrate.report import render as render_report

    rep = move_report(_conns(c), move_id)
    emit_json(rep) if as_json else click.echo(render_report(rep))


@move.command("evidence")
@click.argument("move_id", type=int)
@click.option("--out", "out", required=True, metavar="FILE", help="Where to write the pack.")
@json_option
@pass_ctx
def move_evidence(c: Context, move_id: int, out: str, as_json: bool) -> None:
    """Write the move's evidence pack: one file a customer verifies offline with `residency evidence verify`.

    \b
    Examples:
      residency move evidence 17 --out move-17.evidence.json
    """
    from residency.migrate import evidence

    res = evidence.write(_conns(c), move_id, out)
    if as_json:
        emit_json(res)
    else:
        click.echo(f"move {move_id}: evidence pack {res['path']} ({res['bytes']:,} bytes, {res['entries']} audit entries,"
                   f" {res['digests']} signed digests, key sha256 {res['key_fingerprint']})")


@main.command("verify")
@click.argument("workspace")
@click.option("--between", nargs=2, required=True, metavar="A B", help="The two regions to compare.")
@json_option
@pass_ctx
def verify_cmd(c: Context, workspace: str, between: tuple[str, str], as_json: bool) -> None:
    """Compare a workspace's rows and objects in two regions (exit 1 on any difference).

    \b
    Examples:
      residency verify 42 --between us eu
      residency verify 42 --between us eu --json
    """
    from residency.migrate import verify_workspace

    a, b = between
    workspace = _input_first(c, workspace, a, b)
    res = verify_workspace(c.catalogue, _conns(c), workspace, a, b)
    if as_json:
        emit_json(res.to_dict())
    else:
        rows = [(t.table, t.source_rows, t.target_rows, t.source_checksum, t.target_checksum, "yes" if t.ok else "NO") for t in res.tables]
        click.echo(table(("TABLE", f"{a} ROWS", f"{b} ROWS", f"{a} CHECKSUM", f"{b} CHECKSUM", "SAME"), rows))
        for bucket, o in ((res.objects or {}).get("buckets") or {}).items():
            click.echo(f"objects {bucket}: {o['source_objects']} in {a}, {o['target_objects']} in {b}: {'same' if o['ok'] else 'DIFFERENT'}")
        for p in res.problems():
            click.echo(f"difference: {p}")
        click.echo(f"workspace {workspace}: {'identical' if res.ok else 'DIFFERENT'} in {a} and {b} ({res.seconds:.2f}s)")
    if not res.ok:
        sys.exit(1)
