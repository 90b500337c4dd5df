"""The regional stack under Pulumi's mocks: identical regions, residency refused early, encryption,
and the guardrails (residency.policy) as applied by the policy pack."""

from __future__ import annotations

import dataclasses
import os
import shutil
from types import SimpleNamespace

import pulumi
import pytest

from residency import policy
from residency.catalogue import load, with_region
from residency.errors import InputError
from residency.stacks.plan import RecordingMocks, plan, plan_region, reset_runtime

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGIONS = os.path.join(ROOT, "regions.yaml")


@pytest.fixture(scope="module")
def cat():
    return load(REGIONS)


@pytest.fixture
def mocks():
    """Fresh mocks for one @pulumi.runtime.test test; the runtime is reset before and after."""
    reset_runtime()
    m = RecordingMocks()
    pulumi.runtime.set_mocks(m, project="residency", stack="test", preview=False)
    yield m
    reset_runtime()


# --------------------------------------------------------------------------- identical regions


def test_every_region_gets_the_same_resource_types_and_counts(cat):
    p = plan(cat)
    counts = {n: rp.counts for n, rp in p.regions.items()}
    assert set(counts) == {"us", "eu", "au"}
    assert counts["us"] == counts["eu"] == counts["au"], counts
    assert counts["us"]["aws:s3/bucket:Bucket"] == 2 * len(cat.environment.buckets)  # each with a replica
    assert counts["us"]["aws:sqs/queue:Queue"] == len(cat.environment.queues)
    assert p.violations == {}
    # the only difference between regions is au's declared instance class
    assert p.unexplained == []
    assert [(d.resource, d.prop, d.explained_by) for d in p.differences] == [
        ("<region>-db", "instance_class", {"au": "database.instance_class"})]


def test_a_fourth_region_gets_the_same_set_with_no_code_change(cat, tmp_path):
    text = open(REGIONS, encoding="utf-8").read()
    text = text.replace(
        "\nworkspace:",
        "\n  de: {aws_region: eu-central-1, jurisdiction: EU, cidr: 10.40.0.0/16, backup_region: eu-north-1, status: planned}\n"
        "\nworkspace:", 1)
    path = tmp_path / "regions.yaml"
    path.write_text(text, encoding="utf-8")
    cat4 = load(path)
    assert "de" in cat4.regions
    p = plan(cat4)
    assert set(p.regions) == {"us", "eu", "au", "de"}
    assert p.regions["de"].counts == p.regions["us"].counts
    assert {r.aws_region for r in p.regions["de"].resources} == {"eu-central-1", "eu-north-1", None}
    assert p.unexplained == [] and p.violations == {}


def test_plan_runs_are_isolated(cat):
    a = plan_region(cat, "eu")
    b = plan_region(cat, "eu")
    assert len(a.resources) == len(b.resources)
    assert sorted(r.name for r in a.resources) == sorted(r.name for r in b.resources)


# --------------------------------------------------------------------------- refused before anything is built


@pulumi.runtime.test
def test_backup_region_outside_the_jurisdiction_is_refused_before_anything_is_built(cat, mocks):
    from residency.stacks.component import RegionalEnvironment, RegionalEnvironmentArgs

    bad = dataclasses.replace(cat.regions["eu"], backup_region="us-west-2")  # bypasses the loader's check
    cat2 = with_region(cat, bad)
    with pytest.raises(InputError, match="outside jurisdiction EU"):
        RegionalEnvironment("eu", RegionalEnvironmentArgs(catalogue=cat2, region=bad))
    assert mocks.records == []


def test_plan_of_a_region_with_a_foreign_backup_region_is_refused(cat):
    bad = dataclasses.replace(cat.regions["au"], backup_region="eu-west-1")
    with pytest.raises(InputError):
        plan_region(with_region(cat, bad), bad)


# --------------------------------------------------------------------------- encryption with the region's own key


@pulumi.runtime.test
def test_database_and_buckets_are_encrypted_with_a_key_of_their_own_region(cat, mocks):
    from residency.stacks.component import RegionalEnvironment, RegionalEnvironmentArgs

    region = cat.regions["eu"]
    env = RegionalEnvironment("eu", RegionalEnvironmentArgs(catalogue=cat, region=region))
    outs = [env.database.storage_encrypted, env.database.kms_key_id, env.key.arn, env.backup_key.arn,
            env.database_backups.kms_key_id]

    def check(v):
        encrypted, db_key, key, backup_key, backups_key = v
        assert encrypted is True
        assert db_key == key and policy._arn_region(key) == region.aws_region
        assert backups_key == backup_key and policy._arn_region(backup_key) == region.backup_region

    return pulumi.Output.all(*outs).apply(check)


