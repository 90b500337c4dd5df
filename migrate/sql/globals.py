"""The shared (global) rows a workspace needs in the target (copy, verify, references).

Rows its moving rows (or other needed shared rows) reference, by foreign key or declared
reference, rows hanging off a needed shared row, and rows the ``workspace.shared_rows`` policy
carries; never the workspace's own rows.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from psycopg import sql

from .base import WS, Aliases, _ident_list, _tuple
from .reach import ReachSql

Part = Callable[[sql.Composable], sql.Composable]  # a test of the row given by its alias


class GlobalsSql(ReachSql):
    """The needed shared rows and the values that mean "no reference"."""

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

    def global_by_keys(self, gtable: str, column: str, columns: Sequence[str] | None = None) -> sql.Composed:
        """The rows of ``gtable`` whose ``column`` is in ``%(keys)s`` (an array): the shared rows
        the workspace needs when they are exactly the values its rows point at by that column
        (:func:`migrate.globalkeys.direct_refs`), read by that column's index, with no join."""
        g, a = self.graph.table(gtable), sql.Identifier("g")
        return sql.SQL("SELECT {cols} FROM {tbl} {a} WHERE {a}.{col} = ANY({keys})").format(
            cols=_ident_list(columns if columns is not None else g.copy_columns, a), tbl=self.qname(gtable), a=a,
            col=sql.Identifier(column), keys=sql.Placeholder("keys"))

    def carried(self, table: str, alias: sql.Composable, depth: int, visiting: frozenset[str], names: Aliases | None = None) -> sql.Composable:
        """Row ``alias`` of ``table`` goes to the target: it belongs to the workspace or is a needed shared row."""
        names = names or Aliases()
        return self._any_of(table, alias, self._carried_parts(table, depth, visiting, names), names)

    def _carried_parts(self, table: str, depth: int, visiting: frozenset[str], names: Aliases) -> list[Part]:
        """What :meth:`carried` is any of, each a test of a row (disjoint: a needed shared row is
        never the workspace's own)."""
        parts: list[Part] = []
        if self.graph.reach[table].moves:
            parts.append(lambda x: self.belongs(table, x, names))
        if table in self.graph.shared and table not in visiting:
            parts.append(lambda x: self.shared_needed(table, x, depth, visiting, names=names))
        return parts

    def _any_of(self, table: str, a: sql.Composable, parts: Sequence[Part], names: Aliases) -> sql.Composable:
        """Row ``a`` of ``table`` passes any of ``parts``. OR'ed in one WHERE, a part's
        ``IN (SELECT ...)`` cannot become a join: it is a SubPlan, hashed only while the planner
        expects its rows to fit ``work_mem`` and otherwise a list scanned again for every row
        (a Mattermost-like workspace's needed users: 0.3 s, or over a minute once one list does
        not fit). So a table with a primary key has each part in a SELECT of its own, where it is a
        join, and the row is picked by key from their union (a hashed semi-join, which spills to
        disk past ``work_mem`` instead of going quadratic)."""
        if not parts:
            return sql.SQL("false")
        if len(parts) == 1:
            return parts[0](a)
        pk = self.graph.table(table).primary_key
        if not pk:  # unreached: the plan refuses shared rows in a table without a primary key
            return sql.SQL("({})").format(sql.SQL(" OR ").join(p(a) for p in parts))
        branches = []
        for p in parts:
            x = names.new("x")
            branches.append(sql.SQL("SELECT {k} FROM {tbl} {x} WHERE {cond}").format(k=_ident_list(pk, x), tbl=self.qname(table), x=x, cond=p(x)))
        return sql.SQL("{} IN ({})").format(_tuple(pk, a), sql.SQL(" UNION ALL ").join(branches))

    def shared_needed(self, table: str, a: sql.Composable, depth: int, visiting: frozenset[str], *, follow_self: bool = True,
                      names: Aliases | None = None) -> sql.Composable:
        """Row ``a`` of shared ``table`` is needed in the target. ``depth``: how many shared rows
        lead here (beyond 12 the chain stops), ``visiting``: the tables on the way."""
        g = self.graph
        names = names or Aliases()
        if follow_self and g.reach[table].kind == "global" and len(g.table(table).primary_key) == 1:
            selfs = [r for r in g.refs if r.table == table == r.ref_table and len(r.columns) == 1 and not r.type_column]
            if selfs:
                return self._shared_closure(table, a, depth, visiting, selfs, names)
        visiting = visiting | {table}
        if depth > 12:  # shared rows pointing at shared rows pointing at ...: far beyond any schema seen
            return sql.SQL("false")
        # One "key IN (SELECT ... UNION ALL SELECT ...)" per referenced key, each way a referencing
        # row goes to the target a branch of its own (:meth:`_any_of`)
        groups: dict[tuple[str, ...], list[sql.Composable]] = {}
        for r in g.global_refs.get(table, []):
            if r.table in visiting and not g.reach[r.table].moves:
                continue
            for part in self._carried_parts(r.table, depth + 1, visiting, names):
                m = names.new("m")
                cond = part(m)
                if r.type_column:
                    cond = sql.SQL("{}.{} = {} AND {}").format(m, sql.Identifier(r.type_column), sql.Literal(r.type_value), cond)
                groups.setdefault(tuple(r.ref_columns), []).append(
                    sql.SQL("SELECT {rhs} FROM {tbl} {m} WHERE {cond}").format(
                        rhs=_ident_list(r.columns, m), tbl=self.qname(r.table), m=m, cond=cond
                    )
                )
        parts: list[Part] = [
            lambda x, ref=ref, subs=subs: sql.SQL("{lhs} IN ({subs})").format(lhs=_tuple(ref, x), subs=sql.SQL(" UNION ALL ").join(subs))
            for ref, subs in groups.items()
        ]
        sr = g.spec.shared_rows.get(table)
        if sr is not None and sr.policy in ("any", "all") and table in g.shared:
            parts.append(lambda x: self.shared_policy(table, x))
        for d in g.dependents.get(table, []):
            pa = names.new("d")
            parent = sql.SQL("SELECT {rhs} FROM {parent} {pa} WHERE {cond}").format(
                rhs=_ident_list(d.ref_columns, pa), parent=self.qname(d.ref_table), pa=pa,
                cond=self.shared_needed(d.ref_table, pa, depth + 1, visiting, names=names) if d.ref_table not in visiting else sql.SQL("false"))
            parts.append(lambda x, d=d, parent=parent: sql.SQL("({typed}{lhs} IN ({parent}))").format(
                typed=sql.SQL("{}.{} = {} AND ").format(x, sql.Identifier(d.type_column), sql.Literal(d.type_value)) if d.type_column else sql.SQL(""),
                lhs=_tuple(d.columns, x), parent=parent))
        cond = self._any_of(table, a, parts, names)
        r_ = g.reach[table]
        if r_.kind == "key":
            cond = sql.SQL("{} AND {}").format(self.shared_key(table, a), cond)
        elif r_.moves:
            cond = sql.SQL("{} AND {}").format(cond, self.not_belongs(table, a, names))
        return cond

    def _shared_closure(self, table: str, a: sql.Composable, depth: int, visiting: frozenset[str], selfs: list[Any], names: Aliases) -> sql.Composable:
        """The needed rows of a global table that references itself (a user invited by a user),
        followed to the end: a recursive query over the key and the referencing columns (UNION
        stops at a cycle)."""
        (pk,) = self.graph.table(table).primary_key
        s0, sp, cte = names.new("s"), names.new("sp"), names.new("closure")
        refcols = [sql.Identifier(f"r{i}") for i in range(len(selfs))]  # the CTE's columns
        base = self.shared_needed(table, s0, depth + 1, visiting, follow_self=False, names=names)
        cols = lambda al: sql.SQL(", ").join(sql.SQL("{}.{}").format(al, sql.Identifier(r.columns[0])) for r in selfs)  # noqa: E731
        join = sql.SQL(" OR ").join(sql.SQL("{}.{} = {}.{}").format(sp, sql.Identifier(r.ref_columns[0]), cte, n) for r, n in zip(selfs, refcols))
        return sql.SQL(
            "{a}.{pk} IN (WITH RECURSIVE {cte} (k, {names}) AS (SELECT {s0}.{pk}, {c0} FROM {tbl} {s0} WHERE {base}"
            " UNION SELECT {sp}.{pk}, {cp} FROM {tbl} {sp} JOIN {cte} ON {join}) SELECT k FROM {cte})"
        ).format(a=a, pk=sql.Identifier(pk), cte=cte, names=sql.SQL(", ").join(refcols), s0=s0, c0=cols(s0), tbl=self.qname(table),
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
