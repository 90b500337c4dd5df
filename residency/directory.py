"""The directory: which region is each workspace's home. Applications route by it.

Functions take a connection and run inside the caller's transaction; they never commit, so a
directory change and its audit entry (and a move's state change) commit together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from .db import columns
from .errors import InputError, OperationError

STATUSES = ("active", "frozen", "moving")


@dataclass(frozen=True)
class DirectoryEntry:
    workspace_id: str
    region: str
    status: str
    version: int
    updated_at: datetime


_COLS = columns(DirectoryEntry)


def get(conn: psycopg.Connection[Any], workspace_id: object, *, for_update: bool = False) -> DirectoryEntry | None:
    q = sql.SQL("SELECT {} FROM residency.directory WHERE workspace_id = %s{}").format(
        _COLS, sql.SQL(" FOR UPDATE" if for_update else "")
    )
    row = conn.execute(q, (str(workspace_id),)).fetchone()
    return DirectoryEntry(*row) if row else None


def require(conn: psycopg.Connection[Any], workspace_id: object, *, for_update: bool = False) -> DirectoryEntry:
    e = get(conn, workspace_id, for_update=for_update)
    if e is None:
        raise InputError(f"unknown workspace '{workspace_id}': it is not in the directory")
    return e


def register(conn: psycopg.Connection[Any], workspace_id: object, region: str) -> DirectoryEntry:
    """Record a workspace's home; registering it again in the same region is a no-op."""
    row = conn.execute(
        sql.SQL(
            "INSERT INTO residency.directory (workspace_id, region) VALUES (%s, %s)"
            " ON CONFLICT (workspace_id) DO NOTHING RETURNING {}"
        ).format(_COLS),
        (str(workspace_id), region),
    ).fetchone()
    if row:
        return DirectoryEntry(*row)
    e = require(conn, workspace_id)
    if e.region != region:
        raise OperationError(f"workspace '{workspace_id}' is already registered in region '{e.region}'")
    return e


def set_status(conn: psycopg.Connection[Any], workspace_id: object, status: str, *, expect: tuple[str, ...] | None = None) -> DirectoryEntry:
    if status not in STATUSES:
        raise ValueError(status)
    params: list[Any] = [status, str(workspace_id)]
    if expect:
        params.append(list(expect))
    q = sql.SQL(
        "UPDATE residency.directory SET status = %s, version = version + 1, updated_at = now()"
        " WHERE workspace_id = %s{} RETURNING {}"
    ).format(sql.SQL(" AND status = ANY(%s)" if expect else ""), _COLS)
    row = conn.execute(q, params).fetchone()
    if row is None:
        e = require(conn, workspace_id)
        raise OperationError(f"workspace '{workspace_id}' is {e.status}, expected {' or '.join(expect or ())}")
    return DirectoryEntry(*row)


def move_home(conn: psycopg.Connection[Any], workspace_id: object, source: str, target: str) -> DirectoryEntry:
    """Flip the home from ``source`` to ``target``, mark it active and bump the version.

    Refuses (and changes nothing) unless the workspace's home is still ``source``.
    """
    row = conn.execute(
        sql.SQL(
            "UPDATE residency.directory SET region = %s, status = 'active', version = version + 1, updated_at = now()"
            " WHERE workspace_id = %s AND region = %s RETURNING {}"
        ).format(_COLS),
        (target, str(workspace_id), source),
    ).fetchone()
    if row is None:
        e = require(conn, workspace_id)
        raise OperationError(f"workspace '{workspace_id}' is homed in '{e.region}', not '{source}': directory unchanged")
    return DirectoryEntry(*row)


def list_entries(conn: psycopg.Connection[Any], region: str | None = None) -> list[DirectoryEntry]:
    params: list[Any] = [region] if region else []
    q = sql.SQL("SELECT {} FROM residency.directory{} ORDER BY region, workspace_id").format(
        _COLS, sql.SQL(" WHERE region = %s" if region else "")
    )
    return [DirectoryEntry(*r) for r in conn.execute(q, params)]


# --------------------------------------------------------------------------- a region's existing tenants


