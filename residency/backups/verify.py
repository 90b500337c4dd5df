"""``residency backup verify ID``: re-read every object of a backup and check it.

Per chunk: the stored bytes' SHA-256 and size against the manifest (a flipped byte is named by its
table, chunk and object key); the key index's rows and the sum of its row hashes against the
manifest; and the data itself, loaded into a temporary table of the region's database, whose row
count and ``hash_record_extended`` checksum must equal the manifest's (the database is only used
for a scratch temporary table). Objects: each copied object present with its size, each listed
version present in the source bucket. The manifest itself against the SHA-256 recorded in the
control plane."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg import sql

from residency import audit, db
from residency.catalogue import Catalogue
from residency.connections import Connections, s3_client
from residency.controlplane import ensure_schema
from residency.errors import OperationError, first_line
from residency.migrate.graph import build
from residency.migrate.introspect import introspect
from residency.migrate.sqlbuild import Builder

from . import reading, records, shape as shape_mod, sqlparts, store

MAX_PROBLEMS = 50


@dataclass
class BackupCheck:
    backup_id: int
    workspace_id: str
    ok: bool
    chunks: int = 0
    rows: int = 0
    objects: int = 0
    bytes_read: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_backup(cat: Catalogue, conns: Connections, backup_id: object, *, content: bool = True) -> BackupCheck:
    with db.connect(conns.control_dsn, autocommit=True) as cp:
        ensure_schema(cp)
        rec = records.get_backup(cp, backup_id)
        t, man = reading.manifest(conns, rec)
        check = BackupCheck(rec.id, rec.workspace_id, True)
        scratch = db.connect(conns.region(rec.region).dsn) if content else None
        try:
            live = introspect(scratch, man["schema"]["name"]) if scratch is not None else None
            b = Builder(build(live, cat.workspace)) if live is not None else None
            diffs = shape_mod.differences(man["schema"]["tables"], live, list(man["tables"])) if live is not None else {}
            for name, tinfo in man["tables"].items():
                of = len(tinfo["chunks"])
                can_load = live is not None and not any(n.startswith("cannot:") for n in diffs.get(name, []))
                if live is not None and not can_load:
                    check.notes.append(f"{name}: rows not loaded (the database's table differs from the backup's); checksums of the stored bytes checked")
                for c in tinfo["chunks"]:
                    _chunk(check, t, name, tinfo, c, of, scratch if can_load else None, b)
            _objects(check, conns, rec, t, man)
        finally:
            if scratch is not None:
                scratch.close()
        check.ok = not check.problems
        if len(check.problems) > MAX_PROBLEMS:
            check.problems = check.problems[:MAX_PROBLEMS] + [f"... and {len(check.problems) - MAX_PROBLEMS} more"]
        audit.record(cp, "backup.verified", f"workspace:{rec.workspace_id}",
                     {"backup_id": rec.id, "ok": check.ok, "chunks": check.chunks, "rows": check.rows, "problems": check.problems[:5]})
    return check


def _chunk(check: BackupCheck, t: Any, name: str, tinfo: dict[str, Any], c: dict[str, Any], of: int, scratch: Any, b: Any) -> None:
    label = f"{name} [{c['index'] + 1}/{of}]"
    check.chunks += 1
    # the key index: bytes, rows, sum of hashes
    sha, size = hashlib.sha256(), [0]
    rows, total = 0, 0
    try:
        for f in reading.key_lines(t, c, sha=sha, size=size):
            rows += 1
            total += int(f[1] or 0)
    except (OperationError, ValueError) as exc:
        check.problems.append(f"{label} key index ({c['keys']['key']}): {first_line(exc)}")
    check.bytes_read += size[0]
    if sha.hexdigest() != c["keys"]["sha256"] or size[0] != c["keys"]["bytes"]:
        check.problems.append(f"{label} key index ({c['keys']['key']}): sha256 {sha.hexdigest()[:16]}… of {size[0]} bytes, the manifest says {c['keys']['sha256'][:16]}… of {c['keys']['bytes']}")
    elif rows != c["rows"] or str(total) != str(c["sum"]):
        check.problems.append(f"{label} key index: {rows} rows / checksum {total}, the manifest says {c['rows']} / {c['sum']}")
    # the data: bytes, and (in a scratch temporary table) rows and checksum
    sha = hashlib.sha256()
    try:
        if scratch is not None:
            with scratch.transaction():
                temp = "residency_verify_rows"
                scratch.execute(sqlparts.temp_table(temp, b, name, tinfo["columns"]))
                loaded = reading.load_chunk(scratch, t, c, sqlparts.copy_into_temp(temp, tinfo["columns"]), sha=sha)
                n, s = scratch.execute(_temp_checksum(b, name, temp, tinfo["columns"])).fetchone()
                scratch.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(temp)))
            check.rows += int(loaded)
            if int(n) != c["rows"] or str(s) != str(c["sum"]):
                check.problems.append(f"{label} data ({c['data']['key']}): {n} rows / checksum {s}, the manifest says {c['rows']} / {c['sum']}")
        else:
            for _ in store.stream(t, c["data"]["key"], sha=sha):
                pass
            check.rows += c["rows"]
    except Exception as exc:  # noqa: BLE001 - a damaged chunk is a finding, not a crash
        raw = hashlib.sha256(store.get_bytes(t, c["data"]["key"])).hexdigest()
        differs = f"sha256 {raw[:16]}…, the manifest says {c['data']['sha256'][:16]}…; " if raw != c["data"]["sha256"] else ""
        check.problems.append(f"{label} data ({c['data']['key']}): {differs}cannot be read back: {first_line(exc)}")
        return
    if sha.hexdigest() != c["data"]["sha256"]:
        check.problems.insert(0, f"{label} data ({c['data']['key']}): sha256 {sha.hexdigest()[:16]}…, the manifest says {c['data']['sha256'][:16]}…")
    check.bytes_read += c["data"]["bytes"]


def _temp_checksum(b: Any, table: str, temp: str, columns: list[str]) -> sql.Composed:
    inner = sqlparts.temp_hashes(temp, b, table, columns) if len(b.graph.table(table).primary_key) == 1 else None
    if inner is not None:
        return sql.SQL("SELECT count(*), coalesce(sum(x.h::numeric), 0) FROM ({}) x(k, h)").format(inner)
    y = sql.Identifier("y")
    hc = sqlparts.hash_list(b, table, y, columns)
    return sql.SQL("SELECT count(*), coalesce(sum(hash_record_extended(h, 0)::numeric), 0) FROM (SELECT {hc} FROM {tmp} {y}) h").format(
        hc=hc, tmp=sql.Identifier(temp), y=y)


def _objects(check: BackupCheck, conns: Connections, rec: records.BackupRecord, t: Any, man: dict[str, Any]) -> None:
    tc = t.client()
    src = s3_client(conns.region(rec.region))
    for logical, info in man["objects"]["buckets"].items():
        for item in info["items"]:
            check.objects += 1
            try:
                if "backup_key" in item:
                    h = tc.head_object(Bucket=t.bucket, Key=item["backup_key"])
                    if int(h["ContentLength"]) != int(item["size"]):
                        check.problems.append(f"object {logical}:{item['key']}: {h['ContentLength']} bytes in the backup, {item['size']} recorded")
                else:
                    src.head_object(Bucket=info["bucket"], Key=item["key"], VersionId=item["version_id"])
            except Exception as exc:  # noqa: BLE001
                check.problems.append(f"object {logical}:{item['key']}: missing ({first_line(exc)})")
