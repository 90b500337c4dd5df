"""Evidence packs: one file a customer checks offline (no database, no network).

Two kinds share one canonical form, one seal and this one checker; only their record sections
differ (:data:`FORMATS`):

- a **move's** pack (``residency move evidence ID --out FILE``, built by :mod:`migrate.evidence`),
  format ``residency-evidence-pack/1``;
- a **region's deploys** (``residency stacks evidence REGION --out FILE``, built by
  :mod:`stacks.evidence`), format ``residency-deploy-evidence/1``.

A pack is JSON, written canonically (:func:`dumps`: keys sorted, one-space indent, ASCII, a final
newline), so that every byte is significant. Every pack has::

    format          which kind, above
    generated_at    when the pack was made (UTC)
    ...             the kind's record sections (below)
    audit_entries   the subject's entries of the audit chain: seq, at, actor, origin, action,
                    subject, details, prev_hash, hash
    digests         the signed digests covering those entries (see residency.digests), a run
                    without gaps
    public_key      key_id, signing_algorithm (ECDSA_SHA_256), pem, sha256_fingerprint
    seal            sections: the SHA-256 of each section above (canonical JSON); signature:
                    the audit key's signature over "<format>\\n<SHA-256 of the canonical
                    sections object>"

A move's records: ``move`` (id, workspace_id, source, target, strategy, state, created_at,
created_by), ``plan``, ``verification`` (per table: rows and checksums on both sides; objects) and
``deletion`` (the deletion record, or null before cleanup). The audit subject is ``move/<id>``.

A deploy pack's records: ``stack`` (name ``<env>-<region>``, env, region, aws_region,
backup_region, jurisdiction) and ``deploys`` (per ``stack.deployed`` entry: seq, at, the
regions.yaml commit and SHA-256, the SHA-256 of the stack's outputs, the changes). The audit
subject is ``stack/<env>-<region>``.

:func:`verify` checks: the canonical form; the public key and its fingerprint (and, given one,
that it is the key the customer was told about); every digest's signature, numbering and links;
every entry's hash (recomputed from its fields as :func:`residency.audit.entry_hash`), its subject,
its link to the entry before it when that one is in the pack too, and that a digest signed it;
then the kind's records against the entries that vouch for them (a move's plan, verification and
deletion record are the ones the chain recorded, by SHA-256, and their counts add up; a deploy's
regions.yaml commit and outputs digest are the ones its entry recorded); and the seal over every
section.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from . import digests

MOVE_FORMAT = "residency-evidence-pack/1"
DEPLOY_FORMAT = "residency-deploy-evidence/1"
FORMAT = MOVE_FORMAT  # the first kind; kept for callers that predate the deploy pack
_COMMON = ("format", "generated_at", "audit_entries", "digests", "public_key")
SECTIONS = _COMMON[:2] + ("move", "plan", "verification", "deletion") + _COMMON[2:]
DEPLOY_SECTIONS = _COMMON[:2] + ("stack", "deploys") + _COMMON[2:]


def _roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def section_hash(value: Any) -> str:
    """SHA-256 of a section's canonical JSON (as it reads back from jsonb)."""
    return hashlib.sha256(digests.canonical(_roundtrip(value))).hexdigest()


def seal_message(sections: dict[str, str], fmt: str = MOVE_FORMAT) -> bytes:
    """What the audit key signs to seal a pack of kind ``fmt``: ``<fmt>\\n<SHA-256 of the sections' hashes>``."""
    return f"{fmt}\n{hashlib.sha256(digests.canonical(sections)).hexdigest()}".encode()


def sections_of(pack: dict[str, Any]) -> dict[str, str]:
    """The SHA-256 of each section of ``pack``'s kind (what the seal covers)."""
    return {name: section_hash(pack.get(name)) for name in FORMATS[pack["format"]].sections}


