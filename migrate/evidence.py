"""Build a move's evidence pack (the format and its offline verifier: :mod:`residency.evidence`).

The pack holds the plan, the per-table verification, the deletion record, the move's audit
entries, the signed digests that cover them and the public key, sealed with the audit key. When
the move's last entries are not yet covered by a digest, one is written first.
"""

from __future__ import annotations

import base64
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from residency import anchor, audit, db, evidence, moves
from residency.connections import Connections
from residency.errors import InputError, OperationError


def build(conns: Connections, move_id: int) -> dict[str, Any]:
    cfg = anchor.require(conns.anchor)
    with db.connect(conns.control_dsn, autocommit=True) as cp:
        rec = moves.get(cp, move_id)
        subject = f"move/{rec.id}"
        entries = list(audit.entries(cp, subject))
        if not entries:
            raise OperationError(f"move {move_id} has no audit entries")
        stored = anchor.read_digests(cfg)
        if stored.problems:
            raise OperationError(f"the audit digests are not intact: {stored.problems[0].text}; run `residency audit verify`")
        last = max((s["digest"]["last_seq"] for s in stored.items), default=0)
        if last < entries[-1].seq:
            anchor.write_digest(cp, cfg)
            stored = anchor.read_digests(cfg)
    items = sorted(stored.items, key=lambda s: s["digest"]["number"])
    first_seq, last_seq = entries[0].seq, entries[-1].seq
    run = [s for s in items if s["digest"]["last_seq"] >= first_seq and s["digest"]["first_seq"] <= last_seq]
    if run:  # a run without gaps, from the first digest covering the move to the last
        lo, hi = run[0]["digest"]["number"], run[-1]["digest"]["number"]
        run = [s for s in items if lo <= s["digest"]["number"] <= hi]
    key = anchor.public_key(cfg)
    report = rec.report or {}
    pack: dict[str, Any] = {
        "format": evidence.FORMAT,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "move": {"id": rec.id, "workspace_id": rec.workspace_id, "source": rec.source, "target": rec.target,
                 "strategy": rec.strategy, "state": rec.state, "created_at": rec.created_at.isoformat(), "created_by": rec.created_by},
        "plan": rec.plan,
        "verification": report.get("verify"),
        "deletion": report.get("deletion"),
        "audit_entries": [
            {"seq": e.seq, "at": e.at.astimezone(timezone.utc).isoformat(timespec="microseconds"), "actor": e.actor, "origin": e.origin,
             "action": e.action, "subject": e.subject, "details": e.details, "prev_hash": e.prev_hash, "hash": e.hash}
            for e in entries
        ],
        "digests": [{"name": s["name"], "digest": s["digest"], "signature": s["signature"]} for s in run],
        "public_key": key.to_dict(),
    }
    pack = evidence._roundtrip(pack)
    sections = {name: evidence.section_hash(pack.get(name)) for name in evidence.SECTIONS}
    sig = anchor.client(cfg, "kms").sign(KeyId=cfg.kms_key_id, Message=evidence.seal_message(sections), MessageType="RAW",
                                         SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    pack["seal"] = {"sections": sections, "signature": base64.b64encode(sig).decode()}
    return pack


def write(conns: Connections, move_id: int, out: str | os.PathLike[str]) -> dict[str, Any]:
    """Build the pack and write it to ``out`` whole (a temporary file renamed: nothing half-written)."""
    path = Path(out)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a file name")
    pack = build(conns, move_id)
    data = evidence.dumps(pack)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file for the customer, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"path": str(path), "bytes": len(data), "entries": len(pack["audit_entries"]), "digests": len(pack["digests"]),
            "key_fingerprint": pack["public_key"]["sha256_fingerprint"]}
