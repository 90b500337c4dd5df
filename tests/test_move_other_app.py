"""Nothing about the sample schema is built into the mover: another application, described only
by a different `workspace:` section, moves its tenants too.

The other app (a small CRM) lives in schema `crm` of the test's databases: root `accounts` keyed
by a *text* `account_id`, a global `currencies` table, a foreign-key chain (deals -> contacts),
a uuid primary key, a `json` column (no hash opclass), a configured reference path without a
foreign key (invoice_lines.invoice_ref -> invoices) and a polymorphic path (notes -> contacts or
invoices)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest

from residency.migrate import cleanup_move, plan_move, start_move, verify_workspace
from move_support import REPO

DDL = """
CREATE SCHEMA crm;
SET search_path = crm;
CREATE TABLE currencies (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE accounts (account_id text PRIMARY KEY, name text NOT NULL, currency text REFERENCES currencies (code),
                       opened timestamptz NOT NULL DEFAULT now());
CREATE TABLE contacts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, account_id text NOT NULL REFERENCES accounts,
                       email text NOT NULL, tags text[] NOT NULL DEFAULT '{}');
CREATE TABLE deals (id uuid PRIMARY KEY, contact_id bigint NOT NULL REFERENCES contacts (id), amount numeric(12, 2),
                    currency text REFERENCES currencies (code), meta json);
CREATE TABLE invoices (id bigserial PRIMARY KEY, account_id text NOT NULL REFERENCES accounts, total numeric(12, 2) NOT NULL,
                       total_cents bigint GENERATED ALWAYS AS ((total * 100)::bigint) STORED);
CREATE TABLE invoice_lines (id bigserial PRIMARY KEY, invoice_ref bigint NOT NULL, item text NOT NULL);
CREATE TABLE notes (id bigserial PRIMARY KEY, about_kind text NOT NULL, about_id bigint NOT NULL, body text NOT NULL);
"""

WORKSPACE = """workspace:
  root_table: accounts
  key_column: account_id
  global_tables: [currencies]
  paths:
    invoice_lines: {column: invoice_ref, references: invoices}
    notes:
      column: about_id
      type_column: about_kind
      targets: {contact: contacts, invoice: invoices}
  object_prefix: "accounts/{workspace_id}/"
