"""The control plane's schema: the directory, the moves, the audit log, move requests and notices.

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

-- Move requests (residency/requests.py): asked for by sales or support, approved by someone else,
-- run by a worker (residency/worker.py) inside their window. A worker holds a request while it
-- runs it (worker + lease_until, renewed by a heartbeat); an expired lease lets another take over.
CREATE TABLE IF NOT EXISTS residency.requests (
    id            bigserial PRIMARY KEY,
    workspace_id  text NOT NULL,
    source        text NOT NULL,
    target        text NOT NULL,
    strategy      text NOT NULL DEFAULT 'snapshot',
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL CHECK (window_end > window_start),
    requested_by  text NOT NULL,
    reason        text NOT NULL DEFAULT '',
    state         text NOT NULL CHECK (state IN
                    ('pending', 'approved', 'running', 'done', 'failed', 'skipped', 'refused', 'cancelled')),
    state_reason  text,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    approved_by   text,
    approved_at   timestamptz,
    estimate      jsonb NOT NULL DEFAULT '{}',
    move_id       bigint,
    worker        text,
    lease_until   timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    result        jsonb NOT NULL DEFAULT '{}'
);
-- One live request per workspace: the database itself refuses a second one.
CREATE UNIQUE INDEX IF NOT EXISTS requests_one_live_per_workspace
    ON residency.requests (workspace_id) WHERE state IN ('pending', 'approved', 'running');
CREATE INDEX IF NOT EXISTS requests_due ON residency.requests (window_start)
    WHERE state IN ('approved', 'running');

-- Notices (residency/notify.py): one per request or move state change, rendered when it happens
-- and kept here (an outbox); delivery to a webhook is recorded on the row, never required.
CREATE TABLE IF NOT EXISTS residency.notices (
    id            bigserial PRIMARY KEY,
    request_id    bigint REFERENCES residency.requests (id),
    move_id       bigint,
    event         text NOT NULL,
    subject       text NOT NULL,
    body          text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivery      text NOT NULL DEFAULT 'kept' CHECK (delivery IN ('kept', 'pending', 'delivered', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    delivered_at  timestamptz,
    last_error    text
);
CREATE INDEX IF NOT EXISTS notices_request ON residency.notices (request_id);
CREATE INDEX IF NOT EXISTS notices_undelivered ON residency.notices (id) WHERE delivery IN ('pending', 'failed');

-- Permanent region numbers for per-region id ranges (residency/idranges.py, `residency regions ids`):
-- region n mints ids in [n * 10^12, (n + 1) * 10^12 - 1]; first come, first numbered, never renumbered.
CREATE TABLE IF NOT EXISTS residency.region_numbers (
    region      text PRIMARY KEY,
    number      integer NOT NULL UNIQUE CHECK (number BETWEEN 1 AND 9222000),
    assigned_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION residency.audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'residency.audit is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
-- Created only when missing: DROP/CREATE TRIGGER would take an exclusive lock on the audit log
-- every time a command ensures the schema.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'residency.audit'::regclass AND tgname = 'audit_append_only') THEN
        CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON residency.audit
            FOR EACH STATEMENT EXECUTE FUNCTION residency.audit_append_only();
    END IF;
END $$;
"""

# Any constant will do: it names the lock that serialises schema creation.
_SCHEMA_LOCK = 0x7265_7369_6465_6E63


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the control-plane tables if missing (idempotent, concurrency-safe); commits."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        conn.execute(_DDL)  # static DDL, no values: nothing to compose
