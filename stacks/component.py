"""`RegionalEnvironment`: everything one region gets, built from its catalogue entry.

Every resource is created through an explicit ``aws.Provider`` for the region (or for its backup
region, for backup copies); nothing relies on a default provider. The residency rules are asked of
:mod:`residency.policy` before anything is built, so a catalogue that would put a copy outside the
jurisdiction is refused with nothing registered.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from residency import policy, retention
from residency.catalogue import Catalogue, Region
from residency.errors import InputError

from .names import DEFAULT_ENV, resource_prefix

TYPE = "residency:stacks:RegionalEnvironment"
AZ_COUNT = 3


def tags_for(region: Region, env: str = DEFAULT_ENV) -> dict[str, str]:
    return {
        "residency:region": region.name,
        "residency:jurisdiction": region.jurisdiction,
        "residency:environment": env,
        "residency:managed-by": "pulumi",
    }


def bucket_name(region: Region, bucket: str, replica: bool = False, env: str = DEFAULT_ENV) -> str:
    """Deterministic names, so they are known at preview time and parity can find them."""
    return f"{resource_prefix(env)}-{region.name}-{bucket}" + ("-replica" if replica else "")


def queue_name(region: Region, queue: str, env: str = DEFAULT_ENV) -> str:
    return f"{resource_prefix(env)}-{region.name}-{queue}"


def db_identifier(region: Region, env: str = DEFAULT_ENV) -> str:
    return f"{resource_prefix(env)}-{region.name}"


def private_subnets(region: Region, count: int = AZ_COUNT) -> list[tuple[str, str]]:
    """(availability zone, cidr) for each private subnet: the VPC's first ``count`` /+4 blocks."""
    net = ipaddress.ip_network(region.cidr)
    blocks = net.subnets(new_prefix=min(net.prefixlen + 4, 28))
    return [(f"{region.aws_region}{chr(ord('a') + i)}", str(next(blocks))) for i in range(count)]


def preflight(cat: Catalogue, region: Region) -> None:
    """Refuse, before anything is built, a region whose placement breaks a residency rule."""
    for aws_region in (region.aws_region, region.backup_region):
        d = policy.stack_may_touch(cat, region.name, aws_region)
        if not d:
            raise InputError(f"region '{region.name}': {d.reason}")
    if region.aws_region not in cat.jurisdictions[region.jurisdiction].aws_regions:
        raise InputError(f"region '{region.name}': {region.aws_region} is outside its jurisdiction {region.jurisdiction}")
    d = policy.may_flow(cat, region.name, region.backup_region, policy.Flow.BACKUP)
    if not d:
        raise InputError(f"region '{region.name}': backup copies refused: {d.reason}")


@dataclass(frozen=True, kw_only=True)
class RegionalEnvironmentArgs:
    """The inputs of a :class:`RegionalEnvironment`, typed, as Pulumi's own resources take an
    ``...Args`` object: the catalogue (for the residency rules) and the region it builds."""

    catalogue: Catalogue
    region: Region
    env: str = DEFAULT_ENV
    """The environment (``production``, ``staging``, ...): the stack is ``<env>-<region>``."""
    az_count: int = AZ_COUNT
    """Private subnets, one per availability zone."""

    @property
    def tags(self) -> dict[str, str]:
        return tags_for(self.region, self.env)

    @property
    def prefix(self) -> str:
        """The prefix of the physical names (see :func:`residency.stacks.names.resource_prefix`)."""
        return resource_prefix(self.env)


@dataclass
class BucketSet:
    bucket: aws.s3.Bucket
    replica: aws.s3.Bucket


