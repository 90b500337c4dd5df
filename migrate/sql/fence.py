"""The fence (:mod:`migrate.fence`): triggers that refuse writes to a fenced workspace's rows,
passed only by the holder of the fence's token.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from .base import per_table_name
from .reach import ReachSql

FENCE_SCHEMA = "residency_mover"
FENCE_TABLE = "fence"
BYPASS_SETTING = "residency.fence_bypass"


class FenceSql(ReachSql):
    """The fence's schema, table, per-table triggers and bypass."""

    def fence_function_name(self, table: str) -> sql.Identifier:
        return per_table_name(FENCE_SCHEMA, "fence", table)

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
