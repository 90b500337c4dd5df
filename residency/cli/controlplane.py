"""`residency` CLI: the control-plane schema and its roles."""

from __future__ import annotations

from typing import Callable

import click

from residency.errors import InputError

from .core import Context, emit_json, json_option, main, pass_ctx, ResidencyGroup


@main.group(cls=ResidencyGroup)
def controlplane() -> None:
    """The control-plane database: its schema and the roles that may act on it."""


def _controlplane_roles(c: Context, logins: tuple[str, ...], as_json: bool, what: str, *, job_schema: bool = False) -> None:
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
            if job_schema:  # the job engine's tables (procrastinate), issue 14
                from residency.ops import jobs

                jobs.apply_schema(conn)
        except Exception as exc:
            import psycopg

            if isinstance(exc, (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidGrantOperation)):
                raise OperationError(f"{what} needs the owner of the control-plane schema with CREATEROLE (a superuser,"
                                     f" or the role that created it); {ident.role} is neither") from None
            raise
    if as_json:
        emit_json({"roles": roles, "logins": pairs, **({"job_schema": "residency_jobs"} if job_schema else {})})
        return
    click.echo(f"control plane ready: roles {', '.join(roles)}" + (f"; logins {', '.join(f'{k} ({v})' for k, v in pairs.items())}" if pairs else "")
               + ("; job engine schema residency_jobs" if job_schema else ""))


def _login_options(fn: Callable[..., None]) -> Callable[..., None]:
    """``--login NAME=ROLE`` (repeatable) and ``--json``: what init and roles both take."""
    fn = pass_ctx(fn)
    fn = json_option(fn)
    return click.option("--login", "logins", multiple=True, metavar="NAME=ROLE", help="Also create a login holding ROLE (repeatable).")(fn)


@controlplane.command("init")
@_login_options
def controlplane_init(c: Context, logins: tuple[str, ...], as_json: bool) -> None:
    """Create the control-plane schema and the four roles with their grants (admin; idempotent).

    \b
    Examples:
      residency controlplane init
      residency controlplane init --login alice=operator --login bob=approver
    """
    _controlplane_roles(c, logins, as_json, "initialising the control plane", job_schema=True)


@controlplane.command("roles")
@_login_options
def controlplane_roles(c: Context, logins: tuple[str, ...], as_json: bool) -> None:
    """Create (or refresh) residency_requester, _approver, _operator and _admin and their grants.

    \b
    Examples:
      residency controlplane roles --login support-bot=requester
    """
    _controlplane_roles(c, logins, as_json, "creating the control-plane roles")


@controlplane.command("whoami")
@json_option
@pass_ctx
def controlplane_whoami(c: Context, as_json: bool) -> None:
    """The role you are authenticated as in the control plane, and the residency roles it holds.

    \b
    Examples:
      residency controlplane whoami --json
    """
    from residency import authz
    from residency.db import connect

    with connect(c.connections.control_dsn, autocommit=True) as conn:
        ident = authz.identity(conn)
    if as_json:
        emit_json({"role": ident.role, "superuser": ident.superuser, "admin": ident.admin, "roles": sorted(ident.member_of)})
        return
    click.echo(f"{ident.role}: " + (", ".join(sorted(ident.member_of)) or "no residency role") + (" (superuser)" if ident.superuser else ""))
