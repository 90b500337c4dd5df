"""What a retention rule deletes, as a tree over the reach graph, and the SQL for each part.

A rule names table T and a timestamp column. The rows it expires are T's rows of the workspace
(the mover's :meth:`~residency.migrate.sqlbuild.Builder.belongs` predicate) older than the cutoff.
What hangs off an expired row (``dependants: delete``):

- rows that reach their workspace *through* it (the graph's fk / reference / polymorphic links:
  attachments → messages, previews → attachments, reactions → message) are deleted with it,
  recursively;
- rows that point at it by a NOT NULL foreign key can't outlive it either: deleted with it;
- rows that point at it by a nullable foreign key (a reply's ``parent_id``) stay, unlinked
  (set to NULL).

``dependants: keep``: an expired row that anything above still points at is not deleted.
Owned rows (``workspace.owned_through``, blobs) are left, as declared references without a
foreign key are (nothing in the database enforces them).

Identifiers only through ``psycopg.sql.Identifier``; values only as parameters: ``%(ws)s``
(the workspace), ``%(cutoff)s``, ``%(ids)s`` (a batch's keys), ``%(after)s``, ``%(limit)s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from residency.migrate.graph import Graph
from residency.migrate.sqlbuild import Builder
from residency.retention_rules import TableRule

TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")


@dataclass
class Node:
    """Rows of ``table`` deleted because a row of ``parent`` goes (``parent`` None: the rule's rows)."""

    table: str
    parent: "Node | None" = None
    columns: tuple[str, ...] = ()  # this table's columns pointing at the parent
    parent_columns: tuple[str, ...] = ()
    type_column: str | None = None
    type_value: str | None = None
    why: str = ""
    children: list["Node"] = field(default_factory=list)
    nullify: list["Node"] = field(default_factory=list)  # rows that stay, their link set to NULL

    def path(self) -> str:
        return self.table if self.parent is None else f"{self.parent.path()} ← {self.table}.{','.join(self.columns)}"

    def walk(self) -> list["Node"]:
        out = [self]
        for c in self.children:
            out.extend(c.walk())
        return out


@dataclass
class Tree:
    rule: TableRule
    root: Node
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    keep_edges: list[Node] = field(default_factory=list)  # dependants: keep -- what holds a row back
    key: tuple[str, ...] = ()  # the rule table's batch key: its primary key, else ("ctid",)

    @property
    def nodes(self) -> list[Node]:
        return self.root.walk()


def _edges_into(g: Graph, table: str) -> list[tuple[str, tuple[str, ...], tuple[str, ...], str | None, str | None, bool, str]]:
    """(child, columns, parent columns, type column, type value, delete?, why) for every way a
    row can point at a row of ``table``."""
    out = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for name, r in g.reach.items():
        if r.kind not in ("fk", "reference", "polymorphic"):
            continue
        for link in r.links:
            if link.parent == table:
                out.append((name, link.columns, link.parent_columns, r.type_column, link.type_value, True, f"reaches its workspace through {table}"))
                seen.add((name, link.columns))
    for name, t in g.schema.tables.items():
        if g.reach.get(name) is None or not g.reach[name].moves:
            continue
        for fk in t.foreign_keys:
            if fk.ref_table != table or (name, fk.columns) in seen:
                continue
            not_null = all((c := t.column(col)) is not None and c.not_null for col in fk.columns)
            out.append((name, fk.columns, fk.ref_columns, None, None, not_null,
                        f"foreign key {fk.name} ({'NOT NULL' if not_null else 'nullable'})"))
    return out


def build(g: Graph, rule: TableRule) -> Tree:
    """The rule's tree, or a tree whose ``problems`` say why the rule can't run."""
    t = g.schema.tables.get(rule.table)
    tree = Tree(rule, Node(rule.table, why=rule.describe()))
    if t is None:
        tree.problems.append(f"retention rule on {rule.table} ({rule.scope}, {rule.at}): table '{rule.table}' does not exist in schema {g.schema.name}")
        return tree
    r = g.reach.get(rule.table)
    if r is None or r.kind not in ("key", "fk", "reference", "polymorphic"):
        kind = r.kind if r else "none"
        tree.problems.append(f"retention rule on {rule.table} ({rule.scope}): the table's rows are not a workspace's own ({kind}); a rule deletes a workspace's rows")
        return tree
    col = t.column(rule.column)
    if col is None:
        tree.problems.append(f"retention rule on {rule.table} ({rule.scope}, {rule.at}): column '{rule.column}' does not exist in table '{rule.table}'")
        return tree
    if col.type not in TIMESTAMP_TYPES:
        tree.problems.append(f"retention rule on {rule.table} ({rule.scope}): column '{rule.column}' is {col.type}, not a timestamp or date")
        return tree
    tree.key = tuple(t.primary_key) if len(t.primary_key) == 1 else ("ctid",)

    def grow(node: Node, ancestors: frozenset[str]) -> None:
        for child, cols, pcols, tcol, tval, delete, why in _edges_into(g, node.table):
            n = Node(child, node, cols, pcols, tcol, tval, why)
            if rule.dependants == "keep" and node.parent is None:
                tree.keep_edges.append(n)
                continue
            if not delete:
                node.nullify.append(n)
                continue
            if child in ancestors or child == node.table:
                tree.problems.append(f"retention rule on {rule.table}: {child}.{','.join(cols)} points at {node.table} NOT NULL in a cycle; no delete order exists")
                continue
            node.children.append(n)
            grow(n, ancestors | {child})

    grow(tree.root, frozenset({rule.table}))
    for o, spec in g.spec.owned_through.items():
        if any(n.table == spec.via_table for n in tree.nodes):
            tree.notes.append(f"{o}: rows owned through {spec.via_table}.{spec.via_column} are left (owned rows are deleted only with their workspace)")
    return tree


class SQL:
    """The statements of one rule's tree."""

    def __init__(self, b: Builder, tree: Tree):
        self.b = b
        self.tree = tree
        self.rule = tree.rule

    # -- predicates
    def _expired(self, a: sql.Composable) -> sql.Composable:
        """The rule's own rows: the workspace's, older than the cutoff, and (keep) unreferenced."""
        parts: list[sql.Composable] = [
            self.b.belongs(self.rule.table, a),
            sql.SQL("{}.{} < %(cutoff)s").format(a, sql.Identifier(self.rule.column)),
        ]
        for i, e in enumerate(self.tree.keep_edges):
            x = sql.Identifier(f"k{i}")
            parts.append(sql.SQL("NOT EXISTS (SELECT 1 FROM {c} {x} WHERE {m})").format(
                c=self.b.qname(e.table), x=x, m=self._match(e, x, a)))
        return sql.SQL(" AND ").join(parts)

    def _match(self, n: Node, child: sql.Composable, parent: sql.Composable) -> sql.Composable:
        parts: list[sql.Composable] = [sql.SQL("{}.{} = {}.{}").format(child, sql.Identifier(c), parent, sql.Identifier(p))
                                       for c, p in zip(n.columns, n.parent_columns)]
        if n.type_column:
            parts.append(sql.SQL("{}.{} = {}").format(child, sql.Identifier(n.type_column), sql.Literal(n.type_value)))
        return sql.SQL(" AND ").join(parts)

    def cond(self, n: Node, a: sql.Composable, *, batch: bool, depth: int = 0) -> sql.Composable:
        """The rows of node ``n`` (alias ``a``): in a batch (``%(ids)s``) or everything expired now."""
        if n.parent is None:
            if batch:
                key = self.tree.key
                if key == ("ctid",):
                    return sql.SQL("{}.ctid = ANY(%(ids)s::tid[])").format(a)
                return sql.SQL("{}.{} = ANY(%(ids)s)").format(a, sql.Identifier(key[0]))
            return self._expired(a)
        p = sql.Identifier(f"p{depth}")
        return sql.SQL("EXISTS (SELECT 1 FROM {parent} {p} WHERE {m} AND {c})").format(
            parent=self.b.qname(n.parent.table), p=p, m=self._match(n, a, p), c=self.cond(n.parent, p, batch=batch, depth=depth + 1))

    # -- plan
    def count(self, n: Node) -> sql.Composed:
        a = sql.Identifier("t")
        if n.parent is None:
            col = sql.Identifier(self.rule.column)
            return sql.SQL("SELECT count(*), min({a}.{c}), max({a}.{c}) FROM {t} {a} WHERE {w}").format(
                a=a, c=col, t=self.b.qname(n.table), w=self.cond(n, a, batch=False))
        return sql.SQL("SELECT count(*), NULL, NULL FROM {t} {a} WHERE {w}").format(t=self.b.qname(n.table), a=a, w=self.cond(n, a, batch=False))

    def count_nullify(self, n: Node, *, batch: bool = False) -> sql.Composed:
        a = sql.Identifier("t")
        return sql.SQL("SELECT count(*) FROM {t} {a} WHERE {w}").format(t=self.b.qname(n.table), a=a, w=self._nullify_cond(n, a, batch))

    # -- run
    def batch(self, *, after: bool) -> sql.Composed:
        """The next batch of the rule's rows, locked; rows a writer holds are skipped (next run)."""
        a = sql.Identifier("t")
        key = self.tree.key
        if key == ("ctid",):
            return sql.SQL("SELECT {a}.ctid FROM {t} {a} WHERE {w} LIMIT %(limit)s FOR UPDATE SKIP LOCKED").format(
                a=a, t=self.b.qname(self.rule.table), w=self._expired(a))
        k = sql.Identifier(key[0])
        # newest key first: a row pointing at an older row of its own table (a reply at the message
        # it answers) goes in an earlier batch than that row, instead of being unlinked from it first
        more = sql.SQL(" AND {}.{} < %(after)s").format(a, k) if after else sql.SQL("")
        return sql.SQL("SELECT {a}.{k} FROM {t} {a} WHERE {w}{more} ORDER BY {a}.{k} DESC LIMIT %(limit)s FOR UPDATE OF {a} SKIP LOCKED").format(
            a=a, k=k, t=self.b.qname(self.rule.table), w=self._expired(a), more=more)

    def lock(self, n: Node) -> sql.Composed:
        """Lock a dependant's rows that have dependants of their own, so no new child can point at them meanwhile."""
        a = sql.Identifier("t")
        return sql.SQL("SELECT 1 FROM {t} {a} WHERE {w} FOR UPDATE OF {a}").format(t=self.b.qname(n.table), a=a, w=self.cond(n, a, batch=True))

    def _nullify_cond(self, n: Node, a: sql.Composable, batch: bool) -> sql.Composable:
        w = self.cond(n, a, batch=batch)
        gone = [m for m in self.tree.nodes if m.table == n.table]
        for i, m in enumerate(gone):  # a row deleted anyway is deleted as it is
            x = sql.Identifier(f"g{i}")
            w = sql.SQL("{} AND NOT EXISTS (SELECT 1 FROM {t} {x} WHERE {x}.ctid = {a}.ctid AND {c})").format(
                w, t=self.b.qname(n.table), x=x, a=a, c=self.cond(m, x, batch=batch, depth=10 + i))
        return w

    def nullify(self, n: Node) -> sql.Composed:
        a = sql.Identifier("t")
        sets = sql.SQL(", ").join(sql.SQL("{} = NULL").format(sql.Identifier(c)) for c in n.columns)
        return sql.SQL("UPDATE {t} {a} SET {s} WHERE {w}").format(t=self.b.qname(n.table), a=a, s=sets, w=self._nullify_cond(n, a, True))

    def delete(self, n: Node) -> sql.Composed:
        """Delete the node's rows of this batch: count, sum of hash_record_extended (the mover's
        checksum), and for the rule's rows the oldest and newest timestamp."""
        a, d, h = sql.Identifier("t"), sql.Identifier("d"), sql.Identifier("h")
        hashed = self.b._hash_columns(self.b.graph.table(n.table), d)
        col = sql.Identifier(self.rule.column)
        span = sql.SQL("min({h}.{c}), max({h}.{c})").format(h=h, c=col) if n.parent is None else sql.SQL("NULL, NULL")
        return sql.SQL(
            "WITH {d} AS (DELETE FROM {t} {a} WHERE {w} RETURNING {a}.*)"
            " SELECT count(*), coalesce(sum(hash_record_extended({h}, 0)::numeric), 0), {span} FROM (SELECT {hc} FROM {d}) {h}"
        ).format(d=d, t=self.b.qname(n.table), a=a, w=self.cond(n, a, batch=True), h=h, span=span, hc=hashed)

    def params(self, workspace_id: str, **extra: Any) -> dict[str, Any]:
        return self.b.params(workspace_id, **extra)
