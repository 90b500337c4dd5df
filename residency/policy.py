"""Residency policy: what may live and flow where. Pure functions over the catalogue, no I/O.

The stacks, the mover and the request queue all ask these functions, so each rule is written
once. Every answer is a :class:`Decision` that says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import difflib

from .aws_regions import AWS_REGIONS
from .catalogue import Catalogue, Region
from .errors import InputError


class Flow(str, Enum):
    MOVE = "move"          # a workspace's home changes region
    BACKUP = "backup"      # a backup copy (RDS automated-backup replication, S3 replication)
    REPLICA = "replica"    # a live read replica


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def may_live(cat: Catalogue, region: str) -> Decision:
    """May workspace data live (have its home) in ``region``? Only in an active region."""
    r = cat.region(region)
    if r.status != "active":
        return Decision(False, f"region '{r.name}' is {r.status}; workspace data may only live in an active region")
    return Decision(True, f"region '{r.name}' is active in jurisdiction {r.jurisdiction}")


def may_move(cat: Catalogue, source: str, target: str) -> Decision:
    """May a workspace move its home from ``source`` to ``target``?

    A move is the customer's choice of residency, so it may cross jurisdictions; it may not go
    to the region it is already in, nor to a region that is not active. The source may be in
    any state but ``planned`` or ``retired`` (a draining region is exactly one being emptied;
    planned and retired regions hold no workspaces).
    """
    s, t = cat.region(source), cat.region(target)
    if s.name == t.name:
        return Decision(False, f"the workspace is already in region '{s.name}'")
    if s.status == "planned":
        return Decision(False, f"source region '{s.name}' is planned; it holds no workspaces yet")
    if s.status == "retired":
        return Decision(False, f"source region '{s.name}' is retired; it holds no workspaces any more")
    live = may_live(cat, t.name)
    if not live:
        return Decision(False, f"target {live.reason}")
    return Decision(True, f"{s.name} ({s.jurisdiction}) → {t.name} ({t.jurisdiction})")


def may_copy(cat: Catalogue, region: str, aws_region: str) -> Decision:
    """May a copy of ``region``'s data (backup or replica) be kept in ``aws_region``?

    Copies never leave the region's jurisdiction.
    """
    r = cat.region(region)
    j = cat.jurisdictions[r.jurisdiction]
    if aws_region not in j.aws_regions:
        return Decision(False, f"{aws_region} is outside jurisdiction {j.name} of region '{r.name}' ({', '.join(j.aws_regions)})")
    return Decision(True, f"{aws_region} is inside jurisdiction {j.name}")


def may_flow(cat: Catalogue, source: str, target: str, flow: Flow | str) -> Decision:
    """May workspace data flow from region ``source`` to ``target`` as ``flow``?

    For ``move`` both are region names from the catalogue. For ``backup`` and ``replica`` the
    target may be a region name or an AWS region name; the copy must stay inside the source's
    jurisdiction.
    """
    flow = Flow(flow)
    if flow is Flow.MOVE:
        return may_move(cat, source, target)
    src = cat.region(source)
    if target in cat.regions:
        aws = cat.regions[target].aws_region
    elif target in AWS_REGIONS:
        aws = target
    else:
        hint = difflib.get_close_matches(target, [*cat.regions, *sorted(AWS_REGIONS)], n=1)
        raise InputError(
            f"'{target}' is neither a region ({', '.join(cat.regions)}) nor an AWS region"
            + (f"; did you mean '{hint[0]}'?" if hint else "")
        )
    if aws == src.aws_region:
        return Decision(False, f"a {flow.value} of region '{src.name}' must be in another AWS region than {aws}")
    return may_copy(cat, source, aws)


def allowed_aws_regions(cat: Catalogue, region: str) -> tuple[str, ...]:
    """The AWS regions region ``region``'s stack may touch: its own and its backup region."""
    r = cat.region(region)
    return (r.aws_region, r.backup_region)


def stack_may_touch(cat: Catalogue, region: str, aws_region: str) -> Decision:
    allowed = allowed_aws_regions(cat, region)
    if aws_region in allowed:
        return Decision(True, f"{aws_region} is allowed for region '{region}'")
    return Decision(False, f"the stack of region '{region}' may only touch {', '.join(allowed)}, not {aws_region}")


def active_regions(cat: Catalogue) -> list[Region]:
    return [r for r in cat.regions.values() if r.status == "active"]


# --------------------------------------------------------------------------- resource guardrails
# The rules a stack's resources must keep, written once and asked by the stack tests, the
# offline plan and the Pulumi policy pack (stacks/policypack). Each function returns the
# violations it finds as Decisions with ``allowed=False``; an empty list means compliant.

import re as _re

_CAMEL = _re.compile(r"(?<!^)(?=[A-Z])")


def _snake(key: str) -> str:
    return _CAMEL.sub("_", key).lower()


def normalize_props(props: object) -> object:
    """Resource properties with camelCase keys (as the engine and the policy SDK see them)
    turned into snake_case (as the Python SDK writes them), recursively."""
    if isinstance(props, dict) or (hasattr(props, "items") and callable(getattr(props, "items"))):
        return {_snake(str(k)): normalize_props(v) for k, v in props.items()}  # type: ignore[union-attr]
    if isinstance(props, (list, tuple)):
        return [normalize_props(v) for v in props]
    return props


