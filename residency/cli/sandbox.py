"""`residency` CLI: the local sandbox and the demo."""

from __future__ import annotations

import sys
from typing import Any

import click


from .core import Context, emit_json, json_option, _jsonable, main, pass_ctx, ResidencyGroup, table


def _progress_line(msg: str) -> None:
    click.echo(f"  {msg}", err=True)


def _render_status(st: Any) -> str:
    if not st.exists:
        return f"no sandbox in {st.home}: run `residency sandbox up`"
    rows = [
        (s.name, s.kind, s.state + ("" if s.healthy else " !"), s.port or "", s.pid or "", s.endpoint, s.detail)
        for s in st.servers
    ]
    head = f"sandbox {st.home} (data in {st.data_root}; PostgreSQL {st.postgres})"
    verdict = "all healthy" if st.healthy else "NOT healthy: `residency sandbox up` restarts what is down"
    lines = [head, table(("NAME", "KIND", "STATE", "PORT", "PID", "ENDPOINT", "DETAIL"), rows), verdict]
    lines += [f"note: {m}" for m in st.messages]
    return "\n".join(lines)


@main.group(cls=ResidencyGroup)
def sandbox() -> None:
    """The local sandbox: every region's PostgreSQL, the control plane and S3 on this machine.

    State lives in $RESIDENCY_SANDBOX_HOME (default ~/.cache/residency/sandbox).
    """


@sandbox.command("up")
@json_option
@pass_ctx
def sandbox_up(c: Context, as_json: bool) -> None:
    """Start the sandbox (idempotent: restarts only what is down).

    \b
    Examples:
      residency sandbox up
    """
    from residency import sandbox as sb

    st = sb.up(c.catalogue, progress=None if as_json else _progress_line)
    emit_json(st) if as_json else click.echo(_render_status(st))
    if not st.healthy:
        sys.exit(1)


@sandbox.command("status")
@json_option
def sandbox_status(as_json: bool) -> None:
    """Show every sandbox server and whether it is healthy (exit 1 if not).

    \b
    Examples:
      residency sandbox status --json
    """
    from residency import sandbox as sb

    st = sb.status()
    if as_json:
        emit_json({**_jsonable(st), "healthy": st.healthy})
    else:
        click.echo(_render_status(st))
    if not st.healthy:
        sys.exit(1)


@sandbox.command("down")
def sandbox_down() -> None:
    """Stop every server the sandbox started (data is kept).

    \b
    Examples:
      residency sandbox down
    """
    from residency import sandbox as sb

    r = sb.down(progress=_progress_line)
    if not r.existed:
        click.echo(f"no sandbox in {r.home}: nothing to stop")
    elif r.stopped:
        click.echo(f"stopped {', '.join(r.stopped)}" + (f" (already stopped: {', '.join(r.already_stopped)})" if r.already_stopped else ""))
    else:
        click.echo("nothing was running")


@sandbox.command("reset")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def sandbox_reset(c: Context, yes: bool) -> None:
    """Delete the sandbox's data and start a fresh, empty one.

    \b
    Examples:
      residency sandbox reset --yes
    """
    from residency import sandbox as sb

    if not yes and sys.stdin.isatty():
        click.confirm(f"delete every database and bucket of the sandbox in {sb.default_home()}?", abort=True)
    st = sb.reset(c.catalogue, progress=_progress_line)
    click.echo(_render_status(st))
    if not st.healthy:
        sys.exit(1)


@sandbox.command("seed")
@click.option("--workspaces", type=click.IntRange(min=1), default=24, show_default=True)
@click.option("--rows", type=click.IntRange(min=1), default=None, help="About this many rows in all [default: 100000].")
@click.option("--size-mb", type=click.FloatRange(min=0, min_open=True), default=None, help="About this much data instead of --rows.")
@click.option("--seed", "seed_value", type=int, default=1, show_default=True, help="Same seed, same data (on fresh databases).")
@json_option
@pass_ctx
def sandbox_seed(c: Context, workspaces: int, rows: int | None, size_mb: float | None, seed_value: int, as_json: bool) -> None:
    """Generate workspaces in every active region (adds to what is there).

    \b
    Examples:
      residency sandbox seed
      residency sandbox seed --workspaces 6 --rows 20000 --seed 3
    """
    from residency import sandbox as sb
    from residency.errors import OperationError
    from residency.sandbox.seed import seed

    conns = sb.sandbox_connections(c.catalogue)
    if conns is None:
        raise OperationError("the sandbox is not running: run `residency sandbox up`")
    res = seed(c.catalogue, conns, workspaces=workspaces, rows=rows, size_mb=size_mb, seed=seed_value,
               progress=None if as_json else _progress_line)
    if as_json:
        emit_json({"seed": res.seed, "seconds": round(res.seconds, 3), "total_rows": res.total_rows,
                   "biggest": res.biggest, "biggest_region": res.biggest_region, "workspaces": res.workspaces,
                   "users": res.users, "rows": res.rows,
                   "objects": {w: len(o) for w, o in res.objects.items()}})
        return
    rows_out = [(r, len(ids), f"{sum(res.rows_of(w) for w in ids):,}", res.users[r]) for r, ids in res.workspaces.items()]
    click.echo(table(("REGION", "WORKSPACES", "ROWS", "USERS"), rows_out))
    click.echo(f"biggest workspace {res.biggest} in {res.biggest_region} ({res.rows_of(res.biggest):,} rows); "
               f"{res.total_rows:,} rows in {res.seconds:.1f}s")


@main.command("demo")
@json_option
@pass_ctx
def demo(c: Context, as_json: bool) -> None:
    """Bring the sandbox up, seed it if empty, and show what is there.

    \b
    Examples:
      residency demo
      residency demo --json
    """
    from residency.sandbox.demo import run_demo

    res = run_demo(c.catalogue, None if as_json else _progress_line)
    if as_json:
        emit_json({"home": res.home, "healthy": res.status.healthy, "steps": res.steps, "timings": res.timings,
                   "directory_entries": res.directory_entries,
                   "regions": [{**_jsonable(r), "total_rows": r.total_rows} for r in res.regions],
                   "servers": _jsonable(res.status.servers), "extra": _jsonable(res.extra)})
        return
    click.echo(_render_status(res.status))
    click.echo("")
    for s in res.steps:
        click.echo(f"- {s}")
    click.echo("")
    rows_out = [
        (r.region, r.workspaces, r.users, f"{r.rows.get('messages', 0):,}", f"{r.total_rows:,}", r.objects, ", ".join(r.buckets))
        for r in res.regions
    ]
    click.echo(table(("REGION", "WORKSPACES", "USERS", "MESSAGES", "ROWS", "OBJECTS", "BUCKETS"), rows_out))
    if res.seeded:
        s = res.seeded
        click.echo(f"biggest workspace: {s.biggest} in {s.biggest_region} ({s.rows_of(s.biggest):,} rows)")
    if res.extra.get("move"):  # the mover's part (issue 4): the plan and the verified report
        click.echo("")
        click.echo(res.extra["move"]["plan_text"])
        click.echo("")
        click.echo(res.extra["move"]["report_text"])
        click.echo("")
    click.echo(f"directory: {res.directory_entries} workspaces registered; done in {res.timings['total']:.1f}s")
