"""Helpers for the issue-16 tests that run the toolkit against an application of their own: a
regions file with its own `workspace:` section, a connections file pointing at the test's
databases, and a CLI runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent

# A Rails-style app's per-tenant sequence: made by an AFTER INSERT trigger on accounts, used by a
# BEFORE INSERT trigger numbering each tenant's conversations (schema of the running DDL).
PER_TENANT_SEQUENCE_TRIGGERS = """
CREATE FUNCTION accounts_make_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE SEQUENCE IF NOT EXISTS %I.%I', TG_TABLE_SCHEMA, 'conv_dpid_seq_' || NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER accounts_after_insert AFTER INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION accounts_make_seq();
CREATE FUNCTION conversations_display_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.display_id := nextval(format('%I.%I', TG_TABLE_SCHEMA, 'conv_dpid_seq_' || NEW.account_id));
    RETURN NEW;
END $$;
CREATE TRIGGER conversations_before_insert BEFORE INSERT ON conversations FOR EACH ROW EXECUTE FUNCTION conversations_display_id();
"""


def catalogue_with(workspace_yaml: str, file: str = "app-regions.yaml") -> Any:
    from residency import catalogue

    text = (REPO / "regions.yaml").read_text()
    return catalogue.loads(text[: text.index("workspace:")] + workspace_yaml, file)


def apply_replica_identity_fixes(dsn: str, plan: Any) -> list[str]:
    """Run, in the database at ``dsn``, the statements an online plan's replica-identity refusals
    give as their fix (what an operator would do); returns those fixes."""
    import re

    import psycopg

    fixes = [m.group(1) for r in plan.refusals for m in [re.search(r"fix: (.*)$", r)] if m and "replica identity" in r]
    with psycopg.connect(dsn, autocommit=True) as c:
        for f in fixes:
            for stmt in f.split(";"):
                if stmt.strip():
                    c.execute(stmt)
    return fixes


def regions_file(tmp_path: Path, workspace_yaml: str) -> Path:
    text = (REPO / "regions.yaml").read_text()
    p = tmp_path / "regions.yaml"
    p.write_text(text[: text.index("workspace:")] + workspace_yaml)
    return p


def use_env_connections(env: Any, tmp_path: Path, monkeypatch: Any) -> None:
    conf = tmp_path / "connections.yaml"
    conf.write_text(yaml.safe_dump({
        "control": {"dsn": env.control_dsn},
        "regions": {r: {"dsn": ep.dsn, "s3_endpoint": ep.s3_endpoint, "buckets": dict(ep.buckets)} for r, ep in env.connections.regions.items()},
    }))
    monkeypatch.setenv("RESIDENCY_CONNECTIONS", str(conf))


def cli(regions: Path, *args: str) -> Any:
    from residency.cli import main

    return CliRunner().invoke(main, ["--regions", str(regions), *args])