def s3_bucket_arn(name: str) -> str:
    return f"arn:aws:s3:::{name}"


def _bucket_name(ref: object) -> str | None:
    """A bucket name from a name or an S3 ARN."""
    if not isinstance(ref, str) or not ref:
        return None
    return ref.split(":::", 1)[1] if ref.startswith("arn:aws:s3:::") else ref


def _arn_region(arn: object) -> str | None:
    if isinstance(arn, str) and arn.startswith("arn:"):
        parts = arn.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    return None


# Resource types whose data must be encrypted at rest, and how to read whether it is.
_RDS_INSTANCE = "aws:rds/instance:Instance"
_S3_BUCKET = "aws:s3/bucket:Bucket"
_S3_BUCKET_V2 = "aws:s3/bucketV2:BucketV2"
_S3_SSE = ("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
           "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2")
_S3_REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
_RDS_BACKUP_REPLICATION = "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication"
_KMS_KEY = "aws:kms/key:Key"
_KMS_REPLICA_KEYS = ("aws:kms/replicaKey:ReplicaKey", "aws:kms/replicaExternalKey:ReplicaExternalKey")
_SQS_QUEUE = "aws:sqs/queue:Queue"
_GLOBAL_SERVICES = ("aws:iam/",)  # IAM is global: it has no AWS region to check


def check_resource(
    cat: Catalogue,
    region: str,
    resource_type: str,
    props: object,
    aws_region: str | None = None,
    bucket_regions: dict[str, str] | None = None,
) -> list[Decision]:
    """The residency violations of one resource of ``region``'s stack.

    ``props`` are the resource's inputs (camelCase or snake_case keys); ``aws_region`` is the
    AWS region its provider deploys to (a ``region`` property on the resource wins).
    ``bucket_regions`` maps bucket names to the AWS region they are in, for checking S3
    replication destinations; without it a replication destination that is not an ARN with a
    region cannot be checked here (the stack-level check, :func:`check_resources`, does it).

    Rules: no resource outside the region's allowed AWS regions; no replication (S3 or RDS
    backups) outside the jurisdiction; no multi-region KMS keys; no unencrypted storage.
    """
    p = normalize_props(props) or {}
    assert isinstance(p, dict)
    out: list[Decision] = []
    where = p.get("region") or aws_region
    if where and not resource_type.startswith(_GLOBAL_SERVICES) and not resource_type.startswith("pulumi:"):
        d = stack_may_touch(cat, region, str(where))
        if not d:
            out.append(Decision(False, f"{resource_type}: {d.reason}"))
    if resource_type.startswith("pulumi:providers:aws"):
        d = stack_may_touch(cat, region, str(p.get("region") or aws_region or "(no region)"))
        if not d:
            out.append(Decision(False, f"AWS provider: {d.reason}"))

    if resource_type == _KMS_KEY and p.get("multi_region") in (True, "true"):
        out.append(Decision(False, f"{resource_type}: multi-region KMS keys are not allowed (key material would leave {region}'s jurisdiction)"))
    if resource_type in _KMS_REPLICA_KEYS:
        out.append(Decision(False, f"{resource_type}: KMS replica keys are not allowed (they need a multi-region key)"))

    if resource_type == _RDS_INSTANCE:
        if not p.get("storage_encrypted"):
            out.append(Decision(False, f"{resource_type}: storage_encrypted must be true"))
        elif not p.get("kms_key_id"):
            out.append(Decision(False, f"{resource_type}: storage must be encrypted with the region's own KMS key (kms_key_id is not set)"))
        if p.get("replicate_source_db"):
            src = _arn_region(p.get("replicate_source_db"))
            if src:
                out.extend(_copy_violation(cat, region, src, resource_type))
    if resource_type == _SQS_QUEUE and not (p.get("kms_master_key_id") or p.get("sqs_managed_sse_enabled")):
        out.append(Decision(False, f"{resource_type}: queues must be encrypted (kms_master_key_id)"))
    if resource_type in _S3_SSE:
        for rule in p.get("rules") or []:
            default = (rule or {}).get("apply_server_side_encryption_by_default") or {}
            if default.get("sse_algorithm") not in ("aws:kms", "aws:kms:dsse") or not default.get("kms_master_key_id"):
                out.append(Decision(False, f"{resource_type}: buckets must use SSE-KMS with the region's own key"))
        if not p.get("rules"):
            out.append(Decision(False, f"{resource_type}: no encryption rule"))
    if resource_type in (_S3_BUCKET, _S3_BUCKET_V2):
        sse = p.get("server_side_encryption_configuration")
        if sse:  # an inline (legacy) configuration must be SSE-KMS too
            rule = (sse.get("rule") or {}) if isinstance(sse, dict) else {}
            default = rule.get("apply_server_side_encryption_by_default") or {}
            if default.get("sse_algorithm") not in ("aws:kms", "aws:kms:dsse"):
                out.append(Decision(False, f"{resource_type}: buckets must use SSE-KMS with the region's own key"))
        rep = p.get("replication_configuration")
        if rep:
            for rule in rep.get("rules") or []:
                dest = ((rule or {}).get("destination") or {}).get("bucket")
                out.extend(_bucket_destination_violation(cat, region, dest, bucket_regions, resource_type))
    if resource_type == _S3_REPLICATION:
        for rule in p.get("rules") or []:
            dest_spec = (rule or {}).get("destination") or {}
            out.extend(_bucket_destination_violation(cat, region, dest_spec.get("bucket"), bucket_regions, resource_type))
            kms = ((dest_spec.get("encryption_configuration") or {}).get("replica_kms_key_id"))
            kr = _arn_region(kms)
            if kr:
                out.extend(_copy_violation(cat, region, kr, resource_type + " replica key"))
    if resource_type == _RDS_BACKUP_REPLICATION:
        dest = p.get("region") or aws_region
        if dest:
            out.extend(_copy_violation(cat, region, str(dest), resource_type))
        kr = _arn_region(p.get("kms_key_id"))
        if kr and kr != dest:
            out.append(Decision(False, f"{resource_type}: the backup copy's KMS key is in {kr}, not in the copy's region {dest}"))
    return out


