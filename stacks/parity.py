"""The live parity check: what each region really has, read with boto3, against what the program declares.

What is declared comes from the offline plan (:mod:`stacks.plan`, the program under mocks), so
the check follows the program without repeating it. What exists is found by the tag
``residency:region`` in the region's AWS region and its backup region. Every resource is compared
as a flat set of attributes (region, encryption and the KMS key's region, versioning, public
access, replication destinations, database class and backups, multi-region keys, VPC CIDR);
the answer names each one that is missing, extra, or configured differently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from residency import policy
from residency.catalogue import Catalogue, Region
from residency.errors import OperationError

from .plan import RegionPlan, plan_region

TAG = "residency:region"
ClientFactory = Callable[[str, str], Any]  # (service, aws_region) -> boto3 client


@dataclass(frozen=True)
class Drift:
    region: str
    kind: str          # missing | extra | different
    resource: str      # e.g. "s3 bucket residency-au-exports"
    attribute: str | None = None
    expected: Any = None
    actual: Any = None

    def describe(self) -> str:
        if self.kind == "different":
            return f"{self.resource}: {self.attribute} is {self.actual!r}, expected {self.expected!r}"
        return f"{self.resource}: {self.kind}"


@dataclass
class RegionParity:
    region: str
    checked: int
    drifts: list[Drift]


@dataclass
class Parity:
    regions: dict[str, RegionParity]

    @property
    def ok(self) -> bool:
        return not any(r.drifts for r in self.regions.values())

    @property
    def drifts(self) -> list[Drift]:
        return [d for r in self.regions.values() for d in r.drifts]

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "regions": {n: {"checked": r.checked, "drifts": [asdict(d) for d in r.drifts]}
                                           for n, r in self.regions.items()}}


Inventory = dict[str, dict[str, Any]]  # "kind name" -> attributes


# --------------------------------------------------------------------------- declared


def declared(rp: RegionPlan) -> Inventory:
    """What the program declares for one region, as the attributes parity compares."""
    inv: Inventory = {}
    by_bucket: dict[str, dict[str, Any]] = {}
    for r in rp.resources:
        p = r.props
        if r.type == "aws:s3/bucket:Bucket":
            by_bucket.setdefault(p["bucket"], {})["region"] = r.aws_region
        elif r.type.startswith("aws:s3/bucketServerSideEncryptionConfiguration"):
            d = p["rules"][0]["apply_server_side_encryption_by_default"]
            b = by_bucket.setdefault(p["bucket"], {})
            b["encryption"] = d["sse_algorithm"]
            b["kms_key_region"] = policy._arn_region(d.get("kms_master_key_id"))
        elif r.type.startswith("aws:s3/bucketVersioning"):
            by_bucket.setdefault(p["bucket"], {})["versioning"] = p["versioning_configuration"]["status"]
        elif r.type.startswith("aws:s3/bucketPublicAccessBlock"):
            by_bucket.setdefault(p["bucket"], {})["public_access_blocked"] = all(
                bool(p.get(k)) for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"))
        elif r.type.startswith("aws:s3/bucketReplicationConfig"):
            by_bucket.setdefault(p["bucket"], {})["replicates_to"] = sorted(
                policy._bucket_name(rule["destination"]["bucket"]) or "" for rule in p["rules"])
        elif r.type == "aws:sqs/queue:Queue":
            inv[f"sqs queue {p['name']}"] = {"region": r.aws_region, "kms_key_region": policy._arn_region(p.get("kms_master_key_id"))}
        elif r.type == "aws:rds/instance:Instance":
            inv[f"rds instance {p['identifier']}"] = {
                "region": r.aws_region, "instance_class": p["instance_class"], "multi_az": bool(p["multi_az"]),
                "storage_encrypted": bool(p["storage_encrypted"]), "kms_key_region": policy._arn_region(p.get("kms_key_id")),
                "backup_retention_days": int(p["backup_retention_period"]), "engine": p["engine"],
            }
        elif r.type == "aws:kms/key:Key":
            inv[f"kms key '{p['description']}'"] = {"region": r.aws_region, "multi_region": bool(p.get("multi_region"))}
        elif r.type == "aws:ec2/vpc:Vpc":
            inv[f"vpc {p['tags'].get('Name')}"] = {"region": r.aws_region, "cidr": p["cidr_block"]}
    for name, attrs in by_bucket.items():
        attrs.setdefault("replicates_to", [])
        inv[f"s3 bucket {name}"] = attrs
    return inv


# --------------------------------------------------------------------------- live


def _tags(pairs: list[dict[str, str]] | None, k: str = "Key", v: str = "Value") -> dict[str, str]:
    return {t[k]: t[v] for t in pairs or []}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def live(region: Region, client: ClientFactory) -> Inventory:
    """What exists for ``region``, found by its tag in its AWS region and its backup region."""
    inv: Inventory = {}
    aws_regions = list(dict.fromkeys([region.aws_region, region.backup_region]))
    s3 = client("s3", region.aws_region)
    for b in s3.list_buckets().get("Buckets", []):
        name = b["Name"]
        try:
            tags = _tags(s3.get_bucket_tagging(Bucket=name).get("TagSet"))
        except ClientError as exc:
            if _code(exc) in ("NoSuchTagSet", "NoSuchBucket", "AccessDenied"):
                continue
            raise
        if tags.get(TAG) != region.name:
            continue
        loc = s3.get_bucket_location(Bucket=name).get("LocationConstraint") or "us-east-1"
        attrs: dict[str, Any] = {"region": loc}
        try:
            rule = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"][0]
            d = rule["ApplyServerSideEncryptionByDefault"]
            attrs["encryption"] = d.get("SSEAlgorithm")
            attrs["kms_key_region"] = policy._arn_region(d.get("KMSMasterKeyID"))
        except ClientError:
            attrs["encryption"] = None
            attrs["kms_key_region"] = None
        attrs["versioning"] = s3.get_bucket_versioning(Bucket=name).get("Status") or "Disabled"
        try:
            pab = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
            attrs["public_access_blocked"] = all(bool(pab.get(k)) for k in
                                                 ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"))
        except ClientError:
            attrs["public_access_blocked"] = False
        try:
            rules = s3.get_bucket_replication(Bucket=name)["ReplicationConfiguration"].get("Rules", [])
            attrs["replicates_to"] = sorted(policy._bucket_name(r["Destination"]["Bucket"]) or "" for r in rules)
        except ClientError:
            attrs["replicates_to"] = []
        inv[f"s3 bucket {name}"] = attrs
    for aws_region in aws_regions:
        sqs = client("sqs", aws_region)
        for url in sqs.list_queues(QueueNamePrefix="").get("QueueUrls", []) or []:
            if sqs.list_queue_tags(QueueUrl=url).get("Tags", {}).get(TAG) != region.name:
                continue
            a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]).get("Attributes", {})
            key = a.get("KmsMasterKeyId")
            inv[f"sqs queue {url.rsplit('/', 1)[-1]}"] = {"region": aws_region, "kms_key_region": policy._arn_region(key) or (aws_region if key else None)}
        rds = client("rds", aws_region)
        for db in rds.describe_db_instances().get("DBInstances", []):
            if _tags(db.get("TagList")).get(TAG) != region.name:
                continue
            inv[f"rds instance {db['DBInstanceIdentifier']}"] = {
                "region": aws_region, "instance_class": db.get("DBInstanceClass"), "multi_az": bool(db.get("MultiAZ")),
                "storage_encrypted": bool(db.get("StorageEncrypted")), "kms_key_region": policy._arn_region(db.get("KmsKeyId")),
                "backup_retention_days": int(db.get("BackupRetentionPeriod") or 0), "engine": db.get("Engine"),
            }
        kms = client("kms", aws_region)
        for k in kms.list_keys().get("Keys", []):
            meta = kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]
            if meta.get("KeyState") in ("PendingDeletion",) or meta.get("KeyManager") == "AWS":
                continue
            tags = _tags(kms.list_resource_tags(KeyId=k["KeyId"]).get("Tags"), "TagKey", "TagValue")
            if tags.get(TAG) != region.name:
                continue
            inv[f"kms key '{meta.get('Description', k['KeyId'])}'"] = {"region": aws_region, "multi_region": bool(meta.get("MultiRegion"))}
        ec2 = client("ec2", aws_region)
        for vpc in ec2.describe_vpcs(Filters=[{"Name": f"tag:{TAG}", "Values": [region.name]}]).get("Vpcs", []):
            name = _tags(vpc.get("Tags")).get("Name", vpc["VpcId"])
            inv[f"vpc {name}"] = {"region": aws_region, "cidr": vpc["CidrBlock"]}
    return inv


# --------------------------------------------------------------------------- compare


def compare(region: str, expected: Inventory, actual: Inventory) -> list[Drift]:
    out: list[Drift] = []
    for res in sorted(expected):
        if res not in actual:
            out.append(Drift(region, "missing", res))
            continue
        for attr, want in sorted(expected[res].items()):
            got = actual[res].get(attr)
            if got != want:
                out.append(Drift(region, "different", res, attr, want, got))
    for res in sorted(set(actual) - set(expected)):
        out.append(Drift(region, "extra", res))
    return out


def boto3_clients(endpoint_url: str | None = None, profile: str | None = None) -> ClientFactory:
    import boto3

    session = boto3.session.Session(profile_name=profile)
    cache: dict[tuple[str, str], Any] = {}

    def make(service: str, aws_region: str) -> Any:
        if (service, aws_region) not in cache:
            cache[(service, aws_region)] = session.client(service, region_name=aws_region, endpoint_url=endpoint_url)
        return cache[(service, aws_region)]

    return make


def check(cat: Catalogue, client: ClientFactory, regions: list[str] | None = None) -> Parity:
    """Parity of every region (default: every region that is not planned or retired)."""
    names = regions or [r.name for r in cat.regions.values() if r.status in ("active", "draining")]
    out: dict[str, RegionParity] = {}
    for n in names:
        r = cat.region(n)
        exp = declared(plan_region(cat, r))
        try:
            found = live(r, client)
        except (BotoCoreError, ClientError) as exc:
            raise OperationError(f"parity: cannot read region '{n}' ({r.aws_region}): {exc}") from None
        out[n] = RegionParity(n, len(exp), compare(n, exp, found))
    return Parity(out)


__all__ = ["Drift", "Parity", "RegionParity", "boto3_clients", "check", "compare", "declared", "live"]
