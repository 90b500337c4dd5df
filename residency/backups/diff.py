"""``residency backup diff WS A [B|now]``: which records were added, changed or deleted, per
table with keys, between two backups or a backup and the database now.

Both sides are streams of (key, row hash) in key order — a backup's key indexes, chunk after
chunk, or the live key index query (the same hash over the same rows) — merged one row at a time:
memory stays flat whatever the size, and no row is decoded."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from residency import db
from residency.catalogue import Catalogue
from residency.connections import Connections
from residency.controlplane import ensure_schema
from residency.errors import InputError

from . import copytext, reading, records, shape as shape_mod, sqlparts

MAX_KEYS = 20


@dataclass
class TableDiff:
    table: str
    added: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    keys: dict[str, list[Any]] = field(default_factory=lambda: {"added": [], "changed": [], "deleted": []})

    def note(self, kind: str, key: Any, limit: int) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.keys[kind]) < limit:
            self.keys[kind].append(key)


@dataclass
class DiffResult:
    workspace_id: str
    a: str
    b: str
    tables: list[TableDiff]
    notes: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return sum(t.added + t.changed + t.deleted for t in self.tables)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changes": self.changes}


def _live(conn: Any, sh: shape_mod.Shape, ws: str, table: str, tinfo: dict[str, Any]) -> Iterator[tuple[Any, int]]:
    kt = tinfo.get("key_type") if len(tinfo.get("key") or []) == 1 else None
    rest = b""
    with conn.cursor() as cur, cur.copy(sqlparts.key_index(sh.builder, table, [], live=True), sh.builder.params(ws)) as cp:
        for piece in cp:
            rest += bytes(piece)
            *done, rest = rest.split(b"\n")
            for line in done:
                f = copytext.split(line)
                yield (reading.typed(f[0], kt) if tinfo.get("key") else int(f[1] or 0)), int(f[1] or 0)


def _merge(d: TableDiff, a: Iterator[tuple[Any, int]], b: Iterator[tuple[Any, int]], limit: int) -> None:
    end = object()
    x, y = next(a, end), next(b, end)
    while x is not end or y is not end:
        if y is end or (x is not end and x[0] < y[0]):  # type: ignore[index,operator]
            d.note("deleted", x[0], limit)  # type: ignore[index]
            x = next(a, end)
        elif x is end or y[0] < x[0]:  # type: ignore[index,operator]
            d.note("added", y[0], limit)  # type: ignore[index]
            y = next(b, end)
        else:
            if x[1] != y[1]:  # type: ignore[index]
                d.note("changed", x[0], limit)  # type: ignore[index]
            else:
                d.unchanged += 1
            x, y = next(a, end), next(b, end)


def diff_backups(cat: Catalogue, conns: Connections, workspace_id: object, a: object, b: object = "now", *, limit: int = MAX_KEYS) -> DiffResult:
    """Records added, changed and deleted from backup ``a`` to backup ``b`` (or ``now``)."""
    ws = cat.workspace.parse_id(workspace_id)
    with db.connect(conns.control_dsn, autocommit=True) as cp:
        ensure_schema(cp)
        ra = records.get_backup(cp, a)
        rb = None if str(b) == "now" else records.get_backup(cp, b)
    for r in (ra, rb):
        if r is not None and r.workspace_id != ws:
            raise InputError(f"backup {r.id} is of workspace {r.workspace_id}, not {ws}")
    ta, ma = reading.manifest(conns, ra)
    out = DiffResult(ws, str(ra.id), "now" if rb is None else str(rb.id), [])
    if rb is not None:
        tb, mb = reading.manifest(conns, rb)
        if ma["schema"]["fingerprint"] != mb["schema"]["fingerprint"]:
            out.notes.append("the schema changed between the two backups: rows of a changed table show as changed")
        for name in dict.fromkeys(list(ma["tables"]) + list(mb["tables"])):
            d = TableDiff(name)
            ia = reading.entries(ta, ma["tables"][name]) if name in ma["tables"] else iter(())
            ib = reading.entries(tb, mb["tables"][name]) if name in mb["tables"] else iter(())
            _merge(d, ((k, h) for k, h, *_ in ia), ((k, h) for k, h, *_ in ib), limit)
            out.tables.append(d)
        return out
    with db.connect(conns.region(ra.region).dsn) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        sh = shape_mod.read(conn, cat.workspace, ma["schema"]["name"])
        diffs = shape_mod.differences(ma["schema"]["tables"], sh.schema, list(ma["tables"]))
        for name, notes in diffs.items():
            out.notes.extend(f"{name}: {n.removeprefix('cannot: ')}" for n in notes)
        for name, tinfo in ma["tables"].items():
            d = TableDiff(name)
            live = _live(conn, sh, ws, name, tinfo) if name in sh.tables else iter(())
            _merge(d, ((k, h) for k, h, *_ in reading.entries(ta, tinfo)), live, limit)
            out.tables.append(d)
        conn.execute("COMMIT")
    return out