"""


def _catalogue():
    from residency import catalogue

    text = (REPO / "regions.yaml").read_text()
    head = text[: text.index("workspace:")]
    return catalogue.loads(head + WORKSPACE, "crm-regions.yaml")


def _fill(dsn, accounts, base):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET search_path = crm")
        c.execute("INSERT INTO currencies VALUES ('EUR', 'Euro'), ('USD', 'US dollar'), ('NZD', 'NZ dollar') ON CONFLICT DO NOTHING")
        c.execute("SELECT setval(pg_get_serial_sequence('crm.invoices', 'id'), %s)", (base,))
        c.execute("SELECT setval(pg_get_serial_sequence('crm.notes', 'id'), %s)", (base,))
        c.execute("SELECT setval(pg_get_serial_sequence('crm.invoice_lines', 'id'), %s)", (base,))
        c.execute("ALTER TABLE contacts ALTER COLUMN id RESTART WITH %s" % int(base + 1))  # test-only DDL with an int
        for i, acc in enumerate(accounts):
            c.execute("INSERT INTO accounts (account_id, name, currency) VALUES (%s, %s, %s)", (acc, f"Kunde {acc} ü", ["EUR", "USD", "NZD"][i % 3]))
            for j in range(40):
                (cid,) = c.execute("INSERT INTO contacts (account_id, email, tags) VALUES (%s, %s, %s) RETURNING id",
                                   (acc, f"p{j}@{acc}.example", ["vip"] if j % 7 == 0 else [])).fetchone()
                c.execute("INSERT INTO deals VALUES (%s, %s, %s, %s, %s)", (uuid.uuid4(), cid, j * 10.5, "EUR", '{"stage": "won"}'))
                c.execute("INSERT INTO notes (about_kind, about_id, body) VALUES ('contact', %s, 'called')", (cid,))
            for k in range(10):
                (iid,) = c.execute("INSERT INTO invoices (account_id, total) VALUES (%s, %s) RETURNING id", (acc, 99.5 + k)).fetchone()
                c.execute("INSERT INTO invoice_lines (invoice_ref, item) VALUES (%s, 'seat'), (%s, 'support')", (iid, iid))
                c.execute("INSERT INTO notes (about_kind, about_id, body) VALUES ('invoice', %s, 'paid')", (iid,))


def _count(dsn, acc):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET search_path = crm")
        return {
            "contacts": c.execute("SELECT count(*) FROM contacts WHERE account_id = %s", (acc,)).fetchone()[0],
            "deals": c.execute("SELECT count(*) FROM deals d JOIN contacts c ON c.id = d.contact_id WHERE c.account_id = %s", (acc,)).fetchone()[0],
            "invoice_lines": c.execute("SELECT count(*) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_ref WHERE i.account_id = %s", (acc,)).fetchone()[0],
            "notes": c.execute("SELECT count(*) FROM notes n WHERE (about_kind = 'contact' AND about_id IN (SELECT id FROM contacts WHERE account_id = %s))"
                               " OR (about_kind = 'invoice' AND about_id IN (SELECT id FROM invoices WHERE account_id = %s))", (acc, acc)).fetchone()[0],
        }


def test_another_application_moves_its_tenants(env, monkeypatch):
    from residency import directory

    monkeypatch.setenv("RESIDENCY_APP_SCHEMA", "crm")
    cat = _catalogue()
    for r in ("us", "eu"):
        with psycopg.connect(env.dsn(r), autocommit=True) as c:
            c.execute(DDL)
    _fill(env.dsn("us"), ["acme", "globex", "initech"], 1_000_000)
    _fill(env.dsn("eu"), ["umbrella"], 2_000_000)
    with psycopg.connect(env.control_dsn) as c:
        for acc, region in (("acme", "us"), ("globex", "us"), ("initech", "us"), ("umbrella", "eu")):
            directory.register(c, acc, region)
        c.commit()
    env.s3("us").put_object(Bucket=env.connections.region("us").bucket("attachments"), Key="accounts/globex/logo.png", Body=b"\x89PNG...")

    plan = plan_move(cat, env.connections, "globex", "eu")
    assert plan.ok, plan.refusals
    kinds = {t.table: t.kind for t in plan.tables}
    assert kinds == {"accounts": "root", "contacts": "key", "invoices": "key", "deals": "fk",
                     "invoice_lines": "reference", "notes": "polymorphic"}
    assert [g.table for g in plan.globals] == ["currencies"]

    before = _count(env.dsn("us"), "globex")
    rec = start_move(cat, env.connections, "globex", "eu")
    assert rec.state == "cut_over"
    assert _count(env.dsn("eu"), "globex") == before
    assert _count(env.dsn("eu"), "umbrella")["contacts"] == 40  # the target's own tenant untouched
    assert verify_workspace(cat, env.connections, "globex", "us", "eu").ok
    # target sequences moved past the copied ids: a new invoice in eu does not collide
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        c.execute("INSERT INTO crm.invoices (account_id, total) VALUES ('globex', 1)")
        c.execute("INSERT INTO crm.contacts (account_id, email) VALUES ('globex', 'new@globex.example')")
    # the fence covered the configured and polymorphic paths in the source
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            c.execute("UPDATE crm.invoice_lines SET item = 'x' WHERE invoice_ref IN (SELECT id FROM crm.invoices WHERE account_id = 'globex')")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            c.execute("INSERT INTO crm.notes (about_kind, about_id, body) SELECT 'invoice', id, 'late' FROM crm.invoices WHERE account_id = 'globex' LIMIT 1")
        c.execute("INSERT INTO crm.notes (about_kind, about_id, body) SELECT 'invoice', id, 'fine' FROM crm.invoices WHERE account_id = 'acme' LIMIT 1")
    cleanup_move(cat, env.connections, rec.id, grace=timedelta(0))
    assert _count(env.dsn("us"), "globex") == {"contacts": 0, "deals": 0, "invoice_lines": 0, "notes": 0}
    assert _count(env.dsn("us"), "acme")["contacts"] == 40
