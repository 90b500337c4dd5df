"""Reading a stored backup: its manifest, each chunk's key index as typed (key, hash, links)
tuples in key order, and a chunk's rows into a table of a database."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Iterator

from psycopg import sql

from residency.connections import Connections
from residency.errors import OperationError

from . import copytext, records, store

INT_TYPES = ("smallint", "integer", "bigint")


def target_of(conns: Connections, rec: records.BackupRecord) -> store.BackupTarget:
    return store.BackupTarget(rec.region, rec.aws_region, rec.bucket, store.kms_alias(rec.bucket), conns.region(rec.region))


def manifest(conns: Connections, rec: records.BackupRecord) -> tuple[store.BackupTarget, dict[str, Any]]:
    """The backup's manifest, checked against the SHA-256 the control plane recorded."""
    t = target_of(conns, rec)
    body = store.get_bytes(t, rec.prefix + "manifest.json")
    if rec.manifest_sha256 and hashlib.sha256(body).hexdigest() != rec.manifest_sha256:
        raise OperationError(f"backup {rec.id}: manifest.json (s3://{t.bucket}/{rec.prefix}manifest.json) differs from the one recorded at backup time")
    return t, json.loads(body)


def typed(value: str | None, key_type: str | None) -> Any:
    """A key or link value as text, typed so it orders as PostgreSQL ordered it."""
    if value is None:
        return None
    if key_type and key_type.startswith(INT_TYPES):
        return int(value)
    if key_type is None:
        return json.loads(value) if value.startswith("[") else value
    return value


def key_lines(t: store.BackupTarget, chunk: dict[str, Any], **kw: Any) -> Iterator[list[str | None]]:
    """The chunk's key index lines (fields as text), the trailer left out."""
    for line in store.lines(t, chunk["keys"]["key"], **kw):
        f = copytext.split(line)
        if f[0] is None and f[1] is None:
            continue  # the trailer
        yield f


def entries(t: store.BackupTarget, tinfo: dict[str, Any]) -> Iterator[tuple[Any, int, list[str | None], int, int]]:
    """(typed key, hash, link values, chunk index, place in the chunk) of every row of a table,
    in key order."""
    kt = tinfo.get("key_type") if len(tinfo.get("key") or []) == 1 else None
    for c in tinfo["chunks"]:
        for pos, f in enumerate(key_lines(t, c)):
            k = typed(f[0], kt) if tinfo.get("key") else int(f[1] or 0)
            yield k, int(f[1] or 0), f[2:], c["index"], pos


def chunk_for(tinfo: dict[str, Any], key: Any) -> dict[str, Any]:
    """The chunk whose range ``lo < key <= hi`` holds ``key``."""
    kt = tinfo.get("key_type")
    for c in tinfo["chunks"]:
        lo, hi = typed(None if c["lo"] is None else str(c["lo"]), kt), typed(None if c["hi"] is None else str(c["hi"]), kt)
        if (lo is None or key > lo) and (hi is None or key <= hi):
            return c
    return tinfo["chunks"][-1]


HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # signature, flags, no header extension
TRAILER = b"\xff\xff"


def load_chunk(conn: Any, t: store.BackupTarget, chunk: dict[str, Any], copy_in: sql.Composable, *, sha: Any = None,
               positions: Iterable[int] | None = None) -> int:
    """Stream one data chunk into ``copy_in`` (a COPY ... FROM STDIN (FORMAT BINARY)); returns the
    rows the database accepted. ``positions`` (rows' places in the chunk, as in its key index):
    only the blocks holding them are read, by byte range."""
    d = chunk["data"]
    ranges: list[str | None] = [None]
    if positions is not None and d.get("blocks"):
        wanted = sorted({p // d["block_rows"] for p in positions})
        spans: list[list[int]] = []
        for i in wanted:
            off, n = d["blocks"][i]
            if spans and spans[-1][1] == off:
                spans[-1][1] = off + n  # neighbouring blocks: one read
            else:
                spans.append([off, off + n])
        ranges = [f"bytes={a}-{b - 1}" for a, b in spans]
    with conn.cursor() as cur:
        with cur.copy(copy_in) as cp:
            if "rows" in d:  # stored without its header and trailer (blocks)
                cp.write(HEADER)
            for rng in ranges:
                for piece in store.stream(t, d["key"], sha=sha, rng=rng):
                    cp.write(piece)
            if "rows" in d:
                cp.write(TRAILER)
        return cur.rowcount