def dumps(pack: dict[str, Any]) -> bytes:
    """The canonical bytes of a pack."""
    return (json.dumps(pack, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode()


@dataclass
class PackCheck:
    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    move_id: int | None = None
    key_fingerprint: str | None = None
    format: str | None = None
    label: str = "evidence"
    """What the pack is of, for a person: ``move 3``, ``stack production-eu``."""

    @property
    def ok(self) -> bool:
        return not self.problems


def _where(data: bytes, pos: int) -> str:
    line = data.count(b"\n", 0, pos) + 1
    col = pos - (data.rfind(b"\n", 0, pos) + 1) + 1
    return f"byte {pos} (line {line}, column {col})"


def verify(data: bytes, *, pinned_key: bytes | None = None) -> PackCheck:
    """Check a pack's bytes offline. ``pinned_key``: the audit key's public key (PEM or DER) as
    published to the customer; without it the pack's own key is used and its fingerprint shown."""
    out = PackCheck()
    try:
        pack = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        out.problems.append(f"not UTF-8 at {_where(data, exc.start)}")
        return out
    except ValueError as exc:
        out.problems.append(f"not valid JSON: {exc}")
        return out
    kind = FORMATS.get(pack.get("format")) if isinstance(pack, dict) else None  # type: ignore[arg-type]
    if kind is None:
        out.problems.append(f"not an evidence pack (format is none of {', '.join(FORMATS)})")
        return out
    out.format = kind.name
    canon = dumps(pack)
    if canon != data:
        pos = next((i for i, (a, b) in enumerate(zip(canon, data)) if a != b), min(len(canon), len(data)))
        out.problems.append(f"not in canonical form at {_where(data, pos)} (edited?)")
    subject = kind.subject(pack)
    out.label = subject.replace("/", " ", 1)

    # -- the key
    pk = pack.get("public_key") or {}
    try:
        key = digests.load_public_key(str(pk.get("pem", "")).encode())
        from cryptography.hazmat.primitives import serialization

        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    except Exception:  # noqa: BLE001 - any unreadable key is the same finding
        out.problems.append("public_key: the PEM is not a readable public key")
        return out
    fp = digests.fingerprint(der)
    out.key_fingerprint = fp
    if pk.get("sha256_fingerprint") != fp:
        out.problems.append(f"public_key: sha256_fingerprint {pk.get('sha256_fingerprint')} is not the key's ({fp})")
    if pinned_key is not None:
        pinned = digests.load_public_key(pinned_key)
        from cryptography.hazmat.primitives import serialization

        pder = pinned.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if pder != der:
            out.problems.append(f"public_key: not the pinned audit key (pack {fp[:16]}, pinned {digests.fingerprint(pder)[:16]})")
            key = pinned
    out.facts.append(f"audit key {pk.get('key_id')} sha256 {fp}")

    # -- the seal over every section
    seal = pack.get("seal") or {}
    sections = seal.get("sections") or {}
    for name in kind.sections:
        if sections.get(name) != section_hash(pack.get(name)):
            out.problems.append(f"{name}: differs from the sealed hash (edited after the pack was made)")
    extra = sorted(set(pack) - set(kind.sections) - {"seal"})
    if extra:
        out.problems.append(f"unsealed sections: {', '.join(extra)}")
    if not _sig_ok(key, seal_message(sections, kind.name), str(seal.get("signature", ""))):
        out.problems.append("seal: the signature does not verify with the audit key")

    # -- digests
    check = digests.check_digests(pack.get("digests") or [], key, key_id=pk.get("key_id"), from_start=False)
    out.problems += [f"digests: {p.text}" for p in check.problems]
    if check.digests:
        out.facts.append(f"{check.digests} signed digests, entries {min(check.covered, default=0)}..{max(check.covered, default=0)}")

    # -- the subject's audit entries
    from .audit import entry_hash

    entries = pack.get("audit_entries") or []
    by_seq: dict[int, dict[str, Any]] = {}
    for e in entries:
        seq = e.get("seq")
        label = f"entry {seq} ({e.get('action')} {e.get('subject')})"
        try:
            h = entry_hash(seq, datetime.fromisoformat(e["at"]), e["actor"], e["origin"], e["action"], e["subject"], e["details"], e["prev_hash"])
        except (KeyError, TypeError, ValueError):
            out.problems.append(f"{label}: fields missing or malformed")
            continue
        if h != e.get("hash"):
            out.problems.append(f"{label}: content does not match its hash (edited?)")
        signed = check.covered.get(seq)
        if signed is None:
            out.problems.append(f"{label}: not covered by a signed digest in the pack")
        elif signed[0] != e.get("hash"):
            out.problems.append(f"{label}: differs from the hash signed in digest {signed[1]}")
        if e.get("subject") != subject:
            out.problems.append(f"{label}: not an entry of {subject}")
        prev = by_seq.get(seq - 1) if isinstance(seq, int) else None
        if prev is not None and e.get("prev_hash") != prev.get("hash"):
            out.problems.append(f"{label}: does not link to entry {seq - 1}")
        by_seq[seq] = e
    if entries:
        out.facts.append(f"{len(entries)} audit entries of {subject}, each signed")
    kind.check(pack, entries, out)
    return out


def _check_move(pack: dict[str, Any], entries: list[dict[str, Any]], out: PackCheck) -> None:
    """A move's records: the entries its state requires, the plan, verification and deletion record
    bound to the entries that recorded their SHA-256, and their counts."""
    move = pack.get("move") or {}
    out.move_id = move.get("id")
    actions = {e.get("action"): e for e in entries}
    state = move.get("state")
    needed = ["move.planned"] + (["move.verified", "move.cut_over"] if state in ("cut_over", "cleaned") else []) \
        + (["move.cleaned"] if state == "cleaned" else []) + (["move.rolled_back"] if state == "rolled_back" else [])
    for action in needed:
        if action not in actions:
            out.problems.append(f"audit_entries: the move is {state} but its {action} entry is missing (entries deleted?)")

    # -- the records, bound to the chain, and their counts
    def bound(section: str, action: str, key_name: str) -> None:
        e = actions.get(action)
        if e is None:
            out.problems.append(f"{section}: no {action} entry in the pack to vouch for it")
        elif (e.get("details") or {}).get(key_name) != section_hash(pack.get(section)):
            out.problems.append(f"{section}: differs from the one entry {e.get('seq')} ({action}) recorded ({key_name})")

    plan = pack.get("plan") or {}
    bound("plan", "move.planned", "plan_sha256")
    rows = sum(int(t.get("rows", 0)) for t in plan.get("tables") or [])
    if plan.get("total_rows") != rows:
        out.problems.append(f"plan: total_rows {plan.get('total_rows')} is not the sum of its tables ({rows})")
    ver = pack.get("verification") or {}
    bound("verification", "move.verified", "verification_sha256")
    for t in ver.get("tables") or []:
        name = t.get("table")
        same = t.get("source_rows") == t.get("target_rows") and (t.get("kind") == "global" or t.get("source_checksum") == t.get("target_checksum"))
        if t.get("ok") and not same:
            out.problems.append(f"verification: table {name} is marked ok but its rows or checksums differ between source and target")
    if ver.get("ok") and not all(t.get("ok") for t in ver.get("tables") or []):
        out.problems.append("verification: marked ok with a table not ok")
    if ver:
        out.facts.append(f"verification: {len(ver.get('tables') or [])} tables, {'all equal' if ver.get('ok') else 'NOT all equal'} in source and target")
    d = pack.get("deletion")
    if d is not None:
        bound("deletion", "move.cleaned", "record_sha256")
        trows = sum(int(v.get("rows", 0)) for v in (d.get("tables") or {}).values())
        if d.get("rows") != trows:
            out.problems.append(f"deletion: rows {d.get('rows')} is not the sum of its tables ({trows})")
        vs = d.get("object_versions") or []
        if d.get("versions_deleted") != sum(1 for v in vs if v.get("kind") == "version"):
            out.problems.append("deletion: versions_deleted does not match the versions listed")
        if d.get("delete_markers_deleted") != sum(1 for v in vs if v.get("kind") == "delete_marker"):
            out.problems.append("deletion: delete_markers_deleted does not match the delete markers listed")
        held = [h.get("until") for h in d.get("still_held") or []]
        if d.get("no_copy_after") != max(held, default=d.get("deleted_at")):
            out.problems.append("deletion: no_copy_after is not the latest date in still_held")
        e = actions.get("move.cleaned")
        if e is not None and (e.get("details") or {}).get("rows") != d.get("rows"):
            out.problems.append(f"deletion: rows {d.get('rows')} differ from entry {e.get('seq')} (move.cleaned)")
        out.facts.append(f"deletion: {d.get('rows')} rows, {len(vs)} object versions and delete markers in {d.get('region')};"
                         f" no copy after {d.get('no_copy_after')}")
    elif move.get("state") == "cleaned":
        out.problems.append("deletion: the move is cleaned but the pack has no deletion record")


def _check_deploys(pack: dict[str, Any], entries: list[dict[str, Any]], out: PackCheck) -> None:
    """A region's deploys: one ``stack.deployed`` entry per deploy listed, each deploy's regions.yaml
    commit and SHA-256 and outputs digest the ones its entry recorded, for this stack."""
    stack = pack.get("stack") or {}
    name = stack.get("name")
    if name != f"{stack.get('env')}-{stack.get('region')}":
        out.problems.append(f"stack: name {name} is not <env>-<region> ({stack.get('env')}-{stack.get('region')})")
    if not entries:
        out.problems.append(f"audit_entries: no stack.deployed entry of {name}")
    by_seq = {e.get("seq"): e for e in entries}
    listed = pack.get("deploys") or []
    if [d.get("seq") for d in listed] != [e.get("seq") for e in entries]:
        out.problems.append("deploys: not one per audit entry, in order (" + ", ".join(str(d.get("seq")) for d in listed) + ")")
    for d in listed:
        e = by_seq.get(d.get("seq"))
        if e is None:
            continue
        label = f"deploy {d.get('seq')}"
        details = e.get("details") or {}
        if e.get("action") != "stack.deployed":
            out.problems.append(f"{label}: entry {e.get('seq')} is {e.get('action')}, not stack.deployed")
        for key in ("regions_yaml", "outputs_sha256", "changes"):
            if d.get(key) != details.get(key):
                out.problems.append(f"{label}: {key} differs from the one entry {e.get('seq')} (stack.deployed) recorded")
        if d.get("at") != e.get("at"):
            out.problems.append(f"{label}: at differs from entry {e.get('seq')}'s")
        for key in ("stack", "env", "region"):
            want = name if key == "stack" else stack.get(key)
            if details.get(key) != want:
                out.problems.append(f"{label}: entry {e.get('seq')} is of {key} {details.get(key)}, not {want}")
    if listed:
        last = listed[-1]
        src = last.get("regions_yaml") or {}
        commit = src.get("commit") or "no commit"
        dirty = " (modified since that commit)" if src.get("modified_since_commit") else ""
        out.facts.append(f"{len(listed)} deploy{'s' if len(listed) != 1 else ''} of stack {name}; the last at {last.get('at')}:"
                         f" regions.yaml {commit}{dirty} sha256 {src.get('sha256')}, outputs sha256 {last.get('outputs_sha256')}")


@dataclass(frozen=True)
class PackFormat:
    """One kind of pack: its sections (the seal covers exactly these), the audit subject its
    entries must have, and the checks of its own records."""

    name: str
    sections: tuple[str, ...]
    subject: Callable[[dict[str, Any]], str]
    check: Callable[[dict[str, Any], list[dict[str, Any]], PackCheck], None]


FORMATS: dict[str, PackFormat] = {
    MOVE_FORMAT: PackFormat(MOVE_FORMAT, SECTIONS, lambda p: f"move/{(p.get('move') or {}).get('id')}", _check_move),
    DEPLOY_FORMAT: PackFormat(DEPLOY_FORMAT, DEPLOY_SECTIONS, lambda p: f"stack/{(p.get('stack') or {}).get('name')}", _check_deploys),
}


def _sig_ok(key: Any, message: bytes, signature_b64: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key.verify(base64.b64decode(signature_b64, validate=True), message, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False