def _copy_violation(cat: Catalogue, region: str, aws_region: str, what: str) -> list[Decision]:
    d = may_copy(cat, region, aws_region)
    return [] if d else [Decision(False, f"{what}: replication out of the jurisdiction: {d.reason}")]


def _bucket_destination_violation(
    cat: Catalogue, region: str, dest: object, bucket_regions: dict[str, str] | None, what: str
) -> list[Decision]:
    name = _bucket_name(dest)
    if name is None:
        return [] if bucket_regions is None else [Decision(False, f"{what}: replication destination is not known")]
    where = _arn_region(dest) if isinstance(dest, str) and not dest.startswith("arn:aws:s3:::") else None
    if where is None and bucket_regions is not None:
        where = bucket_regions.get(name)
        if where is None:
            return [Decision(False, f"{what}: replicates to bucket '{name}', which this stack does not declare; its region cannot be checked")]
    if where is None:
        return []
    return _copy_violation(cat, region, where, f"{what} to bucket '{name}'")


def check_resources(cat: Catalogue, region: str, resources: list[tuple[str, object, str | None]]) -> list[Decision]:
    """The residency violations of a whole stack: every resource's (``type, props, aws_region``),
    plus the rules that need the whole picture: a replication destination must be a bucket the
    stack declares (so its region is known) inside the jurisdiction, and every bucket must have
    an SSE-KMS encryption configuration."""
    bucket_regions: dict[str, str] = {}
    buckets: list[str] = []
    encrypted: set[str] = set()
    for rtype, props, aws_region in resources:
        p = normalize_props(props) or {}
        assert isinstance(p, dict)
        if rtype in (_S3_BUCKET, _S3_BUCKET_V2) and p.get("bucket"):
            name = str(p["bucket"])
            buckets.append(name)
            where = p.get("region") or aws_region
            if where:
                bucket_regions[name] = str(where)
            if p.get("server_side_encryption_configuration"):
                encrypted.add(name)
        if rtype in _S3_SSE and p.get("bucket"):
            encrypted.add(str(_bucket_name(p["bucket"])))
    out: list[Decision] = []
    for rtype, props, aws_region in resources:
        out.extend(check_resource(cat, region, rtype, props, aws_region, bucket_regions))
    for name in buckets:
        if name not in encrypted:
            out.append(Decision(False, f"{_S3_BUCKET}: bucket '{name}' has no SSE-KMS encryption configuration"))
    return out


# --------------------------------------------------------------------------- operator access (issue 13)


def operator_rule(cat: Catalogue, operator: str) -> tuple[str, str, tuple[str, ...]] | None:
    """The first ``operator_access.operators`` entry whose pattern matches ``operator`` (an email)."""
    import fnmatch

    access = cat.operator_access
    for pattern, based_in, may in (access.operators if access else ()):
        if fnmatch.fnmatchcase(operator.lower(), pattern):
            return pattern, based_in, may
    return None


def may_access(cat: Catalogue, operator: str, region: str) -> Decision:
    """May ``operator`` (an email) be granted a look at a workspace whose home is ``region``?
    Only when regions.yaml's ``operator_access`` lists the operator and lets their staff see the
    region's jurisdiction (by default only the jurisdiction they are based in)."""
    r = cat.region(region)
    if cat.operator_access is None:
        return Decision(False, f"{cat.path} has no operator_access section; no operator may be granted access")
    rule = operator_rule(cat, operator)
    if rule is None:
        return Decision(False, f"operator {operator} matches no operator_access.operators pattern in {cat.path}")
    pattern, based_in, may = rule
    if r.jurisdiction not in may:
        return Decision(False, f"operator {operator} ({pattern}, based in {based_in}) may access {', '.join(may)},"
                               f" not region '{r.name}' in jurisdiction {r.jurisdiction}")
    return Decision(True, f"operator {operator} ({pattern}, based in {based_in}) may access {r.jurisdiction}")