def test_every_bucket_and_database_is_encrypted_with_a_key_of_its_own_region(cat):
    for name in cat.regions:
        rp = plan_region(cat, name)
        bucket_region = {r.props["bucket"]: r.aws_region for r in rp.resources if r.type == "aws:s3/bucket:Bucket"}
        sse = {r.props["bucket"]: r.props for r in rp.resources if r.type.endswith("EncryptionConfiguration")}
        assert set(sse) == set(bucket_region), "every bucket has an encryption configuration"
        for bucket, props in sse.items():
            d = props["rules"][0]["apply_server_side_encryption_by_default"]
            assert d["sse_algorithm"] == "aws:kms"
            assert policy._arn_region(d["kms_master_key_id"]) == bucket_region[bucket], bucket
        dbs = [r for r in rp.resources if r.type == "aws:rds/instance:Instance"]
        assert len(dbs) == 1 and dbs[0].props["storage_encrypted"] is True
        assert policy._arn_region(dbs[0].props["kms_key_id"]) == dbs[0].aws_region == cat.regions[name].aws_region
        keys = [r for r in rp.resources if r.type == "aws:kms/key:Key"]
        assert keys and all(k.props.get("multi_region") is False for k in keys)
        # nothing uses a default provider: every AWS resource has a region from an explicit provider
        assert all(r.aws_region for r in rp.resources if r.type.startswith("aws:"))


def test_database_settings_come_from_regions_yaml(cat):
    db = next(r for r in plan_region(cat, "au").resources if r.type == "aws:rds/instance:Instance").props
    assert db["instance_class"] == "db.r6g.xlarge"  # au's override
    assert db["backup_retention_period"] == cat.environment.retention.backups_days
    params = next(r for r in plan_region(cat, "au").resources if r.type.endswith("ParameterGroup")).props
    assert {p["name"]: p["value"] for p in params["parameters"]} == {"rds.logical_replication": "1", "rds.force_ssl": "1"}


# --------------------------------------------------------------------------- guardrails (residency.policy)


def test_check_resource_rules(cat):
    bad = policy.check_resource
    assert bad(cat, "eu", "aws:kms/key:Key", {"multiRegion": True}, "eu-west-1")
    assert bad(cat, "eu", "aws:kms/key:Key", {"multiRegion": False}, "eu-west-1") == []
    assert bad(cat, "eu", "aws:sqs/queue:Queue", {"kmsMasterKeyId": "k"}, "us-east-1")  # outside allowed regions
    assert bad(cat, "eu", "aws:rds/instance:Instance", {"storageEncrypted": False}, "eu-west-1")
    assert bad(cat, "eu", "aws:sqs/queue:Queue", {}, "eu-west-1")
    assert bad(cat, "eu", "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication",
               {"sourceDbInstanceArn": "arn:aws:rds:eu-west-1:1:db"}, "us-west-2")
    assert bad(cat, "eu", "aws:iam/role:Role", {"name": "x"}, "eu-west-1") == []


def test_a_planned_stack_with_replication_out_of_the_jurisdiction_is_rejected(cat):
    rp = plan_region(cat, "eu")
    items = [(r.type, r.props, r.aws_region) for r in rp.resources]
    assert policy.check_resources(cat, "eu", items) == []
    # point one replication at a bucket the stack puts in us-east-1 (e.g. a copied-over config)
    items.append(("aws:s3/bucket:Bucket", {"bucket": "stray-us"}, "us-east-1"))
    items.append(("aws:s3/bucketReplicationConfig:BucketReplicationConfig",
                  {"bucket": "residency-eu-attachments", "rules": [{"destination": {"bucket": "arn:aws:s3:::stray-us"}}]}, "eu-west-1"))
    reasons = [d.reason for d in policy.check_resources(cat, "eu", items)]
    assert any("replication out of the jurisdiction" in r and "us-east-1" in r for r in reasons), reasons
    assert any("stray-us' has no SSE-KMS" in r for r in reasons), reasons


def _res(urn_stack: str, rtype: str, name: str, props: dict, region: str):
    return SimpleNamespace(resource_type=rtype, name=name, props=props,
                           urn=f"urn:pulumi:production-{urn_stack}::residency::{rtype}::{name}",
                           provider=SimpleNamespace(props={"region": region}, resource_type="pulumi:providers:aws"))


def test_policy_pack_rejects_a_bucket_replicating_out_of_the_jurisdiction(cat):
    from residency.stacks.policypack import rules

    resources = [
        _res("eu", "aws:s3/bucket:Bucket", "src", {"bucket": "residency-eu-attachments"}, "eu-west-1"),
        _res("eu", "aws:s3/bucket:Bucket", "dst", {"bucket": "residency-eu-attachments-replica"}, "us-east-2"),
        _res("eu", "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "src",
             {"bucket": "residency-eu-attachments", "rules": [{"applyServerSideEncryptionByDefault": {
                 "sseAlgorithm": "aws:kms", "kmsMasterKeyId": "arn:aws:kms:eu-west-1:1:key/a"}}]}, "eu-west-1"),
        _res("eu", "aws:s3/bucketReplicationConfig:BucketReplicationConfig", "rep",
             {"bucket": "residency-eu-attachments", "role": "r", "rules": [{"status": "Enabled", "destination": {
                 "bucket": "arn:aws:s3:::residency-eu-attachments-replica",
                 "encryptionConfiguration": {"replicaKmsKeyId": "arn:aws:kms:us-east-2:1:key/b"}}}]}, "eu-west-1"),
    ]
    stack_violations: list[str] = []
    rules.validate_stack(SimpleNamespace(resources=resources), lambda msg, urn=None: stack_violations.append(msg), cat)
    resource_violations: list[str] = []
    for r in resources:
        rules.validate_resource(r, lambda msg, urn=None: resource_violations.append(msg), cat)
    everything = stack_violations + resource_violations
    assert any("bucketReplicationConfig" in v and "out of the jurisdiction" in v and "us-east-2" in v for v in stack_violations), everything
    assert any("replica key" in v and "us-east-2" in v for v in resource_violations), everything
    assert any("may only touch" in v for v in resource_violations), everything  # the replica bucket's region
    assert any("has no SSE-KMS" in v for v in stack_violations), everything  # the replica bucket is unencrypted


