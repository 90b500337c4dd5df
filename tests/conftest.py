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
from pathlib import Path
from typing import Any, Iterator

import pytest

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


from residency.sandbox.world import World  # noqa: E402 - the reusable part lives in the library


class Env(World):
    """A fresh, isolated set of databases and buckets for one test (see residency.sandbox.world)."""

    def __init__(self, sandbox: Sandbox, token: str):
        super().__init__(sandbox.catalogue, sandbox.home, token)
        self.sandbox = sandbox
        self.regions = sandbox.regions


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
