"""Small helpers shared by the benchmark sections."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Iterable

import psycopg

from .sandbox import REGIONS_YAML, REPO, BenchSandbox

Say = Callable[[str], None]


def median(xs: Iterable[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def checkpoint(world: Any, servers: Iterable[str]) -> None:
    """CHECKPOINT the given servers so no run pays for the previous run's dirty pages."""
    for s in servers:
        with psycopg.connect(world.admin_dsn(s), autocommit=True) as c:
            c.execute("CHECKPOINT")


def vacuum_analyze(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("VACUUM ANALYZE")


def seed_workspace(world: Any, rows: int, *, region: str = "us", seed: int = 1) -> tuple[str, int, float]:
    """One workspace of about ``rows`` rows in ``region`` (the sandbox's deterministic seed);
    returns (workspace id, its rows, seconds)."""
    t = time.monotonic()
    res = world.seed(workspaces=1, rows=rows, seed=seed, regions=[region])
    ws = res.workspace_ids[0]
    return str(ws), res.rows_of(ws), round(time.monotonic() - t, 2)


def run_child(sbx: BenchSandbox, world: Any, workspace: str, to: str, *, stop_after: str | None = None, strategy: str = "snapshot", timeout: float = 3600, jobs: int | None = None, target_dsn: str | None = None) -> dict[str, Any]:
    """Run one move in a child process (python -m bench.child); returns its JSON line.
    ``target_dsn``: reach the target as another role (e.g. a non-superuser owner)."""
    cmd = [sys.executable, "-m", "bench.child", "--home", sbx.home, "--token", world.token, "--regions", str(REGIONS_YAML),
           "--workspace", workspace, "--to", to, "--strategy", strategy]
    if stop_after:
        cmd += ["--stop-after", stop_after]
    if jobs:
        cmd += ["--jobs", str(jobs)]
    if target_dsn:
        cmd += ["--target-dsn", target_dsn]
    env = dict(os.environ, PYTHONPATH=str(REPO) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
    p = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"move child failed (exit {p.returncode}): {tail}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def psql_binary(sbx: BenchSandbox) -> str:
    from residency import sandbox as sb

    state = sb.read_state(sbx.home) or {}
    cand = os.path.join(state.get("pg", {}).get("bindir", ""), "psql")
    if os.access(cand, os.X_OK):
        return cand
    import shutil

    found = shutil.which("psql")
    if not found:
        raise RuntimeError("psql not found (needed for the baseline pipe)")
    return found


def mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)
