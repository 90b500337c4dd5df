"""The control plane's schema: the directory, the moves and the audit log.

It lives in its own PostgreSQL schema (``residency``) of the control-plane database, so it can
share a database with other things. :func:`ensure_schema` is idempotent and safe to run from
several processes at once.
"""

from __future__ import annotations

from typing import Any

import psycopg

SCHEMA = "residency"

_DDL = """
CREATE SCHEMA IF NOT EXISTS residency;

CREATE TABLE IF NOT EXISTS residency.directory (
    workspace_id text PRIMARY KEY,
    region       text NOT NULL,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen', 'moving')),
    version      bigint NOT NULL DEFAULT 1,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS directory_region ON residency.directory (region);

CREATE TABLE IF NOT EXISTS residency.moves (
    id           bigserial PRIMARY KEY,
    workspace_id text NOT NULL,
    source       text NOT NULL,
    target       text NOT NULL,
    strategy     text NOT NULL,
    state        text NOT NULL CHECK (state IN
                   ('planned', 'fenced', 'copied', 'verified', 'cut_over', 'cleaned', 'rolled_back', 'failed')),
    resume_from  text,
    error        text,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    plan         jsonb NOT NULL DEFAULT '{}',
    checkpoints  jsonb NOT NULL DEFAULT '{}',
    report       jsonb NOT NULL DEFAULT '{}',
    lease_owner  text,
    lease_until  timestamptz
);
-- One open move per workspace: the database itself refuses a second one.
CREATE UNIQUE INDEX IF NOT EXISTS moves_one_open_per_workspace
    ON residency.moves (workspace_id) WHERE state NOT IN ('cleaned', 'rolled_back');

CREATE TABLE IF NOT EXISTS residency.audit (
    seq       bigint PRIMARY KEY,
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    origin    text NOT NULL,
    action    text NOT NULL,
    subject   text NOT NULL,
    details   jsonb NOT NULL,
    prev_hash text NOT NULL,
    hash      text NOT NULL
);
-- The newest entry's sequence number and hash, so deleting the tail is detectable too.
CREATE TABLE IF NOT EXISTS residency.audit_head (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq  bigint NOT NULL,
    hash text NOT NULL
);

CREATE OR REPLACE FUNCTION residency.audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'residency.audit is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
DROP TRIGGER IF EXISTS audit_append_only ON residency.audit;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON residency.audit
    FOR EACH STATEMENT EXECUTE FUNCTION residency.audit_append_only();
"""

# Any constant will do: it names the lock that serialises schema creation.
_SCHEMA_LOCK = 0x7265_7369_6465_6E63


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the control-plane tables if missing (idempotent, concurrency-safe); commits."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        conn.execute(_DDL)  # static DDL, no values: nothing to compose
