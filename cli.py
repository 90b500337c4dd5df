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
        self._conns: Any = None

    @property
    def catalogue(self) -> catalogue_mod.Catalogue:
        if self._cat is None:
            self._cat = catalogue_mod.load(self.regions_path)
        return self._cat

    @property
    def connections(self) -> Any:
        """Where each region's database and object store are (resolved once per command)."""
        if self._conns is None:
            from residency.connections import resolve

            self._conns = resolve(self.catalogue)
        return self._conns


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
    from residency.redaction import redact_obj

    click.echo(json.dumps(redact_obj(_jsonable(data)), indent=2, sort_keys=False, ensure_ascii=False))


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


def _error_line(exc: BaseException) -> str:
    """One line, redacted: what every error the CLI reports looks like."""
    from residency.redaction import redact

    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return redact("; ".join(lines) if lines else type(exc).__name__)


def _library_error(exc: Exception) -> ResidencyError | None:
    """A database error that escaped the library, as one line: bad data in it (SQLSTATE class 22,
    e.g. an id the key's type refuses) is bad input, anything else a failed operation."""
    import psycopg

    if not isinstance(exc, psycopg.Error):
        return None
    state = getattr(exc, "sqlstate", None) or ""
    cls = InputError if state.startswith("22") else ResidencyError
    return cls(f"database: {_error_line(exc)}")


