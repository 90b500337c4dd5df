"""`residency` CLI: the audit log and evidence packs."""

from __future__ import annotations

import sys

import click

from residency.errors import InputError

from .core import (Context, ResidencyGroup, _conns,
                   emit_json, json_option, main, pass_ctx)


@main.group(cls=ResidencyGroup)
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@json_option
@pass_ctx
def audit_verify(c: Context, as_json: bool) -> None:
    """Walk the whole audit chain and check it against the signed digests; exit 1 if any entry
    was edited, re-hashed or removed, or a digest is missing or not signed by the audit key.

    \b
    Examples:
      residency audit verify
      residency audit verify --json
    """
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
@json_option
@pass_ctx
def audit_digest(c: Context, as_json: bool) -> None:
    """Sign a digest of the entries appended since the last one and store it in the Object Lock
    bucket, now (moves and the worker write them too). The key and bucket come from
    RESIDENCY_AUDIT_KMS_KEY / RESIDENCY_AUDIT_BUCKET, the connections file's audit: section, or the sandbox.

    \b
    Examples:
      residency audit digest
    """
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






@main.group(cls=ResidencyGroup)
def evidence() -> None:
    """Evidence packs, checked offline."""


@evidence.command("verify")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--key", "key_file", type=click.Path(dir_okay=False), help="The audit key's public key (PEM) as published to you: pin it.")
@json_option
def evidence_verify(file: str, key_file: str | None, as_json: bool) -> None:
    """Check an evidence pack with no database and no network: signatures, the audit entries and
    the digests that signed them, the records and their counts. Exit 1 naming what fails.

    \b
    Examples:
      residency evidence verify move-17.evidence.json --key audit-key.pem
    """
    from residency import evidence as evidence_mod

    try:
        data = open(file, "rb").read()
        pinned = open(key_file, "rb").read() if key_file else None
    except OSError as exc:
        raise InputError(f"{exc.filename}: {exc.strerror}") from None
    res = evidence_mod.verify(data, pinned_key=pinned)
    if as_json:
        emit_json({"ok": res.ok, "format": res.format, "of": res.label, "move_id": res.move_id, "problems": res.problems, "facts": res.facts,
                   "key_fingerprint": res.key_fingerprint})
    else:
        for f in res.facts:
            click.echo(f"ok: {f}")
        for p in res.problems:
            click.echo(f"FAILED: {p}")
        click.echo(f"{file}: {res.label}: " + ("evidence verified" if res.ok else f"NOT verified ({len(res.problems)} problems)"))
    if not res.ok:
        sys.exit(1)
