"""`residency`: the command line. Thin: parse, call the library, render.

Every command calls a library function a test can call directly; nothing here holds logic.
Errors the user can cause (:class:`residency.errors.ResidencyError`) end in one line on stderr
and exit code 2 (bad input) or 1 (failed operation); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import fields, is_dataclass
from typing import Any, Callable, Iterable, Sequence

import click

from residency import catalogue as catalogue_mod
from residency.errors import CatalogueError, InputError, ResidencyError

# --------------------------------------------------------------------------- plumbing


class Context:
    """What every command gets: where regions.yaml is, and whether to debug."""

    def __init__(self, regions_path: str, debug: bool):
        self.regions_path = regions_path
        self.debug = debug
        self._cat: catalogue_mod.Catalogue | None = None

    @property
    def catalogue(self) -> catalogue_mod.Catalogue:
        if self._cat is None:
            self._cat = catalogue_mod.load(self.regions_path)
        return self._cat


pass_ctx = click.make_pass_decorator(Context)


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        # field by field, not asdict(): asdict deep-copies, and MappingProxyType can't be copied
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict) or hasattr(value, "items") and callable(value.items):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(_jsonable(data), indent=2, sort_keys=False, ensure_ascii=False))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    line = lambda cells: "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()  # noqa: E731
    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class ResidencyGroup(click.Group):
    """A click group that turns library errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ResidencyError as exc:
            debug = bool(ctx.find_root().params.get("debug"))
            if debug:
                raise
            if isinstance(exc, CatalogueError):
                for p in exc.problems:
                    click.echo(p, err=True)
                n = len(exc.problems)
                click.echo(f"{n} problem{'s' if n != 1 else ''} found", err=True)
                ctx.exit(exc.exit_code)
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


# --------------------------------------------------------------------------- root


