"""The command line's plumbing: the root group, the context every command gets, shared options and output.

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

    def __init__(self, regions_path: str | None, debug: bool):
        self.regions_given = regions_path
        """--regions or $RESIDENCY_REGIONS; None: the nearest regions.yaml upward (catalogue.find)."""
        self.regions_path = regions_path or catalogue_mod.default_path()
        self.debug = debug
        self._cat: catalogue_mod.Catalogue | None = None
        self._conns: Any = None

    @property
    def catalogue(self) -> catalogue_mod.Catalogue:
        if self._cat is None:
            self._cat = catalogue_mod.load(self.regions_given)
        return self._cat

    @property
    def connections(self) -> Any:
        """Where each region's database and object store are (resolved once per command)."""
        if self._conns is None:
            from residency.connections import resolve
            from residency.sandbox import sandbox_connections  # the CLI hands the sandbox down

            self._conns = resolve(self.catalogue, fallback=sandbox_connections(self.catalogue))
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
    for name in ("residency",):  # every module logs under it, the mover and stacks too (residency.migrate, ...)
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
    default=None,
    metavar="FILE",
    help=f"The region definitions to use (also ${catalogue_mod.ENV_VAR}). Default: regions.yaml in the working"
         " directory or the nearest folder above it, as git finds its repository.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="residency")
@click.pass_context
def main(ctx: click.Context, regions_path: str | None, debug: bool) -> None:
    """Run one product in several data-residency regions and move workspaces between them.

    Region definitions live in regions.yaml. `residency demo` runs a whole move on a local
    sandbox; `residency regions list` shows what is defined.
    """
    ctx.obj = Context(regions_path, debug)
    _setup_logging(debug)



# --------------------------------------------------------------------------- helpers several groups use


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

        from residency.migrate.progress import render

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



def _control(c: Context) -> tuple[Any, Any]:
    """(connections, control-plane connection with the schema ensured)."""
    from residency.controlplane import ensure_schema
    from residency.db import connect

    conns = c.connections
    conn = connect(conns.control_dsn)
    ensure_schema(conn)
    return conns, conn


def _notifier(conns: Any) -> Any:
    from residency.ops.notify import Notifier

    return Notifier.from_config(conns.control_dsn)


def _by(role: str | None, annotation: str | None) -> str:
    """Who did it: the person it says it is ($RESIDENCY_ACTOR), then the authenticated role."""
    if not role:
        return ""
    return f"{annotation} (role {role})" if annotation else role



def json_option(fn: Callable) -> Callable:
    """``--json``: every command that reports something takes it (one place for its wording)."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)


def complete_region(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of a region name, from the regions file the command would read."""
    try:
        cat = catalogue_mod.load(ctx.find_root().params.get("regions_path"))
    except Exception:  # noqa: BLE001 - completing never fails loudly: no names instead
        return []
    return [name for name in cat.regions if name.startswith(incomplete)]
