"""`residency` CLI: runbooks and customer notices."""

from __future__ import annotations

import sys

import click

from residency.errors import InputError

from .core import Context, _control, emit_json, json_option, main, pass_ctx, ResidencyGroup


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
    """Render NAME: new-region, workspace-move, move-scheduled, move-completed, source-deleted.

    \b
    Examples:
      residency playbook render new-region --region ca
      residency playbook render workspace-move --move 17 --format html
      residency playbook render move-scheduled --request 5
    """
    from residency import playbooks
    from residency.ops import requests as rq

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
@json_option
@pass_ctx
def playbook_check(c: Context, name: str, region: str, as_json: bool) -> None:
    """Run the checkable steps of a playbook and mark each done or not (exit 1 if any is not).

    \b
    Examples:
      residency playbook check new-region --region ca --json
    """
    from residency import playbooks

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
