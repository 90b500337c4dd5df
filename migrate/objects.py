"""A workspace's objects: every logical bucket of the environment, under the workspace's prefix.

Copied server-side with S3 CopyObject (multipart copy for big objects) when both regions share an
endpoint, otherwise streamed get → put in bounded chunks; never read whole into memory."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from residency.connections import RegionEndpoints, s3_client
from residency.objectkeys import prefix_of

from . import faults
from .progress import Meter, Progress
from .retry import transient

_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


def same_endpoint(a: RegionEndpoints, b: RegionEndpoints) -> bool:
    return (a.s3_endpoint or None) == (b.s3_endpoint or None)


@transient
def list_objects(client: Any, bucket: str, prefix: str) -> dict[str, ObjectInfo]:
    """The workspace's objects: listed by the layout's literal prefix, filtered by its pattern
    when it has placeholders after it (residency.objectkeys), so copy, verify and cleanup agree."""
    out: dict[str, ObjectInfo] = {}
    literal, match = prefix_of(prefix)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=literal)
        for page in pages:
            for o in page.get("Contents", []) or []:
                if match is None or match(o["Key"]):
                    out[o["Key"]] = ObjectInfo(o["Key"], int(o["Size"]), str(o.get("ETag", "")).strip('"'))
    except client.exceptions.NoSuchBucket:
        return {}
    return out


def inventory(ep: RegionEndpoints, buckets: tuple[str, ...], prefix: str) -> dict[str, dict[str, ObjectInfo]]:
    """logical bucket -> key -> object, for one region."""
    client = s3_client(ep)
    return {b: list_objects(client, ep.bucket(b), prefix) for b in buckets}


@transient
def _copy_one(src: RegionEndpoints, dst: RegionEndpoints, sc: Any, dc: Any, logical: str, key: str, server_side: bool) -> None:
    from boto3.s3.transfer import TransferConfig

    cfg = TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=_CHUNK, max_concurrency=2)
    if server_side:
        dc.copy({"Bucket": src.bucket(logical), "Key": key}, dst.bucket(logical), key, SourceClient=sc, Config=cfg)
        return
    obj = sc.get_object(Bucket=src.bucket(logical), Key=key)
    extra: dict[str, Any] = {}
    if obj.get("ContentType"):
        extra["ContentType"] = obj["ContentType"]
    if obj.get("Metadata"):
        extra["Metadata"] = obj["Metadata"]
    dc.upload_fileobj(obj["Body"], dst.bucket(logical), key, ExtraArgs=extra or None, Config=cfg)


def copy_objects(
    src: RegionEndpoints,
    dst: RegionEndpoints,
    buckets: tuple[str, ...],
    prefix: str,
    emit: Callable[[Progress], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Copy every object under ``prefix``; objects already identical in the target are skipped
    (a resumed copy). Returns counts per bucket and the method used."""
    sc, dc = s3_client(src), s3_client(dst)
    server_side = same_endpoint(src, dst)
    result: dict[str, Any] = {"method": "CopyObject" if server_side else "stream", "buckets": {}}
    for logical in buckets:
        have = list_objects(sc, src.bucket(logical), prefix)
        there = list_objects(dc, dst.bucket(logical), prefix)
        meter = Meter(emit, "objects", logical, len(have))
        copied = skipped = 0
        nbytes = 0
        for key, info in sorted(have.items()):
            if should_stop():
                raise InterruptedError("lease lost")
            t = there.get(key)
            if t is not None and t.size == info.size and t.etag == info.etag:
                skipped += 1
            else:
                _copy_one(src, dst, sc, dc, logical, key, server_side)
                copied += 1
                faults.point("object_copied")
            nbytes += info.size
            meter.add(1, info.size)
        meter.finish(len(have))
        result["buckets"][logical] = {"objects": len(have), "bytes": nbytes, "copied": copied, "skipped": skipped}
    return result


