"""What every phase needs: the catalogue, connections, the workspace, both regions, the table
graph and the SQL builder. Built once per process from the source database's own schema."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import psycopg

from residency import db
from residency.audit import Actor
from residency.catalogue import Catalogue
from residency.connections import Connections, RegionEndpoints

from . import graph as graph_mod
from .introspect import introspect
from .progress import ProgressFn
from .sqlbuild import Builder


@dataclass
class MoveContext:
    cat: Catalogue
    conns: Connections
    workspace_id: str
    source: str
    target: str
    graph: graph_mod.Graph
    builder: Builder
    actor: Actor
    progress: ProgressFn | None = None
    move_id: int | None = None
    should_stop: Callable[[], bool] = lambda: False
    copy_options: Any = None  # migrate.chunks.CopyOptions (None: the defaults)

    @property
    def src(self) -> RegionEndpoints:
        return self.conns.region(self.source)

    @property
    def dst(self) -> RegionEndpoints:
        return self.conns.region(self.target)

    @contextlib.contextmanager
    def connect(self, which: str, *, autocommit: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """A connection to the source ('source'), the target ('target') or the control plane."""
        dsn = {"source": self.src.dsn, "target": self.dst.dsn, "control": self.conns.control_dsn}[which]
        conn = db.connect(dsn, autocommit=autocommit, application_name=f"residency-mover-{which}")
        try:
            yield conn
        finally:
            conn.close()

    def params(self, **extra: Any) -> dict[str, Any]:
        return self.builder.params(self.workspace_id, **extra)

    def emit(self, event: Any) -> None:
        if self.progress is not None:
            try:
                self.progress(event)
            except Exception:  # a broken progress display never breaks a move
                pass


def load_graph(conn: psycopg.Connection[Any], cat: Catalogue) -> graph_mod.Graph:
    return graph_mod.build(introspect(conn), cat.workspace)


def make_context(
    cat: Catalogue,
    conns: Connections,
    workspace_id: object,
    source: str,
    target: str,
    *,
    actor: Actor | None = None,
    progress: ProgressFn | None = None,
    move_id: int | None = None,
) -> MoveContext:
    with db.connect(conns.region(source).dsn, autocommit=True) as conn:
        g = load_graph(conn, cat)
    return MoveContext(cat, conns, str(workspace_id), source, target, g, Builder(g), actor or Actor.current(), progress, move_id)
