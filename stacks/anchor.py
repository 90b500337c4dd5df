"""`AuditAnchor`: where the control plane's audit chain is anchored in production.

An asymmetric KMS key (ECC NIST P-256, SIGN_VERIFY: the private key never leaves KMS) that signs
the audit digests, and an S3 bucket with Object Lock in compliance mode that keeps them: nobody,
the account's root included, can delete or overwrite a digest before its retention ends. Built by
the ``control`` stack (``pulumi up -s control``); its outputs are what ``RESIDENCY_AUDIT_KMS_KEY``
and ``RESIDENCY_AUDIT_BUCKET`` (or the connections file's ``audit:``) point at.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from residency.digests import KEY_SPEC

TYPE = "residency:stacks:AuditAnchor"
RETENTION_DAYS = 2557  # seven years
BUCKET = "residency-audit-digests"
ALIAS = "alias/residency-audit"


class AuditAnchor(pulumi.ComponentResource):
    def __init__(self, name: str, aws_region: str, *, bucket: str = BUCKET, alias: str = ALIAS, retention_days: int = RETENTION_DAYS,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE, name, None, opts)
        tags = {"residency:component": "audit-anchor", "residency:managed-by": "pulumi"}
        self.provider = aws.Provider(f"{name}-aws", region=aws_region, opts=pulumi.ResourceOptions(parent=self))
        here = pulumi.ResourceOptions(parent=self, provider=self.provider)
        self.key = aws.kms.Key(
            f"{name}-signing-key", description="residency: signs the audit chain's digests",
            customer_master_key_spec=KEY_SPEC, key_usage="SIGN_VERIFY", multi_region=False,
            deletion_window_in_days=30, tags=tags, opts=here,
        )
        self.alias = aws.kms.Alias(f"{name}-signing-key", name=alias, target_key_id=self.key.key_id, opts=here)
        self.bucket = aws.s3.Bucket(f"{name}-digests", bucket=bucket, object_lock_enabled=True, force_destroy=False, tags=tags, opts=here)
        self.versioning = aws.s3.BucketVersioning(
            f"{name}-digests", bucket=self.bucket.bucket,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"), opts=here)
        self.lock = aws.s3.BucketObjectLockConfiguration(
            f"{name}-digests", bucket=self.bucket.bucket, object_lock_enabled="Enabled",
            rule=aws.s3.BucketObjectLockConfigurationRuleArgs(
                default_retention=aws.s3.BucketObjectLockConfigurationRuleDefaultRetentionArgs(mode="COMPLIANCE", days=retention_days)),
            opts=pulumi.ResourceOptions.merge(here, pulumi.ResourceOptions(depends_on=[self.versioning])),
        )
        aws.s3.BucketPublicAccessBlock(f"{name}-digests", bucket=self.bucket.bucket, block_public_acls=True, block_public_policy=True,
                                       ignore_public_acls=True, restrict_public_buckets=True, opts=here)
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-digests", bucket=self.bucket.bucket,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="AES256"))],
            opts=here,
        )
        self.register_outputs({"kms_key_arn": self.key.arn, "bucket": self.bucket.bucket, "aws_region": aws_region})
