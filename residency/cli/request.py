"""`residency` CLI: move requests and the worker that runs them."""

from __future__ import annotations

import sys
from typing import Any

import click


from .core import _by, Context, _control, emit_json, _input_first, json_option, _jsonable, main, _notifier, pass_ctx, ResidencyGroup, table, complete_region


def _request_row(r: Any) -> tuple[Any, ...]:
    return (r.id, r.workspace_id, f"{r.source} → {r.target}", str(r.window), r.state, r.requested_by,
            r.approved_by or "", r.move_id or "", (r.state_reason or "")[:70])


_REQUEST_HEADERS = ("ID", "WORKSPACE", "MOVE", "WINDOW", "STATE", "REQUESTED BY", "APPROVED BY", "MOVE ID", "WHY")


def _request_json(r: Any, notices: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    d = _jsonable(r)
    d["window"] = str(r.window)
    if notices is not None:
        d["notices"] = _jsonable(notices)
    return d


@main.group(cls=ResidencyGroup)
def request() -> None:
    """Move requests from sales and support: create, approve, cancel, import a batch."""


@request.command("create")
@click.argument("workspace")
@click.option("--to", "target", required=True, metavar="REGION", help="The region to move to.", shell_complete=complete_region)
@click.option("--window", required=True, metavar="START/DURATION", help="e.g. 2025-03-01T22:00Z/2h, now/90m, ...T22:00+01:00/PT2H")
@click.option("--requested-by", required=True, metavar="EMAIL", help="Who asks for the move.")
@click.option("--reason", default="", help="Why (kept with the request and in the audit log).")
@click.option("--strategy", default="auto", show_default=True, type=click.Choice(["auto", "snapshot", "online"]),
              help="auto: online for large workspaces when the preconditions hold, else snapshot.")
@json_option
@pass_ctx
def request_create(c: Context, workspace: str, target: str, window: str, requested_by: str, reason: str, strategy: str, as_json: bool) -> None:
    """Ask for a workspace to move; checked against policy and the plan now (exit 1 if refused).

    \b
    Examples:
      residency request create 42 --to eu --window now/2h --requested-by dana@example.com --reason 'GDPR request'
      residency request create 42 --to eu --window 2025-03-01T22:00Z/2h --requested-by dana@example.com --json
    """
    from residency.ops import requests as rq

    workspace = _input_first(c, workspace, target)
    conns, conn = _control(c)
    n = _notifier(conns)
    with conn:
        r = rq.create(conn, c.catalogue, conns, workspace, target, window, requested_by, reason, strategy=strategy, notifier=n)
    n.flush(5)
    if as_json:
        emit_json(_request_json(r))
    elif r.state == "refused":
        click.echo(f"request {r.id} refused: {r.state_reason}", err=True)
    else:
        est = rq.format_duration(r.estimate.get("seconds", 0))
        click.echo(f"request {r.id} {r.state}: {r.workspace_id} {r.source} → {r.target} in {r.window} (estimated {est});"
                   f" approve with `residency request approve {r.id}` (someone other than {r.requested_by})")
    if r.state == "refused":
        sys.exit(1)


@request.command("list")
@click.option("--state", "states", multiple=True, help="Only requests in this state (repeatable).")
@click.option("--workspace", default=None)
@click.option("--limit", default=200, show_default=True)
@json_option
@pass_ctx
def request_list(c: Context, states: tuple[str, ...], workspace: str | None, limit: int, as_json: bool) -> None:
    """List move requests, newest first.

    \b
    Examples:
      residency request list
      residency request list --state approved --workspace 42 --json
    """
    from residency.ops import requests as rq

    _, conn = _control(c)
    with conn:
        rows = rq.list_requests(conn, state=list(states) or None, workspace_id=workspace, limit=limit)
    if as_json:
        emit_json([_request_json(r) for r in rows])
    else:
        click.echo(table(_REQUEST_HEADERS, [_request_row(r) for r in rows]))


@request.command("show")
@click.argument("request_id")
@json_option
@pass_ctx
def request_show(c: Context, request_id: str, as_json: bool) -> None:
    """One request with its estimate, outcome and the notices kept with it.

    \b
    Examples:
      residency request show 5
    """
    from residency.ops import requests as rq

    _, conn = _control(c)
    with conn:
        r = rq.get(conn, request_id)
        ns = rq.notices(conn, r.id)
    if as_json:
        emit_json(_request_json(r, ns))
        return
    est = r.estimate or {}
    lines = [
        f"request       {r.id}",
        f"workspace     {r.workspace_id}: {r.source} → {r.target} ({r.strategy})",
        f"window        {r.window}",
        f"state         {r.state}" + (f": {r.state_reason}" if r.state_reason else ""),
        f"requested by  {r.requested_by}" + (f": {r.reason}" if r.reason else ""),
        f"recorded by   {_by(r.created_by, r.created_for)} at {r.created_at:%Y-%m-%d %H:%M:%S %Z}",
        f"approved by   {_by(r.approved_by, r.approved_for) or '-'}" + (f" at {r.approved_at:%Y-%m-%d %H:%M:%S %Z}" if r.approved_at else ""),
    ]
    if est:
        lines.append(f"estimate      {rq.format_duration(est.get('seconds', 0))} ({est.get('rows', 0):,} rows,"
                     f" {est.get('bytes', 0) + est.get('object_bytes', 0):,} bytes), fenced {rq.format_duration(est.get('fence_seconds', 0))}")
    if r.move_id:
        lines.append(f"move          {r.move_id} (`residency move status {r.move_id}`)")
    if r.worker:
        lines.append(f"worker        {r.worker} (attempts {r.attempts})")
    lines.append("notices")
    for n in ns:
        lines.append(f"  {n['created_at']:%Y-%m-%d %H:%M:%S}  {n['event']:<14} {n['delivery']:<9} {n['subject']}")
    click.echo("\n".join(lines))


@request.command("approve")
@click.argument("request_id")
@json_option
@pass_ctx
def request_approve(c: Context, request_id: str, as_json: bool) -> None:
    """Approve a pending request (not your own); a worker runs it inside its window.

    \b
    Examples:
      residency request approve 5
    """
    from residency.ops import requests as rq

    conns, conn = _control(c)
    n = _notifier(conns)
    with conn:
        r = rq.approve(conn, c.catalogue, request_id, notifier=n)
    n.flush(5)
    emit_json(_request_json(r)) if as_json else click.echo(f"request {r.id} approved by {_by(r.approved_by, r.approved_for)}: runs in {r.window}")


@request.command("cancel")
@click.argument("request_id")
@click.option("--reason", default="", help="Why it is cancelled.")
@json_option
@pass_ctx
def request_cancel(c: Context, request_id: str, reason: str, as_json: bool) -> None:
    """Cancel a pending or approved request.

    \b
    Examples:
      residency request cancel 5 --reason 'customer withdrew the request'
    """
    from residency.ops import requests as rq

    conns, conn = _control(c)
    n = _notifier(conns)
    with conn:
        r = rq.cancel(conn, request_id, reason, notifier=n)
    n.flush(5)
    emit_json(_request_json(r)) if as_json else click.echo(f"request {r.id} cancelled: {r.state_reason}")


@request.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
@pass_ctx
def request_import(c: Context, file: str, as_json: bool) -> None:
    """Create a request per CSV row (workspace,to,window,requested_by[,reason,strategy]).

    Each row gets its own result line; exit 1 if any row was refused or wrong.

    \b
    Examples:
      residency request import requests.csv --json
    """
    from residency.ops import requests as rq

    conns, conn = _control(c)
    n = _notifier(conns)
    with conn:
        results = rq.import_csv(conn, c.catalogue, conns, file, notifier=n)
    n.flush(5)
    if as_json:
        emit_json(results)
    else:
        for r in results:
            click.echo(r.message, err=not r.ok)
        ok = sum(r.ok for r in results)
        click.echo(f"{ok} of {len(results)} rows recorded as pending")
    if any(not r.ok for r in results):
        sys.exit(1)


@main.command("worker")
@click.option("--once", is_flag=True, help="Run the move requests due now, then exit (no job engine).")
@click.option("--defer", "defer_jobs", multiple=True, metavar="JOB", help="Queue JOB to run now (retention_sweep, backups_due, ...) and exit (repeatable).")
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 64), help="Moves run at the same time.")
@click.option("--throughput", default=None, metavar="RATE", help="Bytes per second to estimate moves with, e.g. 50MB/s ($RESIDENCY_MOVE_THROUGHPUT).")
@click.option("--lease", "lease_seconds", default=60.0, show_default=True, help="Seconds a silent worker keeps a request.")
@click.option("--poll", "poll_seconds", default=10.0, show_default=True, help="Seconds between looks for due requests.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcomes as JSON.")
@pass_ctx
def worker_cmd(c: Context, once: bool, defer_jobs: tuple[str, ...], concurrency: int, throughput: str | None, lease_seconds: float, poll_seconds: float, as_json: bool) -> None:
    """Run every kind of job: periodic retention sweeps, backups, access-grant expiry, audit
    digests, and due, approved move requests inside their windows (the job engine on the control
    plane; each outcome is printed as it happens).

    Run as many workers on as many machines as you like: each periodic job runs once per period,
    each request once; a worker that dies leaves its job to another (a move is resumed once its
    request's lease expires). ``--once`` only runs the move requests due now.

    \b
    Examples:
      residency worker
      residency worker --once
      residency worker --defer retention_sweep
      residency worker --concurrency 4 --throughput 50MB/s
    """
    import signal
    import threading

    from residency.ops import requests as rq
    from residency.ops.worker import WorkerConfig, run_workers

    conns = c.connections
    cfg = WorkerConfig(lease_seconds=lease_seconds, poll_seconds=poll_seconds, throughput=rq.Throughput.parse(throughput))
    if defer_jobs or not once:
        _job_worker(c, conns, cfg, defer_jobs, concurrency, as_json)
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    def show(o: Any) -> None:  # each outcome as it happens: a daemon's log, not a summary at exit
        click.echo(f"request {o.request_id} ({o.workspace_id}): {o.state}" + (f" [move {o.move_id}]" if o.move_id else "")
                   + (" (resumed)" if o.resumed else "") + (f": {o.reason}" if o.reason else ""))

    outcomes = run_workers(c.catalogue, conns, concurrency=concurrency, once=once, notifier=_notifier(conns), config=cfg, stop=stop,
                           on_outcome=None if as_json else show)
    if as_json:
        emit_json(outcomes)
    elif once and not outcomes:
        click.echo("nothing due")
    if any(o.state == "failed" for o in outcomes):
        sys.exit(1)


