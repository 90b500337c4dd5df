"""`residency access`: operator access to one workspace, with its customer's consent (issue 13)."""

from __future__ import annotations

from typing import Any, Callable

import click

from residency.units import format_duration

from .core import Context, _control, emit_json, _jsonable, json_option, main, _notifier, pass_ctx, ResidencyGroup, table

_HEADERS = ("ID", "WORKSPACE", "REGION", "OPERATOR", "SCOPE", "MODE", "STATE", "EXPIRES", "WHY")


def _row(g: Any) -> tuple[Any, ...]:
    return (g.id, g.workspace_id, g.region, g.operator, ",".join(g.scope), "read-write" if g.write else "read-only", g.state,
            f"{g.expires_at:%Y-%m-%d %H:%M %Z}" if g.expires_at else "", (g.state_reason or "")[:60])


def _with_control(c: Context, call: Callable[[Any, Any], Any]) -> Any:
    """``call(control connection, connections)`` inside one control-plane connection."""
    conns, conn = _control(c)
    with conn:
        return call(conn, conns)


@main.group(cls=ResidencyGroup)
def access() -> None:
    """Operator access: a support engineer sees one workspace's rows, with the customer's consent."""


@access.command("request")
@click.argument("workspace")
@click.option("--operator", required=True, metavar="EMAIL", help="Who will look (checked against operator_access in regions.yaml).")
@click.option("--scope", required=True, metavar="TABLES|all", help="Comma-separated tables, or all.")
@click.option("--write", is_flag=True, help="Ask to change rows too (read-only otherwise).")
@click.option("--for", "duration", required=True, metavar="DURATION", help="How long, e.g. 1h, 4h, 90m.")
@click.option("--reason", required=True, help="Why (shown to the customer, kept in the audit log).")
@json_option
@pass_ctx
def access_request(c: Context, workspace: str, operator: str, scope: str, write: bool, duration: str, reason: str, as_json: bool) -> None:
    """Ask for access; the customer is sent a one-time consent token (exit 1 if policy refuses).

    \b
    Examples:
      residency access request 1000000000001 --operator ann@us.support.example.com --scope messages --for 1h --reason 'ticket 4711'
      residency access request 1000000000001 --operator ann@us.support.example.com --scope all --write --for 4h --reason 'data fix' --json
    """
    from residency.access import lifecycle

    conns, conn = _control(c)
    n = _notifier(conns)
    with conn:
        r = lifecycle.request(conn, c.catalogue, conns, workspace, operator, scope, duration=duration, reason=reason,
                              write=write, deliver=n.enabled)
    n.submit([r.notice_id])
    n.flush(5)
    if as_json:
        emit_json({**_jsonable(r.grant.public()), "dsn": r.dsn, "notice_id": r.notice_id})
        return
    click.echo(f"access {r.grant.id} pending: {r.grant.operator} → workspace {r.grant.workspace_id} in {r.grant.region}"
               f" ({','.join(r.grant.scope)}, {'read-write' if r.grant.write else 'read-only'}, {duration})")
    click.echo(f"the customer was sent a consent token (notice {r.notice_id}); an approver may instead run"
               f" `residency access approve {r.grant.id}`")
    click.echo(f"once consented, connect with: psql '{r.dsn}'")
    click.echo(f"password: run `residency access password {r.grant.id}` as {r.grant.requested_by} (shown once)")


@access.command("approve")
@click.argument("access_id")
@json_option
@pass_ctx
def access_approve(c: Context, access_id: str, as_json: bool) -> None:
    """Consent on the customer's behalf (residency_approver, not the role that asked), then grant.

    \b
    Examples:
      residency access approve 3
    """
    _consent(c, as_json, "approve", access_id)


@access.command("consent")
@click.argument("token")
@json_option
@pass_ctx
def access_consent(c: Context, token: str, as_json: bool) -> None:
    """Consent by redeeming the one-time token of the customer's notice, then grant.

    \b
    Examples:
      residency access consent 0sV3kq9Xc2TOKEN
    """
    _consent(c, as_json, "consent", token)


