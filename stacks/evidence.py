"""Build the evidence pack of a region's deploys (format ``residency-deploy-evidence/1``; the
format and its offline checker: :mod:`residency.evidence`).

Every ``residency stacks up`` appends a ``stack.deployed`` entry per stack (:mod:`.deploys`). The
pack of stack ``<env>-<region>`` holds those entries (all, the last ``N``, or one by its sequence
number), one ``deploys`` line per entry (when, the regions.yaml commit and SHA-256, the outputs
digest, the changes), the stack's placement, the signed digests covering the entries and the
public key, sealed with the audit key, in the same canonical file as a move's pack.
"""

from __future__ import annotations

import os
from typing import Any

from residency import anchor, audit, db, evidence, packing
from residency.catalogue import Catalogue
from residency.connections import Connections
from residency.errors import InputError, OperationError

from . import deploys
from .names import env_name, stack_name

ACTION = "stack.deployed"


def stack_of(cat: Catalogue, region: str, env: str | None = None, *, last: int | None = None, seq: int | None = None) -> str:
    """The stack whose deploys a pack would hold, once the request is checked (before any connection)."""
    if last is not None and seq is not None:
        raise InputError("give either --last N or --seq S, not both")
    if last is not None and last < 1:
        raise InputError(f"--last must be at least 1, not {last}")
    return stack_name(env_name(env), cat.region(region).name)


def _choose(entries: list[audit.Entry], stack: str, last: int | None, seq: int | None) -> list[audit.Entry]:
    if seq is not None:
        chosen = [e for e in entries if e.seq == seq]
        if not chosen:
            raise InputError(f"entry {seq} is not a deploy of stack {stack}"
                             + (f" (its deploys: {', '.join(str(e.seq) for e in entries[-5:])})" if entries else ""))
        return chosen
    return entries[-last:] if last is not None else entries


def build(conns: Connections, cat: Catalogue, region: str, env: str | None = None, *, last: int | None = None,
          seq: int | None = None) -> dict[str, Any]:
    """The pack of the deploys of stack ``<env>-<region>``: all of them, the ``last`` N, or entry ``seq``."""
    stack = stack_of(cat, region, env, last=last, seq=seq)
    r, env = cat.region(region), env_name(env)
    cfg = anchor.require(conns.anchor)
    with db.connect(conns.control_dsn, autocommit=True) as cp:
        entries = [e for e in audit.entries(cp, deploys.subject(stack)) if e.action == ACTION]
    if not entries:
        raise OperationError(f"stack {stack} has no deploy in the audit log (`residency stacks up --env {env} --region {r.name}` records one)")
    seg = packing.segment(conns.control_dsn, cfg, _choose(entries, stack, last, seq), f"stack {stack}")
    return packing.assemble(cfg, evidence.DEPLOY_FORMAT, {
        "stack": {"name": stack, "env": env, "region": r.name, "aws_region": r.aws_region, "backup_region": r.backup_region,
                  "jurisdiction": r.jurisdiction},
        "deploys": [{"seq": e.seq, "at": packing.entry_dict(e)["at"], "regions_yaml": e.details.get("regions_yaml"),
                     "outputs_sha256": e.details.get("outputs_sha256"), "changes": e.details.get("changes")} for e in seg.entries],
    }, seg)


def write(conns: Connections, cat: Catalogue, region: str, out: str | os.PathLike[str], env: str | None = None, *,
          last: int | None = None, seq: int | None = None) -> dict[str, Any]:
    """Build the pack and write it to ``out`` whole (nothing half-written)."""
    packing.target(out)
    pack = build(conns, cat, region, env, last=last, seq=seq)
    return {**packing.write(pack, out), "stack": pack["stack"]["name"], "deploys": len(pack["deploys"])}
