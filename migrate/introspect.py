"""Schema introspection from pg_catalog: tables, columns and types, primary keys, foreign keys,
unique constraints and unique indexes (partial and expression ones too), sequences (serial and
identity). Nothing about any application is assumed here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import psycopg

APP_SCHEMA_ENV = "RESIDENCY_APP_SCHEMA"


def app_schema() -> str:
    """The PostgreSQL schema holding the application's tables (default ``public``)."""
    return os.environ.get(APP_SCHEMA_ENV) or "public"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(), e.g. "character varying(40)"
    not_null: bool
    has_default: bool
    generated: bool  # GENERATED ALWAYS AS (...) STORED: never copied, recomputed by the target
    identity: str  # '' | 'a' (ALWAYS) | 'd' (BY DEFAULT)
    hashable: bool  # has a hash opclass: hashed as is; otherwise hashed as text


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    deferrable: bool


@dataclass(frozen=True)
class Sequence:
    table: str
    column: str
    schema: str
    name: str


@dataclass(frozen=True)
class UniqueIndex:
    """A unique index (a unique or primary-key constraint's, or one made by CREATE UNIQUE INDEX).

    ``parts``: each key part as PostgreSQL prints it (``pg_get_indexdef(oid, k, true)``): a column
    name, or an expression such as ``lower(slug)``; ``columns``: the plain column of each part
    (None for an expression). ``predicate``: a partial index's WHERE (``pg_get_expr``), else None."""

    name: str
    table: str
    parts: tuple[str, ...]
    columns: tuple[str | None, ...]
    predicate: str | None = None
    constraint: str = ""  # '' (an index only) | 'p' (primary key) | 'u' (unique constraint)
    nulls_not_distinct: bool = False
    valid: bool = True

    @property
    def plain(self) -> bool:
        """Only plain columns, no predicate: a key by which rows can be told apart."""
        return self.predicate is None and all(c is not None for c in self.columns)

    def describe(self) -> str:
        what = {"p": "primary key", "u": "unique constraint"}.get(self.constraint, "unique index")
        return f"{what} {self.name} on {self.table} ({', '.join(self.parts)})" + (f" WHERE {self.predicate}" if self.predicate else "")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...]
    sequences: tuple[Sequence, ...] = ()
    unique_indexes: tuple[UniqueIndex, ...] = ()

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def copy_columns(self) -> tuple[str, ...]:
        """The columns a copy carries (generated columns are recomputed by the target)."""
        return tuple(c.name for c in self.columns if not c.generated)

    @property
    def row_key(self) -> tuple[str, ...]:
        """Columns that tell this table's rows apart: the primary key, else the first plain unique
        index whose columns are all NOT NULL, else () (rows are compared as a multiset)."""
        if self.primary_key:
            return self.primary_key
        for u in self.unique_indexes:
            if u.plain and u.valid and all((col := self.column(c or "")) is not None and col.not_null for c in u.columns):
                return tuple(c or "" for c in u.columns)
        return ()


@dataclass(frozen=True)
class Schema:
    name: str
    tables: Mapping[str, Table] = field(default_factory=lambda: MappingProxyType({}))

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)


