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
-- Who is behind a request's creation and approval ($RESIDENCY_ACTOR, e.g. the person behind a CI
-- job): an annotation only; created_by and approved_by are the authenticated roles (session_user).
ALTER TABLE residency.requests ADD COLUMN IF NOT EXISTS created_for text;
ALTER TABLE residency.requests ADD COLUMN IF NOT EXISTS approved_for text;
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

-- Retention runs (residency/expiry, issue 14): one deletion record per workspace swept -- per
-- table the rows deleted, the sum of their hash_record_extended (the mover's checksum) and the
-- time range -- kept here next to the audit entry that names it.
CREATE TABLE IF NOT EXISTS residency.retention_runs (
    id            bigserial PRIMARY KEY,
    region        text NOT NULL,
    workspace_id  text NOT NULL,
    state         text NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    rules         jsonb NOT NULL DEFAULT '[]',
    record        jsonb NOT NULL DEFAULT '{}',
    rows_deleted  bigint NOT NULL DEFAULT 0,
    error         text,
    run_by        text NOT NULL DEFAULT session_user,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX IF NOT EXISTS retention_runs_workspace ON residency.retention_runs (workspace_id, started_at);

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

-- Workspace backups (residency/backups): 'running' from the first byte written, 'complete' only once
-- the manifest is stored; listings show complete ones, so a killed backup is never offered. An
-- expired backup keeps its row with the deletion record (what was deleted, when, by whom).
CREATE TABLE IF NOT EXISTS residency.backups (
    id               bigserial PRIMARY KEY,
    workspace_id     text NOT NULL,
    region           text NOT NULL,
    aws_region       text NOT NULL,
    bucket           text NOT NULL,
    prefix           text NOT NULL,
    state            text NOT NULL CHECK (state IN ('running', 'complete', 'failed', 'expired', 'abandoned')),
    created_by       text NOT NULL DEFAULT session_user,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    snapshot_at      timestamptz,
    expires_at       timestamptz,
    rows             bigint,
    bytes            bigint,
    manifest_sha256  text,
    summary          jsonb NOT NULL DEFAULT '{}',
    error            text,
    deleted_at       timestamptz,
    deletion         jsonb
);
CREATE INDEX IF NOT EXISTS backups_workspace ON residency.backups (workspace_id, id);
CREATE INDEX IF NOT EXISTS backups_expiring ON residency.backups (expires_at) WHERE state = 'complete';
"""

# Any constant will do: it names the lock that serialises schema creation.
_SCHEMA_LOCK = 0x7265_7369_6465_6E63


def _schema_is_someone_elses(conn: psycopg.Connection[Any]) -> bool:
    """True when the schema exists and this role neither owns it nor is superuser: a requester,
    approver or operator uses the schema an admin keeps up to date (``controlplane init``)."""
    row = conn.execute(
        "SELECT NOT (pg_has_role(current_user, n.nspowner, 'USAGE')"
        " OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user))"
        " FROM pg_namespace n WHERE n.nspname = %s",
        (SCHEMA,),
    ).fetchone()
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE and not conn.autocommit:
        conn.commit()
    return bool(row and row[0])


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the control-plane tables if missing (idempotent, concurrency-safe); commits.
    A role that does not own the schema leaves it as the admin made it."""
    if _schema_is_someone_elses(conn):
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        conn.execute(_DDL)  # static DDL, no values: nothing to compose


# --------------------------------------------------------------------------- roles (issue 15)
# Created once per server (roles are cluster-wide) and granted per control-plane database. Every
# statement is static: role and table names are ours, nothing comes from input.

_ROLES_DDL = """
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['residency_requester', 'residency_approver', 'residency_operator', 'residency_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END $$;
GRANT residency_requester, residency_approver, residency_operator TO residency_admin;

GRANT USAGE ON SCHEMA residency TO residency_requester, residency_approver, residency_operator, residency_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA residency TO residency_requester, residency_approver, residency_operator;
-- everyone who acts appends to the audit log (the trigger refuses edits; the chain catches the rest)
GRANT INSERT ON residency.audit TO residency_requester, residency_approver, residency_operator;
GRANT INSERT, UPDATE ON residency.audit_head TO residency_requester, residency_approver, residency_operator;
GRANT INSERT, UPDATE ON residency.notices TO residency_requester, residency_approver, residency_operator;
GRANT USAGE ON SEQUENCE residency.notices_id_seq TO residency_requester, residency_approver, residency_operator;
GRANT INSERT, UPDATE ON residency.requests TO residency_requester;
GRANT USAGE ON SEQUENCE residency.requests_id_seq TO residency_requester;
GRANT UPDATE ON residency.requests TO residency_approver, residency_operator;
GRANT INSERT, UPDATE ON residency.moves TO residency_operator;
GRANT USAGE ON SEQUENCE residency.moves_id_seq TO residency_operator;
GRANT UPDATE ON residency.directory TO residency_operator;
GRANT INSERT, UPDATE ON residency.backups TO residency_operator;
GRANT USAGE ON SEQUENCE residency.backups_id_seq TO residency_operator;
GRANT INSERT, UPDATE ON residency.retention_runs TO residency_operator;
GRANT USAGE ON SEQUENCE residency.retention_runs_id_seq TO residency_operator;
GRANT ALL ON ALL TABLES IN SCHEMA residency TO residency_admin;
GRANT ALL ON ALL SEQUENCES IN SCHEMA residency TO residency_admin;

-- Requests: row-level security ties each change to the authenticated role. Nobody approves a
-- request their own role recorded -- not even an admin; only a superuser bypasses this.
ALTER TABLE residency.requests ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS requests_read ON residency.requests;
CREATE POLICY requests_read ON residency.requests FOR SELECT USING (true);
DROP POLICY IF EXISTS requests_create ON residency.requests;
CREATE POLICY requests_create ON residency.requests FOR INSERT TO residency_requester
    WITH CHECK (created_by = session_user AND approved_by IS NULL AND state IN ('pending', 'refused'));
DROP POLICY IF EXISTS requests_cancel_own ON residency.requests;
CREATE POLICY requests_cancel_own ON residency.requests FOR UPDATE TO residency_requester
    USING (created_by = session_user AND state IN ('pending', 'approved'))
    WITH CHECK (created_by = session_user AND state = 'cancelled');
DROP POLICY IF EXISTS requests_approve ON residency.requests;
CREATE POLICY requests_approve ON residency.requests FOR UPDATE TO residency_approver
    USING (created_by <> session_user AND state IN ('pending', 'approved'))
    WITH CHECK (created_by <> session_user AND state IN ('approved', 'cancelled')
                AND (state <> 'approved' OR approved_by = session_user));
DROP POLICY IF EXISTS requests_run ON residency.requests;
CREATE POLICY requests_run ON residency.requests FOR UPDATE TO residency_operator
    USING (state IN ('approved', 'running'))
    WITH CHECK (state IN ('approved', 'running', 'done', 'failed', 'skipped'));
-- Policies combine with OR, so a role holding several (an admin holds all) could pass one's USING
-- and another's CHECK: the approval itself is therefore also checked by a trigger, for every role
-- but a superuser. Whoever makes a request approved must be an approver, must record itself as the
-- approver, and must not be the role that recorded the request.
CREATE OR REPLACE FUNCTION residency.requests_approval_check() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.state = 'approved' AND OLD.state IS DISTINCT FROM 'approved'
       AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
        IF NOT pg_has_role(session_user, 'residency_approver', 'MEMBER') THEN
            RAISE EXCEPTION 'approving request % needs role residency_approver', NEW.id USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.approved_by IS DISTINCT FROM session_user::text OR NEW.created_by = session_user::text
           OR NEW.created_by IS DISTINCT FROM OLD.created_by THEN
            RAISE EXCEPTION 'request % was recorded by %: someone else must approve it', NEW.id, OLD.created_by
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN NEW;
END $fn$;
DROP TRIGGER IF EXISTS requests_approval_check ON residency.requests;
CREATE TRIGGER requests_approval_check BEFORE UPDATE ON residency.requests
    FOR EACH ROW EXECUTE FUNCTION residency.requests_approval_check();
DROP POLICY IF EXISTS requests_admin ON residency.requests;
CREATE POLICY requests_admin ON residency.requests FOR ALL TO residency_admin
    USING (true)
    WITH CHECK (NOT (state = 'approved' AND created_by = session_user AND approved_by = session_user));
"""

SANDBOX_LOGINS = {f"sandbox_{r.removeprefix('residency_')}": r for r in
                  ("residency_requester", "residency_approver", "residency_operator", "residency_admin")}
"""One login per role in the sandbox (``sandbox_requester`` holds ``residency_requester``, ...)."""


def ensure_roles(conn: psycopg.Connection[Any], *, logins: dict[str, str] | None = None) -> list[str]:
    """Create the four residency roles (if missing) and their grants and row-level security in
    this control-plane database (idempotent; needs CREATEROLE and the schema's owner). With
    ``logins`` (login name -> role), also create those logins (no password: give them one, or
    use certificates, outside the toolkit). Commits; returns the roles."""
    from psycopg import sql

    from .authz import ROLES

    ensure_schema(conn)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        conn.execute(_ROLES_DDL)
        for login, role in (logins or {}).items():
            if role not in ROLES:
                raise ValueError(role)
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(login)))
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(login)))
    return list(ROLES)


