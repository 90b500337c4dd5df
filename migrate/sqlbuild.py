"""The one place SQL is composed. Identifiers only through ``psycopg.sql.Identifier``, values
only as parameters (``%(ws)s`` is the workspace id), never string formatting.

The heart is :meth:`Builder.belongs`: the predicate "this row of table T belongs to workspace W"
for every reach kind (root, own key column, foreign-key path, configured reference path,
polymorphic path), composed recursively through the graph. Its mirror :meth:`Builder.workspace_of`
computes a single row's workspace (for the fence triggers, where it must be cheap per row).
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Sequence

from psycopg import sql

from .graph import LINK_KINDS, Graph, Reach
from .introspect import Table

FENCE_SCHEMA = "residency_mover"
FENCE_TABLE = "fence"
BYPASS_SETTING = "residency.fence_bypass"

WS = sql.Placeholder("ws")


def _ident_list(names: Iterable[str], alias: sql.Composable | None = None) -> sql.Composed:
    if alias is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.SQL("{}.{}").format(alias, sql.Identifier(n)) for n in names)


def _tuple(names: Sequence[str], alias: sql.Composable) -> sql.Composable:
    cols = _ident_list(names, alias)
    return cols if len(names) == 1 else sql.SQL("({})").format(cols)


class Builder:
    """Composes every statement the mover runs against a region's database."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.schema = graph.schema.name
        self._type_params: dict[tuple[str, str], str] = {}
        for name, r in graph.reach.items():
            if r.kind == "polymorphic":
                for i, link in enumerate(r.links):
                    self._type_params[(name, link.type_value or "")] = f"tv_{len(self._type_params)}"

    # ------------------------------------------------------------------ names and parameters
    def qname(self, table: str) -> sql.Identifier:
        return sql.Identifier(self.schema, table)

    def params(self, workspace_id: object, **extra: Any) -> dict[str, Any]:
        p: dict[str, Any] = {"ws": str(workspace_id)}
        for (_, value), name in self._type_params.items():
            p[name] = value
        p.update(extra)
        return p

    # ------------------------------------------------------------------ rows of a workspace
    def belongs(self, table: str, alias: sql.Composable, depth: int = 0) -> sql.Composable:
        """The predicate: the row ``alias`` of ``table`` belongs to workspace ``%(ws)s``."""
        r: Reach = self.graph.reach[table]
        if r.kind in ("root", "key"):
            return sql.SQL("{}.{} = {}").format(alias, sql.Identifier(r.key_column or ""), WS)
        if r.kind in LINK_KINDS:
            parts = []
            for link in r.links:
                p = sql.Identifier(f"p{depth}")
                if len(r.links) == 1:
                    sub = sql.SQL("{lhs} IN (SELECT {rhs} FROM {parent} {p} WHERE {cond})").format(
                        lhs=_tuple(link.columns, alias),
                        rhs=_ident_list(link.parent_columns, p),
                        parent=self.qname(link.parent),
                        p=p,
                        cond=self.belongs(link.parent, p, depth + 1),
                    )
                else:
                    # OR'ed "x IN (SELECT ...)" cannot become a semi-join: each is a SubPlan, hashed only
                    # while its keys fit in work_mem, else a materialised list rescanned for every row
                    # (quadratic: minutes per statement on a 1M-row workspace once ANALYZEd). A correlated
                    # EXISTS probes the parent's unique key instead; same rows in a WHERE clause.
                    sub = sql.SQL("EXISTS (SELECT 1 FROM {parent} {p} WHERE {match} AND {cond})").format(
                        parent=self.qname(link.parent),
                        p=p,
                        match=sql.SQL(" AND ").join(
                            sql.SQL("{}.{} = {}.{}").format(p, sql.Identifier(pc), alias, sql.Identifier(c))
                            for c, pc in zip(link.columns, link.parent_columns)
                        ),
                        cond=self.belongs(link.parent, p, depth + 1),
                    )
                if r.kind == "polymorphic":
                    sub = sql.SQL("({}.{} = {} AND {})").format(
                        alias,
                        sql.Identifier(r.type_column or ""),
                        sql.Placeholder(self._type_params[(table, link.type_value or "")]),
                        sub,
                    )
                parts.append(sub)
            return parts[0] if len(parts) == 1 else sql.SQL("({})").format(sql.SQL(" OR ").join(parts))
        raise ValueError(f"table {table} does not belong to a workspace ({r.kind})")

    def belongs_rowwise(self, table: str, alias: sql.Composable, depth: int = 0) -> sql.Composable:
        """The same predicate as :meth:`belongs`, evaluated row by row: each link is a scalar
        subquery probing the parent's (unique, hence indexed) key, which PostgreSQL never turns
        into a join. For a few rows picked by key (a bucket, changed keys) it is a handful of
        index probes, where the set form may hash every row of the workspace's parent tables
        (it does whenever the statistics underestimate the workspace)."""
        r: Reach = self.graph.reach[table]
        if r.kind in ("root", "key"):
            return sql.SQL("{}.{} = {}").format(alias, sql.Identifier(r.key_column or ""), WS)
        if r.kind in LINK_KINDS:
            parts = []
            for link in r.links:
                p = sql.Identifier(f"q{depth}")
                match = [sql.SQL("{}.{} = {}.{}").format(p, sql.Identifier(pc), alias, sql.Identifier(c))
                         for c, pc in zip(link.columns, link.parent_columns)]
                if r.kind == "polymorphic":
                    # inside the subquery: in the outer WHERE the planner would OR the type tests
                    # into a bitmap scan of every row of that type
                    match.insert(0, sql.SQL("{}.{} = {}").format(
                        alias, sql.Identifier(r.type_column or ""), sql.Placeholder(self._type_params[(table, link.type_value or "")])))
                sub = sql.SQL("coalesce((SELECT true FROM {parent} {p} WHERE {match} AND {cond} LIMIT 1), false)").format(
                    parent=self.qname(link.parent), p=p, match=sql.SQL(" AND ").join(match),
                    cond=self.belongs_rowwise(link.parent, p, depth + 1),
                )
                parts.append(sub)
            return parts[0] if len(parts) == 1 else sql.SQL("({})").format(sql.SQL(" OR ").join(parts))
        raise ValueError(f"table {table} does not belong to a workspace ({r.kind})")

    def select_rows(self, table: str, columns: Sequence[str] | None = None, *, where: sql.Composable | None = None, rowwise: bool = False) -> sql.Composed:
        t = self.graph.table(table)
        a = sql.Identifier("t")
        cols = columns if columns is not None else t.copy_columns
        cond = self.belongs_rowwise(table, a) if rowwise else self.belongs(table, a)
        if where is not None:
            cond = sql.SQL("{} AND {}").format(cond, where)
        return sql.SQL("SELECT {cols} FROM {tbl} {a} WHERE {cond}").format(
            cols=_ident_list(cols, a), tbl=self.qname(table), a=a, cond=cond
        )

    def delete_rows(self, table: str) -> sql.Composed:
        a = sql.Identifier("t")
        return sql.SQL("DELETE FROM {tbl} {a} WHERE {cond}").format(tbl=self.qname(table), a=a, cond=self.belongs(table, a))

    def owned_keys_temp(self, table: str, temp: str) -> sql.Composed:
        """A temp table of the keys of the workspace's owned rows of ``table``, taken while their owners exist."""
        a = sql.Identifier("t")
        (pk,) = self.graph.table(table).primary_key
        return sql.SQL("CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {a}.{pk} FROM {tbl} {a} WHERE {cond}").format(
            tmp=sql.Identifier(temp), a=a, pk=sql.Identifier(pk), tbl=self.qname(table), cond=self.belongs(table, a))

    def delete_owned_unreferenced(self, table: str, temp: str) -> sql.Composed:
        """Delete the rows keyed in ``temp`` that no row of the owning table points at any more."""
        a, x = sql.Identifier("t"), sql.Identifier("x")
        (pk,) = self.graph.table(table).primary_key
        (link,) = self.graph.reach[table].links
        return sql.SQL("DELETE FROM {tbl} {a} WHERE {a}.{pk} IN (SELECT {pk} FROM {tmp})"
                       " AND NOT EXISTS (SELECT 1 FROM {owner} {x} WHERE {x}.{col} = {a}.{pk})").format(
            tbl=self.qname(table), a=a, pk=sql.Identifier(pk), tmp=sql.Identifier(temp), owner=self.qname(link.parent),
            x=x, col=sql.Identifier(link.parent_columns[0]))

    def delete_by_temp_keys(self, table: str, temp: str) -> sql.Composed:
        a = sql.Identifier("t")
        key = self.graph.table(table).primary_key
        return sql.SQL("DELETE FROM {tbl} {a} WHERE {lhs} IN (SELECT {cols} FROM {tmp})").format(
            tbl=self.qname(table), a=a, lhs=_tuple(key, a), cols=_ident_list(key), tmp=sql.Identifier(temp))

    def insert_from_temp(self, table: str, temp: str) -> sql.Composed:
        cols = _ident_list(self.graph.table(table).copy_columns)
        return sql.SQL("INSERT INTO {tbl} ({cols}) SELECT {cols} FROM {tmp}").format(tbl=self.qname(table), cols=cols, tmp=sql.Identifier(temp))

    def count_rows(self, table: str) -> sql.Composed:
        """Rows and bytes (sum of pg_column_size of each row)."""
        return sql.SQL("SELECT count(*), coalesce(sum(pg_column_size(x)), 0) FROM ({rows}) x").format(
            rows=self.select_rows(table)
        )

    # ------------------------------------------------------------------ copy
    def copy_out(self, table: str) -> sql.Composed:
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(self.select_rows(table))

    def copy_in(self, table: str, columns: Sequence[str] | None = None, *, into: sql.Composable | None = None) -> sql.Composed:
        cols = columns if columns is not None else self.graph.table(table).copy_columns
        return sql.SQL("COPY {tbl} ({cols}) FROM STDIN (FORMAT BINARY)").format(
            tbl=into if into is not None else self.qname(table), cols=_ident_list(cols)
        )

    # ------------------------------------------------------------------ global tables
    def global_referenced(self, gtable: str, columns: Sequence[str] | None = None) -> sql.Composed:
        """The shared rows of ``gtable`` the workspace needs in the target (:class:`~migrate.graph.Graph`):
        rows its moving rows (or other needed shared rows) reference, by foreign key or declared
        reference, and rows hanging off a needed shared row; never the workspace's own rows."""
        g = self.graph.table(gtable)
        a = sql.Identifier("g")
        cols = columns if columns is not None else g.copy_columns
        return sql.SQL("SELECT {cols} FROM {tbl} {a} WHERE {cond}").format(
            cols=_ident_list(cols, a), tbl=self.qname(gtable), a=a, cond=self.shared_needed(gtable, a, 0, frozenset())
        )

    def carried(self, table: str, alias: sql.Composable, depth: int, visiting: frozenset[str]) -> sql.Composable:
        """Row ``alias`` of ``table`` goes to the target: it belongs to the workspace or is a needed shared row."""
        parts: list[sql.Composable] = []
        if self.graph.reach[table].moves:
            parts.append(self.belongs(table, alias, depth))
        if table in self.graph.shared and table not in visiting:
            parts.append(self.shared_needed(table, alias, depth, visiting))
        if not parts:
            return sql.SQL("false")
        return parts[0] if len(parts) == 1 else sql.SQL("({})").format(sql.SQL(" OR ").join(parts))

    def shared_needed(self, table: str, a: sql.Composable, depth: int, visiting: frozenset[str], *, follow_self: bool = True) -> sql.Composable:
        g = self.graph
        if follow_self and g.reach[table].kind == "global" and len(g.table(table).primary_key) == 1:
            selfs = [r for r in g.refs if r.table == table == r.ref_table and len(r.columns) == 1 and not r.type_column]
            if selfs:
                return self._shared_closure(table, a, depth, visiting, selfs)
        visiting = visiting | {table}
        if depth > 12:  # shared rows pointing at shared rows pointing at ...: far beyond any schema seen
            return sql.SQL("false")
        # One "key IN (SELECT ... UNION ALL SELECT ...)" per referenced key rather than OR'ed INs:
        # PostgreSQL turns it into one hashed semi-join, while OR'ed INs become SubPlans that are
        # rescanned per row once they outgrow work_mem (quadratic on big workspaces).
        groups: dict[tuple[str, ...], list[sql.Composable]] = {}
        for i, r in enumerate(g.global_refs.get(table, [])):
            if r.table in visiting and not g.reach[r.table].moves:
                continue
            m = sql.Identifier(f"m{depth}_{i}")
            cond = self.carried(r.table, m, depth + 1, visiting)
            if r.type_column:
                cond = sql.SQL("{}.{} = {} AND {}").format(m, sql.Identifier(r.type_column), sql.Literal(r.type_value), cond)
            groups.setdefault(tuple(r.ref_columns), []).append(
                sql.SQL("SELECT {rhs} FROM {tbl} {m} WHERE {cond}").format(
                    rhs=_ident_list(r.columns, m), tbl=self.qname(r.table), m=m, cond=cond
                )
            )
        parts: list[sql.Composable] = [
            sql.SQL("{lhs} IN ({subs})").format(lhs=_tuple(ref, a), subs=sql.SQL(" UNION ALL ").join(subs))
            for ref, subs in groups.items()
        ]
        sr = g.spec.shared_rows.get(table)
        if sr is not None and sr.policy in ("any", "all") and table in g.shared:
            parts.append(self.shared_policy(table, a))
        for i, d in enumerate(g.dependents.get(table, [])):
            pa = sql.Identifier(f"d{depth}_{i}")
            typed = sql.SQL("{}.{} = {} AND ").format(a, sql.Identifier(d.type_column), sql.Literal(d.type_value)) if d.type_column else sql.SQL("")
            parts.append(sql.SQL("({typed}{lhs} IN (SELECT {rhs} FROM {parent} {pa} WHERE {cond}))").format(
                typed=typed, lhs=_tuple(d.columns, a),
                rhs=_ident_list(d.ref_columns, pa), parent=self.qname(d.ref_table), pa=pa,
                cond=self.shared_needed(d.ref_table, pa, depth + 1, visiting) if d.ref_table not in visiting else sql.SQL("false"),
            ))
        cond = sql.SQL("({})").format(sql.SQL(" OR ").join(parts)) if parts else sql.SQL("false")
        r_ = g.reach[table]
        if r_.kind == "key":
            cond = sql.SQL("{} AND {}").format(self.shared_key(table, a), cond)
        elif r_.moves:
            cond = sql.SQL("{} AND NOT {}").format(cond, self.belongs(table, a, depth + 20))
        return cond

    def _shared_closure(self, table: str, a: sql.Composable, depth: int, visiting: frozenset[str], selfs: list[Any]) -> sql.Composable:
        """The needed rows of a global table that references itself (a user invited by a user),
        followed to the end: a recursive query over the key and the referencing columns (UNION
        stops at a cycle)."""
        (pk,) = self.graph.table(table).primary_key
        s0, sp, cte = sql.Identifier(f"s{depth}"), sql.Identifier(f"sp{depth}"), sql.Identifier(f"closure{depth}")
        names = [sql.Identifier(f"r{i}") for i in range(len(selfs))]
        base = self.shared_needed(table, s0, depth + 1, visiting, follow_self=False)
        cols = lambda al: sql.SQL(", ").join(sql.SQL("{}.{}").format(al, sql.Identifier(r.columns[0])) for r in selfs)  # noqa: E731
        join = sql.SQL(" OR ").join(sql.SQL("{}.{} = {}.{}").format(sp, sql.Identifier(r.ref_columns[0]), cte, n) for r, n in zip(selfs, names))
        return sql.SQL(
            "{a}.{pk} IN (WITH RECURSIVE {cte} (k, {names}) AS (SELECT {s0}.{pk}, {c0} FROM {tbl} {s0} WHERE {base}"
            " UNION SELECT {sp}.{pk}, {cp} FROM {tbl} {sp} JOIN {cte} ON {join}) SELECT k FROM {cte})"
        ).format(a=a, pk=sql.Identifier(pk), cte=cte, names=sql.SQL(", ").join(names), s0=s0, c0=cols(s0), tbl=self.qname(table),
                 base=base, sp=sp, cp=cols(sp), join=join)

    def shared_policy(self, table: str, a: sql.Composable) -> sql.Composable:
        """Row ``a`` of ``table`` (a shared key value) is copied under its ``workspace.shared_rows``
        policy: ``any`` member, or ``all`` of its members (and at least one), belong to the workspace."""
        sr = self.graph.spec.shared_rows[table]
        (pk,) = self.graph.table(table).primary_key
        mm, tm = sql.Identifier("sm"), sql.Identifier("st")
        member_of = sql.SQL("EXISTS (SELECT 1 FROM {tt} {tm} WHERE {tm}.{tc} = {mm}.{mc} AND {tm}.{key} = {ws})").format(
            tt=self.qname(sr.tenant_table or ""), tm=tm, tc=sql.Identifier(sr.tenant_column or ""), mm=mm,
            mc=sql.Identifier(sr.member_column or ""), key=sql.Identifier(self.graph.spec.key_column), ws=WS)
        members = sql.SQL("SELECT 1 FROM {mt} {mm} WHERE {mm}.{col} = {a}.{pk}").format(
            mt=self.qname(sr.members_table or ""), mm=mm, col=sql.Identifier(sr.members_column or ""), a=a, pk=sql.Identifier(pk))
        if sr.policy == "any":
            cond = sql.SQL("EXISTS ({} AND {})").format(members, member_of)
        else:
            cond = sql.SQL("(EXISTS ({m}) AND NOT EXISTS ({m} AND NOT {of}))").format(m=members, of=member_of)
        return sql.SQL("({} AND {})").format(self.shared_key(table, a), cond)

    def empty_value(self, table: str, column: str, a: sql.Composable) -> sql.Composable | None:
        """``column`` of row ``a`` holds no value (NULL, or '' in a text column), as an indexable
        test; None when the column can hold neither."""
        c = self.graph.table(table).column(column)
        if c is None:
            return None
        texty = c.type == "text" or c.type.startswith(("character", "citext"))
        ref = sql.SQL("{}.{}").format(a, sql.Identifier(column))
        if texty:
            return sql.SQL("({} IS NULL OR {} = '')").format(ref, ref) if not c.not_null else sql.SQL("{} = ''").format(ref)
        return None if c.not_null else sql.SQL("{} IS NULL").format(ref)

    def empty_rows(self, table: str, columns: Sequence[str], type_column: str | None = None, type_value: str | None = None) -> sql.Composed | None:
        """Count and sample keys of the rows of ``table`` with no value in ``columns`` (and the
        type value, for a polymorphic link); None when no row can be so."""
        t = self.graph.table(table)
        a = sql.Identifier("e")
        tests = [self.empty_value(table, c, a) for c in columns]
        if any(x is None for x in tests):
            return None
        cond = sql.SQL(" AND ").join(tests)  # type: ignore[arg-type]
        if type_column:
            cond = sql.SQL("{}.{} = {} AND {}").format(a, sql.Identifier(type_column), sql.Literal(type_value), cond)
        key = t.primary_key[0] if t.primary_key else t.copy_columns[0]
        return sql.SQL("SELECT count(*), (array_agg({a}.{k}::text))[1:5] FROM {tbl} {a} WHERE {cond}").format(
            a=a, k=sql.Identifier(key), tbl=self.qname(table), cond=cond)

    def shared_key(self, table: str, a: sql.Composable) -> sql.Composable:
        """Row ``a`` of keyed ``table`` has a key value meaning "shared by every tenant"."""
        key = sql.SQL("{}.{}").format(a, sql.Identifier(self.graph.reach[table].key_column or ""))
        values = self.graph.shared_values()
        sr = self.graph.spec.shared_rows.get(table)
        if sr is not None and not values:
            values = (None, "")  # rows shared by several tenants carry an empty key
        parts: list[sql.Composable] = []
        if None in values:
            parts.append(sql.SQL("{} IS NULL").format(key))
        rest = [v for v in values if v is not None]
        if rest:
            parts.append(sql.SQL("{}::text IN ({})").format(key, sql.SQL(", ").join(sql.Literal(str(v)) for v in rest)))
        return sql.SQL("({})").format(sql.SQL(" OR ").join(parts)) if parts else sql.SQL("false")

    def copy_out_global(self, gtable: str) -> sql.Composed:
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(self.global_referenced(gtable))

    def temp_like(self, temp: str, table: str) -> sql.Composed:
        return sql.SQL("CREATE TEMP TABLE {tmp} (LIKE {tbl}) ON COMMIT DROP").format(
            tmp=sql.Identifier(temp), tbl=self.qname(table)
        )

    def insert_missing(self, table: str, temp: str) -> sql.Composed:
        """Insert the temp table's rows that the target lacks; never overwrite an existing row."""
        t = self.graph.table(table)
        cols = _ident_list(t.copy_columns)
        return sql.SQL("INSERT INTO {tbl} ({cols}) SELECT {cols} FROM {tmp} ON CONFLICT DO NOTHING").format(
            tbl=self.qname(table), cols=cols, tmp=sql.Identifier(temp)
        )

    def count_present(self, table: str, temp: str, key: Sequence[str]) -> sql.Composed:
        a, b = sql.Identifier("a"), sql.Identifier("b")
        on = sql.SQL(" AND ").join(sql.SQL("{}.{} = {}.{}").format(a, sql.Identifier(k), b, sql.Identifier(k)) for k in key)
        return sql.SQL("SELECT count(*) FROM {tmp} {b} WHERE EXISTS (SELECT 1 FROM {tbl} {a} WHERE {on})").format(
            tmp=sql.Identifier(temp), b=b, tbl=self.qname(table), a=a, on=on
        )

    def present_keys(self, table: str, temp: str, key: Sequence[str], limit: int) -> sql.Composed:
        a, b = sql.Identifier("a"), sql.Identifier("b")
        on = sql.SQL(" AND ").join(sql.SQL("{}.{} = {}.{}").format(a, sql.Identifier(k), b, sql.Identifier(k)) for k in key)
        return sql.SQL("SELECT {keys} FROM {tmp} {b} WHERE EXISTS (SELECT 1 FROM {tbl} {a} WHERE {on}) ORDER BY {keys} LIMIT {n}").format(
            keys=_ident_list(key, b), tmp=sql.Identifier(temp), b=b, tbl=self.qname(table), a=a, on=on, n=sql.Placeholder("limit")
        )

    def temp_keys(self, temp: str, table: str, key: Sequence[str]) -> sql.Composed:
        """A temp table with just ``key`` columns of ``table`` (same types)."""
        a = sql.Identifier("t")
        return sql.SQL("CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {cols} FROM {tbl} {a} WITH NO DATA").format(
            tmp=sql.Identifier(temp), cols=_ident_list(key, a), tbl=self.qname(table), a=a
        )

    def copy_out_keys(self, table: str, key: Sequence[str], *, global_: bool = False) -> sql.Composed:
        rows = self.global_referenced(table, key) if global_ else self.select_rows(table, key)
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(rows)

    def key_range(self, table: str, key: Sequence[str]) -> sql.Composed:
        """min and max of the (single-column) key among the workspace's rows."""
        a = sql.Identifier("x")
        k = sql.Identifier(key[0])
        rows = self.select_rows(table, key)
        # ORDER BY ... LIMIT 1 rather than min()/max(): works for every orderable type (uuid has no min)
        return sql.SQL(
            "SELECT (SELECT {a}.{k} FROM ({rows}) {a} ORDER BY 1 LIMIT 1), (SELECT {a}.{k} FROM ({rows}) {a} ORDER BY 1 DESC LIMIT 1)"
        ).format(a=a, k=k, rows=rows)

    def count_key_between(self, table: str, key: str) -> sql.Composed:
        return sql.SQL("SELECT count(*) FROM {tbl} WHERE {k} BETWEEN {lo} AND {hi}").format(
            tbl=self.qname(table), k=sql.Identifier(key), lo=sql.Placeholder("lo"), hi=sql.Placeholder("hi")
        )

    # ------------------------------------------------------------------ unique indexes (plan)
    # A unique index's key parts and predicate are SQL text PostgreSQL itself printed
    # (pg_get_indexdef / pg_get_expr, see migrate.introspect.UniqueIndex), composed as such; they
    # name the table's columns unqualified, so they are evaluated over a subquery whose columns
    # carry those names. Values go to a temp table in the target as ``residency_u<i>``.
    @staticmethod
    def _unique_cols(n: int) -> list[str]:
        return [f"residency_u{i}" for i in range(n)]

    def unique_values(self, table: str, parts: Sequence[str], predicate: str | None) -> sql.Composed:
        """The index's key values of the workspace's rows (those the predicate admits)."""
        t = self.graph.table(table)
        x = sql.Identifier(table)
        return sql.SQL("SELECT {vals} FROM ({rows}) {x} WHERE {pred}").format(
            vals=sql.SQL(", ").join(sql.SQL("({}) AS {}").format(sql.SQL(p), sql.Identifier(c)) for p, c in zip(parts, self._unique_cols(len(parts)))),
            rows=self.select_rows(table, [c.name for c in t.columns]), x=x,
            pred=sql.SQL("({})").format(sql.SQL(predicate)) if predicate else sql.SQL("true"),
        )

    def copy_out_unique_values(self, table: str, parts: Sequence[str], predicate: str | None) -> sql.Composed:
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(self.unique_values(table, parts, predicate))

    def temp_unique_values(self, temp: str, table: str, parts: Sequence[str]) -> sql.Composed:
        """A temp table typed as the index's key parts evaluated over ``table`` (in the target)."""
        return sql.SQL("CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {vals} FROM {tbl} WITH NO DATA").format(
            tmp=sql.Identifier(temp), tbl=self.qname(table),
            vals=sql.SQL(", ").join(sql.SQL("({}) AS {}").format(sql.SQL(p), sql.Identifier(c)) for p, c in zip(parts, self._unique_cols(len(parts)))),
        )

    def copy_in_unique_values(self, temp: str, n: int) -> sql.Composed:
        return sql.SQL("COPY {tmp} ({cols}) FROM STDIN (FORMAT BINARY)").format(tmp=sql.Identifier(temp), cols=_ident_list(self._unique_cols(n)))

    def _unique_clash(self, table: str, temp: str, parts: Sequence[str], predicate: str | None, nulls_not_distinct: bool) -> sql.Composed:
        k = sql.Identifier("k")
        op = sql.SQL("IS NOT DISTINCT FROM") if nulls_not_distinct else sql.SQL("=")
        match = sql.SQL(" AND ").join(
            sql.SQL("({}) {} {}.{}").format(sql.SQL(p), op, k, sql.Identifier(c)) for p, c in zip(parts, self._unique_cols(len(parts)))
        )
        if predicate:
            match = sql.SQL("({}) AND {}").format(sql.SQL(predicate), match)
        # the subquery's FROM is the table itself, unaliased: the parts' column names resolve to it
        return sql.SQL("EXISTS (SELECT 1 FROM {tbl} WHERE {match})").format(tbl=self.qname(table), match=match)

    def count_unique_clashes(self, table: str, temp: str, parts: Sequence[str], predicate: str | None, nulls_not_distinct: bool) -> sql.Composed:
        return sql.SQL("SELECT count(*) FROM {tmp} {k} WHERE {clash}").format(
            tmp=sql.Identifier(temp), k=sql.Identifier("k"), clash=self._unique_clash(table, temp, parts, predicate, nulls_not_distinct))

    def unique_clashes(self, table: str, temp: str, parts: Sequence[str], predicate: str | None, nulls_not_distinct: bool) -> sql.Composed:
        """A sample (``%(limit)s``) of the moving key values the target's rows already hold."""
        k = sql.Identifier("k")
        cols = _ident_list(self._unique_cols(len(parts)), k)
        return sql.SQL("SELECT DISTINCT {cols} FROM {tmp} {k} WHERE {clash} ORDER BY {cols} LIMIT %(limit)s").format(
            cols=cols, tmp=sql.Identifier(temp), k=k, clash=self._unique_clash(table, temp, parts, predicate, nulls_not_distinct))

    # ------------------------------------------------------------------ checksums
    def _hash_columns(self, t: Table, a: sql.Composable) -> sql.Composed:
        """The columns as hashed: as they are, or as text where the type has no hash function."""
        parts = []
        for c in t.columns:
            if c.generated:
                continue
            ref = sql.SQL("{}.{}").format(a, sql.Identifier(c.name))
            parts.append(ref if c.hashable else sql.SQL("{}::text AS {}").format(ref, sql.Identifier(c.name)))
        return sql.SQL(", ").join(parts)

    def _key_params(self, prefix: str, n: int) -> sql.Composed:
        return sql.SQL(", ").join(sql.Placeholder(f"{prefix}{i}") for i in range(n))

    def _range_cond(self, t: Table, a: sql.Composable, lo: bool, hi: bool) -> sql.Composable:
        """``%(lo..)s < key <= %(hi..)s`` on the table's narrowing key (:meth:`Graph.narrow_key`)."""
        cond: list[sql.Composable] = []
        if lo or hi:
            key = self.graph.narrow_key(t.name)[0]
            if lo:
                cond.append(sql.SQL("ROW({}) > ROW({})").format(_ident_list(key, a), self._key_params("lo", len(key))))
            if hi:
                cond.append(sql.SQL("ROW({}) <= ROW({})").format(_ident_list(key, a), self._key_params("hi", len(key))))
        return sql.SQL(" AND ").join(cond) if cond else sql.SQL("true")

    def _rows_for_hash(self, table: str, *, global_: bool, lo: bool = False, hi: bool = False) -> sql.Composed:
        t = self.graph.table(table)
        x = sql.Identifier("x")
        inner = self.global_referenced(table) if global_ else self.select_rows(table)
        return sql.SQL("SELECT {hc} FROM ({inner}) {x} WHERE {cond}").format(
            hc=self._hash_columns(t, x), inner=inner, x=x, cond=self._range_cond(t, x, lo, hi)
        )

    def checksum(self, table: str, *, global_: bool = False, lo: bool = False, hi: bool = False) -> sql.Composed:
        """count(*) and sum(hash_record_extended(row, 0)) of the workspace's rows (optionally in a key range)."""
        h = sql.Identifier("h")
        return sql.SQL("SELECT count(*), coalesce(sum(hash_record_extended({h}, 0)), 0) FROM ({rows}) {h}").format(
            h=h, rows=self._rows_for_hash(table, global_=global_, lo=lo, hi=hi)
        )

    def key_hashes(self, table: str, *, lo: bool = False, hi: bool = False) -> sql.Composed:
        """(key..., rows, sum of row hashes) per narrowing key in a key range: the leaves of the
        bisection (one row per key when the key is unique; a group of rows when it is not)."""
        key = self.graph.narrow_key(table)[0]
        h, x = sql.Identifier("h"), sql.Identifier("x")
        hashed = sql.SQL("SELECT {keys}, hash_record_extended({h}, 0)::numeric AS {hv} FROM ({rows}) {h}").format(
            keys=_ident_list(key, h), h=h, hv=sql.Identifier("residency_hash"), rows=self._rows_for_hash(table, global_=False, lo=lo, hi=hi)
        )
        return sql.SQL("SELECT {keys}, count(*), sum({x}.{hv}) FROM ({hashed}) {x} GROUP BY {keys} ORDER BY {keys}").format(
            keys=_ident_list(key, x), x=x, hv=sql.Identifier("residency_hash"), hashed=hashed
        )

    def median_key(self, table: str, *, lo: bool = False, hi: bool = False) -> sql.Composed:
        t = self.graph.table(table)
        key = self.graph.narrow_key(table)[0]
        x = sql.Identifier("x")
        return sql.SQL("SELECT {keys} FROM ({rows}) {x} WHERE {cond} ORDER BY {keys} OFFSET {off} LIMIT 1").format(
            keys=_ident_list(key, x),
            rows=self.select_rows(table, list(t.copy_columns) + [c for c in key if c not in t.copy_columns]),
            x=x,
            cond=self._range_cond(t, x, lo, hi),
            off=sql.Placeholder("offset"),
        )

    # ------------------------------------------------------------------ bucketed checksums (incremental verify)
    # A table with a one-column primary key is cut into key-range buckets by boundaries sampled
    # from the source (a jsonb array of key values, ``%(bounds)s``, typed back into the key's own
    # type through ``jsonb_populate_record(NULL::table, ...)``, so no type name is ever spelled
    # out). Bucket 0 is below the first boundary, bucket i (1..n) is [bounds[i], bounds[i+1]).
    def _bounds_array(self, table: str) -> sql.Composed:
        (pk,) = self.graph.table(table).primary_key
        e, j, r = sql.Identifier("e"), sql.Identifier("j"), sql.Identifier("r")
        return sql.SQL(
            "ARRAY(SELECT {r}.{pk} FROM jsonb_array_elements(%(bounds)s::jsonb) WITH ORDINALITY {j}({e}, n)"
            " CROSS JOIN LATERAL jsonb_populate_record(NULL::{tbl}, jsonb_build_object({name}, {j}.{e})) {r} ORDER BY {j}.n)"
        ).format(r=r, pk=sql.Identifier(pk), j=j, e=e, tbl=self.qname(table), name=sql.Literal(pk))

    def bucket_bounds(self, table: str) -> sql.Composed:
        """Bucket boundaries, in key order, as a jsonb array: every ``%(every)s``-th key of the
        workspace's rows, and around every run of more than ``%(gap)s`` other rows between two of
        the workspace's keys (other workspaces' rows, say, between its old rows and those written
        during the move) a boundary at the first key of the run and at the workspace's next key:
        no bucket then makes a check under the fence walk through many rows that are not the
        workspace's. One pass over the table in key order (before the fence)."""
        (pk,) = self.graph.table(table).primary_key
        t, a, w, k = sql.Identifier("t"), sql.Identifier("a"), sql.Identifier("w"), sql.Identifier(pk)
        return sql.SQL(
            "SELECT coalesce(jsonb_agg(to_jsonb(b) ORDER BY b), '[]'::jsonb) FROM (SELECT DISTINCT b FROM ("
            " SELECT CASE WHEN {w}.rn %% %(every)s = 0 OR {w}.pos - {w}.prev_pos > %(gap)s THEN {w}.{k} END AS b1,"
            "        CASE WHEN {w}.next_pos - {w}.pos > %(gap)s THEN {w}.next_key END AS b2 FROM ("
            "  SELECT {a}.{k}, {a}.pos, {a}.next_key, row_number() OVER (ORDER BY {a}.{k}) AS rn,"
            "         lag({a}.pos) OVER (ORDER BY {a}.{k}) AS prev_pos, lead({a}.pos) OVER (ORDER BY {a}.{k}) AS next_pos FROM ("
            "   SELECT {t}.{k}, row_number() OVER (ORDER BY {t}.{k}) AS pos, lead({t}.{k}) OVER (ORDER BY {t}.{k}) AS next_key,"
            "          ({mine}) AS mine FROM {tbl} {t}) {a} WHERE {a}.mine) {w}"
            " ) x CROSS JOIN LATERAL (VALUES (x.b1), (x.b2)) v(b) WHERE b IS NOT NULL) y"
        ).format(t=t, a=a, w=w, k=k, tbl=self.qname(table), mine=self.belongs(table, t))

    def key_extremes(self, table: str) -> sql.Composed:
        """The smallest and largest key of the workspace's rows (index probes from both ends)."""
        return self.key_range(table, self.graph.table(table).primary_key)

    def bucket_checksums(self, table: str) -> sql.Composed:
        """(bucket, count, sum of row hashes) of the workspace's rows, one pass, every bucket."""
        (pk,) = self.graph.table(table).primary_key
        h = sql.Identifier("h")
        return sql.SQL(
            "SELECT width_bucket({h}.{pk}, {bounds}) AS b, count(*), coalesce(sum(hash_record_extended({h}, 0)::numeric), 0)"
            " FROM ({rows}) {h} GROUP BY 1"
        ).format(h=h, pk=sql.Identifier(pk), bounds=self._bounds_array(table), rows=self._rows_for_hash(table, global_=False))

    def bucket_checksum(self, table: str, *, lo: bool = False, hi: bool = False, hi_inclusive: bool = False,
                        keys_below: bool = False, keys_above: bool = False) -> sql.Composed:
        """count and sum of row hashes of the workspace's rows with ``%(lo)s <= key < %(hi)s``
        (either bound optional; the key values as JSON gives them): an index range scan."""
        t = self.graph.table(table)
        (pk,) = t.primary_key
        x, h = sql.Identifier("x"), sql.Identifier("h")
        cond: list[sql.Composable] = []
        # the bounds as plain parameters (ints; strings go as "unknown" and take the key's type):
        # the planner sees the values, so even an open-ended bucket is an index range scan
        if lo:
            cond.append(sql.SQL("{x}.{pk} >= {v}").format(x=x, pk=sql.Identifier(pk), v=sql.Placeholder("lo")))
        if hi:
            op = sql.SQL("<=") if hi_inclusive else sql.SQL("<")
            cond.append(sql.SQL("{x}.{pk} {op} {v}").format(x=x, pk=sql.Identifier(pk), op=op, v=sql.Placeholder("hi")))
        # rows by key (``%(keys)s``) beyond the bounds: below ``%(lo)s`` or above ``%(hi)s``
        if keys_below or keys_above:
            cond = [self._keys_match(table, x), sql.SQL("{x}.{pk} {op} {v}").format(
                x=x, pk=sql.Identifier(pk), op=sql.SQL("<") if keys_below else sql.SQL(">"), v=sql.Placeholder("lo" if keys_below else "hi"))]
        rows = sql.SQL("SELECT {hc} FROM ({inner}) {x} WHERE {cond}").format(
            hc=self._hash_columns(t, x), inner=self.select_rows(table, rowwise=True), x=x,
            cond=sql.SQL(" AND ").join(cond) if cond else sql.SQL("true"),
        )
        return sql.SQL("SELECT count(*), coalesce(sum(hash_record_extended({h}, 0)::numeric), 0) FROM ({rows}) {h}").format(h=h, rows=rows)

    def buckets_of_keys(self, table: str) -> sql.Composed:
        """The buckets holding the keys in ``%(keys)s`` (jsonb key objects)."""
        (pk,) = self.graph.table(table).primary_key
        k, r = sql.Identifier("k"), sql.Identifier("r")
        return sql.SQL(
            "SELECT DISTINCT width_bucket({r}.{pk}, {bounds}) FROM unnest(%(keys)s::jsonb[]) {k}"
            " CROSS JOIN LATERAL jsonb_populate_record(NULL::{tbl}, {k}) {r}"
        ).format(r=r, pk=sql.Identifier(pk), bounds=self._bounds_array(table), k=k, tbl=self.qname(table))

    def children_of_keys(self, table: str, link_index: int) -> sql.Composed:
        """Keys (jsonb) of the rows of ``table`` whose link ``link_index`` points at a parent key in
        ``%(keys)s`` (whatever their workspace): the rows whose membership a parent's change can move."""
        r_ = self.graph.reach[table]
        link = r_.links[link_index]
        c, k, p = sql.Identifier("c"), sql.Identifier("k"), sql.Identifier("p")
        cond = sql.SQL("{lhs} IN (SELECT {rhs} FROM unnest(%(keys)s::jsonb[]) {k} CROSS JOIN LATERAL jsonb_populate_record(NULL::{ptbl}, {k}) {p})").format(
            lhs=_tuple(link.columns, c), rhs=_ident_list(link.parent_columns, p), k=k, ptbl=self.qname(link.parent), p=p
        )
        if r_.kind == "polymorphic":
            cond = sql.SQL("{c}.{tc} = {val} AND {cond}").format(c=c, tc=sql.Identifier(r_.type_column or ""), val=sql.Literal(link.type_value), cond=cond)
        return sql.SQL("SELECT {kj} FROM {tbl} {c} WHERE {cond}").format(kj=self._key_json(table, c), tbl=self.qname(table), c=c, cond=cond)

    # ------------------------------------------------------------------ sequences
    def bump_sequence(self, table: str, column: str, seq_schema: str, seq_name: str) -> sql.Composed:
        """Move the sequence past the table's largest value (never backwards)."""
        seq = sql.Identifier(seq_schema, seq_name)
        return sql.SQL(
            "SELECT setval({seqname}::regclass, m) FROM (SELECT max({col}) AS m FROM {tbl}) x"
            " WHERE m IS NOT NULL AND m >= (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {seq})"
        ).format(seqname=sql.Literal(seq.as_string(None)), col=sql.Identifier(column), tbl=self.qname(table), seq=seq)

    # ------------------------------------------------------------------ fence
    def workspace_of(self, table: str, row: sql.Composable, depth: int = 0) -> sql.Composable:
        """An expression giving the workspace id of one row (``row`` is an alias or NEW/OLD)."""
        r = self.graph.reach[table]
        if r.kind in ("root", "key"):
            return sql.SQL("{}.{}").format(row, sql.Identifier(r.key_column or ""))
        if r.kind in LINK_KINDS:
            parts = []
            for link in r.links:
                p = sql.Identifier(f"f{depth}")
                on = sql.SQL(" AND ").join(
                    sql.SQL("{}.{} = {}.{}").format(p, sql.Identifier(pc), row, sql.Identifier(c))
                    for c, pc in zip(link.columns, link.parent_columns)
                )
                # owned rows may have several owners: any one tells the workspace
                sub = sql.SQL("(SELECT ({ws})::text FROM {parent} {p} WHERE {on} LIMIT 1)").format(
                    ws=self.workspace_of(link.parent, p, depth + 1), parent=self.qname(link.parent), p=p, on=on
                )
                if r.kind == "polymorphic":
                    sub = sql.SQL("CASE WHEN {row}.{tc} = {val} THEN {sub} END").format(
                        row=row, tc=sql.Identifier(r.type_column or ""), val=sql.Literal(link.type_value), sub=sub
                    )
                parts.append(sub)
            return parts[0] if len(parts) == 1 else sql.SQL("COALESCE({})").format(sql.SQL(", ").join(parts))
        raise ValueError(table)

    def fence_function_name(self, table: str) -> sql.Identifier:
        name = f"fence_{table}"
        if len(name) > 63:
            name = f"fence_{table[:40]}_{hashlib.sha1(table.encode()).hexdigest()[:12]}"
        return sql.Identifier(FENCE_SCHEMA, name)

    def fence_setup(self) -> list[sql.Composable]:
        fence = sql.Identifier(FENCE_SCHEMA, FENCE_TABLE)
        check = sql.Identifier(FENCE_SCHEMA, "check_fence")
        body = sql.SQL(
            "BEGIN\n"
            "  IF ws IS NOT NULL AND EXISTS (SELECT 1 FROM {fence} f WHERE f.workspace_id = ws\n"
            "      AND f.token IS DISTINCT FROM current_setting({bypass}, true)) THEN\n"
            "    RAISE EXCEPTION 'workspace % is fenced: it is moving to another region (% on % refused)', ws, op, tbl\n"
            "      USING ERRCODE = 'object_not_in_prerequisite_state',\n"
            "            HINT = 'route writes by the residency directory; the workspace is read-only while it moves';\n"
            "  END IF;\n"
            "END"
        ).format(fence=fence, bypass=sql.Literal(BYPASS_SETTING))
        trunc_body = sql.SQL(
            "BEGIN\n"
            "  IF EXISTS (SELECT 1 FROM {fence}) THEN\n"
            "    RAISE EXCEPTION 'TRUNCATE of % refused: a workspace in it is fenced for a move', TG_TABLE_NAME\n"
            "      USING ERRCODE = 'object_not_in_prerequisite_state';\n"
            "  END IF;\n"
            "  RETURN NULL;\n"
            "END"
        ).format(fence=fence)
        return [
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(FENCE_SCHEMA)),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (workspace_id text PRIMARY KEY, move_id bigint NOT NULL,"
                " token text NOT NULL, fenced_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ).format(fence),
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {fn}(ws text, op text, tbl text) RETURNS void LANGUAGE plpgsql AS {body}"
            ).format(fn=check, body=sql.Literal(body.as_string(None))),
            sql.SQL("CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS {body}").format(
                fn=sql.Identifier(FENCE_SCHEMA, "fence_truncate"), body=sql.Literal(trunc_body.as_string(None))
            ),
        ]

    def fence_trigger(self, table: str) -> list[sql.Composable]:
        """A function and triggers that refuse writes to a fenced workspace's rows of ``table``."""
        fence = sql.Identifier(FENCE_SCHEMA, FENCE_TABLE)
        check = sql.Identifier(FENCE_SCHEMA, "check_fence")
        fn = self.fence_function_name(table)
        new, old = sql.SQL("NEW"), sql.SQL("OLD")
        body = sql.SQL(
            "BEGIN\n"
            "  IF EXISTS (SELECT 1 FROM {fence}) THEN\n"
            "    IF TG_OP IN ('UPDATE', 'DELETE') THEN\n"
            "      PERFORM {check}(({old_ws})::text, TG_OP, TG_TABLE_NAME);\n"
            "    END IF;\n"
            "    IF TG_OP IN ('INSERT', 'UPDATE') THEN\n"
            "      PERFORM {check}(({new_ws})::text, TG_OP, TG_TABLE_NAME);\n"
            "    END IF;\n"
            "  END IF;\n"
            "  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;\n"
            "  RETURN NEW;\n"
            "END"
        ).format(
            fence=fence,
            check=check,
            old_ws=self.workspace_of(table, old),
            new_ws=self.workspace_of(table, new),
        )
        tbl = self.qname(table)
        return [
            sql.SQL("CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS {body}").format(
                fn=fn, body=sql.Literal(body.as_string(None))
            ),
            sql.SQL(
                "CREATE OR REPLACE TRIGGER residency_fence BEFORE INSERT OR UPDATE OR DELETE ON {tbl}"
                " FOR EACH ROW EXECUTE FUNCTION {fn}()"
            ).format(tbl=tbl, fn=fn),
            sql.SQL(
                "CREATE OR REPLACE TRIGGER residency_fence_truncate BEFORE TRUNCATE ON {tbl}"
                " FOR EACH STATEMENT EXECUTE FUNCTION {fn}()"
            ).format(tbl=tbl, fn=sql.Identifier(FENCE_SCHEMA, "fence_truncate")),
        ]

    def fence_drop(self, table: str) -> list[sql.Composable]:
        tbl = self.qname(table)
        return [
            sql.SQL("DROP TRIGGER IF EXISTS residency_fence ON {}").format(tbl),
            sql.SQL("DROP TRIGGER IF EXISTS residency_fence_truncate ON {}").format(tbl),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(self.fence_function_name(table)),
        ]

    @staticmethod
    def fence_table() -> sql.Identifier:
        return sql.Identifier(FENCE_SCHEMA, FENCE_TABLE)

    @staticmethod
    def fence_schema() -> sql.Identifier:
        return sql.Identifier(FENCE_SCHEMA)

    @staticmethod
    def fence_state() -> sql.Composed:
        """(token, fenced_at) of a workspace's fence row (``%(ws)s``): a fence lifted and installed
        again has another fenced_at."""
        return sql.SQL("SELECT token, fenced_at FROM {} WHERE workspace_id = %(ws)s").format(sql.Identifier(FENCE_SCHEMA, FENCE_TABLE))

    @staticmethod
    def bypass(token: str) -> tuple[sql.Composed, dict[str, Any]]:
        return sql.SQL("SELECT set_config({}, %(token)s, true)").format(sql.Literal(BYPASS_SETTING)), {"token": token}

    # ------------------------------------------------------------------ online moves (logical replication)
    # Row-filtered publications, subscriptions, the TRUNCATE guard and the statements the plan
    # suggests as fixes. DDL takes no parameters: values go in as ``sql.Literal``.
    def row_filter(self, table: str, workspace_id: str) -> sql.Composed:
        """``table WHERE (key = 'ws')``: a publication's row filter (root and key tables only)."""
        r = self.graph.reach[table]
        if r.kind not in ("root", "key"):
            raise ValueError(f"table {table} reaches its workspace through {r.kind}: it cannot be row-filtered")
        return sql.SQL("{tbl} WHERE ({col} = {val})").format(
            tbl=self.qname(table), col=sql.Identifier(r.key_column or ""), val=sql.Literal(str(workspace_id))
        )

    def publication_create(self, name: str, tables: Sequence[str], workspace_id: str) -> sql.Composed:
        """TRUNCATE is deliberately not published: it ignores row filters and would empty the
        target's tables for every workspace. The TRUNCATE guard detects it instead."""
        return sql.SQL(
            "CREATE PUBLICATION {name} FOR TABLE {tables}"
            " WITH (publish = 'insert, update, delete', publish_via_partition_root = true)"
        ).format(name=sql.Identifier(name), tables=sql.SQL(", ").join(self.row_filter(t, workspace_id) for t in tables))

    @staticmethod
    def publication_drop(name: str) -> sql.Composed:
        return sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name))

    @staticmethod
    def subscription_create(name: str, conninfo: str, publication: str, slot: str) -> sql.Composed:
        return sql.SQL(
            "CREATE SUBSCRIPTION {name} CONNECTION {conn} PUBLICATION {pub}"
            " WITH (copy_data = true, create_slot = true, slot_name = {slot}, enabled = true,"
            " synchronous_commit = 'on', binary = false)"
        ).format(name=sql.Identifier(name), conn=sql.Literal(conninfo), pub=sql.Identifier(publication), slot=sql.Literal(slot))

    @staticmethod
    def subscription_probe(name: str, conninfo: str) -> sql.Composed:
        """A subscription that connects to the publisher and is never enabled, run inside a
        transaction that is rolled back: proves the *target server* can reach the source."""
        return sql.SQL(
            "CREATE SUBSCRIPTION {name} CONNECTION {conn} PUBLICATION {pub}"
            " WITH (connect = true, create_slot = false, enabled = false, copy_data = false, slot_name = NONE)"
        ).format(name=sql.Identifier(name), conn=sql.Literal(conninfo), pub=sql.Identifier(name))

    @staticmethod
    def subscription_disable(name: str) -> sql.Composed:
        return sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sql.Identifier(name))

    @staticmethod
    def subscription_enable(name: str) -> sql.Composed:
        return sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(sql.Identifier(name))

    @staticmethod
    def subscription_detach_slot(name: str) -> sql.Composed:
        return sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(sql.Identifier(name))

    @staticmethod
    def subscription_drop(name: str) -> sql.Composed:
        return sql.SQL("DROP SUBSCRIPTION IF EXISTS {}").format(sql.Identifier(name))

    @staticmethod
    def slot_drop(name: str) -> sql.Composed:
        return sql.SQL("SELECT pg_drop_replication_slot({})").format(sql.Literal(name))

    def truncate_guard_setup(self) -> list[sql.Composable]:
        schema = sql.Identifier(ONLINE_SCHEMA)
        events = sql.Identifier(ONLINE_SCHEMA, ONLINE_EVENTS)
        body = sql.SQL(
            "BEGIN\n"
            "  INSERT INTO {events} (move_id, kind, table_name) VALUES (TG_ARGV[0]::bigint, TG_OP, TG_TABLE_NAME);\n"
            "  RETURN NULL;\n"
            "END"
        ).format(events=events)
        return [
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (move_id bigint NOT NULL, kind text NOT NULL, table_name text NOT NULL,"
                " at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ).format(events),
            sql.SQL("CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS {body}").format(
                fn=sql.Identifier(ONLINE_SCHEMA, ONLINE_GUARD_FN), body=sql.Literal(body.as_string(None))
            ),
        ]

    @staticmethod
    def truncate_guard_name(move_id: int) -> sql.Identifier:
        return sql.Identifier(f"residency_online_truncate_{int(move_id)}")

    def truncate_guard(self, table: str, move_id: int) -> sql.Composed:
        return sql.SQL(
            "CREATE OR REPLACE TRIGGER {trg} AFTER TRUNCATE ON {tbl} FOR EACH STATEMENT EXECUTE FUNCTION {fn}({arg})"
        ).format(
            trg=self.truncate_guard_name(move_id), tbl=self.qname(table),
            fn=sql.Identifier(ONLINE_SCHEMA, ONLINE_GUARD_FN), arg=sql.Literal(str(int(move_id))),
        )

    def truncate_guard_drop(self, table: str, move_id: int) -> sql.Composed:
        return sql.SQL("DROP TRIGGER IF EXISTS {trg} ON {tbl}").format(trg=self.truncate_guard_name(move_id), tbl=self.qname(table))

    # change log of the path tables (no row filter can follow them): which keys changed since
    # their copy ahead of the fence, so only those rows are copied again under it
    def change_log_setup(self) -> list[sql.Composable]:
        """The change log: ``id`` from one sequence (CACHE 1), taken by an AFTER ROW trigger, so by
        a transaction that already holds its xid (see :func:`migrate.incremental.watermark`)."""
        changes = sql.Identifier(ONLINE_SCHEMA, ONLINE_CHANGES)
        seq = sql.Identifier(ONLINE_SCHEMA, ONLINE_CHANGE_IDS)
        return [
            sql.SQL("CREATE SEQUENCE IF NOT EXISTS {} CACHE 1").format(seq),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id bigint NOT NULL DEFAULT nextval({}), move_id bigint NOT NULL,"
                " table_name text NOT NULL, key jsonb NOT NULL)"
            ).format(changes, sql.Literal(seq.as_string(None))),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (move_id, table_name, id)").format(sql.Identifier(ONLINE_CHANGES + "_move"), changes),
        ]

    @staticmethod
    def change_log_watermark() -> sql.Composed:
        """The last change id handed out (0 before the first): read outside any snapshot."""
        return sql.SQL("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {}").format(
            sql.Identifier(ONLINE_SCHEMA, ONLINE_CHANGE_IDS)
        )

    def change_log_function(self, table: str) -> sql.Identifier:
        name = f"changes_{table}"
        if len(name) > 63:
            name = f"changes_{table[:40]}_{hashlib.sha1(table.encode()).hexdigest()[:12]}"
        return sql.Identifier(ONLINE_SCHEMA, name)

    @staticmethod
    def change_log_name(move_id: int) -> sql.Identifier:
        return sql.Identifier(f"residency_online_changes_{int(move_id)}")

    def change_log_trigger(self, table: str, move_id: int, workspace_id: str) -> list[sql.Composable]:
        """A row trigger recording the key of every changed row of ``table`` that belongs (or,
        when its parent is already gone, may belong) to the workspace, before or after the change."""
        changes = sql.Identifier(ONLINE_SCHEMA, ONLINE_CHANGES)
        new, old = sql.SQL("NEW"), sql.SQL("OLD")
        body = sql.SQL(
            "DECLARE r jsonb;\n"
            "BEGIN\n"
            "  IF TG_OP IN ('UPDATE', 'DELETE') AND coalesce(({old_ws})::text = TG_ARGV[1], true) THEN\n"
            "    r := to_jsonb(OLD);\n"
            "    INSERT INTO {changes} (move_id, table_name, key)\n"
            "      SELECT TG_ARGV[0]::bigint, TG_TABLE_NAME, jsonb_object_agg(k, r -> k) FROM unnest(TG_ARGV[2:]) k;\n"
            "  END IF;\n"
            "  IF TG_OP IN ('INSERT', 'UPDATE') AND coalesce(({new_ws})::text = TG_ARGV[1], true) THEN\n"
            "    r := to_jsonb(NEW);\n"
            "    INSERT INTO {changes} (move_id, table_name, key)\n"
            "      SELECT TG_ARGV[0]::bigint, TG_TABLE_NAME, jsonb_object_agg(k, r -> k) FROM unnest(TG_ARGV[2:]) k;\n"
            "  END IF;\n"
            "  RETURN NULL;\n"
            "END"
        ).format(changes=changes, old_ws=self.workspace_of(table, old), new_ws=self.workspace_of(table, new))
        fn = self.change_log_function(table)
        args = [str(int(move_id)), str(workspace_id), *self.graph.table(table).primary_key]
        return [
            sql.SQL("CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS {body}").format(
                fn=fn, body=sql.Literal(body.as_string(None))
            ),
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {trg} AFTER INSERT OR UPDATE OR DELETE ON {tbl} FOR EACH ROW EXECUTE FUNCTION {fn}({args})"
            ).format(trg=self.change_log_name(move_id), tbl=self.qname(table), fn=fn,
                     args=sql.SQL(", ").join(sql.Literal(a) for a in args)),
        ]

    def change_log_drop(self, table: str, move_id: int) -> sql.Composed:
        return sql.SQL("DROP TRIGGER IF EXISTS {trg} ON {tbl}").format(trg=self.change_log_name(move_id), tbl=self.qname(table))

    def _key_json(self, table: str, a: sql.Composable) -> sql.Composed:
        key = self.graph.table(table).primary_key
        return sql.SQL("jsonb_build_object({})").format(
            sql.SQL(", ").join(sql.SQL("{}, {}.{}").format(sql.Literal(k), a, sql.Identifier(k)) for k in key)
        )

    def changed_keys(self, table: str) -> sql.Composed:
        """Keys of ``table`` the change log recorded for the move with an id above ``%(since)s``."""
        return sql.SQL("SELECT DISTINCT key FROM {} WHERE move_id = %(move_id)s AND table_name = %(table)s AND id > %(since)s").format(
            sql.Identifier(ONLINE_SCHEMA, ONLINE_CHANGES)
        )

    def _keys_match(self, table: str, a: sql.Composable, param: str = "keys") -> sql.Composed:
        """``(a.pk...) IN (the keys in %(keys)s, a jsonb[] of key objects, typed as the table's
        columns)``: a semi-join the primary key's index serves (no per-row jsonb building)."""
        key = self.graph.table(table).primary_key
        r, k = sql.Identifier("r"), sql.Identifier("k")
        return sql.SQL("{lhs} IN (SELECT {rhs} FROM unnest({p}::jsonb[]) {k} CROSS JOIN LATERAL jsonb_populate_record(NULL::{tbl}, {k}) {r})").format(
            lhs=_tuple(key, a), rhs=_ident_list(key, r), p=sql.Placeholder(param), k=k, tbl=self.qname(table), r=r
        )

    def global_referenced_by(self, gtable: str) -> sql.Composed:
        """Rows of global ``gtable`` referenced by the workspace's rows whose keys are in
        ``%(keys_<i>)s`` (i: the i-th foreign key into ``gtable``): index lookups, no scan."""
        g = self.graph.table(gtable)
        a = sql.Identifier("g")
        parts = []
        for i, fk in enumerate(self.graph.global_refs.get(gtable, [])):
            if not self.graph.reach[fk.table].moves:
                continue  # fenced_globals falls back to the full check for these
            m = sql.Identifier(f"m{i}")
            if fk.type_column:
                m_type = sql.SQL("{}.{} = {} AND ").format(m, sql.Identifier(fk.type_column), sql.Literal(fk.type_value))
            else:
                m_type = sql.SQL("")
            parts.append(
                sql.SQL("{lhs} IN (SELECT {rhs} FROM {tbl} {m} WHERE {mt}{keys} AND {cond})").format(
                    lhs=_tuple(fk.ref_columns, a), rhs=_ident_list(fk.columns, m), tbl=self.qname(fk.table), m=m, mt=m_type,
                    keys=self._keys_match(fk.table, m, f"keys_{i}"), cond=self.belongs_rowwise(fk.table, m, 1),
                )
            )
        cond = sql.SQL(" OR ").join(parts) if parts else sql.SQL("false")
        return sql.SQL("COPY (SELECT {cols} FROM {tbl} {a} WHERE {cond}) TO STDOUT (FORMAT BINARY)").format(
            cols=_ident_list(g.copy_columns, a), tbl=self.qname(gtable), a=a, cond=cond
        )

    def global_referenced_keys(self, gtable: str) -> sql.Composed:
        """Keys (jsonb) of the rows of global ``gtable`` the workspace's rows reference."""
        x = sql.Identifier("x")
        return sql.SQL("SELECT {kj} FROM ({rows}) {x}").format(
            kj=self._key_json(gtable, x), rows=self.global_referenced(gtable, self.graph.table(gtable).primary_key), x=x
        )

    def temp_key_json(self, table: str, temp: str) -> sql.Composed:
        x = sql.Identifier("x")
        return sql.SQL("SELECT {kj} FROM {tmp} {x}").format(kj=self._key_json(table, x), tmp=sql.Identifier(temp), x=x)

    def count_keys_present(self, table: str) -> sql.Composed:
        """How many of the keys in ``%(keys)s`` ``table`` has."""
        t = sql.Identifier("t")
        return sql.SQL("SELECT count(*) FROM {tbl} {t} WHERE {m}").format(tbl=self.qname(table), t=t, m=self._keys_match(table, t))

    def delete_keys(self, table: str) -> sql.Composed:
        """Delete rows of ``table`` whose key is in ``%(keys)s`` (a jsonb[] of key objects)."""
        a = sql.Identifier("t")
        return sql.SQL("DELETE FROM {tbl} {a} WHERE {m}").format(tbl=self.qname(table), a=a, m=self._keys_match(table, a))

    def copy_out_keys_rows(self, table: str) -> sql.Composed:
        """The workspace's rows of ``table`` whose key is in ``%(keys)s``, as binary COPY."""
        a = sql.Identifier("t")
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(
            self.select_rows(table, where=self._keys_match(table, a), rowwise=True)
        )

    def upsert_from(self, table: str, temp: str) -> sql.Composed:
        """Insert the temp table's rows into ``table``, replacing rows with the same key."""
        t = self.graph.table(table)
        cols = [c for c in t.copy_columns]
        rest = [c for c in cols if c not in t.primary_key]
        action = (sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in rest)) if rest else sql.SQL("DO NOTHING"))
        return sql.SQL("INSERT INTO {tbl} ({cols}) SELECT {cols} FROM {tmp} ON CONFLICT ({key}) {action}").format(
            tbl=self.qname(table), cols=_ident_list(cols), tmp=sql.Identifier(temp), key=_ident_list(t.primary_key), action=action
        )

    def delete_keys_absent(self, table: str, temp: str) -> sql.Composed:
        """Delete rows of ``table`` whose key is in ``%(keys)s`` but not among the temp table's rows."""
        a, x = sql.Identifier("t"), sql.Identifier("x")
        key = self.graph.table(table).primary_key
        on = sql.SQL(" AND ").join(sql.SQL("{}.{} = {}.{}").format(x, sql.Identifier(k), a, sql.Identifier(k)) for k in key)
        return sql.SQL("DELETE FROM {tbl} {a} WHERE {m} AND NOT EXISTS (SELECT 1 FROM {tmp} {x} WHERE {on})").format(
            tbl=self.qname(table), a=a, m=self._keys_match(table, a), tmp=sql.Identifier(temp), x=x, on=on
        )

    @staticmethod
    def change_log_clear() -> sql.Composed:
        return sql.SQL("DELETE FROM {} WHERE move_id = %(move_id)s").format(sql.Identifier(ONLINE_SCHEMA, ONLINE_CHANGES))

    @staticmethod
    def truncate_events() -> sql.Composed:
        return sql.SQL("SELECT kind, table_name, at FROM {} WHERE move_id = %(move_id)s ORDER BY at").format(
            sql.Identifier(ONLINE_SCHEMA, ONLINE_EVENTS)
        )

    @staticmethod
    def truncate_events_clear() -> sql.Composed:
        return sql.SQL("DELETE FROM {} WHERE move_id = %(move_id)s").format(sql.Identifier(ONLINE_SCHEMA, ONLINE_EVENTS))

    @staticmethod
    def online_schema_drop() -> sql.Composed:
        return sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(ONLINE_SCHEMA))

    # fixes the plan suggests (rendered for people; never run by the mover)
    def fix_replica_identity(self, table: str, key_column: str) -> sql.Composed:
        t = self.graph.table(table)
        cols = [key_column] + [c for c in t.primary_key if c != key_column]
        if not t.primary_key or any(c is None or not c.not_null for c in (t.column(x) for x in cols)):
            # a nullable key (NULL: shared by every tenant) can't be in a replica identity index
            return sql.SQL("ALTER TABLE {tbl} REPLICA IDENTITY FULL;").format(tbl=self.qname(table))
        idx = f"{table}_{key_column}_replident"[:63]
        return sql.SQL(
            "CREATE UNIQUE INDEX CONCURRENTLY {idx} ON {tbl} ({cols}); ALTER TABLE {tbl} REPLICA IDENTITY USING INDEX {idx};"
        ).format(idx=sql.Identifier(idx), tbl=self.qname(table), cols=_ident_list(cols))

    @staticmethod
    def fix_wal_level() -> sql.Composed:
        return sql.SQL("ALTER SYSTEM SET wal_level = 'logical'; -- then restart the server")

    @staticmethod
    def fix_setting(name: str, value: int) -> sql.Composed:
        return sql.SQL("ALTER SYSTEM SET {} = {}; -- then restart the server").format(sql.Identifier(name), sql.Literal(value))

    @staticmethod
    def fix_role(role: str, attribute: str) -> sql.Composed:
        return sql.SQL("ALTER ROLE {} {};").format(sql.Identifier(role), sql.SQL(attribute))

    @staticmethod
    def fix_grant_create(database: str, role: str) -> sql.Composed:
        return sql.SQL("GRANT CREATE ON DATABASE {} TO {};").format(sql.Identifier(database), sql.Identifier(role))

    def fix_owner(self, table: str, role: str) -> sql.Composed:
        return sql.SQL("ALTER TABLE {} OWNER TO {};").format(self.qname(table), sql.Identifier(role))

    # ------------------------------------------------------------------ chunks (migrate.chunks)
    # A chunk of a table with a one-column key is ``lo < key <= hi`` (either end open when None),
    # text keys compared in the "C" collation so that both regions cut at the same places.
    CHUNK_KEY_TYPES = ("smallint", "integer", "bigint", "text", "uuid")

    def chunk_key(self, table: str) -> str | None:
        """The column a table's chunks are cut on, or None (stays one chunk)."""
        t = self.graph.table(table)
        if len(t.primary_key) != 1:
            return None
        c = t.column(t.primary_key[0])
        if c is None or not (c.type in self.CHUNK_KEY_TYPES or c.type.startswith("character varying")):
            return None
        return c.name

    def _chunk_key_expr(self, table: str, alias: sql.Composable) -> sql.Composed:
        key = self.chunk_key(table) or ""
        c = self.graph.table(table).column(key)
        ref = sql.SQL("{}.{}").format(alias, sql.Identifier(key))
        if c is not None and (c.type == "text" or c.type.startswith("character varying")):
            return sql.SQL("{} COLLATE \"C\"").format(ref)
        return ref

    def chunk_cond(self, table: str, alias: sql.Composable, lo: bool, hi: bool) -> sql.Composable:
        k = self._chunk_key_expr(table, alias)
        parts: list[sql.Composable] = []
        if lo:
            parts.append(sql.SQL("{} > {}").format(k, sql.Placeholder("chunk_lo")))
        if hi:
            parts.append(sql.SQL("{} <= {}").format(k, sql.Placeholder("chunk_hi")))
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")

    def chunk_bounds(self, table: str) -> sql.Composed:
        """The key values at ``%(fractions)s`` (a float8 array) of the workspace's rows, in order."""
        x = sql.Identifier("x")
        return sql.SQL("SELECT percentile_disc({f}::float8[]) WITHIN GROUP (ORDER BY {k}) FROM ({rows}) {x}").format(
            f=sql.Placeholder("fractions"), k=self._chunk_key_expr(table, x), rows=self.select_rows(table, [self.chunk_key(table) or ""]), x=x)

    def _chunk_rows(self, table: str, lo: bool, hi: bool, columns: Sequence[str] | None = None) -> sql.Composed:
        return self.select_rows(table, columns, where=self.chunk_cond(table, sql.Identifier("t"), lo, hi))

    def copy_out_chunk(self, table: str, lo: bool, hi: bool) -> sql.Composed:
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(self._chunk_rows(table, lo, hi))

    def delete_chunk(self, table: str, lo: bool, hi: bool) -> sql.Composed:
        a = sql.Identifier("t")
        return sql.SQL("DELETE FROM {tbl} {a} WHERE {cond} AND {rng}").format(
            tbl=self.qname(table), a=a, cond=self.belongs(table, a), rng=self.chunk_cond(table, a, lo, hi))

    def checksum_chunk(self, table: str, lo: bool, hi: bool) -> sql.Composed:
        """count(*) and sum(hash_record_extended(row, 0)) of one chunk (same hash as :meth:`checksum`)."""
        t = self.graph.table(table)
        h, x = sql.Identifier("h"), sql.Identifier("x")
        return sql.SQL("SELECT count(*), coalesce(sum(hash_record_extended({h}, 0)), 0) FROM"
                       " (SELECT {hc} FROM ({rows}) {x}) {h}").format(
            h=h, hc=self._hash_columns(t, x), rows=self._chunk_rows(table, lo, hi), x=x)


ONLINE_SCHEMA = "residency_online"
ONLINE_EVENTS = "events"
ONLINE_GUARD_FN = "note_truncate"
ONLINE_CHANGES = "changes"
ONLINE_CHANGE_IDS = "change_ids"