def _consent(c: Context, as_json: bool, how: str, what: str) -> None:
    """``how``: ``approve`` (an access id) or ``consent`` (a token); then the grant is printed."""
    from residency.access import lifecycle

    g = _with_control(c, lambda conn, conns: getattr(lifecycle, how)(conn, c.catalogue, conns, what))
    if as_json:
        emit_json(_jsonable(g.public()))
        return
    click.echo(f"access {g.id} granted to {g.operator} in {g.region} until {g.expires_at:%Y-%m-%d %H:%M:%S %Z}"
               f" (consent by {g.consent['by']} via {g.consent['via']}); role {g.role_name}")


@access.command("password")
@click.argument("access_id")
@json_option
@pass_ctx
def access_password(c: Context, access_id: str, as_json: bool) -> None:
    """A fresh password for a granted access, for the role that asked; shown once, never stored.

    \b
    Examples:
      residency access password 3
    """
    from residency.access import lifecycle

    secret = _with_control(c, lambda conn, conns: lifecycle.password(conn, conns, access_id))
    emit_json({"access_id": int(access_id), "password": secret}) if as_json else click.echo(secret)


@access.command("list")
@click.option("--active", is_flag=True, help="Only granted, unexpired access.")
@click.option("--workspace", default=None)
@json_option
@pass_ctx
def access_list(c: Context, active: bool, workspace: str | None, as_json: bool) -> None:
    """Access requests and grants, newest first.

    \b
    Examples:
      residency access list --active
      residency access list --workspace 1000000000001 --json
    """
    from residency import grants

    rows = _with_control(c, lambda conn, _: grants.list_grants(conn, active=active, workspace_id=workspace))
    emit_json([_jsonable(g.public()) for g in rows]) if as_json else click.echo(table(_HEADERS, [_row(g) for g in rows]))


@access.command("show")
@click.argument("access_id")
@json_option
@pass_ctx
def access_show(c: Context, access_id: str, as_json: bool) -> None:
    """One access: scope, consent (who, how, when), the grant's life in the audit log.

    \b
    Examples:
      residency access show 3
    """
    from residency.access import lifecycle

    d = _with_control(c, lambda conn, _: lifecycle.show(conn, access_id))
    if as_json:
        emit_json(_jsonable(d))
        return
    cons, exp = d["consent"] or {}, d["expires_at"]
    fields = (
        ("access", f"{d['id']}: {d['operator']} → workspace {d['workspace_id']} in {d['region']}"),
        ("scope", f"{','.join(d['scope'])} ({'read-write' if d['write'] else 'read-only'}) for {format_duration(d['duration_seconds'])}"),
        ("reason", d["reason"]),
        ("state", d["state"] + (f": {d['state_reason']}" if d["state_reason"] else "")),
        ("requested by", f"{d['requested_by']} at {d['created_at']:%Y-%m-%d %H:%M:%S %Z}"),
        ("consent", f"{cons['by']} via {cons['via']} at {cons['at']}" if cons else "-"),
        ("role", (d["role_name"] or "-") + (f", expires {exp:%Y-%m-%d %H:%M:%S %Z}" if exp else "")),
    )
    out = [f"{label:<13} {value}" for label, value in fields] + ["audit"]
    out += [f"  {e['seq']:>6}  {e['at'][:19]}  {e['action']:<22} {e['actor']}" for e in d["audit"]]
    click.echo("\n".join(out))


@access.command("revoke")
@click.argument("access_id")
@json_option
@pass_ctx
def access_revoke(c: Context, access_id: str, as_json: bool) -> None:
    """End an access now: the role can't log in, its sessions end, its views are dropped.

    \b
    Examples:
      residency access revoke 3
    """
    from residency.access import lifecycle

    g = _with_control(c, lambda conn, conns: lifecycle.revoke(conn, conns, access_id))
    emit_json(_jsonable(g.public())) if as_json else click.echo(f"access {g.id} {g.state}: {g.state_reason}")


@access.command("sweep")
@json_option
@pass_ctx
def access_sweep(c: Context, as_json: bool) -> None:
    """End expired grants and unconsented requests whose token expired; drop orphaned roles.

    \b
    Examples:
      residency access sweep
      residency access sweep --json
    """
    from residency.access import lifecycle

    ended = _with_control(c, lambda conn, conns: lifecycle.sweep_expired(conn, conns))
    if as_json:
        emit_json([_jsonable(g.public()) for g in ended])
    else:
        click.echo(f"{len(ended)} access{'es' if len(ended) != 1 else ''} ended" + "".join(f"\n  {g.id} {g.state}: {g.state_reason}" for g in ended))
