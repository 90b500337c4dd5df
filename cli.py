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


if __name__ == "__main__":  # pragma: no cover
    main()
