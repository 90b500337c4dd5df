"""Shared fixtures: one real sandbox per test session, fresh databases and buckets per test.

- ``sandbox`` (session): a running sandbox in a temporary home, built from the repository's
  regions.yaml (PostgreSQL servers for every region -- us, eu, au -- plus the control plane, and
  a moto S3 server). Started once, destroyed at the end of the session.
- ``env`` (function): a fresh, isolated world for one test: in every region server a new database
  made from the sample-schema template (``CREATE DATABASE ... TEMPLATE``, fast), a new
  control-plane database with the control-plane schema, and per-test bucket names created in the
  sandbox S3. ``env.catalogue``, ``env.connections``, ``env.dsn(region)``, ``env.control_dsn``,
  ``env.seed(workspaces=..., rows=..., seed=...)``. Everything is dropped afterwards.

Tests never touch the user's own sandbox: this file points ``$RESIDENCY_SANDBOX_HOME`` at a
temporary directory for the whole session, so even code that calls
``residency.connections.resolve()`` finds the test sandbox (or none), never the real one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator

import psycopg
import pytest
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
REGIONS_YAML = REPO / "regions.yaml"

_SESSION_HOME: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION_HOME
    _SESSION_HOME = tempfile.mkdtemp(prefix="residency-test-sandbox-")
    os.environ["RESIDENCY_SANDBOX_HOME"] = _SESSION_HOME
    os.environ.pop("RESIDENCY_SANDBOX_DATA", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_HOME and os.path.isdir(_SESSION_HOME):
        from residency import sandbox as sb

        try:
            sb.destroy(_SESSION_HOME)  # in case the session fixture never got to finish
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


# --------------------------------------------------------------------------- session sandbox


class Sandbox:
    """The session's running sandbox."""

    def __init__(self, home: str, catalogue: Any, status: Any):
        from residency import sandbox as sb

        self.home = home
        self.catalogue = catalogue
        self.status = status
        self.state = sb.read_state(home)
        self.s3_endpoint = sb.s3_endpoint(home)
        self.connections = sb.sandbox_connections(catalogue, home)

    def server_dsn(self, name: str, dbname: str = "postgres") -> str:
        """DSN of a server ('control' or a region) and database, e.g. for admin statements."""
        from residency import sandbox as sb

        return sb.server_dsn(self.home, name, dbname)

    @property
    def regions(self) -> list[str]:
        return list(self.state["regions"])


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    from residency import catalogue as catalogue_mod
    from residency import sandbox as sb

    assert _SESSION_HOME
    cat = catalogue_mod.load(REGIONS_YAML)
    st = sb.up(cat, _SESSION_HOME)
    if not st.healthy:
        bad = "; ".join(f"{s.name}: {s.state} {s.detail}" for s in st.servers if not s.healthy)
        sb.destroy(_SESSION_HOME)
        pytest.fail(f"test sandbox did not come up healthy: {bad}")
    try:
        yield Sandbox(_SESSION_HOME, cat, st)
    finally:
        sb.destroy(_SESSION_HOME)


# --------------------------------------------------------------------------- per-test world


class Env:
    """A fresh, isolated set of databases and buckets for one test."""

    def __init__(self, sandbox: Sandbox, token: str):
        from residency.connections import Connections, RegionEndpoints

        self.sandbox = sandbox
        self.catalogue = sandbox.catalogue
        self.token = token
        self.dbname = f"t_{token}"
        self.regions = sandbox.regions
        self.buckets: dict[str, dict[str, str]] = {
            r: {b: f"t{token}-{r}-{b}" for b in self.catalogue.region(r).environment.buckets}
            for r in self.regions
            if r in self.catalogue.regions
        }
        self.control_dsn = sandbox.server_dsn("control", self.dbname)
        eps = {
            r: RegionEndpoints(
                r, self.catalogue.region(r).aws_region, sandbox.server_dsn(r, self.dbname),
                sandbox.s3_endpoint, MappingProxyType(dict(self.buckets[r])),
            )
            for r in self.buckets
        }
        self.connections = Connections(self.control_dsn, MappingProxyType(eps), f"sandbox:{sandbox.home}")

    def dsn(self, region: str) -> str:
        return self.connections.region(region).dsn

    def admin_dsn(self, name: str) -> str:
        """The ``postgres`` maintenance database of a server ('control' or a region)."""
        return self.sandbox.server_dsn(name)

    def s3(self, region: str) -> Any:
        from residency.connections import s3_client

        return s3_client(self.connections.region(region))

    def seed(self, workspaces: int = 6, rows: int = 3000, seed: int = 1, **kwargs: Any) -> Any:
        from residency.sandbox.seed import seed as do_seed

        return do_seed(self.catalogue, self.connections, workspaces=workspaces, rows=rows, seed=seed, **kwargs)

    # ---- lifecycle (used by the fixture)
    def create(self) -> None:
        from residency import sandbox as sb

        def make(server: str, template: str) -> None:
            with psycopg.connect(self.sandbox.server_dsn(server), autocommit=True) as c:
                c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(self.dbname), sql.Identifier(template)))

        jobs = [("control", sb.CONTROL_TEMPLATE)] + [(r, sb.APP_TEMPLATE) for r in self.regions]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            for f in [pool.submit(make, *j) for j in jobs]:
                f.result()
        sb.ensure_buckets(self.catalogue, self.sandbox.state, names=self.buckets)

    def drop(self) -> list[str]:
        """Drop the test's databases (subscriptions and slots first) and buckets; returns problems."""
        problems: list[str] = []
        servers = ["control", *self.regions]
        # 1. subscriptions in our databases: detach from their slots, then drop
        for s in servers:
            try:
                with psycopg.connect(self.sandbox.server_dsn(s, self.dbname), autocommit=True) as c:
                    for (name,) in c.execute("SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = current_database()").fetchall():
                        ident = sql.Identifier(name)
                        c.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
                        c.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
                        c.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))
            except psycopg.OperationalError:
                pass  # database never created or already gone
            except psycopg.Error as exc:
                problems.append(f"{s}: subscriptions: {exc}")
        # 2. replication slots on our databases, then the databases
        for s in servers:
            try:
                with psycopg.connect(self.sandbox.server_dsn(s), autocommit=True) as c:
                    c.execute(
                        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = %s AND active_pid IS NOT NULL",
                        (self.dbname,),
                    )
                    for (slot,) in c.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (self.dbname,)).fetchall():
                        try:
                            c.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                        except psycopg.Error as exc:
                            problems.append(f"{s}: slot {slot}: {exc}")
                    c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.dbname)))
            except psycopg.Error as exc:
                problems.append(f"{s}: drop database {self.dbname}: {exc}")
        # 3. buckets
        try:
            for r, names in self.buckets.items():
                client = self.s3(r)
                for bucket in names.values():
                    try:
                        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                            if keys:
                                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
                        client.delete_bucket(Bucket=bucket)
                    except client.exceptions.NoSuchBucket:
                        pass
        except Exception as exc:  # noqa: BLE001 - report, don't mask the test's own result
            problems.append(f"s3: {exc}")
        return problems


_token_lock = threading.Lock()


@pytest.fixture
def env(sandbox: Sandbox) -> Iterator[Env]:
    with _token_lock:
        token = uuid.uuid4().hex[:10]
    e = Env(sandbox, token)
    e.create()
    try:
        yield e
    finally:
        problems = e.drop()
        if problems:
            import warnings

            warnings.warn("env teardown: " + "; ".join(problems), stacklevel=1)
