"""Per-tenant database objects: sequences (and, later, other objects) an application creates for
each tenant, declared in ``workspace.tenant_objects`` by name pattern, e.g.
``sequences: ["conv_dpid_seq_{workspace_id}"]``.

They are not rows, so the table copy does not carry them. The plan lists them (and warns about
sequences owned by no column whose name contains the tenant's id but that no pattern declares);
the copy creates each in the target with the source's definition and position (type, increment,
bounds, cycle; ``setval`` to the source's ``last_value``/``is_called``), idempotently; cleanup
drops them from the source; rollback drops them from the target.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from residency.catalogue import WorkspaceSpec


@dataclass
class TenantSequence:
    name: str
    type: str
    increment: int
    min: int
    max: int
    start: int
    cache: int
    cycle: bool
    last_value: int
    is_called: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sequence_names(ws_spec: WorkspaceSpec, workspace_id: object) -> list[str]:
    """The declared per-tenant sequence names of one workspace."""
    return [p.replace("{workspace_id}", str(workspace_id)) for p in ws_spec.tenant_objects.get("sequences", ())]


_DEFINITION = """
SELECT c.relname, format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax, s.seqstart, s.seqcache, s.seqcycle
  FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %s AND c.relname = ANY(%s)
"""


def read_sequences(conn: psycopg.Connection[Any], schema: str, names: list[str]) -> list[TenantSequence]:
    """The named sequences that exist, with their definition and current position (in name order)."""
    if not names:
        return []
    out = []
    for name, typ, inc, lo, hi, start, cache, cyc in conn.execute(_DEFINITION, (schema, names)).fetchall():
        last, called = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name))).fetchone()  # type: ignore[misc]
        out.append(TenantSequence(name, typ, int(inc), int(lo), int(hi), int(start), int(cache), bool(cyc), int(last), bool(called)))
    return sorted(out, key=lambda s: s.name)


def existing(conn: psycopg.Connection[Any], schema: str, names: list[str]) -> list[str]:
    if not names:
        return []
    return sorted(r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'S' AND c.relname = ANY(%s)", (schema, names)))


def undeclared(conn: psycopg.Connection[Any], schema: str, ws_spec: WorkspaceSpec, workspace_id: object) -> list[str]:
    """Sequences owned by no column whose name contains the workspace id (as a whole word:
    ``_2`` in ``seq_2`` but not in ``seq_12``) and that no declared pattern names."""
    ws = str(workspace_id)
    declared = set(sequence_names(ws_spec, ws))
    word = re.compile(rf"(?<![0-9A-Za-z]){re.escape(ws)}(?![0-9A-Za-z])")
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'S' AND strpos(c.relname, %s) > 0"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid"
        "                 AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))"
        " ORDER BY c.relname", (schema, ws)).fetchall()
    return [r[0] for r in rows if r[0] not in declared and word.search(r[0])]


# --------------------------------------------------------------------------- plan


@dataclass
class TenantObjectPlan:
    kind: str  # sequence
    name: str
    pattern: str
    present: bool  # exists in the source
    position: int | None = None
    detail: str = ""


def plan(sconn: psycopg.Connection[Any], tconn: psycopg.Connection[Any], schema: str, ws_spec: WorkspaceSpec,
         workspace_id: object, target: str) -> tuple[list[TenantObjectPlan], list[str], list[str]]:
    """(objects, notes, refusals) for the plan: each declared object and where it stands; a note
    per undeclared look-alike; a refusal per object that already exists in the target."""
    ws = str(workspace_id)
    patterns = list(ws_spec.tenant_objects.get("sequences", ()))
    names = sequence_names(ws_spec, ws)
    src = {s.name: s for s in read_sequences(sconn, schema, names)}
    there = set(existing(tconn, schema, names))
    out: list[TenantObjectPlan] = []
    refusals: list[str] = []
    for pat, name in zip(patterns, names):
        s = src.get(name)
        if s is None:
            out.append(TenantObjectPlan("sequence", name, pat, False, None, "not in the source: nothing to create"))
            continue
        pos = s.last_value if s.is_called else None
        out.append(TenantObjectPlan("sequence", name, pat, True, pos,
                                    f"created in {target} at {'position ' + str(pos) if pos is not None else 'its start (unused)'}"))
        if name in there:
            refusals.append(f"per-tenant sequence {schema}.{name} (tenant_objects pattern '{pat}') already exists in target {target}")
    notes = [f"sequence {schema}.{n} is owned by no column and its name contains workspace id {ws}, but no"
             f" workspace.tenant_objects pattern declares it: it will not move (declare it, e.g. sequences: ['{n.replace(ws, '{workspace_id}')}'])"
             for n in undeclared(sconn, schema, ws_spec, ws)]
    return out, notes, refusals


def render_lines(objects: list[TenantObjectPlan]) -> list[str]:
    return [f"tenant {o.kind} {o.name}: {o.detail}" for o in objects]


# --------------------------------------------------------------------------- copy, cleanup, rollback


_TYPES = {t: sql.SQL(t) for t in ("smallint", "integer", "bigint")}  # the only types a sequence can have


def _create(conn: psycopg.Connection[Any], schema: str, s: TenantSequence) -> None:
    ident = sql.Identifier(schema, s.name)
    opts = sql.SQL("AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {}").format(
        _TYPES[s.type], sql.Literal(s.increment), sql.Literal(s.min), sql.Literal(s.max), sql.Literal(s.start),
        sql.Literal(s.cache), sql.SQL("CYCLE" if s.cycle else "NO CYCLE"))
    conn.execute(sql.SQL("CREATE SEQUENCE IF NOT EXISTS {} ").format(ident) + opts)
    # it may exist already (an earlier attempt, or the app's own trigger fired during the copy):
    # give it the source's definition, then the source's position
    conn.execute(sql.SQL("ALTER SEQUENCE {} ").format(ident) + opts)
    conn.execute("SELECT setval(%s::regclass, %s, %s)", (ident.as_string(conn), s.last_value, s.is_called))


def copy(src_dsn: str, dst_dsn: str, schema: str, ws_spec: WorkspaceSpec, workspace_id: object) -> dict[str, Any]:
    """Create the workspace's per-tenant objects in the target at the source's position
    (idempotent: run again, it sets the same definition and position)."""
    from residency import db

    names = sequence_names(ws_spec, workspace_id)
    if not names:
        return {"sequences": {}}
    with db.connect(src_dsn, autocommit=True) as s:
        seqs = read_sequences(s, schema, names)
    with db.connect(dst_dsn) as t:
        with t.transaction():
            for q in seqs:
                _create(t, schema, q)
    return {"sequences": {q.name: {"last_value": q.last_value, "is_called": q.is_called, "type": q.type} for q in seqs}}


def drop(dsn: str, schema: str, ws_spec: WorkspaceSpec, workspace_id: object) -> list[str]:
    """Drop the workspace's per-tenant objects from one database; returns what was dropped."""
    from residency import db

    names = sequence_names(ws_spec, workspace_id)
    if not names:
        return []
    with db.connect(dsn) as c:
        with c.transaction():
            found = existing(c, schema, names)
            for n in found:
                c.execute(sql.SQL("DROP SEQUENCE IF EXISTS {}").format(sql.Identifier(schema, n)))
    return found


def missing_in_target(src_dsn: str, dst_dsn: str, schema: str, ws_spec: WorkspaceSpec, workspace_id: object) -> list[str]:
    """A verify problem per per-tenant object of the source that the target lacks."""
    from residency import db

    names = sequence_names(ws_spec, workspace_id)
    if not names:
        return []
    with db.connect(src_dsn, autocommit=True) as s, db.connect(dst_dsn, autocommit=True) as t:
        have, there = existing(s, schema, names), set(existing(t, schema, names))
    return [f"per-tenant sequence {schema}.{n} is missing in the target" for n in have if n not in there]
