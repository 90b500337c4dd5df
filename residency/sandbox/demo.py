"""`residency demo`: the whole toolkit on the local sandbox, as a library function.

:func:`run_demo` brings the sandbox up if needed, seeds it if it is empty and reports what is
there. The mover adds its steps (plan, move a workspace from ``us`` to ``eu``, verify, report)
by extending :class:`DemoResult` and :func:`run_demo`; the CLI only renders the result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from psycopg import sql

from ..catalogue import Catalogue
from ..connections import Connections, s3_client
from ..db import connect
from . import core
from .seed import TABLES, SeedResult, seed

DEMO_WORKSPACES = 24
DEMO_ROWS = 200_000
DEMO_SEED = 1


@dataclass(frozen=True)
class RegionSummary:
    region: str
    dsn: str
    workspaces: int
    users: int
    rows: dict[str, int]
    objects: int
    buckets: tuple[str, ...]

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values()) + self.users


@dataclass
class DemoResult:
    home: str
    status: core.SandboxStatus
    seeded: SeedResult | None
    """The seed run by this demo, or None if the sandbox already had workspaces."""
    regions: list[RegionSummary]
    directory_entries: int
    timings: dict[str, float] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    """Room for later steps (the move, its report)."""


def summarise(cat: Catalogue, conns: Connections) -> tuple[list[RegionSummary], int]:
    """What is in each region (exact row counts per table, objects per bucket) and the directory size."""
    out = []
    for name in cat.regions:
        if name not in conns.regions:
            continue
        ep = conns.region(name)
        with connect(ep.dsn) as c:
            rows = {}
            for t in TABLES:
                rows[t] = c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]
            users = c.execute("SELECT count(*) FROM users").fetchone()[0]
        client = s3_client(ep)
        objects = 0
        buckets = tuple(ep.bucket(b) for b in cat.region(name).environment.buckets)
        for b in buckets:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=b):
                objects += page.get("KeyCount", 0)
        out.append(RegionSummary(name, ep.dsn, rows["workspaces"], users, rows, objects, buckets))
    with connect(conns.control_dsn) as c:
        n = c.execute("SELECT count(*) FROM residency.directory").fetchone()[0]
    return out, n


def run_demo(
    cat: Catalogue,
    progress_callback: Callable[[str], None] | None = None,
    *,
    home: str | None = None,
    workspaces: int = DEMO_WORKSPACES,
    rows: int = DEMO_ROWS,
    seed_value: int = DEMO_SEED,
    move: bool = True,
) -> DemoResult:
    say = progress_callback or (lambda _: None)
    timings: dict[str, float] = {}
    steps: list[str] = []
    t0 = time.monotonic()
    say("sandbox: bringing it up (idempotent)")
    st = core.up(cat, home, say)
    timings["up"] = time.monotonic() - t0
    steps.append(f"sandbox up: {len(st.servers)} servers healthy" if st.healthy else "sandbox up: NOT all healthy")
    conns = core.sandbox_connections(cat, home)
    assert conns is not None  # up() just started it
    with connect(conns.control_dsn) as c:
        registered = c.execute("SELECT count(*) FROM residency.directory").fetchone()[0]
    seeded = None
    if registered == 0:
        say(f"seed: {workspaces} workspaces, about {rows:,} rows (seed {seed_value})")
        t = time.monotonic()
        seeded = seed(cat, conns, workspaces=workspaces, rows=rows, seed=seed_value, progress=say)
        timings["seed"] = time.monotonic() - t
        steps.append(f"seeded {len(seeded.rows)} workspaces, {seeded.total_rows:,} rows in {timings['seed']:.1f}s")
    else:
        steps.append(f"already seeded: {registered} workspaces in the directory")
    t = time.monotonic()
    regions, n = summarise(cat, conns)
    timings["summary"] = time.monotonic() - t
    extra: dict[str, Any] = {}
    if move:
        t = time.monotonic()
        extra["move"] = demo_move(cat, as_login(conns, "sandbox_operator"), say)  # a real role, not the superuser
        timings["move"] = time.monotonic() - t
        m = extra["move"]
        steps.append(m["summary"])
    timings["total"] = time.monotonic() - t0
    return DemoResult(str(core._home(home)), st, seeded, regions, n, timings, steps, extra)


def as_login(conns: Connections, login: str) -> Connections:
    """The same connections with the control plane reached as ``login`` (one of the sandbox's
    logins per role, residency.controlplane.SANDBOX_LOGINS), so authorization is real."""
    from dataclasses import replace

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    d = conninfo_to_dict(conns.control_dsn)
    d["user"] = login
    return replace(conns, control_dsn=make_conninfo(**d))


def demo_move(cat: Catalogue, conns: Connections, say: Callable[[str], None], source: str = "us", target: str = "eu") -> dict[str, Any]:
    """The mover's part of the demo: plan and move one workspace from ``source`` to ``target``
    (the smallest one homed there that may move), verified, and return its report."""
    from residency.migrate import move_report, plan_move, start_move
    from residency.migrate.plan import render as render_plan
    from residency.migrate.progress import render as render_progress
    from residency.migrate.report import render as render_report

    from .. import directory
    from ..errors import OperationError

    with connect(conns.control_dsn) as c:
        candidates = [e.workspace_id for e in directory.list_entries(c, source) if e.status == "active"]
    plans = []
    for ws in candidates[:8]:
        p = plan_move(cat, conns, ws, target)
        if p.ok:
            plans.append(p)
    if not plans:
        raise OperationError(f"demo: no workspace in {source} can move to {target} (all moved already? `residency sandbox reset`)")
    plan = min(plans, key=lambda p: p.total_rows)
    say(f"move: workspace {plan.workspace_id}, {plan.total_rows:,} rows, {plan.object_count} objects, {source} → {target}")

    def progress(e: Any) -> None:
        if e.finished or e.phase == "state":
            say(render_progress(e))

    rec = start_move(cat, conns, plan.workspace_id, target, progress=progress)
    rep = move_report(conns, rec.id)
    verified = "verified" if rep["verified"] else "NOT verified"
    return {
        "move_id": rec.id,
        "workspace_id": plan.workspace_id,
        "state": rec.state,
        "plan": plan.to_dict(),
        "plan_text": render_plan(plan),
        "report": rep,
        "report_text": render_report(rep),
        "summary": f"moved workspace {plan.workspace_id} {source} → {target} (move {rec.id}, {rec.state}, {verified}, "
                   f"{plan.total_rows:,} rows, {plan.object_count} objects)",
    }
