"""``residency restore WS --from ID [--table T --key K ...] [--into-dsn DSN]``.

Records: each asked-for record of table T, with every row that depends on it by foreign key,
declared reference or configured (polymorphic) path, followed to the end (a conversation with its
messages, their attachments, previews and reactions). They are found in the backup's key indexes
(link columns, pruned by each chunk's min/max), so only the chunks holding them are read. Without
``--table``: every row of the backup (the whole workspace, e.g. into another database to inspect).

Never overwrites what it wasn't asked for: a dependant row the database holds with other content
is skipped and named; an asked-for record that changed since the backup is put back as it was.
Rows already there unchanged are left alone. Everything runs in ONE target transaction: checked
(every restored row's references resolve, its count and row checksum equal the backup's) before it
commits, so a kill -9 or any failure leaves the database as it was; running it again is safe.
A database whose schema changed since the backup is compared table by table: what cannot be mapped
(a column dropped or retyped, a new NOT NULL column without a default) is refused, naming it."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from psycopg import sql

from residency import audit, db
from residency.catalogue import Catalogue
from residency.connections import Connections
from residency.controlplane import ensure_schema
from residency.errors import InputError, OperationError
from residency.migrate import faults, triggers
from residency.migrate.graph import build
from residency.migrate.introspect import introspect
from residency.migrate.sqlbuild import Builder
from residency.redaction import redact

from . import copytext, reading, records, shape as shape_mod, sqlparts, store

MAX_NAMED = 20


@dataclass
class TableRestore:
    table: str
    restored: int = 0
    overwritten: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # keys of rows changed since the backup, not asked for
    chunks_read: int = 0
    checksum: str = "0"


@dataclass
class RestoreResult:
    backup_id: int
    workspace_id: str
    target: str
    mode: str  # records | workspace
    tables: list[TableRestore]
    verified: bool
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    chunks_read: int = 0
    chunks_total: int = 0

    @property
    def restored(self) -> int:
        return sum(t.restored + t.overwritten for t in self.tables)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "restored": self.restored}


def restore(cat: Catalogue, conns: Connections, workspace_id: object, backup_id: object, *, table: str | None = None,
            keys: Iterable[str] = (), into_dsn: str | None = None, as_workspace: str | None = None) -> RestoreResult:
    t0 = time.monotonic()
    ws = cat.workspace.parse_id(workspace_id)
    keys = [str(k) for k in keys]
    if as_workspace is not None:
        raise InputError("--as-workspace: restoring under another workspace id would need every primary key renumbered, which"
                         " residency does not do; restore the whole workspace into another database with --into-dsn instead")
    if keys and not table:
        raise InputError("--key needs --table (the table the keys are of)")
    if table and not keys:
        raise InputError(f"--table {table} needs at least one --key")
    with db.connect(conns.control_dsn, autocommit=True) as cp:
        ensure_schema(cp)
        rec = records.get_backup(cp, backup_id)
        if rec.workspace_id != ws:
            raise InputError(f"backup {rec.id} is of workspace {rec.workspace_id}, not {ws}")
        t, man = reading.manifest(conns, rec)
        if table is not None:
            tinfo = man["tables"].get(table)
            if tinfo is None:
                raise InputError(f"table '{table}' is not in backup {rec.id} (its tables: {', '.join(man['tables'])})")
            if len(tinfo["key"]) != 1:
                raise InputError(f"table '{table}' has no one-column primary key: its rows can only come back as dependants or with the whole workspace")
        want, asked = (_closure(t, man, table, keys, rec.id) if table else _everything(t, man))
        dsn = into_dsn or conns.region(rec.region).dsn
        where = redact(into_dsn) if into_dsn else f"region {rec.region}"
        audit.record(cp, "restore.started", f"workspace:{ws}", {"backup_id": rec.id, "workspace_id": ws, "target": where,
                                                                "table": table, "keys": keys[:MAX_NAMED]})
        result = _apply(cat, t, man, want, asked, dsn)
        result.backup_id, result.workspace_id, result.target = rec.id, ws, where
        result.mode = "records" if table else "workspace"
        result.seconds = round(time.monotonic() - t0, 3)
        result.chunks_total = sum(len(v["chunks"]) for v in man["tables"].values())
        audit.record(cp, "restore.done", f"workspace:{ws}", {
            "backup_id": rec.id, "workspace_id": ws, "target": where, "mode": result.mode, "verified": result.verified,
            "tables": {x.table: {"restored": x.restored, "overwritten": x.overwritten, "unchanged": x.unchanged,
                                 "skipped": len(x.skipped), "checksum": x.checksum} for x in result.tables}})
    return result


# ------------------------------------------------------------------------------ what to restore


Want = dict[str, dict[str, tuple[int, int, int]]]  # table -> key text -> (row hash, chunk index, place in the chunk)


def _everything(t: Any, man: dict[str, Any]) -> tuple[Want, set[tuple[str, str]]]:
    want: Want = {}
    for name, tinfo in man["tables"].items():
        if len(tinfo["key"]) != 1:
            continue
        want[name] = {str(k): (h, ci, pos) for k, h, _, ci, pos in reading.entries(t, tinfo)}
    return want, set()


def _closure(t: Any, man: dict[str, Any], table: str, keys: list[str], bid: int) -> tuple[Want, set[tuple[str, str]]]:
    tinfo = man["tables"][table]
    kt = tinfo["key_type"]
    want: Want = {table: {}}
    edges = [shape_mod.Edge(**e) for e in man.get("edges", [])]
    owned: dict[str, set[str]] = {}  # rows owned through a restored row (a blob of an attachment) come with it
    for k in keys:
        try:
            typed = reading.typed(k, kt)
        except ValueError:
            raise InputError(f"--key {k!r} is not a value of {table}.{tinfo['key'][0]} ({kt})") from None
        c = reading.chunk_for(tinfo, typed)
        pos, hit = next(((i, f) for i, f in enumerate(reading.key_lines(t, c)) if reading.typed(f[0], kt) == typed), (0, None))
        if hit is None:
            raise InputError(f"{table} {k} is not in backup {bid}: it was added after the backup or belongs to another workspace")
        want[table][str(typed)] = (int(hit[1] or 0), c["index"], pos)
        _note_owned(man, edges, table, hit, owned)
    asked = {(table, k) for k in want[table]}
    frontier = {table: set(want[table])}
    cache = _Lines(t)
    while frontier:
        new: dict[str, set[str]] = {}
        for child, cinfo in man["tables"].items():
            mine = [e for e in edges if e.child == child and e.parent in frontier]
            if not mine or len(cinfo["key"]) != 1:
                continue
            links = cinfo["links"]
            ckt = cinfo["key_type"]
            # compared as the raw bytes of the key index (integer and plain text values need no
            # unescaping), so a scanned line costs one split; a hit is decoded in full
            probes = [(e, 2 + links.index(e.column), 2 + links.index(e.type_column) if e.type_column else None,
                       {_raw(p) for p in frontier[e.parent]}, _raw(e.type_value) if e.type_value is not None else None)
                      for e in mine if e.column in links]
            for c in cinfo["chunks"]:
                if not any(_may_hold(c, e, frontier[e.parent], man) for e in mine):
                    continue
                for pos, line in enumerate(cache.lines(c["keys"]["key"])):
                    raw = line.split(b"\t")
                    hit = None
                    for e, ci, ti, want_vals, tv in probes:
                        if ci < len(raw) and raw[ci] in want_vals and (ti is None or raw[ti] == tv):
                            hit = e
                            break
                    if hit is None or (raw[0] == b"\\N" and raw[1] == b"\\N"):
                        continue
                    f = copytext.split(line)
                    k = str(reading.typed(f[0], ckt))
                    got = want.setdefault(child, {})
                    if k not in got:
                        got[k] = (int(f[1] or 0), c["index"], pos)
                        new.setdefault(child, set()).add(k)
                        _note_owned(man, edges, child, f, owned)
        frontier = new
    for name, ks in owned.items():
        tinfo_o = man["tables"][name]
        for k, h, _, ci, pos in reading.entries(t, tinfo_o):
            if str(k) in ks:
                want.setdefault(name, {})[str(k)] = (h, ci, pos)
    return want, asked


class _Lines:
    """Key index lines read once per restore, kept for the closure's next rounds (a table's
    dependants are found round after round) up to :data:`CACHE_BYTES`; beyond it, read again."""

    def __init__(self, t: Any):
        self.t, self.kept, self.size = t, {}, 0

    def lines(self, key: str) -> Any:
        if key in self.kept:
            return self.kept[key]
        if self.size > CACHE_BYTES:
            return store.lines(self.t, key)
        got = list(store.lines(self.t, key))
        self.size += sum(len(x) for x in got)
        self.kept[key] = got
        return got


CACHE_BYTES = 64 * 1024 * 1024


def _raw(value: str) -> bytes:
    """A value as COPY's text format writes it."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r").encode()


