"""Online moves (:mod:`migrate.replication`): row-filtered publications, subscriptions, slots,
the TRUNCATE guard, and the statements the plan suggests as fixes (rendered for people; never
run by the mover). DDL takes no parameters: values go in as ``sql.Literal``.
"""

from __future__ import annotations

from typing import Sequence

from psycopg import sql

from .base import _ident_list
from .reach import ReachSql

ONLINE_SCHEMA = "residency_online"
ONLINE_EVENTS = "events"
ONLINE_GUARD_FN = "note_truncate"
ONLINE_CHANGES = "changes"
ONLINE_CHANGE_IDS = "change_ids"


class OnlineSql(ReachSql):
    """Logical replication of a workspace, and its clean-up."""

    def row_filter(self, table: str, workspace_id: str) -> sql.Composed:
        """``table WHERE (key = 'ws')``: a publication's row filter (root and key tables only)."""
        r = self.graph.reach[table]
        if not r.by_column:
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