def test_policy_pack_passes_the_program_as_planned(cat):
    from residency.stacks.policypack import rules

    rp = plan_region(cat, "au")
    resources = [_res("au", r.type, r.name, r.props, r.aws_region or "") for r in rp.resources
                 if not r.type.startswith(("pulumi:", "residency:"))]
    seen: list[str] = []
    rules.validate_stack(SimpleNamespace(resources=resources), lambda msg, urn=None: seen.append(msg), cat)
    for r in resources:
        rules.validate_resource(r, lambda msg, urn=None: seen.append(msg), cat)
    assert seen == []


def test_policy_pack_tolerates_values_unknown_during_preview(cat):
    from pulumi_policy import proxy
    from residency.stacks.policypack import rules

    props = proxy.unknown_checking_proxy({"storageEncrypted": True, "kmsKeyId": proxy.UNKNOWN_STRING_VALUE})
    seen: list[str] = []
    rules.validate_resource(_res("us", "aws:rds/instance:Instance", "db", props, "us-east-1"), lambda m, u=None: seen.append(m), cat)
    assert seen == []


def test_program_selects_the_environment_and_region_by_stack_name(cat, monkeypatch):
    from residency.stacks import program
    from residency.stacks.plan import run_program

    monkeypatch.setenv("RESIDENCY_REGIONS", REGIONS)
    m = run_program(program.main, stack="production-au")
    regions = {rec[3] for rec in m.records if rec[0].startswith("aws:")}
    assert regions == {"ap-southeast-2", "ap-southeast-4"}
    buckets = {rec[2]["bucket"] for rec in m.records if rec[0] == "aws:s3/bucket:Bucket"}
    assert "residency-au-attachments" in buckets  # production keeps the names the mover and parity know
    # staging of the same region: its own physical names, so both can exist (bucket names are global)
    m = run_program(program.main, stack="staging-au")
    staging = {rec[2]["bucket"] for rec in m.records if rec[0] == "aws:s3/bucket:Bucket"}
    assert "residency-staging-au-attachments" in staging and not staging & buckets
    tags = next(rec[2]["tags"] for rec in m.records if rec[0] == "aws:ec2/vpc:Vpc")
    assert tags["residency:environment"] == "staging" and tags["residency:region"] == "au"
    # a bare region name (the old scheme) is refused, saying how to rename the stack
    with pytest.raises(InputError, match=r"<env>-<region>.*pulumi stack rename production-au -s au"):
        run_program(program.main, stack="au")
    with pytest.raises(InputError, match="did you mean"):
        run_program(program.main, stack="production-ua")
    reset_runtime()


def test_pulumi_project_files_exist():
    import yaml

    proj = yaml.safe_load(open(os.path.join(ROOT, "stacks", "Pulumi.yaml"), encoding="utf-8"))
    assert proj["name"] == "residency" and proj["runtime"]["name"] == "python"
    assert not [f for f in os.listdir(os.path.join(ROOT, "stacks")) if f.startswith("Pulumi.") and f != "Pulumi.yaml"]
    assert shutil.os.path.isfile(os.path.join(ROOT, "stacks", "policypack", "PulumiPolicy.yaml"))


def test_resources_sharing_a_name_are_compared_type_by_type(cat):
    """A bucket's configurations share its name; registration order differs between runs, so their
    equally named properties must never stand in for each other."""
    from residency.stacks.plan import PlannedResource, RegionPlan, compare

    sse = ("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", {"rules": [{"sse": "aws:kms"}]})
    life = ("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", {"rules": [{"id": "retention"}]})

    def region_plan(name: str, aws_region: str, order: list) -> RegionPlan:
        res = [PlannedResource(t, f"{name}-attachments", "<region>-attachments", aws_region, props) for t, props in order]
        return RegionPlan(name, aws_region, cat.region(name).backup_region, res, [])

    plans = {"us": region_plan("us", "us-east-1", [sse, life]), "eu": region_plan("eu", "eu-west-1", [life, sse])}
    assert compare(cat, plans) == []


def test_plan_runs_after_another_library_finished_its_event_loop(cat):
    """asyncio.run (the job engine's worker uses it) leaves the main thread without an event
    loop; the offline plan must still run in that process."""
    import asyncio

    async def nothing() -> None:
        return None

    asyncio.run(nothing())
    assert plan(cat).types