def _note_owned(man: dict[str, Any], edges: list[shape_mod.Edge], table: str, line: list[str | None], owned: dict[str, set[str]]) -> None:
    """A restored row of ``table`` points at rows owned through it (``workspace.owned_through``)."""
    links = man["tables"][table]["links"]
    for e in edges:
        if e.child == table and man["tables"].get(e.parent, {}).get("reach") == "owned" and e.column in links:
            v = line[2 + links.index(e.column)]
            if v is not None:
                owned.setdefault(e.parent, set()).add(v)


def _may_hold(c: dict[str, Any], e: shape_mod.Edge, parents: set[str], man: dict[str, Any]) -> bool:
    """The chunk's min/max of the edge's column can hold one of the parent keys."""
    z = (c.get("zone") or {}).get(e.column)
    if not z or z[0] is None:
        return z is None  # no zone recorded: maybe; an all-NULL column: no
    lo, hi = z
    for p in parents:
        v: Any = p
        if isinstance(lo, int):
            try:
                v = int(p)
            except ValueError:
                continue
        if lo <= v <= hi:
            return True
    return False


# ------------------------------------------------------------------------------ into the database


def _apply(cat: Catalogue, t: Any, man: dict[str, Any], want: Want, asked: set[tuple[str, str]], dsn: str) -> RestoreResult:
    result = RestoreResult(0, "", "", "", [], False)
    order = [n for n in man["order"] if want.get(n)]
    with db.connect(dsn, application_name="residency-restore") as conn:
        schema = introspect(conn, man["schema"]["name"])
        diffs = shape_mod.differences(man["schema"]["tables"], schema, order)
        refused = [n for notes in diffs.values() for n in notes if n.startswith("cannot:")]
        if refused:
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            raise OperationError(f"restore refused: the schema changed since the backup and cannot be mapped: {refused[0].removeprefix('cannot: ')}{more}")
        result.notes += [n for notes in diffs.values() for n in notes]
        b = Builder(build(schema, cat.workspace))
        conn.commit()
        access = triggers.inspect(conn, schema.name, order)
        conn.commit()
        with conn.transaction():
            for i, name in enumerate(order):
                result.tables.append(_table(conn, b, t, man["tables"][name], name, want[name], asked, access, f"residency_restore_{i}"))
            result.chunks_read = sum(x.chunks_read for x in result.tables)
            _check_references(conn, b, man, want, result)
            faults.point("restore_rows_written")
    result.verified = True
    return result


