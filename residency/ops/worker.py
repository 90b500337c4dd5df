"""The worker: claims due, approved move requests from the control plane and runs their moves.

Several workers on several machines may run at once against one control plane. Why plain
PostgreSQL row locks and no job library: the requests already live in the control plane next to
the moves, the directory and the audit log, so a claim, its audit entry and its notice commit in
one transaction with them; a job library (procrastinate, pgqueuer, ...) would keep a second copy
of each request's state in its own tables, and its retry/"at least once" semantics would still
need the checks below to make a move run once. So the job engine (procrastinate, issue 14:
:mod:`residency.ops.jobs`) *hosts* this loop -- its ``move_requests`` job claims one request with
:meth:`Worker.claim` and runs it with :meth:`Worker.run_claimed` -- and the claim, lease and
heartbeat stay what makes a move run once. What we need is three statements:

- **claim** — ``SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1`` over requests that are approved and
  inside their window (or running under a worker whose lease has expired), then ``state =
  'running', worker = me, lease_until = now() + lease`` in the same transaction. Two workers
  never get the same row: the second one skips the locked row, and after the commit the row no
  longer matches.
- **heartbeat** — a thread renews ``lease_until`` while the move runs (only while ``worker = me``).
  A worker that dies stops renewing; once the lease has expired another worker claims the
  request and *resumes* its move (found by ``move_id`` or the workspace's open move) instead of
  starting a new one. The mover keeps its own lease on the move (``moves.claim``), so two
  processes never advance one move either, and the database allows one open move per workspace.
- **finish** — ``done``/``failed``/``skipped`` only ``WHERE worker = me``: a worker that lost
  its lease can't overwrite the outcome of the one that took over.

A move whose estimated duration (from the plan's sizes and a configurable throughput, see
:class:`residency.requests.Throughput`) would end after the window closes is not started: the
request becomes ``skipped`` with the estimate and the window in its reason.

The mover is reached through :func:`mover` (one small adapter over ``migrate``), so tests can
inject a runner and the worker does not depend on the mover's internals.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable

import psycopg

from residency import audit, moves
from . import requests as rq
from residency.estimates import plan_sizes
from .moving import Mover, mover  # noqa: F401
from residency.audit import Actor
from residency.catalogue import Catalogue
from residency.db import connect
from residency.errors import OperationError, ResidencyError, first_line
from residency.threads import start_and_wait

log = logging.getLogger("residency.worker")

# --------------------------------------------------------------------------- the worker


@dataclass(frozen=True)
class Outcome:
    request_id: int
    workspace_id: str
    state: str
    reason: str | None
    move_id: int | None
    resumed: bool = False


@dataclass
class WorkerConfig:
    lease_seconds: float = 60.0
    heartbeat_seconds: float | None = None  # default: a third of the lease
    poll_seconds: float = 10.0
    throughput: rq.Throughput = field(default_factory=rq.Throughput.from_env)

    @property
    def beat(self) -> float:
        return self.heartbeat_seconds or max(0.2, self.lease_seconds / 3)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


_CLAIM = """
SELECT id, state, worker, now() FROM residency.requests
 WHERE (state = 'approved' AND window_start <= now())
    OR (state = 'running' AND (lease_until IS NULL OR lease_until < now()))
 ORDER BY window_start, id
 LIMIT 1
 FOR UPDATE SKIP LOCKED