def _job_worker(c: Context, conns: Any, cfg: Any, defer_jobs: tuple[str, ...], concurrency: int, as_json: bool) -> None:
    """``residency worker`` on the job engine (residency.ops.jobs)."""
    import json

    from residency.ops import jobs

    if defer_jobs:
        ids = {name: jobs.defer(c.catalogue, conns, name) for name in defer_jobs}
        if as_json:
            emit_json({"deferred": ids})
        else:
            for name, jid in ids.items():
                click.echo(f"{name}: " + (f"queued as job {jid}" if jid else "one is already waiting"))
        return

    def show(o: Any) -> None:
        click.echo(json.dumps(_jsonable(o), sort_keys=True) if as_json else o.line())

    _engine_logs_like_ours(c.debug)

    jobs.run_worker(c.catalogue, conns, concurrency=concurrency, on_outcome=show,
                    extra={"worker_config": cfg, "notifier": _notifier(conns)})


def _engine_logs_like_ours(debug: bool) -> None:
    """The job engine's log lines (logger ``procrastinate``) on stderr the way ours are: one
    redacted line each, warnings and up, a traceback only with --debug."""
    import logging

    ours = logging.getLogger("residency")

    class _Via(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not debug:
                record.exc_info, record.exc_text = None, None
            for h in ours.handlers:
                h.handle(record)

    engine = logging.getLogger("procrastinate")
    engine.handlers = [_Via()]
    engine.setLevel(logging.DEBUG if debug else logging.WARNING)
    engine.propagate = False
