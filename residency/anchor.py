"""The audit chain anchored outside the database: signed digests in an Object Lock bucket.

:func:`write_digest` lists the entries appended since the last digest, signs the digest with the
asymmetric KMS key (``ECDSA_SHA_256``; the private key never leaves KMS) and writes it to
``s3://<bucket>/<prefix><number>.json`` in an Object Lock bucket (compliance mode: no one can
delete or overwrite a version before its retention ends). :func:`verify` walks the chain in the
database and checks it against every digest, with the public key fetched from KMS and the
signatures checked locally (:mod:`residency.digests`, the same code an evidence pack's verifier
uses). Digests are written at the end of every move, by the worker periodically
(:func:`digest_if_due`), and on demand (``residency audit digest``).

In production the key and the bucket come from the stacks (``stacks.anchor.AuditAnchor``); in
the sandbox from moto.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from . import audit, digests
from .connections import AnchorConfig
from .errors import InputError, OperationError

_DIGEST_LOCK = 0x6469_6765_7374  # serialises digest writers so numbers never fork
INTERVAL_ENV = "RESIDENCY_AUDIT_DIGEST_INTERVAL"


def require(cfg: AnchorConfig | None) -> AnchorConfig:
    if cfg is None:
        raise InputError("no audit anchor configured: set RESIDENCY_AUDIT_KMS_KEY and RESIDENCY_AUDIT_BUCKET, add audit:"
                         " {kms_key, bucket} to the connections file, or run `residency sandbox up`")
    return cfg


def client(cfg: AnchorConfig, service: str) -> Any:
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {"region_name": cfg.aws_region,
                              "config": Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"})}
    if cfg.endpoint:
        kwargs["endpoint_url"] = cfg.endpoint
        kwargs["aws_access_key_id"] = os.environ.get("AWS_ACCESS_KEY_ID", "testing")
        kwargs["aws_secret_access_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "testing")
    return boto3.client(service, **kwargs)


@dataclass(frozen=True)
class PublicKey:
    key_id: str
    """The key's ARN, as digests name it."""
    der: bytes
    algorithm: str = digests.ALGORITHM

    @property
    def fingerprint(self) -> str:
        return digests.fingerprint(self.der)

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "signing_algorithm": self.algorithm, "pem": digests.to_pem(self.der),
                "sha256_fingerprint": self.fingerprint}


def public_key(cfg: AnchorConfig) -> PublicKey:
    kms = client(cfg, "kms")
    try:
        r = kms.get_public_key(KeyId=cfg.kms_key_id)
    except kms.exceptions.NotFoundException:
        raise OperationError(f"audit key {cfg.kms_key_id} not found in KMS ({cfg.aws_region})") from None
    if digests.ALGORITHM not in (r.get("SigningAlgorithms") or []):
        raise OperationError(f"audit key {cfg.kms_key_id} cannot sign with {digests.ALGORITHM} (it is {r.get('KeySpec')})")
    return PublicKey(r["KeyId"], bytes(r["PublicKey"]))


# --------------------------------------------------------------------------- reading the bucket


@dataclass
class Stored:
    """The digests in the bucket, and what the bucket's versions say about tampering."""

    items: list[dict[str, Any]] = field(default_factory=list)
    problems: list[digests.Problem] = field(default_factory=list)


def _name(cfg: AnchorConfig, number: int) -> str:
    return f"{cfg.prefix}{number:010d}.json"


def read_digests(cfg: AnchorConfig) -> Stored:
    """Every digest (its current version), plus a problem for each one deleted (a delete marker
    hides it) or overwritten (more than one version)."""
    s3 = client(cfg, "s3")
    out = Stored()
    versions: dict[str, list[dict[str, Any]]] = {}
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=cfg.bucket, Prefix=cfg.prefix):
            for v in page.get("Versions") or []:
                versions.setdefault(v["Key"], []).append({**v, "marker": False})
            for m in page.get("DeleteMarkers") or []:
                versions.setdefault(m["Key"], []).append({**m, "marker": True})
    except s3.exceptions.NoSuchBucket:
        raise OperationError(f"audit digest bucket {cfg.bucket} does not exist") from None
    for key in sorted(versions):
        # one entry per version id, a delete marker winning (moto may list a marker among Versions too)
        by_id: dict[str, dict[str, Any]] = {}
        for v in versions[key]:
            if v["marker"] or v["VersionId"] not in by_id:
                by_id[v["VersionId"]] = v
        vs = list(by_id.values())
        latest = next((v for v in vs if v.get("IsLatest")), vs[0])
        real = [v for v in vs if not v["marker"]]
        if latest["marker"]:
            out.problems.append(digests.Problem(None, f"digest {key}: deleted (a delete marker hides it)"))
        if len(real) > 1:
            out.problems.append(digests.Problem(None, f"digest {key}: overwritten ({len(real)} versions)"))
        if latest["marker"]:
            continue
        body = s3.get_object(Bucket=cfg.bucket, Key=key, VersionId=latest["VersionId"])["Body"].read()
        try:
            obj = json.loads(body)
        except ValueError:
            out.problems.append(digests.Problem(None, f"digest {key}: not JSON"))
            continue
        out.items.append({"name": key, **obj})
    # name the first entry a deleted or overwritten digest covered when its neighbours say
    return out


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class Written:
    number: int
    name: str
    first_seq: int
    last_seq: int
    digest_hash: str
    created_at: str


