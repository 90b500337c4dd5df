"""How to reach each region's database and object store, and the control plane.

Resolution order, first match wins, per item:

1. environment variables: ``RESIDENCY_CONTROL_DSN``, ``RESIDENCY_<REGION>_DSN`` and
   ``RESIDENCY_<REGION>_S3_ENDPOINT`` (region upper-cased, dashes as underscores);
2. a connections file outside the repository: ``$RESIDENCY_CONNECTIONS`` or
   ``~/.config/residency/connections.yaml``::

       control: {dsn: "postgresql://mover@control.internal/residency"}
       regions:
         us: {dsn: "postgresql://mover@db.us.internal/app", s3_endpoint: null,
              buckets: {attachments: acme-us-attachments}}
       audit: {kms_key: "arn:aws:kms:...", bucket: residency-audit-digests, aws_region: us-east-1}

3. a fallback the caller hands down: the CLI passes the running local sandbox's
   (``residency sandbox up``); the library never looks for the sandbox itself.

Secrets (passwords) belong in the DSN's environment (``PGPASSFILE``, ``PGPASSWORD``) or the
connections file, never in regions.yaml; :func:`redact` strips them before anything is shown.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from .catalogue import Catalogue
from .errors import InputError

CONNECTIONS_ENV = "RESIDENCY_CONNECTIONS"


@dataclass(frozen=True)
class RegionEndpoints:
    """Where one region's data lives."""

    region: str
    aws_region: str
    dsn: str
    s3_endpoint: str | None = None
    """None means AWS itself; a URL means an S3-compatible endpoint (the sandbox's moto server)."""
    buckets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Logical bucket name (from regions.yaml's environment) -> actual bucket name."""

    backup_aws_region: str | None = None
    """The region's backup AWS region (regions.yaml), where each bucket's replica lives."""
    replica_buckets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Logical bucket name -> its replica bucket's name (default: the bucket's name + ``-replica``)."""

    def bucket(self, logical: str) -> str:
        return self.buckets.get(logical) or default_bucket_name(self.region, logical)

    def replica_bucket(self, logical: str) -> str:
        """The replica of a logical bucket in the backup region (the stacks' naming)."""
        return self.replica_buckets.get(logical) or self.bucket(logical) + REPLICA_SUFFIX


@dataclass(frozen=True)
class AnchorConfig:
    """Where the audit chain is anchored: the asymmetric KMS key that signs its digests and the
    Object Lock bucket that keeps them (see :mod:`residency.anchor`)."""

    kms_key_id: str
    bucket: str
    aws_region: str
    endpoint: str | None = None
    """None means AWS itself; a URL means a compatible endpoint (the sandbox's moto server)."""
    prefix: str = "audit-digests/"


@dataclass(frozen=True)
class Connections:
    control_dsn: str
    regions: Mapping[str, RegionEndpoints]
    source: str = "environment"
    """Where these came from: 'environment', a file path, or 'sandbox:<dir>'."""
    anchor: AnchorConfig | None = None
    """The audit anchor: ``RESIDENCY_AUDIT_KMS_KEY`` + ``RESIDENCY_AUDIT_BUCKET`` (and
    ``RESIDENCY_AUDIT_REGION``, ``RESIDENCY_AUDIT_ENDPOINT``), the connections file's ``audit:``
    section, or the sandbox's; None when none is configured."""

    def region(self, name: str) -> RegionEndpoints:
        try:
            return self.regions[name]
        except KeyError:
            raise InputError(
                f"no connection for region '{name}': set RESIDENCY_{_env_name(name)}_DSN, "
                f"add it to the connections file, or run `residency sandbox up`"
            ) from None


REPLICA_SUFFIX = "-replica"


def default_bucket_name(region: str, logical: str) -> str:
    """The bucket name the stacks give a region's logical bucket (globally unique per region)."""
    return f"residency-{region}-{logical}"


def _env_name(region: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", region.upper())


def _connections_file() -> Path:
    env = os.environ.get(CONNECTIONS_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "residency" / "connections.yaml"


MAX_FILE_BYTES = 1024 * 1024


def _read_file(path: Path) -> dict[str, Any]:
    from .files import read_text

    if not path.exists() and not path.is_symlink():
        if os.environ.get(CONNECTIONS_ENV):
            raise InputError(f"{path}: connections file not found (from ${CONNECTIONS_ENV})")
        return {}
    text = read_text(path, max_bytes=MAX_FILE_BYTES, what="connections file")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise InputError(f"{where}: connections file is not valid YAML") from None
    return _check_file(path, data)


def _check_file(path: Path, data: Any) -> dict[str, Any]:
    """The connections file's shape, checked once: every wrong type is one line naming where."""

    def kind(v: Any) -> str:
        return "a list" if isinstance(v, list) else "a mapping" if isinstance(v, dict) else f"{type(v).__name__} {v!r}"[:60]

    def text_or_null(v: Any, where: str) -> None:
        if v is not None and not isinstance(v, str):
            raise InputError(f"{path}: {where} must be a string, got {kind(v)}")

    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with 'control' and 'regions', got {kind(data)}")
    for key in ("control", "notify"):  # other keys belong to other features and are checked there
        if data.get(key) is not None and not isinstance(data.get(key), dict):
            raise InputError(f"{path}: {key} must be a mapping such as {{dsn: \"postgresql://...\"}}, got {kind(data.get(key))}"
                             if key == "control" else f"{path}: {key} must be a mapping, got {kind(data.get(key))}")
    control = data.get("control")
    if control is not None:
        text_or_null(control.get("dsn"), "control.dsn")
    regions = data.get("regions")
    if regions is not None:
        if not isinstance(regions, dict):
            raise InputError(f"{path}: regions must be a mapping of region name to {{dsn: ..., s3_endpoint: ..., buckets: ...}}, got {kind(regions)}")
        for name, r in regions.items():
            where = f"regions.{name}"
            if r is None:
                continue
            if not isinstance(r, dict):
                raise InputError(f"{path}: {where} must be a mapping with dsn, s3_endpoint, buckets; got {kind(r)}")
            text_or_null(r.get("dsn"), f"{where}.dsn")
            text_or_null(r.get("s3_endpoint"), f"{where}.s3_endpoint")
            b = r.get("buckets")
            if b is not None:
                if not isinstance(b, dict):
                    raise InputError(f"{path}: {where}.buckets must be a mapping of logical name to bucket name, got {kind(b)}")
                for k, v in b.items():
                    if not isinstance(v, str):
                        raise InputError(f"{path}: {where}.buckets.{k} must be a bucket name, got {kind(v)}")
    return data


def resolve(cat: Catalogue, env: Mapping[str, str] | None = None, *, fallback: Connections | None = None) -> Connections:
    """Resolve the control plane and every region of ``cat`` that can be reached.

    ``fallback`` fills what the environment and the connections file leave unset: the CLI hands
    down the running sandbox's connections (the sandbox is a development package; nothing here
    imports it). Regions without any configured connection are left out;
    :meth:`Connections.region` then explains how to add one.
    """
    from .redaction import register_dsn, register_environment

    env = os.environ if env is None else env
    register_environment(env)
    path = _connections_file()
    data = _read_file(path)
    file_regions = data.get("regions") or {}
    sandbox = fallback

    control = env.get("RESIDENCY_CONTROL_DSN") or (data.get("control") or {}).get("dsn")
    source = "environment" if env.get("RESIDENCY_CONTROL_DSN") else (str(path) if control else "")
    if not control and sandbox is not None:
        control, source = sandbox.control_dsn, sandbox.source
    if not control:
        raise InputError(
            "no control plane configured: set RESIDENCY_CONTROL_DSN, write "
            f"{path}, or run `residency sandbox up`"
        )
    register_dsn(control)
    regions: dict[str, RegionEndpoints] = {}
    for name, region in cat.regions.items():
        en = _env_name(name)
        fr = file_regions.get(name) or {}
        sb = sandbox.regions.get(name) if sandbox is not None else None
        dsn = env.get(f"RESIDENCY_{en}_DSN") or fr.get("dsn") or (sb.dsn if sb else None)
        if not dsn:
            continue
        register_dsn(dsn)
        s3 = env.get(f"RESIDENCY_{en}_S3_ENDPOINT") or fr.get("s3_endpoint") or (sb.s3_endpoint if sb else None)
        buckets = dict(sb.buckets) if sb else {}
        buckets.update(fr.get("buckets") or {})
        replicas = dict(sb.replica_buckets) if sb else {}
        replicas.update(fr.get("replica_buckets") or {})
        regions[name] = RegionEndpoints(name, region.aws_region, dsn, s3, MappingProxyType(buckets),
                                        region.backup_region, MappingProxyType(replicas))
    return Connections(control, MappingProxyType(regions), source, _anchor(cat, env, data.get("audit") or {}, sandbox))


def _anchor(cat: Catalogue, env: Mapping[str, str], fa: dict[str, Any], sandbox: Connections | None) -> AnchorConfig | None:
    key = env.get("RESIDENCY_AUDIT_KMS_KEY") or fa.get("kms_key")
    bucket = env.get("RESIDENCY_AUDIT_BUCKET") or fa.get("bucket")
    if not (key and bucket):
        if key or bucket:
            raise InputError("the audit anchor needs both a KMS key and a bucket (RESIDENCY_AUDIT_KMS_KEY and"
                             " RESIDENCY_AUDIT_BUCKET, or kms_key and bucket under audit: in the connections file)")
        return sandbox.anchor if sandbox is not None else None
    first = next(iter(cat.regions.values()), None)
    aws_region = env.get("RESIDENCY_AUDIT_REGION") or fa.get("aws_region") or (first.aws_region if first else "us-east-1")
    endpoint = env.get("RESIDENCY_AUDIT_ENDPOINT") or fa.get("endpoint") or None
    return AnchorConfig(str(key), str(bucket), str(aws_region), endpoint, str(fa.get("prefix") or "audit-digests/"))


def redact(dsn: str) -> str:
    """A DSN safe to show or record: any password replaced by ``***`` (the one rule, in
    :mod:`residency.redaction`, that every message goes through)."""
    from .redaction import redact as _redact

    return _redact(dsn)


def s3_client(ep: RegionEndpoints, aws_region: str | None = None) -> Any:
    """A boto3 S3 client for the region (its own AWS region, or ``aws_region`` such as its backup
    region; the sandbox endpoint if set)."""
    import boto3
    from botocore.config import Config

    cfg = Config(retries={"max_attempts": 5, "mode": "adaptive"}, s3={"addressing_style": "path"})
    kwargs: dict[str, Any] = {"region_name": aws_region or ep.aws_region, "config": cfg}
    if ep.s3_endpoint:
        kwargs["endpoint_url"] = ep.s3_endpoint
        kwargs.setdefault("aws_access_key_id", os.environ.get("AWS_ACCESS_KEY_ID", "testing"))
        kwargs.setdefault("aws_secret_access_key", os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"))
    return boto3.client("s3", **kwargs)