"""


class Worker:
    """One claim-and-run loop with its own control-plane connection. Thread-confined."""

    def __init__(
        self,
        cat: Catalogue,
        conns: Any,
        *,
        worker_id: str | None = None,
        mover_: Mover | None = None,
        notifier: Any = None,
        config: WorkerConfig | None = None,
    ):
        self.cat = cat
        self.conns = conns
        self.id = worker_id or default_worker_id()
        self.mover = mover_ or mover()
        self.notifier = notifier
        self.config = config or WorkerConfig()
        base = Actor.current()
        self.actor = Actor(f"worker {self.id}", base.origin)
        self._conn: psycopg.Connection[Any] | None = None
        self._digest_checked = float("-inf")

    # -- plumbing
    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.conns.control_dsn, application_name=f"residency-worker {self.id}"[:63])
        return self._conn

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()

    def _periodic_digest(self) -> None:
        """When idle: the audit chain's periodic signed digest, if one is due (residency.anchor)."""
        from residency import anchor

        cfg = getattr(self.conns, "anchor", None)
        now = time.monotonic()
        if cfg is None or now - self._digest_checked < 60:  # look at most once a minute
            return
        self._digest_checked = now
        try:
            with connect(self.conns.control_dsn, autocommit=True) as c:
                anchor.digest_if_due(c, cfg)
        except Exception as exc:  # noqa: BLE001 - a digest is retried on the next idle turn
            log.warning("audit digest not written: %s", exc)

    def _event(self, req: rq.Request, event: str, action: str, details: dict[str, Any], *, move: Any = None, ids: list[int]) -> None:
        """Audit and keep a notice, inside the current transaction."""
        from . import notify

        audit.append(self.conn, action, req.subject, {"workspace_id": req.workspace_id, "worker": self.id, **details}, self.actor)
        ids.append(notify.record(self.conn, event, req, cat=self.cat, move=move, deliver=bool(self.notifier and self.notifier.enabled)))

    def _flush(self, ids: list[int]) -> None:
        if self.notifier is not None and ids:
            self.notifier.submit(list(ids))
        ids.clear()

    # -- claim
    def claim(self) -> tuple[rq.Request, bool] | None:
        """Claim the next due request; (request, resuming) or None when nothing is due.

        Approved requests whose window closed before anyone picked them up are marked
        ``skipped`` on the way.
        """
        conn = self.conn
        while True:
            ids: list[int] = []
            with conn.transaction():
                row = conn.execute(_CLAIM).fetchone()
                if row is None:
                    return None
                rid, state, prev_worker, now = row
                req = rq.get(conn, rid)
                if state == "approved" and req.window_end <= now:
                    req = rq.transition(conn, rid, "skipped", expect=("approved",),
                                        reason=f"the window {req.window} closed before a worker picked the request up")
                    self._event(req, "skipped", "request.skip", {"reason": req.state_reason}, ids=ids)
                else:
                    conn.execute(
                        "UPDATE residency.requests SET state = 'running', worker = %s, attempts = attempts + 1,"
                        " lease_until = now() + make_interval(secs => %s), updated_at = now() WHERE id = %s",
                        (self.id, self.config.lease_seconds, rid),
                    )
                    req = rq.get(conn, rid)
                    resuming = state == "running"
                    audit.append(conn, "request.takeover" if resuming else "request.claim", req.subject,
                                 {"workspace_id": req.workspace_id, "worker": self.id, **({"previous_worker": prev_worker} if resuming else {})},
                                 self.actor)
                    return req, resuming
            self._flush(ids)

    # -- run
    def run_one(self) -> Outcome | None:
        """Claim one due request and carry it to an end state; None if nothing was due."""
        claimed = self.claim()
        if claimed is None:
            return None
        return self.run_claimed(*claimed)

    def run_claimed(self, req: rq.Request, resuming: bool) -> Outcome:
        """Carry a request this worker has claimed (:meth:`claim`) to an end state."""
        try:
            return self._run(req, resuming)
        except Exception as exc:  # a bug or an unexpected fault: record it, keep the worker alive
            log.exception("request %s", req.id)
            if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.conn.rollback()
            return self._finish(req, "failed", f"{type(exc).__name__}: {exc}", None)

    def _finish(self, req: rq.Request, state: str, reason: str | None, move: moves.MoveRecord | None, result: dict[str, Any] | None = None) -> Outcome:
        ids: list[int] = []
        try:
            with self.conn.transaction():
                extra: dict[str, Any] = {"worker": self.id}
                if move is not None:
                    extra["move_id"] = move.id
                if result is not None:
                    extra["result"] = result
                req = rq.transition(self.conn, req.id, state, expect=("running",), reason=reason, worker=self.id, extra=extra)
                action = {"done": "request.done", "failed": "request.fail", "skipped": "request.skip"}[state]
                self._event(req, state, action, {"reason": reason, "move_id": getattr(move, "id", None)}, move=move, ids=ids)
        except OperationError as exc:
            log.warning("request %s: not recording %s: %s", req.id, state, exc)
            return Outcome(req.id, req.workspace_id, "lost", str(exc), getattr(move, "id", None))
        self._flush(ids)
        return Outcome(req.id, req.workspace_id, state, reason, getattr(move, "id", None))

    def _find_move(self, req: rq.Request) -> moves.MoveRecord | None:
        """The move this request started, if any: its recorded id, or the workspace's move to the
        target created since the request was claimed for the first time."""
        if req.move_id:
            return moves.get(self.conn, req.move_id)
        return moves.latest_since(self.conn, req.workspace_id, req.target, req.created_at)

    def _run(self, req: rq.Request, resuming: bool) -> Outcome:
        conn = self.conn
        move = self._find_move(req) if resuming else None
        conn.commit()
        if move is not None and move.state in ("cut_over", "cleaned"):
            return self._finish(req, "done", None, move, {"move_state": move.state, "note": "finished before the previous worker stopped"})
        if move is not None and move.state == "rolled_back":
            return self._finish(req, "failed", f"move {move.id} was rolled back", move)
        if move is not None:
            ids: list[int] = []
            with conn.transaction():
                req = rq.transition(conn, req.id, "running", expect=("running",), worker=self.id, extra={"move_id": move.id})
                self._event(req, "resumed", "request.resume", {"move_id": move.id, "move_state": move.state}, move=move, ids=ids)
            self._flush(ids)
            return self._execute(req, lambda progress: self.mover.resume(self.cat, self.conns, move.id, actor=self.actor, progress=progress), resumed=True)

        # a fresh start: plan now (sizes change), and only start what fits the window
        try:
            plan = self.mover.plan(self.cat, self.conns, req.workspace_id, req.target, req.strategy)
        except ResidencyError as exc:
            return self._finish(req, "failed", f"plan: {first_line(exc)}", None)
        est = rq.estimate(plan_sizes(plan), req.strategy, self.config.throughput)
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        conn.commit()
        ends = now + timedelta(seconds=est["seconds"])
        if ends > req.window_end:
            left = max(timedelta(0), req.window_end - now)
            reason = (
                f"estimated {rq.format_duration(est['seconds'])} (at {est['throughput_bytes_per_second'] / 1024**2:.0f} MB/s"
                f" for {est['bytes'] + est['object_bytes']} bytes) but the window {req.window} has {rq.format_duration(left)} left"
            )
            with conn.transaction():
                conn.execute("UPDATE residency.requests SET estimate = %s WHERE id = %s", (psycopg.types.json.Jsonb(est), req.id))
            return self._finish(req, "skipped", reason, None, {"estimate": est, "would_end": ends.isoformat()})
        ids = []
        with conn.transaction():
            conn.execute("UPDATE residency.requests SET estimate = %s WHERE id = %s", (psycopg.types.json.Jsonb(est), req.id))
            req = rq.get(conn, req.id)
            self._event(req, "started", "request.start", {"estimated_seconds": est["seconds"]}, ids=ids)
        self._flush(ids)
        return self._execute(
            req,
            lambda progress: self.mover.start(self.cat, self.conns, req.workspace_id, req.target, strategy=req.strategy, actor=self.actor,
                                             progress=progress, plan=plan),
            resumed=False,
        )

    def _give_back_if_leased(self, req: rq.Request, move: moves.MoveRecord | None) -> Outcome | None:
        """The mover refused because another live process still holds the move's lease (the
        previous worker may be slow, not dead): hand the request back until that lease ends."""
        if move is None:
            return None
        with self.conn.transaction():
            cur = moves.get(self.conn, move.id)
            now = self.conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
            if not (cur.lease_owner and cur.lease_until and cur.lease_until > now):
                return None
            self.conn.execute(
                "UPDATE residency.requests SET lease_until = %s, worker = NULL WHERE id = %s AND worker = %s",
                (cur.lease_until, req.id, self.id),
            )
        return Outcome(req.id, req.workspace_id, "waiting", f"move {cur.id} is driven by {cur.lease_owner} until {cur.lease_until.isoformat()}", cur.id, True)

    def _execute(self, req: rq.Request, run: Callable[[Any], moves.MoveRecord], *, resumed: bool) -> Outcome:
        hb = _Heartbeat(self, req)
        hb.start()
        try:
            move = run(None)
        except ResidencyError as exc:
            hb.stop()
            move = hb.move()
            if resumed:
                waiting = self._give_back_if_leased(req, move)
                if waiting is not None:
                    return waiting
            first = first_line(exc)
            if getattr(exc, "refusals", None):  # migrate.MoveRefused: every refusal, not the heading line
                first = "move refused: " + "; ".join(exc.refusals)  # type: ignore[attr-defined]
            return self._finish(req, "failed", f"move: {first}", move)
        finally:
            hb.stop()
        hb.notice_state(move)
        if move.state in ("cut_over", "cleaned"):
            out = self._finish(req, "done", None, move, {"move_state": move.state, "report": move.report})
        else:
            out = self._finish(req, "failed", f"move {move.id} ended {move.state}" + (f": {move.error}" if move.error else ""), move)
        return Outcome(out.request_id, out.workspace_id, out.state, out.reason, out.move_id, resumed)

    def run(self, *, once: bool = False, stop: threading.Event | None = None, on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        """Claim and run requests until nothing is due (``once``) or ``stop`` is set; each
        outcome also goes to ``on_outcome`` as it happens."""
        stop = stop or threading.Event()
        out: list[Outcome] = []
        try:
            while not stop.is_set():
                if self.notifier is not None:
                    self.notifier.retry_undelivered()
                o = self.run_one()
                if o is not None:
                    out.append(o)
                    if on_outcome is not None:
                        on_outcome(o)
                    continue
                self._periodic_digest()
                if once:
                    break
                stop.wait(self.config.poll_seconds)
        finally:
            self.close()
        return out


class _Heartbeat:
    """Renews the request's lease while its move runs, records the move id as soon as the mover
    has created it, and keeps a notice for each move state it sees."""

    def __init__(self, worker: Worker, req: rq.Request):
        self.w = worker
        self.req = req
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{req.id}", daemon=True)
        self._conn: psycopg.Connection[Any] | None = None
        self._last_state: str | None = None
        self._move_id: int | None = req.move_id
        self.lost = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def move(self) -> moves.MoveRecord | None:
        if self._move_id is None:
            return None
        with connect(self.w.conns.control_dsn, autocommit=True) as c:
            return moves.get(c, self._move_id)

    def _loop(self) -> None:
        try:
            self._conn = connect(self.w.conns.control_dsn, autocommit=True, application_name="residency-heartbeat")
        except ResidencyError as exc:
            log.warning("heartbeat for request %s: %s", self.req.id, exc)
            return
        try:
            while True:
                self._beat()
                if self._stop.wait(self.w.config.beat):
                    break
        finally:
            self._conn.close()

    def _beat(self) -> None:
        c = self._conn
        assert c is not None
        try:
            row = c.execute(
                "UPDATE residency.requests SET lease_until = now() + make_interval(secs => %s)"
                " WHERE id = %s AND worker = %s AND state = 'running' RETURNING id",
                (self.w.config.lease_seconds, self.req.id, self.w.id),
            ).fetchone()
            if row is None and not self.lost:
                self.lost = True
                log.warning("request %s: lease lost (another worker took it over)", self.req.id)
            if self._move_id is None:
                m = moves.latest_since(c, self.req.workspace_id, self.req.target, self.req.created_at)
                if m:
                    self._move_id = m.id
                    c.execute("UPDATE residency.requests SET move_id = %s WHERE id = %s AND worker = %s", (self._move_id, self.req.id, self.w.id))
            if self._move_id is not None:
                self.notice_state(moves.get(c, self._move_id), c)
        except psycopg.Error as exc:
            log.warning("heartbeat for request %s: %s", self.req.id, first_line(exc))

    def notice_state(self, move: moves.MoveRecord | None, c: psycopg.Connection[Any] | None = None) -> None:
        """Keep a notice when the move's state differs from the last one seen."""
        if move is None or move.state == self._last_state:
            return
        self._last_state = move.state
        from . import notify

        own = c is None
        conn = c or connect(self.w.conns.control_dsn, autocommit=True)
        try:
            with conn.transaction():
                req = rq.get(conn, self.req.id)
                nid = notify.record(conn, f"move.{move.state}", req, cat=self.w.cat, move=move,
                                    deliver=bool(self.w.notifier and self.w.notifier.enabled))
            if self.w.notifier is not None:
                self.w.notifier.submit([nid])
        finally:
            if own:
                conn.close()


# --------------------------------------------------------------------------- a fleet in one process


def run_workers(
    cat: Catalogue,
    conns: Any,
    *,
    concurrency: int = 1,
    once: bool = False,
    mover_: Mover | None = None,
    notifier: Any = None,
    config: WorkerConfig | None = None,
    stop: threading.Event | None = None,
    worker_id: str | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``concurrency`` workers (threads, each with its own connection) until done/stopped;
    ``on_outcome`` hears of each request's outcome as it happens (from the worker's thread)."""
    from residency.controlplane import ensure_schema

    if concurrency < 1:
        from residency.errors import InputError

        raise InputError("--concurrency must be at least 1")
    with connect(conns.control_dsn) as c:
        ensure_schema(c)
        from residency import authz

        authz.require(c, authz.OPERATOR, "running the worker")
    base = worker_id or default_worker_id()
    stop = stop or threading.Event()
    results: list[list[Outcome]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []

    def body(i: int) -> None:
        w = Worker(cat, conns, worker_id=f"{base}/{i}" if concurrency > 1 else base, mover_=mover_, notifier=notifier, config=config)
        try:
            results[i] = w.run(once=once, stop=stop, on_outcome=on_outcome)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), name=f"worker-{i}") for i in range(concurrency)]
    try:
        start_and_wait(threads)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
    if notifier is not None:
        notifier.flush(timeout=notifier.timeout * notifier.attempts + 1)
    if errors:
        raise errors[0]
    return [o for r in results for o in r]
