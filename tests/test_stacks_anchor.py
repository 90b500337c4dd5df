"""The control stack's audit anchor under Pulumi's mocks: a signing key and a compliance-mode
Object Lock bucket, exported for `residency audit verify` and the mover."""

from __future__ import annotations

import os

import pytest

from residency.stacks.plan import reset_runtime, run_program

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REGIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "regions.yaml")


def test_control_stack_builds_the_audit_anchor(monkeypatch):
    from residency.stacks import program

    monkeypatch.setenv("RESIDENCY_REGIONS", REGIONS)
    monkeypatch.setenv("RESIDENCY_CONTROL_AWS_REGION", "eu-central-1")
    m = run_program(program.main, stack="production-control")
    by_type = {}
    for typ, name, props, region in m.records:
        by_type.setdefault(typ, []).append((props, region))
    (key, key_region), = by_type["aws:kms/key:Key"]
    assert key["customerMasterKeySpec"] == "ECC_NIST_P256" and key["keyUsage"] == "SIGN_VERIFY" and key_region == "eu-central-1"
    (bucket, _), = by_type["aws:s3/bucket:Bucket"]
    assert bucket["objectLockEnabled"] is True
    (lock, _), = by_type["aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration"]
    assert lock["rule"]["defaultRetention"]["mode"] == "COMPLIANCE" and lock["rule"]["defaultRetention"]["days"] >= 365
    (ver, _), = by_type["aws:s3/bucketVersioning:BucketVersioning"]
    assert ver["versioningConfiguration"]["status"] == "Enabled"
    assert {r for _, _, _, r in m.records if r} == {"eu-central-1"}
    assert not any(t.startswith("aws:rds") or t.startswith("aws:ec2") for t in by_type)  # no region's environment
    (alias, _), = by_type["aws:kms/alias:Alias"]
    assert alias["name"] == "alias/residency-audit" and bucket["bucket"] == "residency-audit-digests"
    m = run_program(program.main, stack="staging-control")  # another environment: its own anchor
    names = {props.get("bucket") or props.get("name") for typ, _, props, _ in m.records if typ in ("aws:s3/bucket:Bucket", "aws:kms/alias:Alias")}
    assert names == {"residency-staging-audit-digests", "alias/residency-staging-audit"}
    reset_runtime()