class ResidencyCommand(click.Command):
    """A command whose errors, with ``--json``, are also JSON on stdout: {"error": ..., "code": ...}
    (the one line stays on stderr)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if bool(ctx.find_root().params.get("debug")) or not ctx.params.get("as_json"):
                raise
            err = exc if isinstance(exc, ResidencyError) else _library_error(exc)
            if err is None:
                raise
            body: dict[str, Any] = {"error": _error_line(err) if not isinstance(err, CatalogueError) else err.problems[0],
                                    "code": err.exit_code}
            if isinstance(err, CatalogueError):
                body["problems"] = err.problems
            click.echo(json.dumps(body, ensure_ascii=False))
            if isinstance(err, CatalogueError):
                for p in err.problems:
                    click.echo(p, err=True)
            else:
                click.echo(f"error: {body['error']}", err=True)  # the one line on stderr as well
            ctx.exit(err.exit_code)


class _UsageLine(click.ClickException):
    """A usage error (a missing option, a bad value) as one line, exit 2; JSON too with --json."""

    exit_code = 2

    def __init__(self, exc: click.UsageError, as_json: bool):
        path = exc.ctx.command_path if exc.ctx is not None else "residency"
        super().__init__(f"{exc.format_message()} (see `{path} --help`)")
        self.as_json = as_json

    def show(self, file: Any = None) -> None:
        from residency.redaction import redact

        line = redact(self.format_message())
        if self.as_json:
            click.echo(json.dumps({"error": line, "code": self.exit_code}, ensure_ascii=False))
        click.echo(f"error: {line}", err=True)


def _wants_json(args: Iterable[str]) -> bool:
    return any(a == "--json" for a in args)


class ResidencyGroup(click.Group):
    """A click group that turns library errors into one line and an exit code."""

    command_class = ResidencyCommand

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _UsageLine(exc, _wants_json(args)) from None

    def invoke(self, ctx: click.Context) -> Any:
        rest = list(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", None) or []) + list(ctx.args)
        try:
            try:
                return super().invoke(ctx)
            except click.UsageError as exc:
                raise _UsageLine(exc, _wants_json(rest)) from None
        except _UsageLine:
            raise
        except Exception as exc:
            debug = bool(ctx.find_root().params.get("debug"))
            if debug:
                raise
            err = exc if isinstance(exc, ResidencyError) else _library_error(exc)
            if err is None:
                raise
            if isinstance(err, CatalogueError):
                for p in err.problems:
                    click.echo(p, err=True)
                n = len(err.problems)
                click.echo(f"{n} problem{'s' if n != 1 else ''} found", err=True)
                ctx.exit(err.exit_code)
            refusals = getattr(err, "refusals", None)
            if refusals and len(refusals) > 1:  # migrate.MoveRefused: one refusal per line
                from residency.redaction import redact

                click.echo(redact(f"error: move refused ({len(refusals)} refusals):"), err=True)
                for r in refusals:
                    click.echo(redact(f"  - {r}"), err=True)
            else:
                click.echo(f"error: {_error_line(err)}", err=True)
            ctx.exit(err.exit_code)


ResidencyGroup.group_class = ResidencyGroup


def _setup_logging(debug: bool) -> None:
    """Library log lines on stderr, one line each and redacted; DEBUG ones only with --debug."""
    import logging

    from residency.redaction import RedactingFilter

    root = logging.getLogger("residency")
    for h in list(root.handlers):
        if getattr(h, "_residency_cli", False):
            root.removeHandler(h)

    class _Stderr(logging.Handler):
        _residency_cli = True

        def emit(self, record: logging.LogRecord) -> None:
            try:
                click.echo(f"{record.levelname.lower()}: {self.format(record)}", err=True)
            except Exception:  # noqa: BLE001 - logging never breaks a command
                pass

    h = _Stderr()
    h.addFilter(RedactingFilter())
    h.setFormatter(logging.Formatter("%(message)s"))
    for name in ("residency", "migrate", "stacks"):
        lg = logging.getLogger(name)
        lg.handlers = [x for x in lg.handlers if not getattr(x, "_residency_cli", False)]
        lg.addHandler(h)
        lg.setLevel(logging.DEBUG if debug else logging.WARNING)
        lg.propagate = False


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
    _setup_logging(debug)


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
    if op == "up":  # deploys are evidence: one audit entry per stack deployed
        from stacks import deploys

        try:
            deploys.record(c.connections.control_dsn, summary, c.regions_path)
        except ResidencyError as exc:
            click.echo(f"warning: deploys not recorded in the audit log: {exc}", err=True)
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
    if res.extra.get("move"):  # the mover's part (issue 4): the plan and the verified report
        click.echo("")
        click.echo(res.extra["move"]["plan_text"])
        click.echo("")
        click.echo(res.extra["move"]["report_text"])
        click.echo("")
    click.echo(f"directory: {res.directory_entries} workspaces registered; done in {res.timings['total']:.1f}s")


# --------------------------------------------------------------------------- end of sandbox and demo (issue 3)


# --------------------------------------------------------------------------- move, verify, audit (issue 4)


def _conns(c: Context) -> Any:
    return c.connections


class _ProgressPrinter:
    """Progress events on stderr: one updating line on a terminal, plain lines otherwise (CI)."""

    def __init__(self, quiet: bool = False):
        self.tty = sys.stderr.isatty() and not os.environ.get("CI")
        self.quiet = quiet
        self.last_plain: dict[str, float] = {}
        self.width = 0

    def __call__(self, event: Any) -> None:
        import time

        from migrate.progress import render

        if self.quiet:
            return
        line = render(event)
        if self.tty:
            pad = " " * max(self.width - len(line), 0)
            end = "\n" if event.finished or event.phase == "state" else ""
            sys.stderr.write("\r" + line + pad + end)
            sys.stderr.flush()
            self.width = 0 if end else len(line)
            return
        now = time.monotonic()
        key = f"{event.phase}:{event.item}"
        if event.finished or event.phase == "state" or now - self.last_plain.get(key, 0) >= 5:
            self.last_plain[key] = now
            click.echo(line, err=True)


def _input_first(c: Context, workspace: str, *regions: str) -> str:
    """Bad input before any connection is needed: the regions named, and the workspace id
    parsed by the root key's type (regions.yaml's workspace.key_type). Returns the parsed id."""
    for r in regions:
        c.catalogue.region(r)
    return c.catalogue.workspace.parse_id(workspace)


def _move_row(m: Any) -> tuple[Any, ...]:
    return (m.id, m.workspace_id, f"{m.source} → {m.target}", m.strategy, m.state + (f" (in {m.resume_from})" if m.resume_from else ""),
            m.created_by, m.updated_at.strftime("%Y-%m-%d %H:%M:%S"), (m.error or "")[:80])


@main.group(cls=ResidencyGroup)
def move() -> None:
    """Move a workspace to another region: plan, start, watch, resume, roll back, clean up."""


@move.command("plan")
@click.argument("workspace")
@click.option("--to", "target", required=True, metavar="REGION", help="The region to move to.")
@click.option("--strategy", default="auto", show_default=True, type=click.Choice(["auto", "online", "snapshot"]),
              help="online: logical replication, writable until a short fence; snapshot: fenced for the whole copy; auto: by size.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def move_plan(c: Context, workspace: str, target: str, strategy: str, as_json: bool) -> None:
    """Show what a move would do, or every reason it must not (exit 1 if refused). Changes nothing."""
    from migrate import plan_move
    from migrate.mover import unknown_workspace
    from migrate.plan import render

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
@click.option("--to", "target", required=True, metavar="REGION", help="The region to move to.")
@click.option("--strategy", default="auto", show_default=True, type=click.Choice(["auto", "online", "snapshot"]),
              help="online: logical replication, writable until a short fence; snapshot: fenced for the whole copy; auto: by size.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the final report as JSON.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Parallel copy streams (default: min(4, CPUs)).")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=None, help="Tables above this many rows copy in key-range chunks (default 250000).")
@click.option("--rows-per-second", type=click.FloatRange(min=1), default=None, help="Limit this move's copy rate (default: none).")
@pass_ctx
def move_start(c: Context, workspace: str, target: str, strategy: str, yes: bool, as_json: bool, jobs: int | None = None, chunk_rows: int | None = None, rows_per_second: float | None = None) -> None:
    """Plan, fence, copy, verify and cut over a workspace (cleanup comes later, after a grace period)."""
    from migrate import move_report, plan_move, start_move
    from migrate.plan import render
    from migrate.mover import unknown_workspace
    from migrate.report import render as render_report

    workspace = _input_first(c, workspace, target)
    if not yes and not sys.stdin.isatty():
        raise InputError("move start needs --yes when not run from a terminal")
    conns = _conns(c)
    if not yes:
        p = plan_move(c.catalogue, conns, workspace, target, strategy)
        click.echo(render(p))
        if not p.ok:
            sys.exit(2 if unknown_workspace(p) else 1)
        click.confirm(f"move workspace {workspace} from {p.source} to {target}? Writes to it are refused until cut-over", abort=True)
    from migrate import MoveRefused

    try:
        rec = start_move(c.catalogue, conns, workspace, target, strategy=strategy, progress=_ProgressPrinter(as_json),
                         copy_options=_copy_options(jobs, chunk_rows, rows_per_second))
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def move_status_cmd(c: Context, move_id: int | None, show_all: bool, as_json: bool) -> None:
    """Show one move, or the open moves (with --all, recent closed ones too)."""
    from migrate import move_status

    recs = move_status(_conns(c), move_id, open_only=not show_all and move_id is None)
    if as_json:
        if move_id is None:
            emit_json([{k: v for k, v in _jsonable(r).items() if k not in ("plan",)} for r in recs])
        else:
            from migrate.replication import leftovers

            emit_json({**_jsonable(recs[0]), "replication_leftovers": [x.to_dict() for x in leftovers(_conns(c)) if x.move_id == move_id]})
        return
    if not recs:
        click.echo("no open moves" + ("" if show_all else " (--all shows closed ones)"))
    else:
        click.echo(table(("ID", "WORKSPACE", "ROUTE", "STRATEGY", "STATE", "BY", "UPDATED", "ERROR"), [_move_row(r) for r in recs]))
    _show_replication_leftovers(c, recs if move_id is not None else None)


def _show_replication_leftovers(c: Context, only: Any) -> None:
    """Publications, subscriptions and slots named after moves (online strategy) still present."""
    from migrate.replication import leftovers

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
    """Continue a move from its last recorded state (after a crash or a failure)."""
    from migrate import move_report, resume_move
    from migrate.report import render as render_report

    conns = _conns(c)
    rec = resume_move(c.catalogue, conns, move_id, progress=_ProgressPrinter(as_json),
                      copy_options=_copy_options(jobs, chunk_rows, rows_per_second))
    rep = move_report(conns, rec.id)
    emit_json(rep) if as_json else click.echo(render_report(rep))


def _copy_options(jobs: int | None, chunk_rows: int | None, rows_per_second: float | None) -> Any:
    """The copy's options: flags over $RESIDENCY_COPY_* over the defaults (migrate.chunks)."""
    from migrate.chunks import CopyOptions

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
    """Before cut-over: remove the target copy and lift the fence."""
    from migrate import rollback_move

    rec = rollback_move(c.catalogue, _conns(c), move_id, progress=_ProgressPrinter())
    click.echo(f"move {rec.id}: {rec.state}; workspace {rec.workspace_id} stays in {rec.source} and is writable again")


