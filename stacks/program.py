"""The Pulumi program: the stack's name, ``<env>-<region>``, selects the environment and the region
from regions.yaml (``<env>-control``: the control plane's audit anchor)."""

from __future__ import annotations

import os
from pathlib import Path

import pulumi

from residency import catalogue

from .names import DEFAULT_ENV, parse, resource_prefix

PROJECT_DIR = Path(__file__).resolve().parent


def regions_path() -> str:
    """$RESIDENCY_REGIONS, else the repository's regions.yaml next to this project."""
    return os.environ.get(catalogue.ENV_VAR) or str(PROJECT_DIR.parent / catalogue.DEFAULT_PATH)


def build_control(cat: catalogue.Catalogue, env: str = DEFAULT_ENV):
    """The control plane's stack: the audit anchor (signing key and Object Lock digest bucket), in
    ``$RESIDENCY_CONTROL_AWS_REGION`` or the first region's AWS region."""
    from .anchor import AuditAnchor

    first = next(iter(cat.regions.values()))
    aws_region = os.environ.get("RESIDENCY_CONTROL_AWS_REGION") or first.aws_region
    prefix = resource_prefix(env)  # the default environment's names are the ones the README gives
    anchor = AuditAnchor("audit", aws_region, bucket=f"{prefix}-audit-digests", alias=f"alias/{prefix}-audit")
    pulumi.export("audit_kms_key", anchor.key.arn)
    pulumi.export("audit_bucket", anchor.bucket.bucket)
    pulumi.export("audit_aws_region", aws_region)
    return anchor


def build(cat: catalogue.Catalogue, stack: str):
    """Build what the stack is named after: ``<env>-<region>`` the region's environment,
    ``<env>-control`` the audit anchor; and export what other tools need."""
    from .component import RegionalEnvironment, RegionalEnvironmentArgs

    name = parse(stack, cat)
    if name.is_control:
        return build_control(cat, name.env)
    region = cat.region(name.target)
    env = RegionalEnvironment(region.name, RegionalEnvironmentArgs(catalogue=cat, region=region, env=name.env))
    pulumi.export("env", name.env)
    pulumi.export("region", region.name)
    pulumi.export("aws_region", region.aws_region)
    pulumi.export("backup_region", region.backup_region)
    pulumi.export("jurisdiction", region.jurisdiction)
    pulumi.export("vpc_id", env.vpc.id)
    pulumi.export("database_endpoint", env.database.endpoint)
    pulumi.export("buckets", {b: s.bucket.bucket for b, s in env.buckets.items()})
    pulumi.export("queues", {q: s.url for q, s in env.queues.items()})
    return env


def main() -> None:
    build(catalogue.load(regions_path()), pulumi.get_stack())
