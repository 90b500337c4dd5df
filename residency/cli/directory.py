"""`residency` CLI: the directory of workspace homes."""

from __future__ import annotations

import sys

import click


from .core import Context, _control, emit_json, json_option, _jsonable, main, pass_ctx, ResidencyGroup, complete_region


@main.group(cls=ResidencyGroup)
def directory() -> None:
    """The control-plane directory: which region is each workspace's home."""


@directory.command("import")
@click.option("--region", required=True, metavar="R", help="The region whose existing tenants to register.", shell_complete=complete_region)
@json_option
@pass_ctx
def directory_import(c: Context, region: str, as_json: bool) -> None:
    """Register every root row of region R as a workspace homed there (idempotent).

    Ids already registered in another region are left alone and listed with their home (exit 1).

    \b
    Examples:
      residency directory import --region us
    """
    from residency.migrate.introspect import app_schema
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