def write_digest(conn: psycopg.Connection[Any], cfg: AnchorConfig, now: datetime | None = None) -> Written:
    """Sign and store a digest of the entries appended since the last one (possibly none)."""
    kms, s3 = client(cfg, "kms"), client(cfg, "s3")
    key = public_key(cfg)
    conn.execute("SELECT pg_advisory_lock(%s)", (_DIGEST_LOCK,))
    try:
        stored = read_digests(cfg)
        if stored.problems:  # never write over a broken anchor (a deleted digest's number would be reused)
            raise OperationError(f"the audit digests are not intact: {stored.problems[0].text}; run `residency audit verify`")
        latest = max((s["digest"] for s in stored.items if isinstance(s.get("digest"), dict)), key=lambda d: d.get("number", 0), default=None)
        number = (latest["number"] + 1) if latest else 1
        after = latest["last_seq"] if latest else 0
        rows = conn.execute("SELECT seq, hash FROM residency.audit WHERE seq > %s ORDER BY seq", (after,)).fetchall()
        entries = [[int(seq), str(h)] for seq, h in rows]
        body = {
            "format": digests.FORMAT,
            "number": number,
            "first_seq": after + 1,
            "last_seq": entries[-1][0] if entries else after,
            "entries": entries,
            "head_hash": entries[-1][1] if entries else (latest["head_hash"] if latest else audit.GENESIS),
            "previous_digest_hash": digests.body_hash(latest) if latest else digests.GENESIS,
            "created_at": (now or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="seconds"),
            "key_id": key.key_id,
            "signing_algorithm": digests.ALGORITHM,
        }
        h = digests.body_hash(body)
        sig = kms.sign(KeyId=cfg.kms_key_id, Message=digests.signing_message(h), MessageType="RAW",
                       SigningAlgorithm=digests.ALGORITHM)["Signature"]
        obj = {"digest": body, "digest_sha256": h, "signature": base64.b64encode(sig).decode()}
        name = _name(cfg, number)
        s3.put_object(Bucket=cfg.bucket, Key=name, Body=json.dumps(obj, sort_keys=True).encode(), ContentType="application/json")
        return Written(number, name, body["first_seq"], body["last_seq"], h, body["created_at"])
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_DIGEST_LOCK,))


def digest_if_due(conn: psycopg.Connection[Any], cfg: AnchorConfig | None, interval: timedelta | None = None) -> Written | None:
    """The periodic digest: write one when the last is older than ``interval`` (default
    ``$RESIDENCY_AUDIT_DIGEST_INTERVAL`` seconds, else one hour) and entries were appended since."""
    if cfg is None:
        return None
    if interval is None:
        interval = timedelta(seconds=float(os.environ.get(INTERVAL_ENV, "3600")))
    stored = read_digests(cfg)
    latest = max((s["digest"] for s in stored.items if isinstance(s.get("digest"), dict)), key=lambda d: d.get("number", 0), default=None)
    head = conn.execute("SELECT seq FROM residency.audit_head").fetchone()
    if head is None or (latest and head[0] <= latest["last_seq"]):
        return None
    if latest and datetime.now(timezone.utc) - datetime.fromisoformat(latest["created_at"]) < interval:
        return None
    return write_digest(conn, cfg)


# --------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class AnchoredResult:
    ok: bool
    entries: int
    digests: int
    anchored_through: int
    """The last entry covered by a digest that checks out."""
    problems: list[str]
    first_bad_seq: int | None
    key_fingerprint: str


def verify(conn: psycopg.Connection[Any], cfg: AnchorConfig) -> AnchoredResult:
    """The chain (as :func:`residency.audit.verify`) and the chain against every signed digest."""
    chain = audit.verify(conn)
    key = public_key(cfg)
    stored = read_digests(cfg)
    check = digests.check_digests(stored.items, digests.load_public_key(key.der), key_id=key.key_id)
    ents = [(e.seq, e.hash, f"{e.action} {e.subject}") for e in audit.entries(conn)]
    problems = stored.problems + check.problems + digests.check_entries(ents, check)
    texts = [p.text for p in sorted(problems, key=lambda p: (p.seq is None, p.seq or 0))]
    first = min([p.seq for p in problems if p.seq is not None], default=None)
    if first is None and problems:
        first = check.last_seq + 1 if check.last_seq else None
    texts += [p for p in chain.problems if not any(p == t for t in texts)]
    ok = chain.ok and not problems
    return AnchoredResult(ok, chain.entries, check.digests, max(check.covered, default=0), texts, first, key.fingerprint)