def introspect(conn: psycopg.Connection[Any], schema: str | None = None) -> Schema:
    """Read every ordinary (and partitioned) table of ``schema`` from pg_catalog."""
    schema = schema or app_schema()
    rels = conn.execute(
        "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname",
        (schema,),
    ).fetchall()
    if not rels:
        return Schema(schema, MappingProxyType({}))
    oids = [r[0] for r in rels]
    names = {r[0]: r[1] for r in rels}

    cols: dict[int, list[tuple[Any, ...]]] = {o: [] for o in oids}
    attname: dict[tuple[int, int], str] = {}
    type_oids: set[int] = set()
    for relid, num, name, typ, typoid, notnull, hasdef, gen, ident in conn.execute(
        "SELECT a.attrelid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid,"
        " a.attnotnull, a.atthasdef, a.attgenerated <> '', a.attidentity"
        " FROM pg_attribute a WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attrelid, a.attnum",
        (oids,),
    ):
        cols[relid].append((name, typ, typoid, notnull, hasdef, gen, ident))
        attname[(relid, num)] = name
        type_oids.add(typoid)
    hashable = _hashable_types(conn, type_oids)

    pks: dict[int, tuple[str, ...]] = {}
    fks: dict[int, list[ForeignKey]] = {o: [] for o in oids}
    for conname, contype, relid, conkey, frelid, fkey, deferrable in conn.execute(
        "SELECT conname, contype, conrelid, conkey, confrelid, confkey, condeferrable FROM pg_constraint"
        " WHERE conrelid = ANY(%s) AND contype IN ('p', 'f') ORDER BY conrelid, conname",
        (oids,),
    ):
        if contype == "p":
            pks[relid] = tuple(attname[(relid, k)] for k in conkey)
        elif frelid in names:  # foreign keys into other schemas are not the workspace's business
            ref_att = {
                num: nm
                for (rel, num), nm in attname.items()
                if rel == frelid
            }
            fks[relid].append(
                ForeignKey(
                    conname,
                    names[relid],
                    tuple(attname[(relid, k)] for k in conkey),
                    names[frelid],
                    tuple(ref_att[k] for k in fkey),
                    bool(deferrable),
                )
            )

    seqs: dict[int, list[Sequence]] = {o: [] for o in oids}
    for relid, col, sschema, sname in conn.execute(
        # serial columns: the column default depends on the sequence
        "SELECT a.attrelid, a.attname, sn.nspname, s.relname FROM pg_attribute a"
        " JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum"
        " JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid"
        "  AND d.refclassid = 'pg_class'::regclass"
        " JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'"
        " JOIN pg_namespace sn ON sn.oid = s.relnamespace"
        " WHERE a.attrelid = ANY(%s)"
        " UNION "
        # identity columns: the sequence depends on the column
        "SELECT d.refobjid, a.attname, sn.nspname, s.relname FROM pg_depend d"
        " JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'"
        " JOIN pg_namespace sn ON sn.oid = s.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
        " WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass"
        "  AND d.deptype = 'i' AND d.refobjid = ANY(%s)",
        (oids, oids),
    ):
        seqs[relid].append(Sequence(names[relid], col, sschema, sname))

    uniq: dict[int, list[UniqueIndex]] = {o: [] for o in oids}
    for relid, iname, natts, keys, parts, pred, contype, nnd, valid in conn.execute(
        "SELECT i.indrelid, ic.relname, i.indnkeyatts, i.indkey::int2[],"
        " ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k),"
        " pg_get_expr(i.indpred, i.indrelid, true), coalesce(con.contype, ''),"
        " coalesce((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false), i.indisvalid"
        " FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
        " LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u')"
        " WHERE i.indrelid = ANY(%s) AND i.indisunique ORDER BY i.indrelid, ic.relname",
        (oids,),
    ):
        part_cols = tuple(attname.get((relid, int(k))) if int(k) else None for k in list(keys)[: int(natts)])
        uniq[relid].append(UniqueIndex(iname, names[relid], tuple(parts), part_cols, pred, contype, bool(nnd), bool(valid)))

    tables: dict[str, Table] = {}
    for oid in oids:
        columns = tuple(
            Column(n, t, bool(nn), bool(hd), bool(g), i or "", hashable.get(to, False))
            for (n, t, to, nn, hd, g, i) in cols[oid]
        )
        tables[names[oid]] = Table(
            names[oid], columns, pks.get(oid, ()), tuple(fks[oid]), tuple(sorted(seqs[oid], key=lambda s: s.column)),
            tuple(uniq[oid]),
        )
    return Schema(schema, MappingProxyType(tables))


def _hashable_types(conn: psycopg.Connection[Any], type_oids: set[int]) -> dict[int, bool]:
    """Which types have a default hash opclass (directly, binary-coercibly, via their domain base,
    their array element, or as enums/ranges), so ``hash_record_extended`` can hash them."""
    if not type_oids:
        return {}
    info: dict[int, tuple[str, int, int, bool]] = {}
    todo = set(type_oids)
    while todo:
        rows = conn.execute(
            "SELECT t.oid, t.typtype, t.typbasetype, CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE 0 END,"
            " EXISTS (SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod"
            "   WHERE am.amname = 'hash' AND oc.opcdefault AND (oc.opcintype = t.oid OR EXISTS ("
            "     SELECT 1 FROM pg_cast c WHERE c.castsource = t.oid AND c.casttarget = oc.opcintype"
            "     AND c.castmethod = 'b')))"
            " FROM pg_type t WHERE t.oid = ANY(%s)",
            (list(todo),),
        ).fetchall()
        todo = set()
        for oid, typtype, base, elem, direct in rows:
            info[oid] = (typtype, base, elem, direct)
            for dep in (base, elem):
                if dep and dep not in info:
                    todo.add(dep)

    memo: dict[int, bool] = {}

    def ok(oid: int, depth: int = 0) -> bool:
        if oid in memo:
            return memo[oid]
        if oid not in info or depth > 10:
            return False
        typtype, base, elem, direct = info[oid]
        if typtype == "d":
            r = ok(base, depth + 1)
        elif elem:
            r = ok(elem, depth + 1)
        elif typtype in ("e", "r", "m"):
            r = True
        elif typtype == "c":
            r = False
        else:
            r = direct
        memo[oid] = r
        return r

    return {o: ok(o) for o in type_oids}