@move.command("cleanup")
@click.argument("move_id", type=int)
@click.option("--grace", default="7d", show_default=True, help="Keep the source copy this long after cut-over (e.g. 7d, 2w, 1h30m, 0).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the deletion record as JSON.")
@pass_ctx
def move_cleanup(c: Context, move_id: int, grace: str, yes: bool, as_json: bool) -> None:
    """After the grace period: delete the source copy and record what was deleted."""
    from migrate import cleanup_move, move_report
    from residency.units import parse_duration

    keep = parse_duration(grace, what="--grace", allow_zero=True)
    if not yes and not sys.stdin.isatty():
        raise InputError("move cleanup deletes the source copy: it needs --yes when not run from a terminal")
    conns = _conns(c)
    if not yes:
        from migrate import move_status

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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def move_report_cmd(c: Context, move_id: int, as_json: bool) -> None:
    """A move's report: counts and checksums on both sides, objects, fence duration, timings."""
    from migrate import move_report
    from migrate.report import render as render_report

    rep = move_report(_conns(c), move_id)
    emit_json(rep) if as_json else click.echo(render_report(rep))


@move.command("evidence")
@click.argument("move_id", type=int)
@click.option("--out", "out", required=True, metavar="FILE", help="Where to write the pack.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def move_evidence(c: Context, move_id: int, out: str, as_json: bool) -> None:
    """Write the move's evidence pack: one file a customer verifies offline with `residency evidence verify`."""
    from migrate import evidence

    res = evidence.write(_conns(c), move_id, out)
    if as_json:
        emit_json(res)
    else:
        click.echo(f"move {move_id}: evidence pack {res['path']} ({res['bytes']:,} bytes, {res['entries']} audit entries,"
                   f" {res['digests']} signed digests, key sha256 {res['key_fingerprint']})")


@main.command("verify")
@click.argument("workspace")
@click.option("--between", nargs=2, required=True, metavar="A B", help="The two regions to compare.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def verify_cmd(c: Context, workspace: str, between: tuple[str, str], as_json: bool) -> None:
    """Compare a workspace's rows and objects in two regions (exit 1 on any difference)."""
    from migrate import verify_workspace

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


@main.group(cls=ResidencyGroup)
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def audit_verify(c: Context, as_json: bool) -> None:
    """Walk the whole audit chain and check it against the signed digests; exit 1 if any entry
    was edited, re-hashed or removed, or a digest is missing or not signed by the audit key."""
    from residency import anchor
    from residency import audit as audit_mod
    from residency.db import connect

    conns = _conns(c)
    with connect(conns.control_dsn) as conn:
        res = anchor.verify(conn, conns.anchor) if conns.anchor is not None else audit_mod.verify(conn)
    if as_json:
        emit_json(res)
    else:
        for p in res.problems:
            click.echo(f"broken: {p}")
        click.echo(f"audit log: {res.entries} entries, {'chain intact' if res.ok else 'CHAIN BROKEN'}")
        if conns.anchor is None:
            click.echo("not anchored: no audit key and digest bucket configured (see `residency audit digest --help`)")
        else:
            tail = res.entries - res.anchored_through
            click.echo(f"anchored: {res.digests} signed digests cover entries 1..{res.anchored_through}"
                       + (f"; the last {tail} not yet" if tail > 0 else "") + f" (key sha256 {res.key_fingerprint[:16]})")
            if res.first_bad_seq is not None:
                click.echo(f"first entry that disagrees: {res.first_bad_seq}")
    if not res.ok:
        sys.exit(1)


@audit.command("digest")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def audit_digest(c: Context, as_json: bool) -> None:
    """Sign a digest of the entries appended since the last one and store it in the Object Lock
    bucket, now (moves and the worker write them too). The key and bucket come from
    RESIDENCY_AUDIT_KMS_KEY / RESIDENCY_AUDIT_BUCKET, the connections file's audit: section, or the sandbox."""
    from residency import anchor
    from residency.db import connect

    conns = _conns(c)
    cfg = anchor.require(conns.anchor)
    with connect(conns.control_dsn, autocommit=True) as conn:
        w = anchor.write_digest(conn, cfg)
    if as_json:
        emit_json(w)
    else:
        click.echo(f"digest {w.number}: entries {w.first_seq}..{w.last_seq}, sha256 {w.digest_hash}, s3://{cfg.bucket}/{w.name}")


# --------------------------------------------------------------------------- end of move, verify, audit (issue 4)


# --------------------------------------------------------------------------- requests, worker, playbooks (issue 7)


def _control(c: Context) -> tuple[Any, Any]:
    """(connections, control-plane connection with the schema ensured)."""
    from residency.controlplane import ensure_schema
    from residency.db import connect

    conns = c.connections
    conn = connect(conns.control_dsn)
    ensure_schema(conn)
    return conns, conn


def _notifier(conns: Any) -> Any:
    from residency.notify import Notifier

    return Notifier.from_config(conns.control_dsn)


def _by(role: str | None, annotation: str | None) -> str:
    """Who did it: the person it says it is ($RESIDENCY_ACTOR), then the authenticated role."""
    if not role:
        return ""
    return f"{annotation} (role {role})" if annotation else role


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
@click.option("--to", "target", required=True, metavar="REGION", help="The region to move to.")
@click.option("--window", required=True, metavar="START/DURATION", help="e.g. 2025-03-01T22:00Z/2h, now/90m, ...T22:00+01:00/PT2H")
@click.option("--requested-by", required=True, metavar="EMAIL", help="Who asks for the move.")
@click.option("--reason", default="", help="Why (kept with the request and in the audit log).")
@click.option("--strategy", default="auto", show_default=True, type=click.Choice(["auto", "snapshot", "online"]),
              help="auto: online for large workspaces when the preconditions hold, else snapshot.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def request_create(c: Context, workspace: str, target: str, window: str, requested_by: str, reason: str, strategy: str, as_json: bool) -> None:
    """Ask for a workspace to move; checked against policy and the plan now (exit 1 if refused)."""
    from residency import requests as rq

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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def request_list(c: Context, states: tuple[str, ...], workspace: str | None, limit: int, as_json: bool) -> None:
    """List move requests, newest first."""
    from residency import requests as rq

    _, conn = _control(c)
    with conn:
        rows = rq.list_requests(conn, state=list(states) or None, workspace_id=workspace, limit=limit)
    if as_json:
        emit_json([_request_json(r) for r in rows])
    else:
        click.echo(table(_REQUEST_HEADERS, [_request_row(r) for r in rows]))


@request.command("show")
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def request_show(c: Context, request_id: str, as_json: bool) -> None:
    """One request with its estimate, outcome and the notices kept with it."""
    from residency import requests as rq

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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def request_approve(c: Context, request_id: str, as_json: bool) -> None:
    """Approve a pending request (not your own); a worker runs it inside its window."""
    from residency import requests as rq

    conns, conn = _control(c)
    n = _notifier(conns)
    with conn:
        r = rq.approve(conn, c.catalogue, request_id, notifier=n)
    n.flush(5)
    emit_json(_request_json(r)) if as_json else click.echo(f"request {r.id} approved by {_by(r.approved_by, r.approved_for)}: runs in {r.window}")


@request.command("cancel")
@click.argument("request_id")
@click.option("--reason", default="", help="Why it is cancelled.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def request_cancel(c: Context, request_id: str, reason: str, as_json: bool) -> None:
    """Cancel a pending or approved request."""
    from residency import requests as rq

    conns, conn = _control(c)
    n = _notifier(conns)
    with conn:
        r = rq.cancel(conn, request_id, reason, notifier=n)
    n.flush(5)
    emit_json(_request_json(r)) if as_json else click.echo(f"request {r.id} cancelled: {r.state_reason}")


@request.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def request_import(c: Context, file: str, as_json: bool) -> None:
    """Create a request per CSV row (workspace,to,window,requested_by[,reason,strategy]).

    Each row gets its own result line; exit 1 if any row was refused or wrong."""
    from residency import requests as rq

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
@click.option("--once", is_flag=True, help="Run what is due now, then exit.")
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 64), help="Moves run at the same time.")
@click.option("--throughput", default=None, metavar="RATE", help="Bytes per second to estimate moves with, e.g. 50MB/s ($RESIDENCY_MOVE_THROUGHPUT).")
@click.option("--lease", "lease_seconds", default=60.0, show_default=True, help="Seconds a silent worker keeps a request.")
@click.option("--poll", "poll_seconds", default=10.0, show_default=True, help="Seconds between looks for due requests.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcomes as JSON.")
@pass_ctx
def worker_cmd(c: Context, once: bool, concurrency: int, throughput: str | None, lease_seconds: float, poll_seconds: float, as_json: bool) -> None:
    """Claim due, approved move requests and run their moves inside their windows.

    Run as many workers on as many machines as you like: each request runs once; a worker that
    dies leaves its move to be resumed by another once its lease expires."""
    import signal
    import threading

    from residency import requests as rq
    from residency.worker import WorkerConfig, run_workers

    conns = c.connections
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cfg = WorkerConfig(lease_seconds=lease_seconds, poll_seconds=poll_seconds, throughput=rq.Throughput.parse(throughput))
    outcomes = run_workers(c.catalogue, conns, concurrency=concurrency, once=once, notifier=_notifier(conns), config=cfg, stop=stop)
    if as_json:
        emit_json(outcomes)
    else:
        for o in outcomes:
            click.echo(f"request {o.request_id} ({o.workspace_id}): {o.state}" + (f" [move {o.move_id}]" if o.move_id else "")
                       + (" (resumed)" if o.resumed else "") + (f": {o.reason}" if o.reason else ""))
        if once and not outcomes:
            click.echo("nothing due")
    if any(o.state == "failed" for o in outcomes):
        sys.exit(1)


@main.group(cls=ResidencyGroup)
def playbook() -> None:
    """Runbooks and customer notices rendered from regions.yaml and a move's record."""


@playbook.command("render")
@click.argument("name")
@click.option("--region", default=None, help="For new-region.")
@click.option("--move", "move_id", default=None, type=int, help="A move (workspace-move and the notices).")
@click.option("--request", "request_id", default=None, type=int, help="A move request (workspace-move, move-scheduled).")
@click.option("--format", "fmt", default="md", show_default=True, type=click.Choice(["md", "html"]))
@click.option("--check", is_flag=True, help="new-region: run the checkable steps and show their results.")
@pass_ctx
def playbook_render(c: Context, name: str, region: str | None, move_id: int | None, request_id: int | None, fmt: str, check: bool) -> None:
    """Render NAME: new-region, workspace-move, move-scheduled, move-completed, source-deleted."""
    import playbooks
    from residency import requests as rq

    if name == "new-region":
        checks = None
        if check:
            checks = playbooks.check_new_region(c.catalogue, c.connections, region or "")
        click.echo(playbooks.render(name, cat=c.catalogue, region=region, format=fmt, checks=checks), nl=False)
        return
    if name not in playbooks.PLAYBOOKS:
        raise InputError(f"unknown playbook '{name}' (playbooks: {', '.join(playbooks.PLAYBOOKS)})")
    if move_id is None and request_id is None:
        raise InputError(f"playbook '{name}' needs --move ID or --request ID")
    _, conn = _control(c)
    with conn:
        mv, req = rq.move_and_request(conn, move_id=move_id, request_id=request_id)
    click.echo(playbooks.render(name, cat=c.catalogue, move=mv, request=req, format=fmt), nl=False)


@playbook.command("check")
@click.argument("name", type=click.Choice(["new-region"]))
@click.option("--region", required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def playbook_check(c: Context, name: str, region: str, as_json: bool) -> None:
    """Run the checkable steps of a playbook and mark each done or not (exit 1 if any is not)."""
    import playbooks

    res = playbooks.check_new_region(c.catalogue, c.connections, region)
    if as_json:
        emit_json({"region": res.region, "ok": res.ok, "steps": res.steps})
    else:
        mark = {"done": "done    ", "not done": "NOT DONE", "manual": "manual  "}
        for s in res.steps:
            click.echo(f"[{mark[s.status]}] {s.title}: {s.detail}" + (f"\n           $ {s.command}" if s.command and s.status != "done" else ""))
        n = sum(s.status == "not done" for s in res.steps)
        click.echo(f"{region}: {'all checkable steps done' if res.ok else f'{n} checkable step(s) not done'}")
    if not res.ok:
        sys.exit(1)


# --------------------------------------------------------------------------- end of requests, worker, playbooks (issue 7)


# --------------------------------------------------------------------------- regions with their own tenants (issue 16)


@main.group(cls=ResidencyGroup)
def directory() -> None:
    """The control-plane directory: which region is each workspace's home."""


@directory.command("import")
@click.option("--region", required=True, metavar="R", help="The region whose existing tenants to register.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def directory_import(c: Context, region: str, as_json: bool) -> None:
    """Register every root row of region R as a workspace homed there (idempotent).

    Ids already registered in another region are left alone and listed with their home (exit 1)."""
    from migrate.introspect import app_schema
    from residency import directory as directory_mod
    from residency.db import connect

    cat = c.catalogue
    cat.region(region)
    conns, cp = _control(c)
    with cp, connect(conns.region(region).dsn, autocommit=True) as app:
        res = directory_mod.import_and_record(cp, app, region, app_schema(), cat.workspace.root_table)
    if as_json:
        emit_json({**_jsonable(res), "elsewhere": [{"workspace_id": w, "home": h} for w, h in res.elsewhere], "ok": res.ok})
    else:
        for w, h in res.elsewhere:
            click.echo(f"not registered: workspace '{w}' has a row in {res.root_table} of {region} but is registered in region '{h}'")
        click.echo(f"{region}: {res.root_rows} rows in {res.root_table}: {len(res.registered)} registered now, "
                   f"{res.already} already registered here, {len(res.elsewhere)} registered elsewhere")
    if not res.ok:
        sys.exit(1)


# --------------------------------------------------------------------------- evidence (issue 12)


@main.group(cls=ResidencyGroup)
def evidence() -> None:
    """Evidence packs, checked offline."""


@evidence.command("verify")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--key", "key_file", type=click.Path(dir_okay=False), help="The audit key's public key (PEM) as published to you: pin it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def evidence_verify(file: str, key_file: str | None, as_json: bool) -> None:
    """Check an evidence pack with no database and no network: signatures, the audit entries and
    the digests that signed them, the records and their counts. Exit 1 naming what fails."""
    from residency import evidence as evidence_mod

    try:
        data = open(file, "rb").read()
        pinned = open(key_file, "rb").read() if key_file else None
    except OSError as exc:
        fail(f"{exc.filename}: {exc.strerror}", 2)
    res = evidence_mod.verify(data, pinned_key=pinned)
    if as_json:
        emit_json({"ok": res.ok, "move_id": res.move_id, "problems": res.problems, "facts": res.facts, "key_fingerprint": res.key_fingerprint})
    else:
        for f in res.facts:
            click.echo(f"ok: {f}")
        for p in res.problems:
            click.echo(f"FAILED: {p}")
        click.echo(f"{file}: move {res.move_id}: " + ("evidence verified" if res.ok else f"NOT verified ({len(res.problems)} problems)"))
    if not res.ok:
        sys.exit(1)


@regions.command("ids")
@click.option("--apply", "do_apply", is_flag=True, help="Record the region numbers and confine the sequences.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def regions_ids(c: Context, do_apply: bool, as_json: bool) -> None:
    """Every region's identity/serial sequences and its id range [n·10¹², (n+1)·10¹² − 1].

    With --apply, confines each sequence to its region's range (exit 1, changing nothing, if one is past it)."""
    from migrate.introspect import app_schema
    from residency import idranges

    conns, cp = _control(c)
    with cp:
        p = (idranges.apply_ids if do_apply else idranges.plan_ids)(c.catalogue, conns, app_schema(), cp)
    if as_json:
        emit_json({"schema": p.schema, "ok": p.ok, "confined": all(x.confined for x in p.regions), "refusals": p.refusals,
                   "regions": [{**_jsonable(x), "confined": x.confined} for x in p.regions]})
    else:
        rows = [(x.region, x.number or "", x.number_source, f"{x.low}..{x.high}" if x.low else "", s.name, f"{s.table}.{s.column}",
                 s.status, s.detail) for x in p.regions for s in x.sequences]
        click.echo(table(("REGION", "NUMBER", "NUMBER IS", "RANGE", "SEQUENCE", "COLUMN", "STATUS", "DETAIL"), rows))
        for x in p.regions:
            if x.skipped:
                click.echo(f"{x.region}: skipped ({x.skipped})")
                continue
            state = "error" if x.error else "confined" if x.confined else "not confined"
            click.echo(f"{x.region}: {state}" + (f" ({x.error})" if x.error else f", number {x.number} ({x.number_source}), {len(x.sequences)} id sequences"))
        for r in p.refusals:
            click.echo(f"refused: {r}", err=True)
        if not do_apply and p.changes and p.ok:
            click.echo("run `residency regions ids --apply` to record the numbers and confine the sequences")
    if not p.ok:
        sys.exit(1)


# --------------------------------------------------------------------------- end of regions with their own tenants (issue 16)
# --------------------------------------------------------------------------- control plane and roles (issue 15)


@main.group(cls=ResidencyGroup)
def controlplane() -> None:
    """The control-plane database: its schema and the roles that may act on it."""


def _controlplane_roles(c: Context, logins: tuple[str, ...], as_json: bool, what: str) -> None:
    from residency import authz
    from residency.errors import OperationError
    from residency.controlplane import ensure_roles
    from residency.db import connect

    pairs: dict[str, str] = {}
    for spec in logins:
        name, _, role = spec.partition("=")
        role = role if role.startswith("residency_") else f"residency_{role}"
        if not name or role not in authz.ROLES:
            raise InputError(f"--login '{spec}': give NAME=ROLE with ROLE one of {', '.join(r.removeprefix('residency_') for r in authz.ROLES)}")
        pairs[name] = role
    with connect(c.connections.control_dsn) as conn:
        ident = authz.require(conn, authz.ADMIN, what)
        try:
            roles = ensure_roles(conn, logins=pairs)
        except Exception as exc:
            import psycopg

            if isinstance(exc, (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidGrantOperation)):
                raise OperationError(f"{what} needs the owner of the control-plane schema with CREATEROLE (a superuser,"
                                     f" or the role that created it); {ident.role} is neither") from None
            raise
    if as_json:
        emit_json({"roles": roles, "logins": pairs})
        return
    click.echo(f"control plane ready: roles {', '.join(roles)}" + (f"; logins {', '.join(f'{k} ({v})' for k, v in pairs.items())}" if pairs else ""))


@controlplane.command("init")
@click.option("--login", "logins", multiple=True, metavar="NAME=ROLE", help="Also create a login holding ROLE (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def controlplane_init(c: Context, logins: tuple[str, ...], as_json: bool) -> None:
    """Create the control-plane schema and the four roles with their grants (admin; idempotent)."""
    _controlplane_roles(c, logins, as_json, "initialising the control plane")


@controlplane.command("roles")
@click.option("--login", "logins", multiple=True, metavar="NAME=ROLE", help="Also create a login holding ROLE (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def controlplane_roles(c: Context, logins: tuple[str, ...], as_json: bool) -> None:
    """Create (or refresh) residency_requester, _approver, _operator and _admin and their grants."""
    _controlplane_roles(c, logins, as_json, "creating the control-plane roles")


@controlplane.command("whoami")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def controlplane_whoami(c: Context, as_json: bool) -> None:
    """The role you are authenticated as in the control plane, and the residency roles it holds."""
    from residency import authz
    from residency.db import connect

    with connect(c.connections.control_dsn, autocommit=True) as conn:
        ident = authz.identity(conn)
    if as_json:
        emit_json({"role": ident.role, "superuser": ident.superuser, "admin": ident.admin, "roles": sorted(ident.member_of)})
        return
    click.echo(f"{ident.role}: " + (", ".join(sorted(ident.member_of)) or "no residency role") + (" (superuser)" if ident.superuser else ""))


# --------------------------------------------------------------------------- end of control plane and roles (issue 15)


if __name__ == "__main__":  # pragma: no cover
    main()
