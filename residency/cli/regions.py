"""`residency` CLI: region definitions: list, show, validate, ids."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from residency import catalogue as catalogue_mod
from residency.errors import CatalogueError, InputError

from .core import Context, _control, emit_json, json_option, _jsonable, main, pass_ctx, ResidencyGroup, table, complete_region


@main.group(cls=ResidencyGroup)
def regions() -> None:
    """Inspect and validate the region definitions (regions.yaml)."""


@regions.command("list")
@json_option
@pass_ctx
def regions_list(c: Context, as_json: bool) -> None:
    """List every region with its AWS region, jurisdiction and status.

    \b
    Examples:
      residency regions list
      residency --regions staging/regions.yaml regions list --json
    """
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
@click.argument("name", shell_complete=complete_region)
@json_option
@pass_ctx
def regions_show(c: Context, name: str, as_json: bool) -> None:
    """Show one region: its placement and the environment it gets (overrides applied).

    \b
    Examples:
      residency regions show eu
      residency regions show eu --json
    """
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
@json_option
@pass_ctx
def regions_validate(c: Context, file: str | None, as_json: bool) -> None:
    """Check a regions file (default: --regions) and print every problem with its line.

    \b
    Examples:
      residency regions validate
      residency regions validate proposed/regions.yaml --json
    """
    path = file or c.regions_path
    try:
        cat = catalogue_mod.load(file or c.regions_given)  # FILE named: no hint about --regions
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




@regions.command("ids")
@click.option("--apply", "do_apply", is_flag=True, help="Record the region numbers and confine the sequences.")
@json_option
@pass_ctx
def regions_ids(c: Context, do_apply: bool, as_json: bool) -> None:
    """Every region's identity/serial sequences and its id range [n·10¹², (n+1)·10¹² − 1].

    With --apply, confines each sequence to its region's range (exit 1, changing nothing, if one is past it).

    \b
    Examples:
      residency regions ids
      residency regions ids --apply
    """
    from residency.migrate.introspect import app_schema
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