# --------------------------------------------------------------------------- operator access (issue 13)
# One row per request for a look at a workspace (residency/grants.py, residency/access/): who asked
# (the role, and the operator's email), the scope, the consent (who, how, when, scope, duration)
# and the grant's life in the home region's database. Only a token's SHA-256 is kept.

_DDL += """
CREATE TABLE IF NOT EXISTS residency.access_grants (
    id               bigserial PRIMARY KEY,
    workspace_id     text NOT NULL,
    region           text NOT NULL,
    operator         text NOT NULL,
    scope            text[] NOT NULL,
    write            boolean NOT NULL DEFAULT false,
    duration_seconds integer NOT NULL CHECK (duration_seconds > 0),
    reason           text NOT NULL,
    state            text NOT NULL CHECK (state IN ('pending', 'refused', 'granted', 'revoked', 'expired', 'ended', 'cancelled')),
    state_reason     text,
    requested_by     text NOT NULL,
    requested_for    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    token_sha256     text,
    token_expires_at timestamptz,
    consent          jsonb,
    role_name        text,
    granted_at       timestamptz,
    expires_at       timestamptz,
    ended_at         timestamptz,
    ended_by         text
);
CREATE INDEX IF NOT EXISTS access_grants_live ON residency.access_grants (workspace_id) WHERE state IN ('pending', 'granted');

-- Consent comes from the customer's side, never from the role that asked: the database refuses it.
CREATE OR REPLACE FUNCTION residency.access_consent_check() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.consent IS NOT NULL AND OLD.consent IS NULL
       AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
        IF OLD.requested_by = session_user::text OR NEW.consent->>'by' IS DISTINCT FROM session_user::text THEN
            RAISE EXCEPTION 'access % was requested by %: only the customer''s side consents', NEW.id, OLD.requested_by
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.consent->>'via' = 'approval' AND NOT pg_has_role(session_user, 'residency_approver', 'MEMBER') THEN
            RAISE EXCEPTION 'approving access % needs role residency_approver', NEW.id USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN NEW;
END $fn$;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'residency.access_grants'::regclass AND tgname = 'access_consent_check') THEN
        CREATE TRIGGER access_consent_check BEFORE UPDATE ON residency.access_grants
            FOR EACH ROW EXECUTE FUNCTION residency.access_consent_check();
    END IF;
END $$;
"""

_ROLES_DDL += """
GRANT SELECT, INSERT, UPDATE ON residency.access_grants TO residency_requester, residency_approver, residency_operator;
GRANT USAGE ON SEQUENCE residency.access_grants_id_seq TO residency_requester;
GRANT ALL ON residency.access_grants TO residency_admin;
GRANT ALL ON SEQUENCE residency.access_grants_id_seq TO residency_admin;
"""
