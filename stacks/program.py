"""The Pulumi program: the stack's name selects the region from regions.yaml."""

from __future__ import annotations

import os
from pathlib import Path

import pulumi

from residency import catalogue

PROJECT_DIR = Path(__file__).resolve().parent


def regions_path() -> str:
    """$RESIDENCY_REGIONS, else the repository's regions.yaml next to this project."""
    return os.environ.get(catalogue.ENV_VAR) or str(PROJECT_DIR.parent / catalogue.DEFAULT_PATH)


CONTROL_STACK = "control"


def build_control(cat: catalogue.Catalogue):
    """The control plane's stack: the audit anchor (signing key and Object Lock digest bucket), in
    ``$RESIDENCY_CONTROL_AWS_REGION`` or the first region's AWS region."""
    from .anchor import AuditAnchor

    first = next(iter(cat.regions.values()))
    aws_region = os.environ.get("RESIDENCY_CONTROL_AWS_REGION") or first.aws_region
    anchor = AuditAnchor("audit", aws_region)
    pulumi.export("audit_kms_key", anchor.key.arn)
    pulumi.export("audit_bucket", anchor.bucket.bucket)
    pulumi.export("audit_aws_region", aws_region)
    return anchor


def build(cat: catalogue.Catalogue, stack: str):
    """Build the region the stack is named after (or, for the ``control`` stack, the audit
    anchor) and export what other tools need."""
    from .component import RegionalEnvironment, RegionalEnvironmentArgs

    if stack == CONTROL_STACK and stack not in cat.regions:
        return build_control(cat)
    region = cat.region(stack)
    env = RegionalEnvironment(region.name, RegionalEnvironmentArgs(catalogue=cat, region=region))
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
