"""What a moved row points at, checked: dangling references and colliding shared rows.

* :func:`dangling` counts, in one database, the rows that go to the target (the workspace's own
  and the shared rows it needs) whose reference (foreign key, declared reference, path) names a
  row that database lacks. Verify runs it on both sides: the target may not dangle more than the
  source did, so a move never leaves a reference it could have kept.
* :func:`shared_collisions` compares the shared rows the workspace needs with the target's:
  the same key with other content, or the same natural key (``workspace.natural_keys``) under
  another id. Either way a moved row would silently point at a different row, so the plan
  refuses and verify fails, naming the row.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from .graph import Ref
from .sqlbuild import Builder

SAMPLE = 5


@dataclass
class Dangling:
    ref: str  # Ref.describe()
    table: str
    columns: list[str]
    ref_table: str
    rows: int
    sample: list[str] = field(default_factory=list)  # referenced values that are missing

    def line(self, where: str) -> str:
        shown = ", ".join(self.sample) + (", ..." if self.rows > len(self.sample) else "")
        return (f"dangling reference {self.table}.{','.join(self.columns)} → {self.ref_table}: {self.rows} rows in {where}"
                f" point at keys {where} lacks ({shown})")


def checked_refs(b: Builder) -> list[Ref]:
    """Every reference a row going to the target carries: foreign keys, declared references and paths."""
    g = b.graph
    carriers = set(g.order) | set(g.global_order)
    out = [r for r in g.refs if r.table in carriers and r.ref_table in g.schema.tables]
    out += [r for r in g.unfollowed if r.origin == "path"]
    for deps in g.dependents.values():
        out += deps
    seen: dict[tuple[Any, ...], Ref] = {}
    for r in out:
        seen.setdefault((r.table, r.columns, r.ref_table, r.ref_columns, r.type_column, r.type_value), r)
    return list(seen.values())


def _text(expr: sql.Composable) -> sql.Composable:
    return sql.SQL("({})::text").format(expr)


def _into_moving(b: Builder, r: Ref) -> bool:
    """The reference points into a table whose rows only the workspace's own rows fill in the target."""
    g = b.graph
    return g.reach[r.ref_table].moves and r.ref_table not in g.shared


def implied(b: Builder, r: Ref) -> bool:
    """The reference is the very link its table reaches the workspace through (its only one, or
    the one its type value selects, polymorphic), or its workspace key column pointing at the
    workspace's own row: a row goes to the target because the row it points at does, so that row
    exists and goes too. Checking it in the source proves nothing
    (and costs a join per row: the previews, attachments and reactions of a 10M-row workspace)."""
    g = b.graph
    rr = g.reach.get(r.table)
    if rr is None or r.table in g.shared or not _into_moving(b, r):
        return False
    if rr.kind == "key":  # the workspace's own key column pointing at the workspace's row
        root = g.reach[r.ref_table]
        return (root.kind == "root" and tuple(r.columns) == (rr.key_column,) and not r.type_column
                and tuple(r.ref_columns) == tuple(g.table(r.ref_table).primary_key))
    if rr.kind not in ("fk", "reference", "polymorphic"):
        return False
    same = [lk for lk in rr.links if (tuple(lk.columns), lk.parent, tuple(lk.parent_columns)) == (tuple(r.columns), r.ref_table, tuple(r.ref_columns))]
    if rr.kind == "polymorphic":
        return r.type_column == rr.type_column and any(lk.type_value == r.type_value for lk in same)
    return len(rr.links) == 1 and bool(same) and not r.type_column


