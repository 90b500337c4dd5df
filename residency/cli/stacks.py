"""`residency` CLI: Pulumi stacks and the deploy workflow: the library (stacks/) does the work."""

from __future__ import annotations

import json
import sys
from typing import Callable

import click

from residency.errors import ResidencyError

from .core import Context, emit_json, json_option, main, pass_ctx, ResidencyGroup, table


# Pulumi stacks: the library (stacks/) does the work; these commands parse and render.


def _stacks_run(c: Context, op: str, region_names: tuple[str, ...], all_regions: bool, canary: str | None,
                parallel: int, as_json: bool, env: str | None = None) -> None:
    from residency.errors import OperationError
    from residency.stacks import orchestrate

    cat = c.catalogue
    names = orchestrate.select_regions(cat, list(region_names), all_regions)

    def progress(kind: str, region: str, detail: str) -> None:
        click.echo(f"{op} {region}: {kind}{': ' + detail if detail else ''}", err=True)

    engine = orchestrate.AutomationEngine(c.regions_path)
    summary = orchestrate.run(cat, op, names, engine=engine, env=env, canary=canary, parallel=parallel,
                              on_event=None if as_json else progress)
    if op == "up":  # deploys are evidence: one audit entry per stack deployed
        from residency.stacks import deploys

        try:
            deploys.record(c.connections.control_dsn, summary, c.regions_path)
        except ResidencyError as exc:
            click.echo(f"warning: deploys not recorded in the audit log: {exc}", err=True)
    if as_json:
        emit_json(summary.as_dict())
    else:
        rows = [(r.stack, "canary" if r.wave == 0 else f"wave {r.wave}", r.status,
                 ", ".join(f"{k} {v}" for k, v in r.changes.items()) or "-", f"{r.seconds:.1f}s", r.error or "")
                for r in summary.results]
        click.echo(table(("STACK", "ORDER", "STATUS", "CHANGES", "TIME", "ERROR"), rows))
    if not summary.ok:
        failed = ", ".join(r.region for r in summary.failed)
        raise OperationError(f"{op} failed in {failed}; later regions were not run")


def _env_option(fn: Callable) -> Callable:
    from residency.stacks.names import DEFAULT_ENV, ENV_VAR

    return click.option("--env", metavar="E", envvar=ENV_VAR, default=DEFAULT_ENV, show_default=True,
                        help=f"The environment: the stacks are <env>-<region> (also ${ENV_VAR}).")(fn)


def _stacks_options(fn: Callable) -> Callable:
    fn = _env_option(fn)
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
def stacks_preview(c: Context, region_names: tuple[str, ...], all_regions: bool, canary: str | None, parallel: int, as_json: bool,
                  env: str) -> None:
    """Preview the stacks: canary first, then parallel waves; stops at the first failure.

    \b
    Examples:
      residency stacks preview --all
      residency stacks preview --region eu --json
    """
    _stacks_run(c, "preview", region_names, all_regions, canary, parallel, as_json, env)


@stacks.command("up")
@_stacks_options
@pass_ctx
def stacks_up(c: Context, region_names: tuple[str, ...], all_regions: bool, canary: str | None, parallel: int, as_json: bool,
                  env: str) -> None:
    """Deploy the stacks: canary first, then parallel waves; stops at the first failure.

    \b
    Examples:
      residency stacks up --all --canary eu
      residency stacks up --region au
    """
    _stacks_run(c, "up", region_names, all_regions, canary, parallel, as_json, env)


@stacks.command("refresh")
@_stacks_options
@pass_ctx
def stacks_refresh(c: Context, region_names: tuple[str, ...], all_regions: bool, canary: str | None, parallel: int, as_json: bool,
                  env: str) -> None:
    """Refresh the stacks' state from the cloud: canary first, then parallel waves.

    \b
    Examples:
      residency stacks refresh --all
    """
    _stacks_run(c, "refresh", region_names, all_regions, canary, parallel, as_json, env)


@stacks.command("plan")
@_env_option
@json_option
@pass_ctx
def stacks_plan(c: Context, as_json: bool, env: str) -> None:
    """Offline: every resource each region would get, side by side, and what differs (no CLI, no cloud).

    \b
    Examples:
      residency stacks plan
      residency stacks plan --json
    """
    from residency.stacks import plan as plan_mod
    from residency.stacks.names import env_name

    p = plan_mod.plan(c.catalogue, env=env_name(env))
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
@json_option
@pass_ctx
def stacks_parity(c: Context, region_names: tuple[str, ...], endpoint_url: str | None, profile: str | None, as_json: bool) -> None:
    """Live: what each region really has (by tags) against what the program declares.

    \b
    Examples:
      residency stacks parity
      residency stacks parity --region us --region eu --profile audit
    """
    from residency.stacks import parity

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


@stacks.command("evidence")
@click.argument("region")
@_env_option
@click.option("--out", "out", required=True, metavar="FILE", help="Where to write the pack.")
@click.option("--last", type=int, metavar="N", help="Only the last N deploys (default: every deploy of the stack).")
@click.option("--seq", type=int, metavar="S", help="Only the deploy recorded as audit entry S.")
@json_option
@pass_ctx
def stacks_evidence(c: Context, region: str, env: str, out: str, last: int | None, seq: int | None, as_json: bool) -> None:
    """Write the evidence pack of a region's deploys (stack <env>-<region>): one file verified offline
    with `residency evidence verify`.

    \b
    Examples:
      residency stacks evidence eu --out eu-deploys.json
      residency stacks evidence eu --env staging --last 1 --out staging-eu.json
    """
    from residency.stacks import evidence

    evidence.stack_of(c.catalogue, region, env, last=last, seq=seq)  # bad input refused before connecting
    res = evidence.write(c.connections, c.catalogue, region, out, env, last=last, seq=seq)
    if as_json:
        emit_json(res)
    else:
        click.echo(f"stack {res['stack']}: evidence pack {res['path']} ({res['bytes']:,} bytes, {res['deploys']} deploys,"
                   f" {res['digests']} signed digests, key sha256 {res['key_fingerprint']})")


@main.group(cls=ResidencyGroup)
def ci() -> None:
    """CI files generated from regions.yaml."""


@ci.command("workflow")
@click.option("--output", metavar="FILE", help="Write the workflow here (e.g. .github/workflows/deploy.yml) instead of printing it.")
@click.option("--check", "check_path", metavar="FILE", help="Exit 1 if FILE is not what would be generated.")
@click.option("--canary", metavar="R", help="The region deployed first (default: the first active one).")
@click.option("--env", "envs", multiple=True, metavar="E",
              help="An environment to deploy, in promotion order (repeatable, e.g. --env staging --env production; default production).")
@pass_ctx
def ci_workflow(c: Context, output: str | None, check_path: str | None, canary: str | None, envs: tuple[str, ...]) -> None:
    """The deploy workflow: preview on pull requests, deploy on merge, canary region first, one environment after another.

    \b
    Examples:
      residency ci workflow --output .github/workflows/deploy.yml
      residency ci workflow --check .github/workflows/deploy.yml
    """
    from residency.stacks import workflow

    cat = c.catalogue
    if check_path:
        if workflow.is_stale(cat, check_path, canary, envs):
            click.echo(f"{check_path} is stale; regenerate it: residency ci workflow --output {check_path}", err=True)
            sys.exit(1)
        click.echo(f"{check_path} is up to date")
        return
    if output:
        changed = workflow.write(cat, output, canary, envs)
        click.echo(f"{output}: {'written' if changed else 'already up to date'}")
        return
    click.echo(workflow.render(cat, canary, envs), nl=False)