def root_key(conn: psycopg.Connection[Any], schema: str, root_table: str) -> str:
    """The root table's primary-key column (the workspace id) in one region's database."""
    rows = conn.execute(
        "SELECT a.attname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid"
        " JOIN pg_namespace n ON n.oid = t.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(c.conkey)"
        " WHERE n.nspname = %s AND t.relname = %s AND c.contype = 'p'",
        (schema, root_table),
    ).fetchall()
    if len(rows) != 1:
        found = conn.execute(
            "SELECT 1 FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = %s AND t.relname = %s",
            (schema, root_table),
        ).fetchone()
        if not found:
            raise InputError(f"the root table {schema}.{root_table} (workspace.root_table) does not exist in the database")
        raise InputError(f"the root table {schema}.{root_table} needs a one-column primary key (the workspace id); it has {len(rows) or 'none'}")
    return str(rows[0][0])


@dataclass
class ImportResult:
    region: str
    root_table: str
    root_rows: int
    registered: list[str]
    already: int
    elsewhere: list[tuple[str, str]]  # (workspace id, its home)

    @property
    def ok(self) -> bool:
        return not self.elsewhere


def import_region(cp: psycopg.Connection[Any], app: psycopg.Connection[Any], region: str, schema: str, root_table: str) -> ImportResult:
    """Register every root row of one region's database as a workspace homed there, inside the
    caller's transaction on ``cp``. Idempotent: ids already homed in ``region`` stay as they are;
    ids registered in another region are left alone and reported with their home."""
    try:
        key = root_key(app, schema, root_table)
    except InputError as exc:
        raise InputError(f"region {region}: {exc}") from None
    cp.execute("CREATE TEMP TABLE IF NOT EXISTS residency_import_ids (workspace_id text PRIMARY KEY) ON COMMIT DROP")
    cp.execute("TRUNCATE residency_import_ids")
    q = sql.SQL("COPY (SELECT {}::text FROM {} WHERE {} IS NOT NULL) TO STDOUT").format(
        sql.Identifier(key), sql.Identifier(schema, root_table), sql.Identifier(key))
    with app.cursor().copy(q) as out, cp.cursor().copy("COPY residency_import_ids (workspace_id) FROM STDIN") as into:
        for chunk in out:
            into.write(chunk)
    (n,) = cp.execute("SELECT count(*) FROM residency_import_ids").fetchone()  # type: ignore[misc]
    new = [r[0] for r in cp.execute(
        "INSERT INTO residency.directory (workspace_id, region) SELECT workspace_id, %s FROM residency_import_ids"
        " ORDER BY workspace_id ON CONFLICT (workspace_id) DO NOTHING RETURNING workspace_id", (region,))]
    elsewhere = [(r[0], r[1]) for r in cp.execute(
        "SELECT i.workspace_id, d.region FROM residency_import_ids i JOIN residency.directory d USING (workspace_id)"
        " WHERE d.region <> %s ORDER BY d.region, i.workspace_id", (region,))]
    cp.execute("DROP TABLE residency_import_ids")
    return ImportResult(region, f"{schema}.{root_table}", int(n), sorted(new), int(n) - len(new) - len(elsewhere), elsewhere)


def import_and_record(cp: psycopg.Connection[Any], app: psycopg.Connection[Any], region: str, schema: str, root_table: str,
                      actor: Any = None) -> ImportResult:
    """:func:`import_region` and its audit entry, committed together."""
    from . import audit

    with cp.transaction():
        res = import_region(cp, app, region, schema, root_table)
        audit.append(cp, "directory.imported", f"region/{region}", {
            "root_table": res.root_table, "root_rows": res.root_rows, "registered": len(res.registered),
            "already": res.already, "elsewhere": len(res.elsewhere),
            "elsewhere_sample": [{"workspace_id": w, "home": h} for w, h in res.elsewhere[:100]]}, actor)
    return res


def second_home(conn: psycopg.Connection[Any], schema: str, root_table: str, workspace_id: object, home: str, region: str) -> str | None:
    """A refusal line if ``region``'s database has a root row with this workspace's id although
    the workspace is homed in ``home``: two tenants share the id, and a move would merge them."""
    try:
        key = root_key(conn, schema, root_table)
        row = conn.execute(sql.SQL("SELECT 1 FROM {} WHERE {}::text = %s LIMIT 1").format(
            sql.Identifier(schema, root_table), sql.Identifier(key)), (str(workspace_id),)).fetchone()
    except (psycopg.Error, InputError):
        if not conn.autocommit:
            conn.rollback()
        return None  # no such table there: the schema comparison says so
    if row is None:
        return None
    return (f"workspace '{workspace_id}' exists in two regions: its home {home} and {region} ({root_table}.{key} = {workspace_id}"
            f" there is another tenant, not in the directory); one of them needs a new id before it can move"
            f" (`residency directory import --region {region}` lists such ids; `residency regions ids` keeps new ones apart)")