def dangling_query(b: Builder, r: Ref, *, carried_only: bool = False) -> sql.Composed:
    """count and sample of the rows going to the target whose reference this database can't
    resolve; with ``carried_only``, also (count, sample) of those whose referenced row exists but
    does not go to the target (another tenant's row): the target will lack it."""
    t = b.graph.table(r.table)
    pt = b.graph.table(r.ref_table)
    m, p = sql.Identifier("dm"), sql.Identifier("dp")

    def matching(alias: sql.Identifier) -> sql.Composable:
        parts = []
        for c, pc in zip(r.columns, r.ref_columns):
            tc, ptc = t.column(c), pt.column(pc)
            lhs = sql.SQL("{}.{}").format(alias, sql.Identifier(pc))
            rhs = sql.SQL("{}.{}").format(m, sql.Identifier(c))
            same = tc is not None and ptc is not None and tc.type == ptc.type
            parts.append(sql.SQL("{} = {}").format(lhs, rhs) if same else sql.SQL("{} = {}").format(_text(lhs), _text(rhs)))
        return sql.SQL(" AND ").join(parts)

    # NULL, and '' in text columns, mean "no reference" (an integer column is not cast to text per row)
    empty = [b.empty_value(r.table, c, m) for c in r.columns]
    present = [sql.SQL("NOT {}").format(e) for e in empty if e is not None] or [sql.SQL("true")]
    cond = [sql.SQL(" AND ").join(present)]
    if r.type_column:
        cond.append(sql.SQL("{}.{} = {}").format(m, sql.Identifier(r.type_column), sql.Literal(r.type_value)))
    cond.append(b.carried(r.table, m, 1, frozenset()))
    value = (_text(sql.SQL("{}.{}").format(m, sql.Identifier(r.columns[0]))) if len(r.columns) == 1
             else _text(sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.SQL("{}.{}").format(m, sql.Identifier(c)) for c in r.columns))))
    exists = sql.SQL("EXISTS (SELECT 1 FROM {ptbl} {p} WHERE {match})").format(ptbl=b.qname(r.ref_table), p=p, match=matching(p))
    if not carried_only:
        if b.graph.reach[r.table].by_column:
            return sql.SQL(
                "SELECT count(*), (array_agg(DISTINCT x.v))[1:{n}] FROM (SELECT {v} AS v FROM {tbl} {m} WHERE {cond} AND NOT {exists}) x"
            ).format(n=sql.Literal(SAMPLE), v=value, tbl=b.qname(r.table), m=m, cond=sql.SQL(" AND ").join(cond), exists=exists)
        # a table reached through joins is scanned whole either way: its rows whose reference does
        # not resolve first (an anti-join, in a subquery the planner keeps), then whether those
        # few go to the target, instead of the joins for every row
        first = sql.SQL(" AND ").join([*cond[:-1], sql.SQL("NOT {}").format(exists)])
        return sql.SQL(
            "SELECT count(*), (array_agg(DISTINCT x.v))[1:{n}] FROM (SELECT {v} AS v FROM (SELECT * FROM {tbl} {m} WHERE {first} OFFSET 0) {m}"
            " WHERE {carried}) x"
        ).format(n=sql.Literal(SAMPLE), v=value, tbl=b.qname(r.table), m=m, first=first, carried=cond[-1])
    q = sql.Identifier("dq")
    carried = sql.SQL("EXISTS (SELECT 1 FROM {ptbl} {q} WHERE {match} AND {c})").format(
        ptbl=b.qname(r.ref_table), q=q, match=matching(q),
        c=b.carried(r.ref_table, q, 0, frozenset()))
    return sql.SQL(
        "SELECT count(*) FILTER (WHERE NOT x.e), (array_agg(DISTINCT x.v) FILTER (WHERE NOT x.e))[1:{n}],"
        " count(*) FILTER (WHERE x.e), (array_agg(DISTINCT x.v) FILTER (WHERE x.e))[1:{n}]"
        " FROM (SELECT {v} AS v, {exists} AS e FROM {tbl} {m} WHERE {cond} AND NOT {carried}) x"
    ).format(n=sql.Literal(SAMPLE), v=value, exists=exists, tbl=b.qname(r.table), m=m, cond=sql.SQL(" AND ").join(cond), carried=carried)


def dangling(conn: psycopg.Connection[Any], b: Builder, params: dict[str, Any], *, refs: list[Ref] | None = None) -> list[Dangling]:
    """The references of the workspace's rows (and its shared rows) that this database can't resolve."""
    out = []
    for r in (checked_refs(b) if refs is None else refs):
        n, sample = conn.execute(dangling_query(b, r), params).fetchone()
        if n:
            out.append(Dangling(r.describe(), r.table, list(r.columns), r.ref_table, int(n), [str(s) for s in (sample or [])]))
    return out


def source_refs(b: Builder) -> list[Ref]:
    """The references verify resolves in the source only: those into the workspace's own tables
    (the target holds no other rows of them), but the ones that cannot dangle (:func:`implied`)."""
    return [r for r in checked_refs(b) if _into_moving(b, r) and not implied(b, r)]


def source_dangling(conn: psycopg.Connection[Any], b: Builder, params: dict[str, Any], *,
                    refs: list[Ref] | None = None) -> tuple[list[Dangling], list[Dangling]]:
    """In the source: (references it can't resolve itself, references into the workspace's own
    tables that point at rows which don't go to the target: another tenant's). The second are
    what the target will lack, found without reading the target: verify proves the workspace's
    rows identical on both sides, and the target gets no other rows of those tables from it.
    ``refs``: only these (default: every checked reference that can dangle)."""
    missing: list[Dangling] = []
    foreign: list[Dangling] = []
    for r in (checked_refs(b) if refs is None else refs):
        if implied(b, r):
            continue
        if not _into_moving(b, r):
            n, sample = conn.execute(dangling_query(b, r), params).fetchone()
            if n:
                missing.append(Dangling(r.describe(), r.table, list(r.columns), r.ref_table, int(n), [str(s) for s in (sample or [])]))
            continue
        n, sample, nf, fsample = conn.execute(dangling_query(b, r, carried_only=True), params).fetchone()
        if n:
            missing.append(Dangling(r.describe(), r.table, list(r.columns), r.ref_table, int(n), [str(s) for s in (sample or [])]))
        if nf or n:
            foreign.append(Dangling(r.describe(), r.table, list(r.columns), r.ref_table, int(n) + int(nf),
                                    [str(s) for s in (fsample or [])] + [str(s) for s in (sample or [])]))
    return missing, foreign


