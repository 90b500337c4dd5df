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

3. the running local sandbox (``residency sandbox up``).

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

    def bucket(self, logical: str) -> str:
        return self.buckets.get(logical) or default_bucket_name(self.region, logical)


@dataclass(frozen=True)
class Connections:
    control_dsn: str
    regions: Mapping[str, RegionEndpoints]
    source: str = "environment"
    """Where these came from: 'environment', a file path, or 'sandbox:<dir>'."""

    def region(self, name: str) -> RegionEndpoints:
        try:
            return self.regions[name]
        except KeyError:
            raise InputError(
                f"no connection for region '{name}': set RESIDENCY_{_env_name(name)}_DSN, "
                f"add it to the connections file, or run `residency sandbox up`"
            ) from None


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


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        if os.environ.get(CONNECTIONS_ENV):
            raise InputError(f"{path}: connections file not found (from ${CONNECTIONS_ENV})")
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise InputError(f"{where}: connections file is not valid YAML") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with 'control' and 'regions'")
    return data


def resolve(cat: Catalogue, env: Mapping[str, str] | None = None, *, use_sandbox: bool = True) -> Connections:
    """Resolve the control plane and every region of ``cat`` that can be reached.

    Regions without any configured connection are left out; :meth:`Connections.region` then
    explains how to add one.
    """
    env = os.environ if env is None else env
    path = _connections_file()
    data = _read_file(path)
    file_regions = data.get("regions") or {}
    sandbox = None
    if use_sandbox:
        from . import sandbox as sandbox_mod  # local import: the sandbox is optional

        sandbox = sandbox_mod.sandbox_connections(cat)

    control = env.get("RESIDENCY_CONTROL_DSN") or (data.get("control") or {}).get("dsn")
    source = "environment" if env.get("RESIDENCY_CONTROL_DSN") else (str(path) if control else "")
    if not control and sandbox is not None:
        control, source = sandbox.control_dsn, sandbox.source
    if not control:
        raise InputError(
            "no control plane configured: set RESIDENCY_CONTROL_DSN, write "
            f"{path}, or run `residency sandbox up`"
        )
    regions: dict[str, RegionEndpoints] = {}
    for name, region in cat.regions.items():
        en = _env_name(name)
        fr = file_regions.get(name) or {}
        sb = sandbox.regions.get(name) if sandbox is not None else None
        dsn = env.get(f"RESIDENCY_{en}_DSN") or fr.get("dsn") or (sb.dsn if sb else None)
        if not dsn:
            continue
        s3 = env.get(f"RESIDENCY_{en}_S3_ENDPOINT") or fr.get("s3_endpoint") or (sb.s3_endpoint if sb else None)
        buckets = dict(sb.buckets) if sb else {}
        buckets.update(fr.get("buckets") or {})
        regions[name] = RegionEndpoints(name, region.aws_region, dsn, s3, MappingProxyType(buckets))
    return Connections(control, MappingProxyType(regions), source)


_PASSWORD_IN_URL = re.compile(r"(postgres(?:ql)?://[^:/@]+:)([^@]+)(@)")
_PASSWORD_KV = re.compile(r"(password\s*=\s*)(\S+)", re.I)


def redact(dsn: str) -> str:
    """A DSN safe to show or record: any password replaced by ``***``."""
    return _PASSWORD_KV.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***\3", dsn))


def s3_client(ep: RegionEndpoints) -> Any:
    """A boto3 S3 client for the region (its own AWS region; the sandbox endpoint if set)."""
    import boto3
    from botocore.config import Config

    cfg = Config(retries={"max_attempts": 5, "mode": "adaptive"}, s3={"addressing_style": "path"})
    kwargs: dict[str, Any] = {"region_name": ep.aws_region, "config": cfg}
    if ep.s3_endpoint:
        kwargs["endpoint_url"] = ep.s3_endpoint
        kwargs.setdefault("aws_access_key_id", os.environ.get("AWS_ACCESS_KEY_ID", "testing"))
        kwargs.setdefault("aws_secret_access_key", os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"))
    return boto3.client("s3", **kwargs)
