"""``residency backup create WS``: a consistent, encrypted backup of one workspace in its region's
backup AWS region.

1. Policy first: :func:`residency.backups.store.target` refuses a backup place outside the
   region's jurisdiction before anything is written.
2. A ``running`` row in the control plane, then one REPEATABLE READ snapshot on the workspace's
   home database, exported (``pg_export_snapshot``) so that every stream reads the same rows.
3. Per table of the mover's reach graph (the workspace's rows and the shared rows they reference),
   in key-range chunks (a table over ``chunk_rows`` rows, cut at quantiles of its key): a binary
   ``COPY`` of the chunk and its key index (key, row hash, link columns, in key order, with a
   trailer of count, checksum and per-link min/max), each compressed (zlib level 1) and stored
   with SSE-KMS. ``jobs`` chunks at a time.
4. The workspace's objects: copied into the backup (SSE-KMS), or, when the policy says
   ``objects: list`` and the bucket is versioned, listed with their version ids.
5. The manifest, last; then the row becomes ``complete`` with an audit entry, in one transaction.
   A backup killed before that is never listed (and ``expire_backups`` removes its objects).
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from residency import audit, db, directory
from residency.catalogue import Catalogue
from residency.connections import Connections, RegionEndpoints, s3_client
from residency.controlplane import ensure_schema
from residency.errors import OperationError, ResidencyError, first_line
from residency.migrate import faults
from residency.migrate.chunks import SourceSnapshot, _begin_snapshot
from residency.migrate.objects import list_objects
from residency.migrate.progress import Meter, Progress
from residency.objectkeys import prefix_of
from residency.redaction import redact

from . import copytext, records, rules, shape as shape_mod, sqlparts, store

FORMAT = "residency-backup/1"
BATCH = 256 * 1024


@dataclass
class BackupOptions:
    """``jobs``: chunks copied at once; ``chunk_rows``: tables above this many rows are cut into
    key-range chunks; ``objects``: ``copy`` or ``list`` (versions, when the bucket is versioned)."""

    jobs: int = 2
    chunk_rows: int = field(default_factory=lambda: store.env_int("RESIDENCY_BACKUP_CHUNK_ROWS", 50_000))
    objects: str | None = None  # None: the workspace's rule (regions.yaml backups: objects)


@dataclass
class BackupResult:
    id: int
    workspace_id: str
    region: str
    aws_region: str
    bucket: str
    prefix: str
    kms_key: str
    snapshot_at: datetime
    expires_at: datetime | None
    rows: int
    raw_bytes: int
    stored_bytes: int
    chunks: int
    tables: dict[str, dict[str, Any]]
    objects: dict[str, Any]
    seconds: float
    manifest_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _noop(_: Progress) -> None:
    return None


def home_region(cp: Any, workspace_id: str) -> str:
    return directory.require(cp, workspace_id).region


def create_backup(cat: Catalogue, conns: Connections, workspace_id: object, *, options: BackupOptions | None = None,
                  emit: Callable[[Progress], None] = _noop, keep: timedelta | None = None) -> BackupResult:
    """Back up one workspace (see the module's docstring); returns what was stored."""
    opts = options or BackupOptions()
    ws = cat.workspace.parse_id(workspace_id)
    t0 = time.monotonic()
    with db.connect(conns.control_dsn, autocommit=True) as cp:
        ensure_schema(cp)
        region = home_region(cp, ws)
        ep = conns.region(region)
        try:
            t = store.target(cat, ep)
        except store.BackupRefused as exc:
            audit.record(cp, "backup.refused", f"workspace:{ws}", {"workspace_id": ws, "region": region, "reason": str(exc)})
            raise
        rule = rules.rule_for(cat, region, ws)
        keep = keep if keep is not None else rule.keep
        mode = opts.objects or rule.objects
        bid = records.start(cp, ws, region, t.aws_region, t.bucket)
        prefix = records.prefix_of(ws, bid)
        try:
            manifest = _write(cat, ep, t, ws, bid, prefix, opts, mode, emit)
            body = json.dumps(manifest, sort_keys=True, indent=1, default=str).encode()
            sha = hashlib.sha256(body).hexdigest()
            faults.point("backup_before_manifest")
            store.put(t, prefix + "manifest.json", body, content_type="application/json")
            snap = datetime.fromisoformat(manifest["snapshot_at"])
            expires = snap + keep if keep else None
            totals = manifest["totals"]
            summary = {"tables": {n: {"rows": e["rows"], "chunks": len(e["chunks"])} for n, e in manifest["tables"].items()},
                       "objects": {b: len(v["items"]) for b, v in manifest["objects"]["buckets"].items()},
                       "objects_mode": manifest["objects"]["mode"], "kms_key": t.kms_key, "chunks": totals["chunks"],
                       "raw_bytes": totals["raw_bytes"], "schema_fingerprint": manifest["schema"]["fingerprint"]}
            with cp.transaction():
                records.complete(cp, bid, snapshot_at=snap, expires_at=expires, rows=totals["rows"], nbytes=totals["stored_bytes"],
                                 manifest_sha256=sha, summary=summary)
                audit.append(cp, "backup.created", f"workspace:{ws}", {
                    "backup_id": bid, "workspace_id": ws, "region": region, "aws_region": t.aws_region, "bucket": t.bucket,
                    "prefix": prefix, "kms_key": t.kms_key, "rows": totals["rows"], "stored_bytes": totals["stored_bytes"],
                    "manifest_sha256": sha, "snapshot_at": manifest["snapshot_at"],
                    "expires_at": expires.isoformat() if expires else None})
        except BaseException as exc:
            why = redact(first_line(exc))
            try:
                records.fail(cp, bid, why)
                store.delete_prefix(t, prefix)
                audit.record(cp, "backup.failed", f"workspace:{ws}", {"backup_id": bid, "workspace_id": ws, "error": why})
            except Exception:  # noqa: BLE001 - the original failure is what the user must see
                pass
            if isinstance(exc, ResidencyError) or not isinstance(exc, Exception):
                raise
            raise OperationError(f"backup {bid} of workspace {ws} failed: {why}") from exc
    tables = {n: {"rows": e["rows"], "chunks": len(e["chunks"]), "checksum": e["checksum"]} for n, e in manifest["tables"].items()}
    return BackupResult(bid, ws, region, t.aws_region, t.bucket, prefix, t.kms_key, snap, expires, totals["rows"], totals["raw_bytes"],
                        totals["stored_bytes"], totals["chunks"], tables, manifest["objects"], round(time.monotonic() - t0, 3), sha)


def _write(cat: Catalogue, ep: RegionEndpoints, t: store.BackupTarget, ws: str, bid: int, prefix: str, opts: BackupOptions,
           mode: str, emit: Callable[[Progress], None]) -> dict[str, Any]:
    snap = SourceSnapshot(ep.dsn)
    try:
        sh = shape_mod.read(snap.conn, cat.workspace)
        b = sh.builder
        (snapshot_at,) = snap.conn.execute("SELECT now()").fetchone()
        description = shape_mod.describe(sh.schema, sh.tables)
        plans: dict[str, list[tuple[Any, Any]]] = {}
        counts: dict[str, int] = {}
        for table in sh.tables:
            counts[table], plans[table] = _bounds(snap.conn, b, ws, table, opts.chunk_rows)
        tasks = [(table, i, lo, hi) for table in sh.tables for i, (lo, hi) in enumerate(plans[table])]
        tasks.sort(key=lambda x: -counts[x[0]] / len(plans[x[0]]))

        def work(task: tuple[str, int, Any, Any]) -> dict[str, Any]:
            table, i, lo, hi = task
            return _chunk(ep.dsn, sh, ws, t, prefix, table, i, len(plans[table]), lo, hi, snap.id, counts[table], emit)

        with ThreadPoolExecutor(max_workers=max(1, opts.jobs), thread_name_prefix="residency-backup") as pool:
            done = list(pool.map(work, tasks))
    finally:
        snap.close()
    tables: dict[str, Any] = {}
    for table in sh.tables:
        chunks = sorted((c for c in done if c["table"] == table), key=lambda c: c["index"])
        pk = sh.schema.tables[table].primary_key
        col = sh.schema.tables[table].column(pk[0]) if len(pk) == 1 else None
        tables[table] = {
            "rows": sum(c["rows"] for c in chunks), "checksum": str(sum(int(c["sum"]) for c in chunks)),
            "columns": list(sh.schema.tables[table].copy_columns), "key": list(pk), "key_type": col.type if col else None,
            "links": sh.links(table), "reach": sh.graph.reach[table].kind,
            "shared": table in sh.graph.shared, "chunks": [{k: v for k, v in c.items() if k != "table"} for c in chunks],
        }
    objects = _objects(cat, ep, t, ws, prefix, mode, emit)
    return {
        "format": FORMAT, "id": bid, "workspace_id": ws, "region": ep.region, "aws_region": t.aws_region, "bucket": t.bucket,
        "prefix": prefix, "kms_key": t.kms_key, "codec": store.CODEC, "snapshot_at": snapshot_at.astimezone(timezone.utc).isoformat(),
        "written_at": datetime.now(timezone.utc).isoformat(), "order": sh.tables,
        "schema": {"name": sh.schema.name, "fingerprint": shape_mod.fingerprint(description), "tables": description},
        "edges": [asdict(e) for e in sh.edges], "tables": tables, "objects": objects,
        "totals": {"rows": sum(v["rows"] for v in tables.values()), "chunks": sum(len(v["chunks"]) for v in tables.values()),
                   "raw_bytes": sum(c["data"]["raw"] + c["keys"]["raw"] for v in tables.values() for c in v["chunks"]),
                   "stored_bytes": sum(c["data"]["bytes"] + c["keys"]["bytes"] for v in tables.values() for c in v["chunks"])
                   + objects["bytes"]},
    }


def _bounds(conn: Any, b: Any, ws: str, table: str, chunk_rows: int) -> tuple[int, list[tuple[Any, Any]]]:
    """(rows, [(lo, hi), ...]): a table with a chunk key is cut into ranges of about
    ``chunk_rows`` rows at its key quantiles (count and quantiles in one sorted pass, at most
    :data:`sqlparts.CUT_STEPS` chunks); any other table is one chunk."""
    if b.chunk_key(table) is None or not b.graph.reach[table].moves:
        (n,) = conn.execute(sqlparts.count(b, table), b.params(ws)).fetchone()
        return int(n), [(None, None)]
    steps = sqlparts.CUT_STEPS
    n, vals = conn.execute(sqlparts.cuts(b, table), b.params(ws, fractions=[i / steps for i in range(1, steps)])).fetchone()
    n = int(n)
    every = max(1, -(-chunk_rows * steps // max(n, 1)))  # quantile steps per chunk, rounded up
    cuts: list[Any] = []
    for i, v in enumerate(vals or [], start=1):
        if i % every or v is None or n <= chunk_rows:
            continue
        v = v if isinstance(v, int) else str(v)
        if not cuts or cuts[-1] != v:
            cuts.append(v)
    ends = [None, *cuts, None]
    return n, [(ends[i], ends[i + 1]) for i in range(len(ends) - 1)]


def _params(b: Any, ws: str, lo: Any, hi: Any) -> dict[str, Any]:
    extra = {}
    if lo is not None:
        extra["chunk_lo"] = lo
    if hi is not None:
        extra["chunk_hi"] = hi
    return b.params(ws, **extra)


def _pump(cur: Any, query: Any, params: dict[str, Any], obj: store.SpooledObject, tail: bool = False) -> None:
    buf = bytearray()
    with cur.copy(query, params) as cp:
        for data in cp:
            buf += data
            if len(buf) >= BATCH:
                obj.write(bytes(buf))
                if tail:
                    obj.keep_tail(buf)
                buf.clear()
    if buf:
        obj.write(bytes(buf))
        if tail:
            obj.keep_tail(buf)


BLOCK_ROWS = 1000
"""Rows per independently compressed block of a data chunk (``$RESIDENCY_BACKUP_BLOCK_ROWS``): a
restore fetches only the blocks holding its rows (HTTP range reads)."""
HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
TRAILER = b"\xff\xff"


def _pump_rows(cur: Any, query: Any, params: dict[str, Any], obj: store.SpooledObject) -> int:
    """A binary COPY's rows, without its header and trailer (constant: readers put them back),
    in blocks of :data:`BLOCK_ROWS` rows. One CopyData message is one row."""
    every = max(1, store.env_int("RESIDENCY_BACKUP_BLOCK_ROWS", BLOCK_ROWS))
    buf = bytearray()
    rows = 0
    pending: bytes | None = None  # one message behind, so the trailer is known when it comes
    with cur.copy(query, params) as cp:
        for data in cp:
            if pending:
                buf += pending
                rows += 1
                if rows % every == 0:
                    obj.write(bytes(buf))
                    buf.clear()
                    obj.new_block()
                elif len(buf) >= BATCH:
                    obj.write(bytes(buf))
                    buf.clear()
            data = bytes(data)
            if rows == 0 and pending is None and data.startswith(HEADER):
                data = data[len(HEADER):]
            pending = data
    if pending is not None and pending.endswith(TRAILER):
        pending = pending[: -len(TRAILER)]
        if pending:
            buf += pending
            rows += 1
    if buf:
        obj.write(bytes(buf))
    return rows


def _chunk(dsn: str, sh: shape_mod.Shape, ws: str, t: store.BackupTarget, prefix: str, table: str, index: int, of: int,
           lo: Any, hi: Any, snapshot: str, expected: int, emit: Callable[[Progress], None]) -> dict[str, Any]:
    b = sh.builder
    label = table if of == 1 else f"{table} [{index + 1}/{of}]"
    meter = Meter(emit, "backup", label, max(1, expected // of))
    params = _params(b, ws, lo, hi)
    data, keys = store.SpooledObject(), store.SpooledObject()
    with db.connect(dsn, autocommit=True, application_name="residency-backup") as src:
        if not _begin_snapshot(src, snapshot):
            raise OperationError("the backup's snapshot ended before every chunk was read; run the backup again")
        with src.cursor() as cur:
            cur.execute("SET LOCAL work_mem = '64MB'")  # the chunk's rows are sorted by key: in memory
            nrows = _pump_rows(cur, sqlparts.copy_out(b, table, lo is not None, hi is not None), params, data)
            _pump(cur, sqlparts.key_index(b, table, sh.links(table), lo=lo is not None, hi=hi is not None), params, keys, tail=True)
        src.execute("COMMIT")
    trailer = json.loads(copytext.split(keys.tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])[-1] or "{}")
    base = f"{prefix}t/{table}/{index}"
    entries: dict[str, Any] = {}
    for kind, obj in (("data", data), ("keys", keys)):
        key = f"{base}.{'copy' if kind == 'data' else 'keys'}.z"
        f = obj.finish()
        store.put(t, key, f)
        f.close()
        entries[kind] = {"key": key, "raw": obj.raw, "bytes": obj.stored, "sha256": obj.sha.hexdigest()}
        if kind == "data":
            entries[kind].update(rows=nrows, block_rows=max(1, store.env_int("RESIDENCY_BACKUP_BLOCK_ROWS", BLOCK_ROWS)), blocks=obj.blocks)
    faults.point("backup_chunk_written")
    meter.add(int(trailer.get("rows", 0)), data.raw)
    meter.finish(int(trailer.get("rows", 0)))
    return {"table": table, "index": index, "lo": lo, "hi": hi, "rows": int(trailer.get("rows", 0)), "sum": trailer.get("sum", "0"),
            "zone": trailer.get("zone") or {}, **entries}


def _objects(cat: Catalogue, ep: RegionEndpoints, t: store.BackupTarget, ws: str, prefix: str, mode: str,
             emit: Callable[[Progress], None]) -> dict[str, Any]:
    """Copy (or list, with version ids) the workspace's objects in every logical bucket."""
    region = cat.region(ep.region)
    wsprefix = cat.workspace.prefix_for(ws)
    sc = s3_client(ep)
    out: dict[str, Any] = {"mode": mode, "buckets": {}, "bytes": 0}
    for logical in region.environment.buckets:
        bucket = ep.bucket(logical)
        versioned = False
        if mode == "list":
            try:
                versioned = sc.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
            except sc.exceptions.NoSuchBucket:
                versioned = False
        items: list[dict[str, Any]] = []
        meter = Meter(emit, "backup", f"objects {logical}", None)
        if versioned:
            literal, match = prefix_of(wsprefix)
            for page in sc.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=literal):
                for v in page.get("Versions") or []:
                    if v.get("IsLatest") and (match is None or match(v["Key"])):
                        items.append({"key": v["Key"], "version_id": v["VersionId"], "size": int(v["Size"]), "etag": str(v.get("ETag", "")).strip('"')})
            out["buckets"][logical] = {"bucket": bucket, "how": "listed (versioned bucket)", "items": items}
            continue
        tc = t.client()
        for key, info in sorted(list_objects(sc, bucket, wsprefix).items()):
            dest = f"{prefix}objects/{logical}/{key}"
            _copy_object(tc, sc, bucket, key, t, dest)
            items.append({"key": key, "size": info.size, "etag": info.etag, "backup_key": dest})
            out["bytes"] += info.size
            meter.add(1, info.size)
        meter.finish(len(items))
        out["buckets"][logical] = {"bucket": bucket, "how": "copied", "items": items}
    return out


def _copy_object(tc: Any, sc: Any, bucket: str, key: str, t: store.BackupTarget, dest: str) -> None:
    from boto3.s3.transfer import TransferConfig

    from residency.migrate.retry import transient

    @transient
    def go() -> None:
        tc.copy({"Bucket": bucket, "Key": key}, t.bucket, dest, SourceClient=sc,
                ExtraArgs={"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": t.kms_key},
                Config=TransferConfig(multipart_threshold=64 * 1024 * 1024, max_concurrency=2))

    go()