class RegionalEnvironment(pulumi.ComponentResource):
    """One region's environment: network, database, buckets, queues, roles, backup copies.

    ``RegionalEnvironment(name, RegionalEnvironmentArgs(catalogue=cat, region=region))``. Each
    resource group is built by its own method, in dependency order: providers, keys, network,
    database, backups, buckets (with their replicas and replication role), queues, roles."""

    vpc: aws.ec2.Vpc
    database: aws.rds.Instance
    buckets: dict[str, BucketSet]
    queues: dict[str, aws.sqs.Queue]

    def __init__(self, name: str, args: RegionalEnvironmentArgs, opts: pulumi.ResourceOptions | None = None):
        preflight(args.catalogue, args.region)  # before registering anything
        super().__init__(TYPE, name, None, opts)
        self.args = args
        self.region = args.region
        self._make_providers()
        self._make_keys()
        self._make_network()
        self._make_database()
        self._make_backups()
        self._make_buckets()
        self._make_queues()
        self._make_roles()
        self.register_outputs({
            "region": self.region.name, "aws_region": self.region.aws_region, "backup_region": self.region.backup_region,
            "vpc_id": self.vpc.id, "database_endpoint": self.database.endpoint,
            "buckets": {b: s.bucket.bucket for b, s in self.buckets.items()},
            "queues": {q: s.url for q, s in self.queues.items()},
        })

    # -- explicit providers: the region's and its backup region's; never a default provider
    def _make_providers(self) -> None:
        n = self.region.name
        self.provider = aws.Provider(f"{n}-aws", region=self.region.aws_region, opts=pulumi.ResourceOptions(parent=self))
        self.backup_provider = aws.Provider(f"{n}-aws-backup", region=self.region.backup_region,
                                            opts=pulumi.ResourceOptions(parent=self))
        self.here = pulumi.ResourceOptions(parent=self, provider=self.provider)
        self.there = pulumi.ResourceOptions(parent=self, provider=self.backup_provider)

    # -- keys: one per AWS region, never multi-region
    def _make_keys(self) -> None:
        r, n, tags = self.region, self.region.name, self.args.tags
        self.key = aws.kms.Key(
            f"{n}-key", description=f"residency {n}: data at rest in {r.aws_region}",
            multi_region=False, enable_key_rotation=True, deletion_window_in_days=30, tags=tags, opts=self.here,
        )
        self.backup_key = aws.kms.Key(
            f"{n}-backup-key", description=f"residency {n}: backup copies in {r.backup_region}",
            multi_region=False, enable_key_rotation=True, deletion_window_in_days=30, tags=tags, opts=self.there,
        )

    # -- network: a VPC with private subnets across availability zones
    def _make_network(self) -> None:
        r, n, tags, here = self.region, self.region.name, self.args.tags, self.here
        self.vpc = aws.ec2.Vpc(f"{n}-vpc", cidr_block=r.cidr, enable_dns_hostnames=True, enable_dns_support=True,
                               tags={**tags, "Name": f"{self.args.prefix}-{n}"}, opts=here)
        self.subnets = [
            aws.ec2.Subnet(f"{n}-private-{az[-1]}", vpc_id=self.vpc.id, cidr_block=cidr, availability_zone=az,
                           map_public_ip_on_launch=False, tags={**tags, "Name": f"{self.args.prefix}-{n}-private-{az[-1]}"}, opts=here)
            for az, cidr in private_subnets(r, self.args.az_count)
        ]
        self.db_security_group = aws.ec2.SecurityGroup(
            f"{n}-db-sg", vpc_id=self.vpc.id, description="PostgreSQL from inside the VPC only",
            ingress=[aws.ec2.SecurityGroupIngressArgs(protocol="tcp", from_port=5432, to_port=5432, cidr_blocks=[r.cidr])],
            egress=[], tags=tags, opts=here,
        )

    # -- database: PostgreSQL in the private subnets, encrypted with the region's key
    def _make_database(self) -> None:
        r, n, tags, here = self.region, self.region.name, self.args.tags, self.here
        db = r.environment.database
        major = db.version.split(".")[0]
        self.db_subnets = aws.rds.SubnetGroup(f"{n}-db-subnets", subnet_ids=[s.id for s in self.subnets], tags=tags, opts=here)
        self.db_parameters = aws.rds.ParameterGroup(
            f"{n}-db-params", family=f"postgres{major}", description="residency: logical replication for online moves, TLS only",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(name="rds.logical_replication", value="1", apply_method="pending-reboot"),
                aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1", apply_method="pending-reboot"),
            ],
            tags=tags, opts=here,
        )
        self.database = aws.rds.Instance(
            f"{n}-db", identifier=db_identifier(r, self.args.env), engine=db.engine, engine_version=db.version,
            instance_class=db.instance_class, allocated_storage=db.storage_gb, storage_type="gp3",
            multi_az=db.multi_az, storage_encrypted=True, kms_key_id=self.key.arn,
            backup_retention_period=retention.backup_days(r), copy_tags_to_snapshot=True,
            db_subnet_group_name=self.db_subnets.name, parameter_group_name=self.db_parameters.name,
            vpc_security_group_ids=[self.db_security_group.id], publicly_accessible=False,
            username="residency", manage_master_user_password=True, iam_database_authentication_enabled=True,
            deletion_protection=True, skip_final_snapshot=False, final_snapshot_identifier=f"{db_identifier(r, self.args.env)}-final",
            tags=tags, opts=here,
        )

    # -- backups: the database's automated backups copied to the backup region, inside the jurisdiction
    def _make_backups(self) -> None:
        self.database_backups = aws.rds.InstanceAutomatedBackupsReplication(
            f"{self.region.name}-db-backups", source_db_instance_arn=self.database.arn, kms_key_id=self.backup_key.arn,
            retention_period=retention.backup_days(self.region), opts=self.there,
        )

    # -- buckets, each with an encrypted, versioned replica in the backup region
    def _make_buckets(self) -> None:
        r, n, tags = self.region, self.region.name, self.args.tags
        self.replication_role = aws.iam.Role(
            f"{n}-s3-replication", name=f"{self.args.prefix}-{n}-s3-replication",
            assume_role_policy=_assume("s3.amazonaws.com"), tags=tags, opts=self.here,
        )
        self.buckets = {}
        for b in r.environment.buckets:
            src = self._bucket(f"{n}-{b}", bucket_name(r, b, env=self.args.env), self.key, tags, self.here, retention.noncurrent_version_days(r))
            dst = self._bucket(f"{n}-{b}-replica", bucket_name(r, b, replica=True, env=self.args.env), self.backup_key, tags, self.there,
                               retention.noncurrent_version_days(r))
            self._make_replication(b, src, dst)
            self.buckets[b] = BucketSet(src.bucket, dst.bucket)
        src_arns, dst_arns = self._bucket_arns()
        aws.iam.RolePolicy(
            f"{n}-s3-replication", role=self.replication_role.id,
            policy=pulumi.Output.all(self.key.arn, self.backup_key.arn).apply(lambda k: _doc([
                {"Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"], "Resource": src_arns},
                {"Action": ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging"],
                 "Resource": [f"{a}/*" for a in src_arns]},
                {"Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"], "Resource": [f"{a}/*" for a in dst_arns]},
                {"Action": ["kms:Decrypt"], "Resource": [k[0]]},
                {"Action": ["kms:Encrypt", "kms:GenerateDataKey"], "Resource": [k[1]]},
            ])),
            opts=self.here,
        )

    def _make_replication(self, b: str, src: "_Made", dst: "_Made") -> None:
        r = self.region
        aws.s3.BucketReplicationConfig(
            f"{r.name}-{b}-replication", bucket=src.bucket.bucket, role=self.replication_role.arn,
            rules=[aws.s3.BucketReplicationConfigRuleArgs(
                id="backup", status="Enabled", filter=aws.s3.BucketReplicationConfigRuleFilterArgs(prefix=""),
                delete_marker_replication=aws.s3.BucketReplicationConfigRuleDeleteMarkerReplicationArgs(status="Enabled"),
                source_selection_criteria=aws.s3.BucketReplicationConfigRuleSourceSelectionCriteriaArgs(
                    sse_kms_encrypted_objects=aws.s3.BucketReplicationConfigRuleSourceSelectionCriteriaSseKmsEncryptedObjectsArgs(status="Enabled")),
                destination=aws.s3.BucketReplicationConfigRuleDestinationArgs(
                    bucket=policy.s3_bucket_arn(bucket_name(r, b, replica=True, env=self.args.env)),
                    encryption_configuration=aws.s3.BucketReplicationConfigRuleDestinationEncryptionConfigurationArgs(
                        replica_kms_key_id=self.backup_key.arn)),
            )],
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[src.versioning, dst.versioning]),
        )

    def _bucket_arns(self) -> tuple[list[str], list[str]]:
        """The ARNs of the region's buckets and of their replicas (known before anything exists)."""
        names = self.region.environment.buckets
        return ([policy.s3_bucket_arn(bucket_name(self.region, b, env=self.args.env)) for b in names],
                [policy.s3_bucket_arn(bucket_name(self.region, b, replica=True, env=self.args.env)) for b in names])

    # -- queues
    def _make_queues(self) -> None:
        r, tags = self.region, self.args.tags
        self.queues = {
            q: aws.sqs.Queue(f"{r.name}-{q}", name=queue_name(r, q, self.args.env), kms_master_key_id=self.key.arn,
                             kms_data_key_reuse_period_seconds=300, message_retention_seconds=14 * 24 * 3600, tags=tags, opts=self.here)
            for q in r.environment.queues
        }

    # -- roles: the application and the mover, each with only what it needs
    def _make_roles(self) -> None:
        r, n, tags, here = self.region, self.region.name, self.args.tags, self.here
        src_arns, dst_arns = self._bucket_arns()
        queue_arns = [q.arn for q in self.queues.values()]
        self.app_role = aws.iam.Role(f"{n}-app", name=f"{self.args.prefix}-{n}-app", assume_role_policy=_assume("ecs-tasks.amazonaws.com"),
                                     tags=tags, opts=here)
        aws.iam.RolePolicy(
            f"{n}-app", role=self.app_role.id,
            policy=pulumi.Output.all(self.key.arn, self.database.resource_id, *queue_arns).apply(lambda v: _doc([
                {"Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": [f"{a}/*" for a in src_arns]},
                {"Action": ["s3:ListBucket"], "Resource": src_arns},
                {"Action": ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"], "Resource": list(v[2:])},
                {"Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": [v[0]]},
                {"Action": ["rds-db:connect"], "Resource": [f"arn:aws:rds-db:{r.aws_region}:*:dbuser:{v[1]}/app"]},
            ])),
            opts=here,
        )
        self.mover_role = aws.iam.Role(f"{n}-mover", name=f"{self.args.prefix}-{n}-mover", assume_role_policy=_assume("ecs-tasks.amazonaws.com"),
                                       tags=tags, opts=here)
        aws.iam.RolePolicy(
            f"{n}-mover", role=self.mover_role.id,
            policy=pulumi.Output.all(self.key.arn, self.database.resource_id).apply(lambda v: _doc([
                {"Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
                 "Resource": [f"{a}/*" for a in src_arns]},
                {"Action": ["s3:ListBucket", "s3:ListBucketVersions"], "Resource": src_arns},
                # cleanup erases a moved workspace's every version in the replicas too
                {"Action": ["s3:ListBucketVersions"], "Resource": dst_arns},
                {"Action": ["s3:DeleteObjectVersion"], "Resource": [f"{a}/*" for a in dst_arns]},
                {"Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"], "Resource": [v[0]]},
                {"Action": ["rds-db:connect"], "Resource": [f"arn:aws:rds-db:{r.aws_region}:*:dbuser:{v[1]}/mover"]},
            ])),
            opts=here,
        )

    def _bucket(self, lname: str, name: str, key: aws.kms.Key, tags: dict[str, str], opts: pulumi.ResourceOptions, retention_days: int):
        bucket = aws.s3.Bucket(lname, bucket=name, force_destroy=False, tags=tags, opts=opts)
        aws.s3.BucketServerSideEncryptionConfiguration(
            lname, bucket=bucket.bucket,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                bucket_key_enabled=True,
                apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="aws:kms", kms_master_key_id=key.arn))],
            opts=opts,
        )
        aws.s3.BucketPublicAccessBlock(lname, bucket=bucket.bucket, block_public_acls=True, block_public_policy=True,
                                       ignore_public_acls=True, restrict_public_buckets=True, opts=opts)
        versioning = aws.s3.BucketVersioning(
            lname, bucket=bucket.bucket,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"), opts=opts)
        aws.s3.BucketLifecycleConfiguration(
            lname, bucket=bucket.bucket,
            rules=[aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="retention", status="Enabled", filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(noncurrent_days=retention_days),
                abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(days_after_initiation=7),
            )],
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[versioning])),
        )
        return _Made(bucket, versioning)


@dataclass
class _Made:
    bucket: aws.s3.Bucket
    versioning: aws.s3.BucketVersioning


def _assume(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


def _doc(statements: list[dict]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", **s} for s in statements]})
