"""The benchmark's own sandbox, in a temporary home (never the user's), and its worlds.

``temporary_sandbox()`` points ``$RESIDENCY_SANDBOX_HOME`` at a fresh temporary directory for this
process (and its children) before anything else runs, starts the sandbox there with
``residency.sandbox.up`` and destroys it afterwards. Worlds (fresh databases per region from the
sample-schema template, a control plane, buckets) come from :class:`residency.sandbox.world.World`,
the same machinery the tests' ``env`` fixture uses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
REGIONS_YAML = REPO / "regions.yaml"
SHARED_BUFFERS = "256MB"
"""The benchmark servers' buffer pool. The sandbox's 32MB (sized for tests on a laptop) is smaller
than one 10M-row table's indexes, so a copy into an indexed target would mostly measure buffer
eviction; 256MB is still far below a production server's (RDS: a quarter of the instance's
memory; PostgreSQL's own default is 128MB). Every contender runs against the same servers."""


@dataclass
class BenchSandbox:
    home: str
    catalogue: Any

    def world(self, prefix: str = "b") -> Any:
        from residency.sandbox.world import World

        w = World(self.catalogue, self.home, f"{prefix}{uuid.uuid4().hex[:8]}")
        w.create()
        return w


@contextlib.contextmanager
def temporary_sandbox(say: Any = None) -> Iterator[BenchSandbox]:
    from residency import catalogue as catalogue_mod
    from residency import pgserver
    from residency import sandbox as sb

    home = tempfile.mkdtemp(prefix="residency-bench-sandbox-")
    old = {k: os.environ.get(k) for k in (sb.HOME_ENV, "RESIDENCY_SANDBOX_DATA", pgserver.SHARED_BUFFERS_ENV)}
    os.environ[sb.HOME_ENV] = home
    os.environ.pop("RESIDENCY_SANDBOX_DATA", None)
    os.environ.setdefault(pgserver.SHARED_BUFFERS_ENV, SHARED_BUFFERS)
    try:
        cat = catalogue_mod.load(REGIONS_YAML)
        st = sb.up(cat, home, say)
        if not st.healthy:
            bad = "; ".join(f"{s.name}: {s.state} {s.detail}" for s in st.servers if not s.healthy)
            raise RuntimeError(f"benchmark sandbox did not come up healthy: {bad}")
        yield BenchSandbox(home, cat)
    finally:
        try:
            sb.destroy(home)
        finally:
            shutil.rmtree(home, ignore_errors=True)
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