@transient
def delete_objects(ep: RegionEndpoints, buckets: tuple[str, ...], prefix: str) -> dict[str, int]:
    client = s3_client(ep)
    out: dict[str, int] = {}
    for logical in buckets:
        keys = list(list_objects(client, ep.bucket(logical), prefix))
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            client.delete_objects(Bucket=ep.bucket(logical), Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        out[logical] = len(keys)
    return out


@transient
def _list_versions(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every version and delete marker of the workspace's keys: the same literal prefix and
    layout filter as :func:`list_objects`."""
    out: list[dict[str, Any]] = []
    literal, match = prefix_of(prefix)
    try:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=literal):
            for v in page.get("Versions") or []:
                if match is not None and not match(v["Key"]):
                    continue
                out.append({"key": v["Key"], "version_id": v["VersionId"], "kind": "version", "size": int(v.get("Size", 0)),
                            "latest": bool(v.get("IsLatest")), "etag": str(v.get("ETag", "")).strip('"')})
            for m in page.get("DeleteMarkers") or []:
                if match is not None and not match(m["Key"]):
                    continue
                out.append({"key": m["Key"], "version_id": m["VersionId"], "kind": "delete_marker", "size": 0,
                            "latest": bool(m.get("IsLatest")), "etag": ""})
    except client.exceptions.NoSuchBucket:
        return []
    return out


def _places(ep: RegionEndpoints, buckets: tuple[str, ...]) -> Iterator[tuple[str, str, str, Any]]:
    """(logical, place, bucket, client): each bucket and its replica in the backup region."""
    primary = s3_client(ep)
    replica = s3_client(ep, ep.backup_aws_region) if ep.backup_aws_region else None
    for logical in buckets:
        yield logical, "bucket", ep.bucket(logical), primary
        if replica is not None:
            yield logical, "replica", ep.replica_bucket(logical), replica


def version_inventory(ep: RegionEndpoints, buckets: tuple[str, ...], prefix: str) -> list[dict[str, Any]]:
    """Every object version and delete marker under ``prefix`` in the region's buckets and in their
    replicas in the backup region (a bucket that does not exist holds nothing)."""
    out: list[dict[str, Any]] = []
    for logical, place, bucket, client in _places(ep, buckets):
        aws_region = ep.aws_region if place == "bucket" else ep.backup_aws_region
        for v in _list_versions(client, bucket, prefix):
            out.append({"bucket": bucket, "logical": logical, "place": place, "aws_region": aws_region, **v})
    return out


def purge_versions(ep: RegionEndpoints, buckets: tuple[str, ...], prefix: str) -> list[dict[str, Any]]:
    """Delete every object version and delete marker under ``prefix`` in the buckets and their
    replicas (``DeleteObjects`` with version ids: nothing is left for a lifecycle rule to keep).
    Returns what was deleted; raises if S3 refused any of it."""
    deleted: list[dict[str, Any]] = []
    for logical, place, bucket, client in _places(ep, buckets):
        aws_region = ep.aws_region if place == "bucket" else ep.backup_aws_region
        items = _list_versions(client, bucket, prefix)
        for i in range(0, len(items), 1000):
            batch = items[i : i + 1000]
            _delete_versions(client, bucket, batch)
            deleted += [{"bucket": bucket, "logical": logical, "place": place, "aws_region": aws_region, **v} for v in batch]
    return deleted


@transient
def _delete_versions(client: Any, bucket: str, batch: list[dict[str, Any]]) -> None:
    resp = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": v["key"], "VersionId": v["version_id"]} for v in batch], "Quiet": True})
    errors = resp.get("Errors") or []
    if errors:
        e = errors[0]
        raise RuntimeError(f"s3://{bucket}/{e.get('Key')} version {e.get('VersionId')}: {e.get('Code')} {e.get('Message')}"
                           + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))


def _md5_stream(client: Any, bucket: str, key: str) -> str:
    h = hashlib.md5()
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    for chunk in iter(lambda: body.read(_CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


@dataclass
class ObjectCheck:
    ok: bool
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@transient
def compare(a: RegionEndpoints, b: RegionEndpoints, buckets: tuple[str, ...], prefix: str, limit: int = 20) -> ObjectCheck:
    """Objects under ``prefix`` in both regions: same keys, sizes and content checksums (ETag when
    both are single-part MD5s, otherwise an MD5 streamed from each side)."""
    ac, bc = s3_client(a), s3_client(b)
    check = ObjectCheck(True)
    for logical in buckets:
        sa = list_objects(ac, a.bucket(logical), prefix)
        sb = list_objects(bc, b.bucket(logical), prefix)
        problems: list[str] = []
        for k in sorted(set(sa) - set(sb)):
            problems.append(f"{logical}:{k} missing in {b.region}")
        for k in sorted(set(sb) - set(sa)):
            problems.append(f"{logical}:{k} only in {b.region}")
        for k in sorted(set(sa) & set(sb)):
            x, y = sa[k], sb[k]
            if x.size != y.size:
                problems.append(f"{logical}:{k} size {x.size} in {a.region}, {y.size} in {b.region}")
            elif x.etag != y.etag:
                if "-" in x.etag or "-" in y.etag:
                    if _md5_stream(ac, a.bucket(logical), k) != _md5_stream(bc, b.bucket(logical), k):
                        problems.append(f"{logical}:{k} content differs")
                else:
                    problems.append(f"{logical}:{k} checksum {x.etag} in {a.region}, {y.etag} in {b.region}")
        check.buckets[logical] = {
            "source_objects": len(sa),
            "source_bytes": sum(o.size for o in sa.values()),
            "target_objects": len(sb),
            "target_bytes": sum(o.size for o in sb.values()),
            "ok": not problems,
        }
        if problems:
            check.ok = False
            check.problems.extend(problems[:limit])
            if len(problems) > limit:
                check.problems.append(f"... and {len(problems) - limit} more in {logical}")
    return check
