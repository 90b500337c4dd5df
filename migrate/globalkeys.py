"""Shared rows found as the chunks land.

A global table's rows the workspace needs are found on the source with the workspace's predicate
(:meth:`~migrate.sql.globals.GlobalsSql.global_referenced`): for a table reached through joins,
a join per row (the users behind 2.1M polymorphic reactions: 7.5 s of one source backend at 10M
rows, as much as copying those reactions). With foreign-key checks off (``replica``) nothing
needs those rows before the workspace's rows, so for a global table whose needed rows are exactly
the rows moving rows point at by one column (:func:`direct_refs`), each chunk of a referencing
table gathers the distinct values of its referencing columns as it lands, in the same pass as its
target sums (:meth:`~migrate.sql.chunks.ChunkSql.checksum_landed`), and the global table's rows
are copied by those keys once every referencing chunk has landed.

Anything else takes the full query: other global tables (rows hanging off shared rows, shared-row
policies, self-references, references from shared rows), foreign-key checks on (the rows must be
there first), a resumed copy in which a referencing chunk landed before (its values were not
gathered), and more than :data:`MAX_KEYS` values (memory stays flat).

The values are kept with the move (:meth:`LandedKeys.kept`, when JSON holds them as they are:
integers and text), so that a snapshot's verify reads the needed shared rows by them as well,
for their presence and content, while the fence they were gathered under still holds (the
workspace's rows, hence the values they point at, have not changed since). Otherwise verify
finds them with the full query.
"""

from __future__ import annotations

from typing import Any, Iterable

from .graph import Graph, Ref

MAX_KEYS = 200_000  # values gathered per global table before falling back to the full query
KEPT_TYPES = ("smallint", "integer", "bigint", "text")  # key columns whose values JSON keeps as they are


def _plain(graph: Graph, table: str, column: str | None) -> bool:
    """The column exists, is stored (not generated) and is hashed as it is (not as text)."""
    if column is None:
        return True
    c = graph.table(table).column(column)
    return c is not None and not c.generated and c.hashable


def direct_refs(graph: Graph) -> dict[str, list[Ref]]:
    """The global tables whose needed rows are exactly the rows moving rows reference, each by one
    column and all into the same column, with those references."""
    out: dict[str, list[Ref]] = {}
    for g in graph.global_order:
        refs = graph.global_refs.get(g, [])
        sr = graph.spec.shared_rows.get(g)
        if (not refs or graph.reach[g].kind != "global" or graph.dependents.get(g)
                or (sr is not None and sr.policy in ("any", "all"))
                or any(r.table == g for r in graph.refs if r.ref_table == g)
                or len({r.ref_columns for r in refs}) != 1 or len(refs[0].ref_columns) != 1):
            continue
        if all(len(r.columns) == 1 and graph.reach[r.table].moves and graph.reach[r.table].kind != "owned"
               and r.table not in graph.shared and _plain(graph, r.table, r.columns[0]) and _plain(graph, r.table, r.type_column)
               for r in refs):
            out[g] = list(refs)
    return out


class LandedKeys:
    """The values the landed chunks point at, per global table found this way. ``add`` and
    ``keys`` are called under the copy scheduler's lock (:func:`migrate.chunks.run`)."""

    def __init__(self, refs: dict[str, list[Ref]]):
        self.refs = refs
        self._keys: dict[str, set[Any]] = {g: set() for g in refs}
        self._over: set[str] = set()
        self._by_table: dict[str, list[Ref]] = {}
        for rs in refs.values():
            for r in rs:
                self._by_table.setdefault(r.table, []).append(r)

    @classmethod
    def for_copy(cls, graph: Graph, *, fk_order: bool, pending: Iterable[str], fresh: Iterable[str]) -> LandedKeys:
        """The global tables of this copy found as the chunks land: none with foreign-key checks
        on; else those of :func:`direct_refs` still ``pending`` (not copied by an earlier
        attempt) whose referencing tables all land in this run (``fresh``: no chunk recorded)."""
        if fk_order:
            return cls({})
        todo, new = set(pending), set(fresh)
        return cls({g: refs for g, refs in direct_refs(graph).items() if g in todo and all(r.table in new for r in refs)})

    def found_by(self, table: str) -> list[Ref]:
        """The references ``table``'s chunks gather the values of."""
        return self._by_table.get(table, [])

    def referencing(self, gtable: str) -> set[str]:
        return {r.table for r in self.refs.get(gtable, [])}

    def add(self, table: str, values: list[list[Any] | None]) -> None:
        """One landed chunk's values, in :meth:`found_by` order."""
        for r, vals in zip(self.found_by(table), values):
            g = r.ref_table
            if g in self._over or not vals:
                continue
            keys = self._keys[g]
            keys.update(vals)
            if len(keys) > MAX_KEYS:
                self._over.add(g)
                keys.clear()

    def keys(self, gtable: str) -> tuple[str, list[Any]] | None:
        """(column, sorted values) to copy ``gtable``'s rows by, or None: the full query."""
        if gtable not in self.refs or gtable in self._over:
            return None
        return self.refs[gtable][0].ref_columns[0], sorted(self._keys[gtable])

    def kept(self, graph: Graph, copied: Iterable[str]) -> dict[str, dict[str, Any]]:
        """For verify: per global table in ``copied`` (copied by these values in this run), its key
        column and the values (sorted), when the column's values are integers or text."""
        out: dict[str, dict[str, Any]] = {}
        for g in copied:
            got = self.keys(g)
            if got is None:
                continue
            col = graph.table(g).column(got[0])
            if col is not None and (col.type in KEPT_TYPES or col.type.startswith("character varying")):
                out[g] = {"column": got[0], "values": got[1]}
        return out
