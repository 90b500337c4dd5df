"""The copy phase (:mod:`migrate.copy`): binary COPY out of the source and into the target,
temp tables, shared rows inserted without overwriting, owned rows, sequences.
"""

from __future__ import annotations

from typing import Sequence

from psycopg import sql

from .base import _ident_list, _tuple
from .globals import GlobalsSql


class CopySql(GlobalsSql):
    """Statements of the copy and cleanup of a workspace's rows."""

    def copy_out(self, table: str) -> sql.Composed:
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(self.select_rows(table))

    def copy_in(self, table: str, columns: Sequence[str] | None = None, *, into: sql.Composable | None = None) -> sql.Composed:
        cols = columns if columns is not None else self.graph.table(table).copy_columns
        return sql.SQL("COPY {tbl} ({cols}) FROM STDIN (FORMAT BINARY)").format(
            tbl=into if into is not None else self.qname(table), cols=_ident_list(cols)
        )

    def copy_out_global(self, gtable: str) -> sql.Composed:
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(self.global_referenced(gtable))

    def copy_out_global_keys(self, gtable: str, column: str) -> sql.Composed:
        """The rows of ``gtable`` whose ``column`` is in ``%(keys)s`` (found as the chunks landed,
        :mod:`migrate.globalkeys`)."""
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(self.global_by_keys(gtable, column))

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

    def bump_sequence(self, table: str, column: str, seq_schema: str, seq_name: str) -> sql.Composed:
        """Move the sequence past the table's largest value (never backwards)."""
        seq = sql.Identifier(seq_schema, seq_name)
        return sql.SQL(
            "SELECT setval({seqname}::regclass, m) FROM (SELECT max({col}) AS m FROM {tbl}) x"
            " WHERE m IS NOT NULL AND m >= (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {seq})"
        ).format(seqname=sql.Literal(seq.as_string(None)), col=sql.Identifier(column), tbl=self.qname(table), seq=seq)