def target_refs(b: Builder) -> list[Ref]:
    """The references verify resolves in the target itself: those into tables holding shared rows."""
    return [r for r in checked_refs(b) if not _into_moving(b, r)]


def compare_dangling(src: list[Dangling], dst: list[Dangling]) -> tuple[list[Dangling], list[Dangling]]:
    """(new in the target: a failure, already dangling in the source: a note)."""
    before = {d.ref: d for d in src}
    new = [d for d in dst if d.rows > (before[d.ref].rows if d.ref in before else 0)]
    return new, list(src)


# ---------------------------------------------------------------------------- shared rows


@dataclass
class Collision:
    table: str
    kind: str  # "content" | "natural key"
    key: str
    detail: str

    def line(self, source: str, target: str) -> str:
        if self.kind == "content":
            return f"shared row {self.table} {self.key} differs in {target}: {self.detail}; a moved row would point at another row"
        return f"shared row {self.table} {self.detail}; the moved rows would point at a different {self.table} row"


def _row_json(conn: psycopg.Connection[Any], b: Builder, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    t = sql.Identifier("t")
    q = sql.SQL("SELECT to_jsonb({t}) FROM {tbl} {t} WHERE {m}").format(
        t=t, tbl=b.qname(table),
        m=sql.SQL(" AND ").join(sql.SQL("{}.{}::text = {}").format(t, sql.Identifier(k), sql.Literal(str(v))) for k, v in key.items()),
    )
    row = conn.execute(q).fetchone()
    return row[0] if row else None


TEMP = "residency_shared_rows"


def shared_collisions(sconn: psycopg.Connection[Any], tconn: psycopg.Connection[Any], b: Builder, table: str,
                      params: dict[str, Any], source: str = "source", target: str = "target") -> list[Collision]:
    """Shared rows of ``table`` the workspace needs that the target holds differently. ``tconn``
    must be in a transaction the caller rolls back (a temporary table is used)."""
    if not b.graph.table(table).primary_key:
        return []
    _load_needed(sconn, tconn, b, table, params)
    return _collisions(sconn, tconn, b, table, source, target)


def shared_rows_check(sconn: psycopg.Connection[Any], tconn: psycopg.Connection[Any], b: Builder, table: str,
                      params: dict[str, Any], source: str = "source", target: str = "target", *,
                      keys: tuple[str, list[Any]] | None = None) -> tuple[int, int, list[Collision]]:
    """The shared rows of ``table`` the workspace needs, read from the source once (their
    predicate can cost a join per moving row): (how many, how many the target holds by
    :meth:`Graph.presence_key`, the ones it holds differently). ``tconn`` as for
    :func:`shared_collisions`. ``keys``: (column, values) that are exactly the needed rows (the
    values the workspace's rows point at, :mod:`migrate.globalkeys`): read by them instead."""
    if not b.graph.table(table).primary_key:
        return 0, 0, []
    _load_needed(sconn, tconn, b, table, params, keys)
    (total,) = tconn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(TEMP))).fetchone()
    (present,) = tconn.execute(b.count_present(table, TEMP, b.graph.presence_key(table))).fetchone()
    return int(total), int(present), _collisions(sconn, tconn, b, table, source, target)


def _load_needed(sconn: psycopg.Connection[Any], tconn: psycopg.Connection[Any], b: Builder, table: str, params: dict[str, Any],
                 keys: tuple[str, list[Any]] | None = None) -> None:
    """The needed shared rows' key, natural key and presence key columns and hash, from the
    source into the temporary table ``TEMP`` in the target (``keys``: by those values)."""
    g = b.graph
    t = g.table(table)
    key = list(t.primary_key)
    natural = list(g.spec.natural_keys.get(table, ()))
    cols = list(dict.fromkeys(key + natural + list(g.presence_key(table))))
    temp = TEMP
    h, x = sql.Identifier("h"), sql.Identifier("x")
    tconn.execute(sql.SQL("CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {cols}, 0::bigint AS residency_hash FROM {tbl} {x} WITH NO DATA").format(
        tmp=sql.Identifier(temp), cols=sql.SQL(", ").join(sql.SQL("{}.{}").format(x, sql.Identifier(c)) for c in cols), tbl=b.qname(table), x=x))
    out_q = sql.SQL("COPY (SELECT {cols}, hash_record_extended({hc}, 0) FROM ({rows}) {h}) TO STDOUT (FORMAT BINARY)").format(
        cols=sql.SQL(", ").join(sql.SQL("{}.{}").format(h, sql.Identifier(c)) for c in cols),
        hc=_row_of(b, t, h), rows=b.global_referenced(table) if keys is None else b.global_by_keys(table, keys[0]), h=h)
    if keys is not None:
        params = {"keys": keys[1]}
    in_q = sql.SQL("COPY {tmp} ({cols}, residency_hash) FROM STDIN (FORMAT BINARY)").format(
        tmp=sql.Identifier(temp), cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols))
    with sconn.cursor().copy(out_q, params) as cout, tconn.cursor().copy(in_q) as cin:
        for chunk in cout:
            cin.write(chunk)


