"""Build a move's evidence pack (the format and its offline verifier: :mod:`residency.evidence`).

The pack holds the plan, the per-table verification, the deletion record, the move's audit
entries, the signed digests that cover them and the public key, sealed with the audit key
(:mod:`residency.packing` does what every pack shares). When the move's last entries are not yet
covered by a digest, one is written first.
"""

from __future__ import annotations

import os
from typing import Any

from residency import anchor, audit, db, evidence, moves, packing
from residency.connections import Connections


def build(conns: Connections, move_id: int) -> dict[str, Any]:
    cfg = anchor.require(conns.anchor)
    with db.connect(conns.control_dsn, autocommit=True) as cp:
        rec = moves.get(cp, move_id)
        entries = list(audit.entries(cp, f"move/{rec.id}"))
    seg = packing.segment(conns.control_dsn, cfg, entries, f"move {move_id}")
    report = rec.report or {}
    return packing.assemble(cfg, evidence.MOVE_FORMAT, {
        "move": {"id": rec.id, "workspace_id": rec.workspace_id, "source": rec.source, "target": rec.target,
                 "strategy": rec.strategy, "state": rec.state, "created_at": rec.created_at.isoformat(), "created_by": rec.created_by},
        "plan": rec.plan,
        "verification": report.get("verify"),
        "deletion": report.get("deletion"),
    }, seg)


def write(conns: Connections, move_id: int, out: str | os.PathLike[str]) -> dict[str, Any]:
    """Build the pack and write it to ``out`` whole (nothing half-written)."""
    packing.target(out)
    return packing.write(build(conns, move_id), out)