@click.group(cls=ResidencyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--regions",
    "regions_path",
    envvar=catalogue_mod.ENV_VAR,
    default=catalogue_mod.DEFAULT_PATH,
    show_default=True,
    metavar="FILE",
    help=f"The region definitions to use (also ${catalogue_mod.ENV_VAR}).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="residency")
@click.pass_context
def main(ctx: click.Context, regions_path: str, debug: bool) -> None:
    """Run one product in several data-residency regions and move workspaces between them.

    Region definitions live in regions.yaml. `residency demo` runs a whole move on a local
    sandbox; `residency regions list` shows what is defined.
    """
    ctx.obj = Context(regions_path, debug)


# --------------------------------------------------------------------------- regions


@main.group(cls=ResidencyGroup)
def regions() -> None:
    """Inspect and validate the region definitions (regions.yaml)."""


@regions.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def regions_list(c: Context, as_json: bool) -> None:
    """List every region with its AWS region, jurisdiction and status."""
    cat = c.catalogue
    if as_json:
        emit_json([_region_summary(cat, r) for r in cat.regions.values()])
        return
    rows = [
        (r.name, r.aws_region, r.jurisdiction, cat.jurisdictions[r.jurisdiction].law or "", r.backup_region, r.cidr, r.status)
        for r in cat.regions.values()
    ]
    click.echo(table(("REGION", "AWS REGION", "JURISDICTION", "LAW", "BACKUPS IN", "CIDR", "STATUS"), rows))


def _region_summary(cat: catalogue_mod.Catalogue, r: catalogue_mod.Region) -> dict[str, Any]:
    return {
        "name": r.name,
        "aws_region": r.aws_region,
        "jurisdiction": r.jurisdiction,
        "law": cat.jurisdictions[r.jurisdiction].law,
        "backup_region": r.backup_region,
        "cidr": r.cidr,
        "status": r.status,
        "overrides": _jsonable(r.overrides),
    }


@regions.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def regions_show(c: Context, name: str, as_json: bool) -> None:
    """Show one region: its placement and the environment it gets (overrides applied)."""
    from residency import policy

    cat = c.catalogue
    r = cat.region(name)
    data = _region_summary(cat, r)
    data["environment"] = _jsonable(r.environment)
    data["stack_may_touch"] = list(policy.allowed_aws_regions(cat, r.name))
    if as_json:
        emit_json(data)
        return
    env = r.environment
    lines = [
        f"region        {r.name}",
        f"aws region    {r.aws_region}",
        f"jurisdiction  {r.jurisdiction}" + (f" ({data['law']})" if data["law"] else ""),
        f"backups in    {r.backup_region}",
        f"cidr          {r.cidr}",
        f"status        {r.status}",
        f"database      {env.database.engine} {env.database.version}, {env.database.instance_class}, "
        f"{env.database.storage_gb} GB, multi-AZ {'yes' if env.database.multi_az else 'no'}",
        f"buckets       {', '.join(env.buckets)}",
        f"queues        {', '.join(env.queues)}",
        f"retention     backups {env.retention.backups_days} days, deleted workspaces {env.retention.deleted_workspace_days} days",
        f"may touch     {', '.join(data['stack_may_touch'])}",
    ]
    if r.overrides:
        lines.append(f"overrides     {json.dumps(_jsonable(r.overrides))}")
    click.echo("\n".join(lines))


@regions.command("validate")
@click.argument("file", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def regions_validate(c: Context, file: str | None, as_json: bool) -> None:
    """Check a regions file (default: --regions) and print every problem with its line."""
    path = file or c.regions_path
    try:
        cat = catalogue_mod.load(path)
    except CatalogueError as exc:
        if as_json:
            emit_json({"file": path, "valid": False, "problems": exc.problems})
            sys.exit(exc.exit_code)
        raise
    except InputError as exc:
        if as_json:
            emit_json({"file": path, "valid": False, "problems": [str(exc)]})
            sys.exit(exc.exit_code)
        raise
    if as_json:
        emit_json({"file": path, "valid": True, "regions": list(cat.regions), "problems": []})
        return
    click.echo(f"{path}: valid: {len(cat.regions)} regions ({', '.join(cat.regions)}), {len(cat.jurisdictions)} jurisdictions")


# --------------------------------------------------------------------------- other command groups
# Each area adds its commands below, in its own section.


# --------------------------------------------------------------------------- stacks and ci (issue 6)
# Pulumi stacks: the library (stacks/) does the work; these commands parse and render.


def _stacks_run(c: Context, op: str, region_names: tuple[str, ...], all_regions: bool, canary: str | None,
                parallel: int, as_json: bool) -> None:
    from residency.errors import OperationError
    from stacks import orchestrate

    cat = c.catalogue
    names = orchestrate.select_regions(cat, list(region_names), all_regions)

    def progress(kind: str, region: str, detail: str) -> None:
        click.echo(f"{op} {region}: {kind}{': ' + detail if detail else ''}", err=True)

    engine = orchestrate.AutomationEngine(c.regions_path)
    summary = orchestrate.run(cat, op, names, engine=engine, canary=canary, parallel=parallel,
                              on_event=None if as_json else progress)
    if as_json:
        emit_json(summary.as_dict())
    else:
        rows = [(r.region, "canary" if r.wave == 0 else f"wave {r.wave}", r.status,
                 ", ".join(f"{k} {v}" for k, v in r.changes.items()) or "-", f"{r.seconds:.1f}s", r.error or "")
                for r in summary.results]
        click.echo(table(("REGION", "ORDER", "STATUS", "CHANGES", "TIME", "ERROR"), rows))
    if not summary.ok:
        failed = ", ".join(r.region for r in summary.failed)
        raise OperationError(f"{op} failed in {failed}; later regions were not run")


def _stacks_options(fn: Callable) -> Callable:
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)
    fn = click.option("--parallel", type=int, default=4, show_default=True, help="Stacks per wave after the canary.")(fn)
    fn = click.option("--canary", metavar="R", help="The region that goes first, alone (default: the first active one).")(fn)
    fn = click.option("--all", "all_regions", is_flag=True, help="Every region that is not retired.")(fn)
    fn = click.option("--region", "region_names", multiple=True, metavar="R", help="A region (repeatable).")(fn)
    return fn


@main.group(cls=ResidencyGroup)
def stacks() -> None:
    """Pulumi stacks, one per region: preview, deploy, refresh, offline plan, live parity."""


@stacks.command("preview")
@_stacks_options
@pass_ctx
def stacks_preview(c: Context, region_names: tuple[str, ...], all_regions: bool, canary: str | None, parallel: int, as_json: bool) -> None:
    """Preview the stacks: canary first, then parallel waves; stops at the first failure."""
    _stacks_run(c, "preview", region_names, all_regions, canary, parallel, as_json)


@stacks.command("up")
@_stacks_options
@pass_ctx
def stacks_up(c: Context, region_names: tuple[str, ...], all_regions: bool, canary: str | None, parallel: int, as_json: bool) -> None:
    """Deploy the stacks: canary first, then parallel waves; stops at the first failure."""
    _stacks_run(c, "up", region_names, all_regions, canary, parallel, as_json)


@stacks.command("refresh")
@_stacks_options
@pass_ctx
def stacks_refresh(c: Context, region_names: tuple[str, ...], all_regions: bool, canary: str | None, parallel: int, as_json: bool) -> None:
    """Refresh the stacks' state from the cloud: canary first, then parallel waves."""
    _stacks_run(c, "refresh", region_names, all_regions, canary, parallel, as_json)


@stacks.command("plan")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def stacks_plan(c: Context, as_json: bool) -> None:
    """Offline: every resource each region would get, side by side, and what differs (no CLI, no cloud)."""
    from stacks import plan as plan_mod

    p = plan_mod.plan(c.catalogue)
    if as_json:
        emit_json(p.as_dict())
    else:
        names = list(p.regions)
        rows = [(t, *(p.regions[n].counts.get(t, 0) for n in names)) for t in p.types]
        rows.append(("total", *(len(p.regions[n].resources) for n in names)))
        click.echo(table(("RESOURCE TYPE", *names), rows))
        click.echo("")
        if not p.differences:
            click.echo("differences: none")
        for d in p.differences:
            vals = ", ".join(f"{n}={v!r}" for n, v in d.values.items())
            why = ("declared override " + ", ".join(f"{n}: {o}" for n, o in d.explained_by.items())) if d.explained else "UNEXPLAINED"
            click.echo(f"difference: {d.resource} {d.prop}: {vals} ({why})")
        for n, vs in p.violations.items():
            for v in vs:
                click.echo(f"violation: {n}: {v}")
    if p.unexplained or p.violations:
        sys.exit(1)


@stacks.command("parity")
@click.option("--region", "region_names", multiple=True, metavar="R", help="A region (repeatable; default: active and draining).")
@click.option("--endpoint-url", metavar="URL", help="An AWS-compatible endpoint (e.g. the sandbox's moto server).")
@click.option("--profile", metavar="NAME", help="The AWS profile to read with.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def stacks_parity(c: Context, region_names: tuple[str, ...], endpoint_url: str | None, profile: str | None, as_json: bool) -> None:
    """Live: what each region really has (by tags) against what the program declares."""
    from stacks import parity

    result = parity.check(c.catalogue, parity.boto3_clients(endpoint_url, profile), list(region_names) or None)
    if as_json:
        emit_json(result.as_dict())
    else:
        rows = [(d.region, d.kind, d.resource, d.attribute or "", "" if d.expected is None else json.dumps(d.expected),
                 "" if d.actual is None else json.dumps(d.actual)) for d in result.drifts]
        if rows:
            click.echo(table(("REGION", "DRIFT", "RESOURCE", "ATTRIBUTE", "EXPECTED", "ACTUAL"), rows))
        for n, r in result.regions.items():
            click.echo(f"{n}: {r.checked} resources checked, {len(r.drifts)} drift{'s' if len(r.drifts) != 1 else ''}")
    if not result.ok:
        sys.exit(1)


@main.group(cls=ResidencyGroup)
def ci() -> None:
    """CI files generated from regions.yaml."""


@ci.command("workflow")
@click.option("--output", metavar="FILE", help="Write the workflow here (e.g. .github/workflows/deploy.yml) instead of printing it.")
@click.option("--check", "check_path", metavar="FILE", help="Exit 1 if FILE is not what would be generated.")
@click.option("--canary", metavar="R", help="The region deployed first (default: the first active one).")
@pass_ctx
def ci_workflow(c: Context, output: str | None, check_path: str | None, canary: str | None) -> None:
    """The deploy workflow: preview on pull requests, deploy on merge, canary region first."""
    from stacks import workflow

    cat = c.catalogue
    if check_path:
        if workflow.is_stale(cat, check_path, canary):
            click.echo(f"{check_path} is stale; regenerate it: residency ci workflow --output {check_path}", err=True)
            sys.exit(1)
        click.echo(f"{check_path} is up to date")
        return
    if output:
        changed = workflow.write(cat, output, canary)
        click.echo(f"{output}: {'written' if changed else 'already up to date'}")
        return
    click.echo(workflow.render(cat, canary), nl=False)


# --------------------------------------------------------------------------- end of stacks and ci (issue 6)


# --------------------------------------------------------------------------- sandbox and demo (issue 3)


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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def sandbox_up(c: Context, as_json: bool) -> None:
    """Start the sandbox (idempotent: restarts only what is down)."""
    from residency import sandbox as sb

    st = sb.up(c.catalogue, progress=None if as_json else _progress_line)
    emit_json(st) if as_json else click.echo(_render_status(st))
    if not st.healthy:
        sys.exit(1)


@sandbox.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sandbox_status(as_json: bool) -> None:
    """Show every sandbox server and whether it is healthy (exit 1 if not)."""
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
    """Stop every server the sandbox started (data is kept)."""
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
    """Delete the sandbox's data and start a fresh, empty one."""
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def sandbox_seed(c: Context, workspaces: int, rows: int | None, size_mb: float | None, seed_value: int, as_json: bool) -> None:
    """Generate workspaces in every active region (adds to what is there)."""
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def demo(c: Context, as_json: bool) -> None:
    """Bring the sandbox up, seed it if empty, and show what is there."""
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
    click.echo(f"directory: {res.directory_entries} workspaces registered; done in {res.timings['total']:.1f}s")


# --------------------------------------------------------------------------- end of sandbox and demo (issue 3)


if __name__ == "__main__":  # pragma: no cover
    main()
