"""Signed digests of the audit chain, checked without a database or a network.

A digest is what CloudTrail's log-file integrity validation writes, for the audit chain: every
so often (and at the end of every move) the entries appended since the previous digest are
listed by sequence number and hash, with the chain's head, the previous digest's hash and the
time, and signed with an asymmetric KMS key. Digests are stored in an S3 bucket with Object Lock
in compliance mode (see :mod:`residency.anchor`), so nobody, not even an administrator of the
control-plane database, can rewrite the chain without the digests disagreeing.

The body of digest number ``n`` (JSON)::

    {"format": "residency-audit-digest/1", "number": n, "first_seq": a, "last_seq": b,
     "entries": [[a, "<hash of entry a>"], ..., [b, "<hash of entry b>"]],
     "head_hash": "<hash of entry b>", "previous_digest_hash": "<sha256 of digest n-1's body>",
     "created_at": "<UTC ISO time>", "key_id": "<KMS key ARN>", "signing_algorithm": "ECDSA_SHA_256"}

Its hash is the SHA-256 of its canonical bytes (:func:`canonical`: keys sorted, no spaces,
UTF-8). The signature (base64, DER ECDSA P-256 over SHA-256) is over the ASCII message
``residency-audit-digest/1\\n<hash>``. Digest 1's ``previous_digest_hash`` is 64 zeros; an empty
digest (nothing appended) has ``first_seq = last_seq + 1`` and no entries.

Everything here is pure: the functions take the digests, the public key and the entries, and
return problems, each naming the first entry it concerns.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

FORMAT = "residency-audit-digest/1"
ALGORITHM = "ECDSA_SHA_256"
KEY_SPEC = "ECC_NIST_P256"
GENESIS = "0" * 64


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def body_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(body)).hexdigest()


def signing_message(digest_hash: str) -> bytes:
    """What the KMS key signs (RAW, at most 4096 bytes whatever the size of the digest)."""
    return f"{FORMAT}\n{digest_hash}".encode()


def fingerprint(public_key_der: bytes) -> str:
    """SHA-256 of the public key's DER SubjectPublicKeyInfo: what a customer compares."""
    return hashlib.sha256(public_key_der).hexdigest()


def load_public_key(der_or_pem: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization

    if der_or_pem.lstrip().startswith(b"-----BEGIN"):
        return serialization.load_pem_public_key(der_or_pem)
    return serialization.load_der_public_key(der_or_pem)


def to_pem(der: bytes) -> str:
    from cryptography.hazmat.primitives import serialization

    return load_public_key(der).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def signature_ok(public_key: Any, body: dict[str, Any], signature_b64: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        sig = base64.b64decode(signature_b64, validate=True)
        public_key.verify(sig, signing_message(body_hash(body)), ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


@dataclass(frozen=True)
class Problem:
    seq: int | None
    """The first audit entry the problem concerns (None: not tied to an entry)."""
    text: str


@dataclass
class DigestCheck:
    problems: list[Problem] = field(default_factory=list)
    covered: dict[int, tuple[str, int]] = field(default_factory=dict)
    """seq -> (hash signed for it, digest number), from the digests that checked out."""
    last_seq: int = 0
    digests: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_seq(self) -> int | None:
        seqs = [p.seq for p in self.problems if p.seq is not None]
        return min(seqs) if seqs else None


def check_digests(stored: Iterable[dict[str, Any]], public_key: Any, *, key_id: str | None = None, from_start: bool = True) -> DigestCheck:
    """Check signed digests (``{"name", "digest", "signature"}`` each) in number order: signature by
    ``public_key``, the key they name, numbering without gaps, each linked to the one before it
    and covering the entries right after it. ``from_start``: the set must begin at digest 1 (the
    whole log); otherwise it may be a contiguous run (an evidence pack's)."""
    res = DigestCheck()
    items = []
    for s in stored:
        body = s.get("digest")
        if not isinstance(body, dict) or body.get("format") != FORMAT or not isinstance(body.get("number"), int):
            res.problems.append(Problem(None, f"digest {s.get('name', '?')}: not a {FORMAT} digest"))
            continue
        items.append(s)
    items.sort(key=lambda s: s["digest"]["number"])
    prev: dict[str, Any] | None = None
    for s in items:
        d = s["digest"]
        n, first, last = d["number"], d.get("first_seq"), d.get("last_seq")
        name = f"digest {n}"
        res.digests += 1
        bad = False
        if not signature_ok(public_key, d, str(s.get("signature", ""))):
            res.problems.append(Problem(first, f"{name} (entries {first}..{last}): the signature does not verify with the audit key"
                                        " (signed by another key, or edited after signing)"))
            bad = True
        elif key_id is not None and d.get("key_id") != key_id:
            res.problems.append(Problem(first, f"{name}: names key {d.get('key_id')}, not the audit key {key_id}"))
            bad = True
        entries = d.get("entries") or []
        seqs = [e[0] for e in entries]
        ranged = isinstance(first, int) and isinstance(last, int)
        if not ranged or seqs != list(range(first, last + 1)):
            res.problems.append(Problem(first if isinstance(first, int) else None, f"{name}: its entries are not {first}..{last} in order"))
            bad = True
        elif entries and d.get("head_hash") != entries[-1][1]:
            res.problems.append(Problem(last, f"{name}: head hash differs from entry {last}'s"))
            bad = True
        expected_n = 1 if prev is None and from_start else (prev["number"] + 1 if prev else n)
        if n != expected_n:
            lo = (prev["last_seq"] + 1) if prev else 1
            res.problems.append(Problem(lo, f"digest {expected_n}{'..' + str(n - 1) if n - 1 > expected_n else ''} missing (deleted?):"
                                        f" entries from {lo} to {first - 1} are not anchored"))
        elif prev is not None or from_start:
            want_prev = body_hash(prev) if prev else GENESIS
            if d.get("previous_digest_hash") != want_prev:
                res.problems.append(Problem(first, f"{name}: does not link to digest {n - 1} (previous digest hash differs: replaced?)"))
            if first != (prev["last_seq"] + 1 if prev else 1):
                res.problems.append(Problem(first, f"{name}: starts at entry {first}, not {(prev['last_seq'] + 1) if prev else 1}"))
        if not bad:
            for seq, h in entries:
                res.covered[seq] = (h, n)
        prev = d
        res.last_seq = max(res.last_seq, last if isinstance(last, int) else 0)
    return res


def check_entries(entries: Iterable[tuple[int, str, str]], check: DigestCheck, *, complete: bool = True) -> list[Problem]:
    """Compare entries (seq, hash, label) with what the digests signed. ``complete``: ``entries``
    is the whole log, so a signed entry that is absent was deleted."""
    problems: list[Problem] = []
    seen: set[int] = set()
    for seq, h, label in entries:
        seen.add(seq)
        signed = check.covered.get(seq)
        if signed is not None and signed[0] != h:
            problems.append(Problem(seq, f"entry {seq} ({label}): differs from the hash signed in digest {signed[1]} (edited and re-hashed?)"))
    if complete:
        missing = sorted(s for s in check.covered if s not in seen)
        if missing:
            n = check.covered[missing[0]][1]
            problems.append(Problem(missing[0], f"entries {missing[0]}..{missing[-1]} are signed in digest {n} and later but missing"
                                    f" from the log ({len(missing)} entries: tail cut and head rewritten?)" if len(missing) > 1 else
                                    f"entry {missing[0]} is signed in digest {n} but missing from the log (deleted?)"))
    return problems
