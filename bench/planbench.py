"""Plan: the time ``plan_move`` takes on a schema of N tables (200 by default).

A generated application in two regions' databases (``us`` the source, ``eu`` the target), with
every reach kind the planner must work out from the catalogue:

- ``workspaces``: the root (1 table);
- ``g_NN``: global tables (5% of N), referenced by the key tables, never moved wholesale;
- ``k_NNN``: tables with their own ``workspace_id`` (half of the rest);
- ``f_NNN``: tables that reach the workspace only through foreign-key chains, up to three hops
  (``f -> f -> f -> k``), the other half.

Each table holds a few rows of the moving workspace and of a second one in the source, and of a
third workspace homed in the target (ids that do not collide), so the key-conflict check and the
global rows check have real work. The catalogue is the repository's regions.yaml with its
``workspace:`` section describing this application. The plan runs ``runs`` times; the median
is reported.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import yaml
from psycopg import sql

from .common import Say, median
from .sandbox import REGIONS_YAML, BenchSandbox

SOURCE, TARGET = "us", "eu"
ROWS = 20  # rows per table per workspace


def layout(n_tables: int) -> dict[str, Any]:
    n_glob = max(1, n_tables // 20)
    rest = n_tables - 1 - n_glob
    n_key = (rest + 1) // 2
    n_fk = rest - n_key
    glob = [f"g_{i:02d}" for i in range(n_glob)]
    keys = [f"k_{i:03d}" for i in range(n_key)]
    fks: list[tuple[str, str]] = []
    for i in range(n_fk):
        # the first third hangs off key tables, the rest off earlier f tables: chains of 1-3 hops
        parent = keys[i % n_key] if i < max(1, n_fk // 3) else fks[i - max(1, n_fk // 3)][0]
        fks.append((f"f_{i:03d}", parent))
    return {"globals": glob, "keys": keys, "fks": fks}


def _ddl(lay: dict[str, Any]) -> list[sql.Composable]:
    I = sql.Identifier
    out: list[sql.Composable] = [
        sql.SQL("CREATE TABLE workspaces (id bigint PRIMARY KEY, name text NOT NULL, settings jsonb NOT NULL DEFAULT '{}', created_at timestamptz NOT NULL DEFAULT now())")
    ]
    for g in lay["globals"]:
        out.append(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, name text NOT NULL, info jsonb)").format(I(g)))
    for i, k in enumerate(lay["keys"]):
        g = lay["globals"][i % len(lay["globals"])]
        out.append(sql.SQL(
            "CREATE TABLE {t} (id bigint PRIMARY KEY, workspace_id bigint NOT NULL REFERENCES workspaces (id),"
            " {gcol} bigint REFERENCES {g} (id), name text NOT NULL, payload jsonb, tags text[] NOT NULL DEFAULT '{{}}',"
            " created_at timestamptz NOT NULL DEFAULT now())"
        ).format(t=I(k), gcol=I(f"{g}_id"), g=I(g)))
        out.append(sql.SQL("CREATE INDEX ON {} (workspace_id)").format(I(k)))
    for f, parent in lay["fks"]:
        out.append(sql.SQL(
            "CREATE TABLE {t} (id bigint PRIMARY KEY, parent_id bigint NOT NULL REFERENCES {p} (id),"
            " note text, amount numeric(12, 2), created_at timestamptz NOT NULL DEFAULT now())"
        ).format(t=I(f), p=I(parent)))
        out.append(sql.SQL("CREATE INDEX ON {} (parent_id)").format(I(f)))
    return out


def _fill(conn: psycopg.Connection[Any], lay: dict[str, Any], workspaces: list[tuple[int, int]]) -> None:
    """``workspaces``: (workspace id, first row id). Row ids of a workspace are first..first+ROWS-1
    in every table; an f row's parent has the same id, so every chain is consistent."""
    I = sql.Identifier
    for g in lay["globals"]:
        conn.execute(sql.SQL("INSERT INTO {} SELECT i, 'global ' || i, jsonb_build_object('i', i) FROM generate_series(1, 50) i").format(I(g)))
    for ws, first in workspaces:
        conn.execute("INSERT INTO workspaces (id, name) VALUES (%s, %s)", (ws, f"workspace {ws}"))
        for i, k in enumerate(lay["keys"]):
            g = lay["globals"][i % len(lay["globals"])]
            conn.execute(sql.SQL(
                "INSERT INTO {t} (id, workspace_id, {gcol}, name, payload) SELECT i, %(ws)s, 1 + i %% 50, 'row ' || i,"
                " jsonb_build_object('n', i) FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) i"
            ).format(t=I(k), gcol=I(f"{g}_id")), {"ws": ws, "lo": first, "hi": first + ROWS - 1})
        for f, _ in lay["fks"]:
            conn.execute(sql.SQL(
                "INSERT INTO {} (id, parent_id, note, amount) SELECT i, i, 'note ' || i, i * 1.5 FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) i"
            ).format(I(f)), {"lo": first, "hi": first + ROWS - 1})


def catalogue_for(lay: dict[str, Any]) -> Any:
    from residency import catalogue

    data = yaml.safe_load(REGIONS_YAML.read_text())
    data["workspace"] = {
        "root_table": "workspaces",
        "key_column": "workspace_id",
        "global_tables": list(lay["globals"]),
        "paths": {},
        "object_prefix": "workspaces/{workspace_id}/",
    }
    return catalogue.loads(yaml.safe_dump(data, sort_keys=False), file="bench-plan-regions.yaml")


def run(sbx: BenchSandbox, n_tables: int, runs: int, say: Say) -> dict[str, Any]:
    from residency import directory
    from residency.sandbox.world import World

    from residency.migrate import plan_move

    lay = layout(n_tables)
    world = sbx.world("p")
    try:
        t = time.monotonic()
        for region, fill in ((SOURCE, [(1, 1), (2, 1001)]), (TARGET, [(3, 5001)])):
            world.recreate_database(region, "template0")
            with psycopg.connect(world.dsn(region)) as conn:
                for stmt in _ddl(lay):
                    conn.execute(stmt)
                _fill(conn, lay, fill)
                conn.commit()
            with psycopg.connect(world.dsn(region), autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
        with psycopg.connect(world.control_dsn) as cp:
            with cp.transaction():
                for ws, region in ((1, SOURCE), (2, SOURCE), (3, TARGET)):
                    directory.register(cp, ws, region)
        build_s = round(time.monotonic() - t, 2)
        cat = catalogue_for(lay)
        w = World(cat, sbx.home, world.token)  # same databases, this application's catalogue
        say(f"plan: {n_tables} tables built in both regions in {build_s}s")
        times: list[float] = []
        plan = None
        for i in range(runs):
            t = time.monotonic()
            plan = plan_move(cat, w.connections, 1, TARGET)
            times.append(round(time.monotonic() - t, 3))
            if not plan.ok:
                raise RuntimeError("the 200-table plan was refused: " + "; ".join(plan.refusals[:3]))
        assert plan is not None
        kinds: dict[str, int] = {}
        for tp in plan.tables:
            kinds[tp.kind] = kinds.get(tp.kind, 0) + 1
        kinds["global"] = len(plan.globals)
        m = median(times)
        say(f"plan: {len(plan.tables) + len(plan.globals)} tables planned in {m}s (median of {runs})")
        return {
            "tables": len(plan.tables) + len(plan.globals),
            "moving_tables": len(plan.tables),
            "reach_kinds": kinds,
            "moving_rows": plan.total_rows,
            "runs_seconds": times,
            "median_seconds": m,
            "build_seconds": build_s,
        }
    finally:
        world.drop()