def _table(conn: Any, b: Builder, t: Any, tinfo: dict[str, Any], name: str, rows: dict[str, tuple[int, int, int]],
           asked: set[tuple[str, str]], access: triggers.TargetAccess, temp: str) -> TableRestore:
    out = TableRestore(name)
    cols = tinfo["columns"]
    keys = sorted(rows)
    conn.execute(sqlparts.temp_table(temp, b, name, cols))
    for c in tinfo["chunks"]:
        places = [pos for _, ci, pos in rows.values() if ci == c["index"]]
        if places:
            reading.load_chunk(conn, t, c, sqlparts.copy_into_temp(temp, cols), positions=places)
            out.chunks_read += 1
    conn.execute(sqlparts.keep_keys(temp, tinfo["key"][0]), {"keys": keys})
    present = dict(conn.execute(sqlparts.target_hashes(b, name, cols), {"keys": keys}).fetchall())
    insert, overwrite = [], []
    for k in keys:
        h = rows[k][0]
        if k not in present:
            insert.append(k)
        elif int(present[k]) == h:
            out.unchanged += 1
        elif (name, k) in asked:
            overwrite.append(k)
        else:
            out.skipped.append(k)
    triggers.enter(conn, access, b.schema, name)
    if insert:
        out.restored = conn.execute(sqlparts.insert_keys(b, name, temp, cols, overwrite=False), {"keys": insert}).rowcount
    if overwrite:
        out.overwritten = conn.execute(sqlparts.insert_keys(b, name, temp, cols, overwrite=True), {"keys": overwrite}).rowcount
    triggers.leave(conn, access, b.schema, name)
    done = insert + overwrite
    if done:
        got = dict(conn.execute(sqlparts.target_hashes(b, name, cols), {"keys": done}).fetchall())
        bad = [k for k in done if k not in got or int(got[k]) != rows[k][0]]
        if bad:
            raise OperationError(f"restore not committed: {name} {', '.join(bad[:5])} differ from the backup after the insert"
                                 " (a trigger or default changed them?)")
        out.checksum = str(sum(rows[k][0] for k in done))
    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(temp)))
    return out


def _check_references(conn: Any, b: Builder, man: dict[str, Any], want: Want, result: RestoreResult) -> None:
    """Every reference a restored row carries resolves in the database (foreign keys may not have
    fired: the role may write with session_replication_role = replica)."""
    restored = {x.table: x for x in result.tables}
    for name, x in restored.items():
        keys = [k for k in want[name] if k not in x.skipped]
        if not keys:
            continue
        t = b.graph.table(name)
        for fk in t.foreign_keys:
            if len(fk.columns) != 1 or fk.ref_table not in b.graph.schema.tables:
                continue
            bad = conn.execute(sqlparts.dangling(b, name, fk.columns[0], fk.ref_table, fk.ref_columns[0]), {"keys": keys}).fetchall()
            if bad:
                k, v = bad[0]
                raise OperationError(f"restore not committed: {name} {k} points at {fk.ref_table} {v}, which the database no longer has;"
                                     f" restore {fk.ref_table} {v} first (or with it: --table {fk.ref_table} --key {v})")
