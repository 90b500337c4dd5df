"""Where a region's backups are kept: its backup bucket, in its backup AWS region, encrypted with
that region's KMS key (SSE-KMS), never outside the region's jurisdiction.

The bucket is the region's logical bucket ``backups`` (connections file ``buckets: {backups:
NAME}``; default ``residency-<region>-backups``); the key is ``alias/<bucket>`` in the backup AWS
region. :func:`target` asks :func:`residency.policy.may_copy` before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator

from residency.catalogue import Catalogue
from residency.connections import RegionEndpoints, s3_client
from residency.errors import OperationError
from residency.migrate.retry import transient
from residency.policy import may_copy

LOGICAL_BUCKET = "backups"
CODEC = "zlib-1"
"""zlib level 1 (stdlib): ~4x smaller binary COPY at several hundred MB/s per stream, and it
releases the GIL, so parallel streams compress in parallel (bench/backupbench.py measures it)."""
_LEVEL = 1
SPOOL_BYTES = 16 * 1024 * 1024
"""An object is spooled in memory up to this size, then on disk: memory stays flat."""


class BackupRefused(OperationError):
    """Policy forbids keeping this backup where it would go."""


@dataclass(frozen=True)
class BackupTarget:
    region: str
    aws_region: str
    bucket: str
    kms_key: str
    endpoint: RegionEndpoints

    def client(self) -> Any:
        """One S3 client per endpoint and AWS region, shared by the streams (boto3 clients are
        thread-safe; making one costs more than a small chunk's upload)."""
        key = (self.endpoint.s3_endpoint, self.aws_region)
        with _LOCK:
            c = _CLIENTS.get(key)
            if c is None:
                c = _CLIENTS[key] = s3_client(self.endpoint, self.aws_region)
        return c


_LOCK = threading.Lock()
_CLIENTS: dict[tuple[str | None, str], Any] = {}


def kms_alias(bucket: str) -> str:
    return f"alias/{bucket}"


def target(cat: Catalogue, ep: RegionEndpoints) -> BackupTarget:
    """The region's backup place, or :class:`BackupRefused` when policy keeps it from there."""
    region = cat.region(ep.region)
    decision = may_copy(cat, region.name, region.backup_region)
    if not decision:
        raise BackupRefused(f"backup of region '{region.name}' refused: {decision.reason}")
    bucket = ep.bucket(LOGICAL_BUCKET)
    return BackupTarget(region.name, region.backup_region, bucket, kms_alias(bucket), ep)


class SpooledObject:
    """A compressed object being written: bytes in, zlib out, spooled, hashed (raw and stored)."""

    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        self.z = zlib.compressobj(_LEVEL)
        self.raw = 0
        self.stored = 0
        self.sha = hashlib.sha256()
        self.tail = b""
        self.blocks: list[list[int]] = []
        self.block_start = 0

    def write(self, data: bytes | memoryview) -> None:
        self.raw += len(data)
        out = self.z.compress(data)
        if out:
            self._out(out)

    def keep_tail(self, data: bytes, n: int = 65536) -> None:
        self.tail = (self.tail + bytes(data))[-n:]

    def _out(self, out: bytes) -> None:
        self.file.write(out)
        self.sha.update(out)
        self.stored += len(out)

    def new_block(self) -> None:
        """End the current zlib stream and start another: each block decompresses on its own
        (``blocks``: [stored offset, stored length] of each)."""
        start = self.block_start
        self._out(self.z.flush())
        self.blocks.append([start, self.stored - start])
        self.block_start = self.stored
        self.z = zlib.compressobj(_LEVEL)

    def finish(self) -> BinaryIO:
        start = self.block_start
        self._out(self.z.flush())
        if self.stored > start:
            self.blocks.append([start, self.stored - start])
        self.file.seek(0)
        return self.file  # type: ignore[return-value]


@transient
def put(t: BackupTarget, key: str, body: BinaryIO | bytes, *, content_type: str = "application/octet-stream") -> None:
    """Write one object, SSE-KMS with the region's backup key."""
    extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": t.kms_key, "ContentType": content_type}
    if isinstance(body, bytes):
        t.client().put_object(Bucket=t.bucket, Key=key, Body=body, **extra)
        return
    body.seek(0)
    t.client().upload_fileobj(body, t.bucket, key, ExtraArgs=extra)


@transient
def get_bytes(t: BackupTarget, key: str) -> bytes:
    return t.client().get_object(Bucket=t.bucket, Key=key)["Body"].read()


def stream(t: BackupTarget, key: str, *, sha: "hashlib._Hash | None" = None, size: list[int] | None = None,
           rng: str | None = None) -> Iterator[bytes]:
    """The decompressed content of one stored object (or of ``rng``, an HTTP byte range holding
    whole blocks), in pieces, hashing the stored bytes read."""
    body = t.client().get_object(Bucket=t.bucket, Key=key, **({"Range": rng} if rng else {}))["Body"]
    z = zlib.decompressobj()
    for piece in iter(lambda: body.read(1024 * 1024), b""):
        if sha is not None:
            sha.update(piece)
        if size is not None:
            size[0] += len(piece)
        try:
            while piece:
                out = z.decompress(piece)
                if out:
                    yield out
                if not z.eof:
                    break
                piece = z.unused_data  # the next block: its own zlib stream
                z = zlib.decompressobj()
        except zlib.error as exc:
            raise OperationError(f"s3://{t.bucket}/{key}: cannot decompress: {exc}") from None
    try:
        out = z.flush()
    except zlib.error as exc:
        raise OperationError(f"s3://{t.bucket}/{key}: cannot decompress: {exc}") from None
    if out:
        yield out


def lines(t: BackupTarget, key: str, **kw: Any) -> Iterator[bytes]:
    """The decompressed object split into lines (without the newline), streamed."""
    rest = b""
    for piece in stream(t, key, **kw):
        rest += piece
        *done, rest = rest.split(b"\n")
        yield from done
    if rest:
        yield rest


@transient
def delete_prefix(t: BackupTarget, prefix: str) -> int:
    """Delete every object (and version) under ``prefix``; returns how many."""
    c = t.client()
    n = 0
    try:
        for page in c.get_paginator("list_object_versions").paginate(Bucket=t.bucket, Prefix=prefix):
            items = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in (page.get("Versions") or []) + (page.get("DeleteMarkers") or [])]
            for i in range(0, len(items), 1000):
                c.delete_objects(Bucket=t.bucket, Delete={"Objects": items[i:i + 1000], "Quiet": True})
                n += len(items[i:i + 1000])
    except c.exceptions.NoSuchBucket:
        return 0
    return n


@transient
def list_keys(t: BackupTarget, prefix: str) -> list[str]:
    c = t.client()
    out: list[str] = []
    try:
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=t.bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents") or []]
    except c.exceptions.NoSuchBucket:
        return []
    return out


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name) or default)
    except ValueError:
        return default
