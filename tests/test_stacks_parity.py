"""Live parity against a moto server: two regions as declared, one deliberately drifted."""

from __future__ import annotations

import copy
import logging
import os
import socket
from typing import Any

import pytest

from residency.catalogue import load
from residency.stacks import parity
from residency.stacks.plan import plan_region, reset_runtime

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REGIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "regions.yaml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def materialise(client, region: str, inv: dict[str, dict[str, Any]]) -> None:
    """Create in moto what an inventory describes (what a deploy would have made)."""
    tags = {"residency:region": region, "residency:managed-by": "pulumi"}
    keys: dict[str, str] = {}

    def key_in(aws_region: str) -> str:
        if aws_region not in keys:
            keys[aws_region] = client("kms", aws_region).create_key(Description=f"scratch {region} {aws_region}")["KeyMetadata"]["Arn"]
        return keys[aws_region]

    for res, a in inv.items():
        if res.startswith("kms key "):
            arn = client("kms", a["region"]).create_key(
                Description=res[len("kms key '"):-1], MultiRegion=a["multi_region"],
                Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()])["KeyMetadata"]["Arn"]
            keys.setdefault(a["region"], arn)
    for res, a in inv.items():
        kind, name = res.rsplit(" ", 1)
        if kind == "s3 bucket":
            s3 = client("s3", a["region"])
            extra = {} if a["region"] == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": a["region"]}}
            s3.create_bucket(Bucket=name, **extra)
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})
            if a.get("encryption"):
                d = {"SSEAlgorithm": a["encryption"]}
                if a["encryption"] == "aws:kms":
                    d["KMSMasterKeyID"] = key_in(a["kms_key_region"])
                s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": d}]})
            if a.get("replicates_to"):  # replication needs versioning on while it is configured
                s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            flag = bool(a.get("public_access_blocked"))
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
                "BlockPublicAcls": True, "BlockPublicPolicy": flag, "IgnorePublicAcls": True, "RestrictPublicBuckets": flag})
            if a.get("replicates_to"):
                s3.put_bucket_replication(Bucket=name, ReplicationConfiguration={
                    "Role": "arn:aws:iam::123456789012:role/replication",
                    "Rules": [{"ID": f"r{i}", "Status": "Enabled", "Priority": i, "Filter": {"Prefix": ""},
                               "DeleteMarkerReplication": {"Status": "Enabled"},
                               "Destination": {"Bucket": f"arn:aws:s3:::{d}"}} for i, d in enumerate(a["replicates_to"])]})
            if a.get("versioning") in ("Enabled", "Suspended"):
                s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": a["versioning"]})
        elif kind == "sqs queue":
            attrs = {"KmsMasterKeyId": key_in(a["kms_key_region"])} if a.get("kms_key_region") else {}
            client("sqs", a["region"]).create_queue(QueueName=name, Attributes=attrs, tags=tags)
        elif kind == "rds instance":
            client("rds", a["region"]).create_db_instance(
                DBInstanceIdentifier=name, DBInstanceClass=a["instance_class"], Engine=a["engine"], AllocatedStorage=20,
                MasterUsername="residency", MasterUserPassword="not-a-secret-1", MultiAZ=a["multi_az"],
                StorageEncrypted=a["storage_encrypted"], KmsKeyId=key_in(a["kms_key_region"]),
                BackupRetentionPeriod=a["backup_retention_days"], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        elif kind == "vpc":
            vpc = client("ec2", a["region"]).create_vpc(CidrBlock=a["cidr"])["Vpc"]["VpcId"]
            client("ec2", a["region"]).create_tags(Resources=[vpc], Tags=[{"Key": "Name", "Value": name}] +
                                                    [{"Key": k, "Value": v} for k, v in tags.items()])


@pytest.fixture(scope="module")
def drifted(moto_endpoint):
    """us and eu deployed as declared; au deployed with deliberate drift. Returns the drifts made."""
    cat = load(REGIONS)
    client = parity.boto3_clients(endpoint_url=moto_endpoint)
    expected = {n: parity.declared(plan_region(cat, n)) for n in ("us", "eu", "au")}
    reset_runtime()
    for n in ("us", "eu"):
        materialise(client, n, expected[n])
    au = copy.deepcopy(expected["au"])
    del au["s3 bucket residency-au-exports"]                                      # missing
    au["s3 bucket residency-au-attachments"].update(
        versioning="Suspended", public_access_blocked=False, encryption="AES256",
        replicates_to=["residency-us-attachments-replica"])                       # four differences
    au["rds instance residency-au"]["instance_class"] = "db.r6g.large"            # override not applied
    au["kms key 'residency au: data at rest in ap-southeast-2'"]["multi_region"] = True
    au["sqs queue residency-au-debug"] = {"region": "ap-southeast-2", "kms_key_region": None}  # extra
    materialise(client, "au", au)
    return cat, client


def test_parity_matching_regions_are_clean(drifted):
    cat, client = drifted
    result = parity.check(cat, client, ["us", "eu"])
    assert result.ok, [d.describe() for d in result.drifts]
    assert result.regions["us"].checked >= 9  # buckets x2 + replicas, queue, db, keys, vpc


def test_parity_names_every_drift_of_the_drifted_region(drifted):
    cat, client = drifted
    result = parity.check(cat, client, ["au"])
    found = {(d.kind, d.resource, d.attribute) for d in result.regions["au"].drifts}
    want = {
        ("missing", "s3 bucket residency-au-exports", None),
        ("different", "s3 bucket residency-au-attachments", "versioning"),
        ("different", "s3 bucket residency-au-attachments", "public_access_blocked"),
        ("different", "s3 bucket residency-au-attachments", "encryption"),
        ("different", "s3 bucket residency-au-attachments", "kms_key_region"),
        ("different", "s3 bucket residency-au-attachments", "replicates_to"),
        ("different", "rds instance residency-au", "instance_class"),
        ("different", "kms key 'residency au: data at rest in ap-southeast-2'", "multi_region"),
        ("extra", "sqs queue residency-au-debug", None),
    }
    assert found == want, sorted(found ^ want, key=str)
    by_attr = {d.attribute: d for d in result.regions["au"].drifts if d.resource.endswith("au-attachments")}
    assert by_attr["replicates_to"].actual == ["residency-us-attachments-replica"]
    assert by_attr["replicates_to"].expected == ["residency-au-attachments-replica"]


def test_parity_cli_renders_drifts_and_exits_1(drifted, moto_endpoint):
    from click.testing import CliRunner

    from residency.cli import main

    result = CliRunner().invoke(main, ["--regions", REGIONS, "stacks", "parity", "--region", "au", "--region", "us",
                                       "--endpoint-url", moto_endpoint])
    assert result.exit_code == 1, result.output
    assert "missing" in result.output and "residency-au-exports" in result.output
    assert "au: 9 resources checked, 9 drifts" in result.output
    assert "us: 9 resources checked, 0 drifts" in result.output
