"""Making evidence packs (their format and offline checker: :mod:`residency.evidence`).

What every kind of pack shares, written once: the audit entries of a subject with the signed
digests that cover them (a digest is written first when the last entries are not yet covered),
the public key, the seal (the audit key's KMS signature over the sections' hashes) and the file,
written whole. A kind only supplies its record sections: :func:`assemble` does the rest.
"""

from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from . import anchor, audit, db, evidence
from .connections import AnchorConfig
from .errors import InputError, OperationError


@dataclass
class Segment:
    """Entries of the audit chain and the consecutive run of signed digests covering them."""

    entries: list[audit.Entry]
    digests: list[dict[str, Any]]


def entry_dict(e: audit.Entry) -> dict[str, Any]:
    """An entry as a pack holds it (``at`` in UTC with microseconds, as its hash covers it)."""
    return {"seq": e.seq, "at": e.at.astimezone(timezone.utc).isoformat(timespec="microseconds"), "actor": e.actor,
            "origin": e.origin, "action": e.action, "subject": e.subject, "details": e.details,
            "prev_hash": e.prev_hash, "hash": e.hash}


def segment(control_dsn: str, cfg: AnchorConfig, entries: Iterable[audit.Entry], what: str) -> Segment:
    """``entries`` (of one subject, in seq order) with the digests that cover them. Refuses when the
    stored digests are not intact; writes a digest first when the last entry is not yet covered."""
    chosen = list(entries)
    if not chosen:
        raise OperationError(f"{what} has no audit entries")
    stored = anchor.read_digests(cfg)
    if stored.problems:
        raise OperationError(f"the audit digests are not intact: {stored.problems[0].text}; run `residency audit verify`")
    last = max((s["digest"]["last_seq"] for s in stored.items), default=0)
    if last < chosen[-1].seq:
        with db.connect(control_dsn, autocommit=True) as cp:
            anchor.write_digest(cp, cfg)
        stored = anchor.read_digests(cfg)
    items = sorted(stored.items, key=lambda s: s["digest"]["number"])
    first_seq, last_seq = chosen[0].seq, chosen[-1].seq
    run = [s for s in items if s["digest"]["last_seq"] >= first_seq and s["digest"]["first_seq"] <= last_seq]
    if run:  # a run without gaps, from the first digest covering the entries to the last
        lo, hi = run[0]["digest"]["number"], run[-1]["digest"]["number"]
        run = [s for s in items if lo <= s["digest"]["number"] <= hi]
    return Segment(chosen, [{"name": s["name"], "digest": s["digest"], "signature": s["signature"]} for s in run])


def assemble(cfg: AnchorConfig, fmt: str, records: dict[str, Any], seg: Segment) -> dict[str, Any]:
    """A whole pack of kind ``fmt``: its ``records`` sections, the segment, the public key, sealed."""
    pack: dict[str, Any] = {
        "format": fmt,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **records,
        "audit_entries": [entry_dict(e) for e in seg.entries],
        "digests": seg.digests,
        "public_key": anchor.public_key(cfg).to_dict(),
    }
    pack = evidence._roundtrip(pack)
    sections = evidence.sections_of(pack)
    sig = anchor.client(cfg, "kms").sign(KeyId=cfg.kms_key_id, Message=evidence.seal_message(sections, fmt), MessageType="RAW",
                                         SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    pack["seal"] = {"sections": sections, "signature": base64.b64encode(sig).decode()}
    return pack


def target(out: str | os.PathLike[str]) -> Path:
    """Where a pack goes, refused before any work when it is a directory."""
    path = Path(out)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a file name")
    return path


def write(pack: dict[str, Any], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``pack`` canonically to ``out``, whole (a temporary file renamed: nothing half-written)."""
    path = target(out)
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