def _collisions(sconn: psycopg.Connection[Any], tconn: psycopg.Connection[Any], b: Builder, table: str, source: str, target: str) -> list[Collision]:
    """The rows loaded by :func:`_load_needed` that the target holds with other content, or under
    another key with the same natural key."""
    g = b.graph
    t = g.table(table)
    key = list(t.primary_key)
    natural = list(g.spec.natural_keys.get(table, ()))
    temp = TEMP
    found: list[Collision] = []
    s, a = sql.Identifier("s"), sql.Identifier("a")
    on_key = sql.SQL(" AND ").join(sql.SQL("{}.{} = {}.{}").format(a, sql.Identifier(k), s, sql.Identifier(k)) for k in key)
    differ = sql.SQL("SELECT {keys} FROM {tmp} {s} JOIN {tbl} {a} ON {on} WHERE hash_record_extended({row}, 0) <> {s}.residency_hash ORDER BY {keys} LIMIT {n}").format(
        keys=sql.SQL(", ").join(sql.SQL("{}.{}").format(s, sql.Identifier(k)) for k in key), tmp=sql.Identifier(temp), s=s,
        tbl=b.qname(table), a=a, on=on_key, row=_row_of(b, t, a), n=sql.Literal(SAMPLE))
    for row in tconn.execute(differ):
        k = dict(zip(key, row))
        before, after = _row_json(sconn, b, table, k), _row_json(tconn, b, table, k)
        cols_diff = sorted(c for c in (before or {}) if (before or {}).get(c) != (after or {}).get(c))
        detail = "; ".join(f"{c} {json.dumps((before or {}).get(c))} in {source}, {json.dumps((after or {}).get(c))} in {target}" for c in cols_diff[:3])
        found.append(Collision(table, "content", _fmt_key(k), detail or "content differs"))
    if natural and tuple(natural) != tuple(g.presence_key(table)):  # referenced by that name: it resolves to the target's row
        on_nat = sql.SQL(" AND ").join(sql.SQL("{}.{} = {}.{}").format(a, sql.Identifier(c), s, sql.Identifier(c)) for c in natural)
        q = sql.SQL("SELECT {skeys}, {akeys}, {nat} FROM {tmp} {s} JOIN {tbl} {a} ON {on} WHERE NOT ({same}) ORDER BY 1 LIMIT {n}").format(
            skeys=sql.SQL(", ").join(sql.SQL("{}.{}").format(s, sql.Identifier(k)) for k in key),
            akeys=sql.SQL(", ").join(sql.SQL("{}.{}").format(a, sql.Identifier(k)) for k in key),
            nat=sql.SQL(", ").join(sql.SQL("{}.{}").format(s, sql.Identifier(c)) for c in natural),
            tmp=sql.Identifier(temp), s=s, tbl=b.qname(table), a=a, on=on_nat,
            same=on_key, n=sql.Literal(SAMPLE))
        for row in tconn.execute(q):
            sk, ak, nat = row[: len(key)], row[len(key): 2 * len(key)], row[2 * len(key):]
            nk = ", ".join(f"{c}={v!r}" for c, v in zip(natural, nat))
            found.append(Collision(table, "natural key", _fmt_key(dict(zip(key, sk))),
                                   f"{nk} is {_fmt_key(dict(zip(key, sk)))} in {source} but {_fmt_key(dict(zip(key, ak)))} in {target}"))
    return found


def _row_of(b: Builder, t: Any, alias: sql.Composable) -> sql.Composable:
    """ROW(...) of the copied columns, hashed the same way on both sides."""
    parts = []
    for c in t.columns:
        if c.generated:
            continue
        ref = sql.SQL("{}.{}").format(alias, sql.Identifier(c.name))
        parts.append(ref if c.hashable else sql.SQL("{}::text").format(ref))
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(parts))


def _fmt_key(k: dict[str, Any]) -> str:
    return ", ".join(f"{c}={v}" for c, v in k.items())


def to_dicts(items: list[Any]) -> list[dict[str, Any]]:
    return [asdict(i) for i in items]
