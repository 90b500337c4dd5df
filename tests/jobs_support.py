"""Job-engine test helpers: a worker process on a test world's control plane, with two extra
tasks -- ``tick`` (periodic, records each period it ran for) and ``slow`` (sleeps on its first
attempt, records who ran it) -- in a table ``job_log`` of the control plane.

Run as ``python tests/jobs_support.py SPEC.json`` (SPEC: control_dsn, name, tick cron, ...)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import psycopg

LOG_DDL = "CREATE TABLE IF NOT EXISTS public.job_log (id bigserial, task text, at bigint, pid int, attempt int, note text)"


def log_row(dsn: str, task: str, at: int | None, attempt: int, note: str = "") -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO public.job_log (task, at, pid, attempt, note) VALUES (%s, %s, %s, %s, %s)",
                  (task, at, os.getpid(), attempt, note))


def extra_tasks(tick_cron: str | None, slow_seconds: float):  # type: ignore[no-untyped-def]
    def register(app: Any, rt: Any) -> None:
        dsn = rt.conns.control_dsn

        @app.task(name="tick", queue="residency", pass_context=True, queueing_lock="tick")
        def tick(context: Any, timestamp: int) -> None:
            log_row(dsn, "tick", timestamp, context.job.attempts)

        if tick_cron:
            app.periodic(cron=tick_cron, periodic_id="tick")(tick)

        @app.task(name="slow", queue="residency", pass_context=True)
        def slow(context: Any, timestamp: int | None = None) -> None:
            log_row(dsn, "slow-start", None, context.job.attempts)
            if context.job.attempts == 0:
                time.sleep(slow_seconds)
            log_row(dsn, "slow-end", None, context.job.attempts)
    return register


def main(spec_path: str) -> None:
    from residency import catalogue
    from residency.connections import Connections
    from residency.ops import jobs

    spec = json.loads(open(spec_path).read())
    cat = catalogue.load(spec["regions"])
    conns = Connections(spec["control_dsn"], {}, "test")
    off = {k: None for k in jobs.Schedule.__dataclass_fields__}
    off["recover_stalled"] = spec.get("recover_cron")
    jobs.run_worker(cat, conns, schedule=jobs.Schedule(**off), name=spec["name"], heartbeat=0.5, stalled_after=spec.get("stalled_after", 3.0),
                    on_outcome=lambda o: print(o.line(), flush=True), concurrency=2,
                    extra_tasks=extra_tasks(spec.get("tick_cron"), spec.get("slow_seconds", 60)))


if __name__ == "__main__":  # tests/test_jobs.py starts it with the repository on PYTHONPATH
    main(sys.argv[1])
