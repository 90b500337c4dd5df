"""Shared helpers for the request/worker/notify tests: a control plane and an injectable mover.

The control plane is the ``env`` fixture's (tests/conftest.py: fresh databases per test on real
PostgreSQL servers). ``FakeMover`` drives real move records in that control plane (moves.create,
claim, transition, directory.move_home) without copying data, so the worker's claiming,
concurrency, lease and window logic is tested fast; the real mover is exercised in
test_worker_real.py.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from residency import catalogue, directory, moves
from residency.audit import Actor
from residency.connections import Connections
from residency.controlplane import ensure_schema
from residency.errors import InputError

REPO = Path(__file__).resolve().parent.parent
ALICE = Actor("alice@example.com", "test")      # sales: asks
BOB = Actor("bob-ops", "test")                   # ops: approves


@dataclass
class ControlPlane:
    dsn: str
    cat: catalogue.Catalogue
    conns: Any

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn)

    def register(self, *workspaces: tuple[str, str]) -> None:
        with self.connect() as c:
            for ws, region in workspaces:
                directory.register(c, ws, region)
            c.commit()


def control_plane(env: Any) -> ControlPlane:
    """A control plane with its schema, from the ``env`` fixture. The fake mover's workspaces have
    made-up text ids ('ws-1'), so its catalogue declares a text workspace key."""
    import dataclasses

    with psycopg.connect(env.control_dsn) as c:
        ensure_schema(c)
    cat = dataclasses.replace(env.catalogue, workspace=dataclasses.replace(env.catalogue.workspace, key_type="text"))
    return ControlPlane(env.control_dsn, cat, env.connections)


class FakeMover:
    """A mover that walks a real move record through its states, without data.

    ``pause`` (seconds) between states; ``hang_after`` a state name after which it blocks (to be
    killed); ``sizes`` what plan() reports; ``refuse`` workspaces plan() refuses.
    """

    def __init__(self, dsn: str, *, sizes: dict[str, Any] | None = None, pause: float = 0.0, hang_after: str | None = None,
                 refuse: dict[str, str] | None = None, lease: float = 30.0):
        self.dsn = dsn
        self.sizes = sizes or {"rows": 101, "bytes": 8192 + 65536, "objects": 3, "object_bytes": 3000,  # as MovePlan.sizes()
                               "tables": {"workspaces": {"rows": 1, "bytes": 8192}, "messages": {"rows": 100, "bytes": 65536}}}
        self.pause = pause
        self.hang_after = hang_after
        self.refuse = refuse or {}
        self.lease = lease
        self.started: list[str] = []
        self.resumed: list[int] = []
        self._lock = threading.Lock()

    @staticmethod
    def owner() -> str:
        """Who holds a move's lease: this process and thread (as the real mover names itself)."""
        return f"fake:{os.getpid()}:{threading.get_ident()}"

    # the Mover interface
    def plan(self, cat: Any, conns: Any, ws: str, target: str, strategy: str) -> dict[str, Any]:
        if ws in self.refuse:
            raise InputError(self.refuse[ws])
        return {"sizes": dict(self.sizes)}  # what plan_sizes reads from a plan's dict

    def start(self, cat: Any, conns: Any, ws: str, target: str, *, strategy: str, actor: Actor, progress: Any = None,
              plan: Any = None) -> moves.MoveRecord:
        with self._lock:
            self.started.append(ws)
        owner = self.owner()
        with psycopg.connect(self.dsn) as c:
            home = directory.require(c, ws)
            m = moves.create(c, ws, home.region, target, strategy, {"sizes": self.sizes}, actor.who)
            assert moves.claim(c, m.id, owner, self.lease)
            directory.set_status(c, ws, "frozen")
            c.commit()
        return self._drive(m.id, owner)

    def resume(self, cat: Any, conns: Any, move_id: int, *, actor: Actor, progress: Any = None) -> moves.MoveRecord:
        with self._lock:
            self.resumed.append(move_id)
        owner = self.owner()
        with psycopg.connect(self.dsn) as c:
            if not moves.claim(c, move_id, owner, self.lease):
                raise AssertionError(f"move {move_id} still leased")
            c.commit()
        return self._drive(move_id, owner)

    def _drive(self, move_id: int, owner: str) -> moves.MoveRecord:
        order = ["planned", "fenced", "copied", "verified", "cut_over"]
        with psycopg.connect(self.dsn) as c:
            m = moves.get(c, move_id)
            c.commit()
            i = order.index(m.state)
            for nxt in order[i + 1:]:
                if self.hang_after == m.state:
                    time.sleep(3600)  # the test kills us here
                time.sleep(self.pause)
                if nxt == "cut_over":
                    directory.move_home(c, m.workspace_id, m.source, m.target)
                m = moves.transition(c, move_id, nxt, expect=(m.state,))
                moves.claim(c, move_id, owner, self.lease)
                c.commit()
            moves.release(c, move_id, owner)
            c.commit()
            return moves.get(c, move_id)


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out waiting")


@pytest.fixture
def cp(env: Any) -> ControlPlane:
    """The control plane of the ``env`` fixture (tests/conftest.py), with its schema."""
    return control_plane(env)
