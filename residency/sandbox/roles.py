"""Non-superuser roles in the sandbox, as a managed database (RDS, Cloud SQL, Azure) has them.

The sandbox's servers run with one superuser; managed PostgreSQL gives none. ``residency_mover``
is a LOGIN role created on every region server by ``sandbox up`` that owns nothing, with only
what a managed database's admin role can grant: CONNECT and CREATE on a database, table and
sequence privileges, ``pg_read_all_stats`` (the fence waits for older transactions it must see),
``GRANT SET ON PARAMETER session_replication_role`` (PostgreSQL 15+) and membership in
``residency_app``, the application's owner role. Tables are owned by ``residency_app`` only in a
world that asks for it (:meth:`residency.sandbox.world.World.grant_role`), so other worlds keep
their superuser-owned tables.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

MOVER = "residency_mover"
APP_OWNER = "residency_app"


def _exists(admin: psycopg.Connection[Any], name: str) -> bool:
    return admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None


def create_role(admin: psycopg.Connection[Any], name: str, *, set_replication_role: bool, owner_member: bool) -> None:
    """A LOGIN, non-superuser role on this server (cluster-wide); idempotent."""
    if not _exists(admin, APP_OWNER):
        try:
            admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(APP_OWNER)))
        except psycopg.errors.DuplicateObject:
            pass
    if not _exists(admin, name):
        try:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateObject:
            pass
    role = sql.Identifier(name)
    admin.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(role))
    if owner_member:
        admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(APP_OWNER), role))
    (ver,) = admin.execute("SELECT current_setting('server_version_num')::int").fetchone()
    if set_replication_role and ver >= 150000:
        admin.execute(sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}").format(role))


def ensure_mover(admin: psycopg.Connection[Any]) -> None:
    """The sandbox's standard mover role (see the module docstring), which also manages operator
    access grants (issue 13)."""
    create_role(admin, MOVER, set_replication_role=True, owner_member=True)
    grant_access_management(admin, MOVER)


def grant_access_management(admin: psycopg.Connection[Any], name: str) -> None:
    """What the role that manages operator-access grants needs, as a managed database's admin can
    grant it (RDS's master user has each): CREATEROLE (temporary login roles), ``SET ON PARAMETER
    log_statement`` (PostgreSQL 15+: ``ALTER ROLE ... SET log_statement = 'all'`` for a grant's role)
    and ``pg_signal_backend`` (a revoked grant's sessions are terminated)."""
    role = sql.Identifier(name)
    admin.execute(sql.SQL("ALTER ROLE {} CREATEROLE").format(role))
    admin.execute(sql.SQL("GRANT pg_signal_backend TO {}").format(role))
    (ver,) = admin.execute("SELECT current_setting('server_version_num')::int").fetchone()
    if ver >= 150000:
        admin.execute(sql.SQL("GRANT SET ON PARAMETER log_statement TO {}").format(role))


def grant_database(conn: psycopg.Connection[Any], role: str, *, owned_by_app: bool, schema: str = "public") -> None:
    """In the database ``conn`` is connected to (as a superuser): what the mover needs there.
    ``owned_by_app``: the schema's tables and sequences are handed to ``residency_app`` first."""
    r = sql.Identifier(role)
    s = sql.Identifier(schema)
    (dbname,) = conn.execute("SELECT current_database()").fetchone()
    if owned_by_app:
        for (tname,) in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1", (schema,)).fetchall():
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(schema, tname), sql.Identifier(APP_OWNER)))
        # sequences no column owns (an app's per-tenant ones) are the app's too; owned ones follow their table
        for (qname,) in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'S'"
            " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')) ORDER BY 1", (schema,)).fetchall():
            conn.execute(sql.SQL("ALTER SEQUENCE {} OWNER TO {}").format(sql.Identifier(schema, qname), sql.Identifier(APP_OWNER)))
        conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(s, sql.Identifier(APP_OWNER)))
    conn.execute(sql.SQL("GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(dbname), r))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r))
    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE, TRIGGER ON ALL TABLES IN SCHEMA {} TO {}").format(s, r))
    conn.execute(sql.SQL("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, r))


def drop_role(admin: psycopg.Connection[Any], name: str) -> None:
    """Drop a role made for one world (its databases already dropped); idempotent."""
    if not _exists(admin, name):
        return
    r = sql.Identifier(name)
    admin.execute(sql.SQL("DROP OWNED BY {}").format(r))  # also revokes its parameter and database privileges
    admin.execute(sql.SQL("DROP ROLE {}").format(r))
