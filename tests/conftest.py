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

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
REGIONS_YAML = REPO / "regions.yaml"

_SESSION_HOME: str | None = None


SESSION_MARK = "RESIDENCY_TEST_SESSION"
"""Set in this process's environment; every server the session starts (PostgreSQL, moto)
inherits it, so the end of the session can find any that outlived their sandbox."""


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION_HOME
    _SESSION_HOME = tempfile.mkdtemp(prefix="residency-test-sandbox-")
    os.environ["RESIDENCY_SANDBOX_HOME"] = _SESSION_HOME
    os.environ.pop("RESIDENCY_SANDBOX_DATA", None)
    os.environ[SESSION_MARK] = uuid.uuid4().hex


def session_processes() -> dict[int, str]:
    """pid -> command line of every live process started by this session (not pytest itself).

    A process's initial environment is in /proc/PID/environ; PostgreSQL's helper processes
    overwrite theirs with their title, but the postmaster, which owns them, keeps it."""
    from residency.processes import pid_alive

    mark = f"{SESSION_MARK}={os.environ[SESSION_MARK]}".encode()
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if mark not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or someone else's
            continue
        if pid_alive(int(entry.name)):
            found[int(entry.name)] = cmdline
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the session sandbox is destroyed, nothing the session started may still run: a
    survivor is reported as an error (and the run fails), then stopped."""
    if _SESSION_HOME and os.path.isdir(_SESSION_HOME):
        from residency import sandbox as sb

        try:
            sb.destroy(_SESSION_HOME)  # normally done already by the fixture
        except Exception:  # noqa: BLE001 - the check below reports what is left
            pass
    deadline = time.monotonic() + 10  # servers told to stop may take a moment to exit
    left = session_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = session_processes()
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    title = f"ERROR: {len(left)} process(es) started by this test session outlived it (now stopped)"
    lines = [f"pid {pid}: {cmd}" for pid, cmd in sorted(left.items())]
    if reporter is not None:
        reporter.write("\n")  # after the progress line
        reporter.write_sep("=", title, red=True, bold=True)
        for line in lines:
            reporter.write_line(line, red=True)
    else:
        print(title, *lines, sep="\n", file=sys.stderr)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
