"""The change log and catching up (:mod:`migrate.incremental`, :mod:`migrate.online`).

Path tables can't be row-filtered: a trigger records which keys changed since their copy ahead of
the fence, so only those rows are copied (and their shared rows checked) again under it. Key sets
travel as ``%(keys)s``, a jsonb[] of key objects typed back through ``jsonb_populate_record``.
"""

from __future__ import annotations

from psycopg import sql

from .base import _ident_list, _tuple, per_table_name
from .globals import GlobalsSql
from .online import ONLINE_CHANGE_IDS, ONLINE_CHANGES, ONLINE_SCHEMA


class ChangesSql(GlobalsSql):
    """The change log of the path tables and the statements that replay changed keys."""

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
        return per_table_name(ONLINE_SCHEMA, "changes", table)

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

    @staticmethod
    def change_log_clear() -> sql.Composed:
        return sql.SQL("DELETE FROM {} WHERE move_id = %(move_id)s").format(sql.Identifier(ONLINE_SCHEMA, ONLINE_CHANGES))

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
                    keys=self._keys_match(fk.table, m, f"keys_{i}"), cond=self.belongs_rowwise(fk.table, m),
                )
            )
        cond = sql.SQL(" OR ").join(parts) if parts else sql.SQL("false")
        return sql.SQL("COPY (SELECT {cols} FROM {tbl} {a} WHERE {cond}) TO STDOUT (FORMAT BINARY)").format(
            cols=_ident_list(g.copy_columns, a), tbl=self.qname(gtable), a=a, cond=cond
        )

    def temp_key_json(self, table: str, temp: str) -> sql.Composed:
        x = sql.Identifier("x")
        return sql.SQL("SELECT {kj} FROM {tmp} {x}").format(kj=self._key_json(table, x), tmp=sql.Identifier(temp), x=x)

    def count_keys_present(self, table: str) -> sql.Composed:
        """How many of the keys in ``%(keys)s`` ``table`` has."""
        t = sql.Identifier("t")
        return sql.SQL("SELECT count(*) FROM {tbl} {t} WHERE {m}").format(tbl=self.qname(table), t=t, m=self._keys_match(table, t))

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
