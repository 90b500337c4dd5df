"""Notices: kept with the request, delivered to a webhook after commit; a slow or broken webhook
never blocks or fails a move. The webhooks are tiny HTTP servers on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from request_helpers import ALICE, BOB, FakeMover, cp  # noqa: F401  (cp is a fixture)
from residency.ops import notify, requests as rq
from residency.errors import InputError
from residency.ops.worker import Worker, WorkerConfig


class Hook:
    """A webhook on 127.0.0.1: ``behaviour(n)`` → (status, sleep seconds) for the n-th request."""

    def __init__(self, behaviour):
        self.received: list[dict[str, Any]] = []
        hook = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = len(hook.received)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.received.append(json.loads(body))
                status, sleep = behaviour(n)
                time.sleep(sleep)
                try:
                    self.send_response(status)
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0KEN-secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_factory():
    made: list[Hook] = []

    def make(behaviour):
        h = Hook(behaviour)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def _window() -> str:
    return (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat(timespec="seconds") + "/1h"


def _notices(cp):
    with cp.connect() as c:
        return c.execute("SELECT event, delivery, attempts, last_error FROM residency.notices ORDER BY id").fetchall()


def test_notices_are_posted_after_commit(cp, hook_factory):
    hook = hook_factory(lambda n: (204, 0))
    cp.register(("ws-1", "us"))
    fm = FakeMover(cp.dsn)
    n = notify.Notifier(cp.dsn, hook.url, timeout=2)
    with cp.connect() as c:
        r = rq.create(c, cp.cat, cp.conns, "ws-1", "eu", _window(), "sales@example.com", "GDPR", actor=ALICE, planner=fm.plan, notifier=n)
        rq.approve(c, cp.cat, r.id, actor=BOB, notifier=n)
    assert n.flush(10)
    assert [p["event"] for p in hook.received] == ["created", "approved"]
    p = hook.received[0]
    assert (p["request_id"], p["workspace_id"], p["source"], p["target"]) == (r.id, "ws-1", "us", "eu")
    assert "awaits approval" in p["subject"] and "GDPR" in p["text"] and p["notice_id"]
    assert [(e, d, a) for e, d, a, _ in _notices(cp)] == [("created", "delivered", 1), ("approved", "delivered", 1)]


def test_a_webhook_that_times_out_does_not_block_the_move(cp, hook_factory):
    hook = hook_factory(lambda n: (200, 3.0))  # answers, but far too late
    cp.register(("ws-1", "us"))
    fm = FakeMover(cp.dsn)
    n = notify.Notifier(cp.dsn, hook.url, timeout=0.3, attempts=2, budget=1.0)
    with cp.connect() as c:
        r = rq.create(c, cp.cat, cp.conns, "ws-1", "eu", _window(), "sales@example.com", actor=ALICE, planner=fm.plan, notifier=n)
        rq.approve(c, cp.cat, r.id, actor=BOB, notifier=n)
    t0 = time.monotonic()
    out = Worker(cp.cat, cp.conns, worker_id="w", mover_=fm, notifier=n, config=WorkerConfig(lease_seconds=10)).run(once=True)
    elapsed = time.monotonic() - t0
    assert [o.state for o in out] == ["done"]
    # 5+ notices at up to ~0.8 s each would take > 4 s if delivery were inline
    assert elapsed < 2.5, f"the worker waited for the webhook ({elapsed:.1f}s)"
    assert n.flush(30)
    rows = _notices(cp)
    assert len(rows) >= 5 and {d for _, d, _, _ in rows} == {"failed"}
    assert all(a == 2 for _, _, a, _ in rows)  # bounded: two tries each
    assert all("timed out" in (err or "") for _, _, _, err in rows)
    assert not any("T0KEN" in (err or "") for _, _, _, err in rows)  # the URL's secret never lands in the database
    with cp.connect() as c:
        assert rq.get(c, r.id).state == "done"


def test_unreachable_webhook_and_http_errors(cp, hook_factory):
    cp.register(("ws-1", "us"), ("ws-2", "us"), ("ws-3", "us"))
    fm = FakeMover(cp.dsn)
    # nothing listens on this port
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}/x"
    s.close()
    n = notify.Notifier(cp.dsn, dead, timeout=0.5, attempts=2, budget=2)
    with cp.connect() as c:
        r = rq.create(c, cp.cat, cp.conns, "ws-1", "eu", _window(), "sales@example.com", actor=ALICE, planner=fm.plan, notifier=n)
    assert n.flush(10)
    assert _notices(cp)[-1][1:3] == ("failed", 2) and "unreachable" in _notices(cp)[-1][3]

    flaky = hook_factory(lambda i: (503, 0) if i == 0 else (200, 0))  # a 5xx is retried
    n2 = notify.Notifier(cp.dsn, flaky.url, timeout=1, attempts=3)
    with cp.connect() as c:
        rq.create(c, cp.cat, cp.conns, "ws-2", "eu", _window(), "sales@example.com", actor=ALICE, planner=fm.plan, notifier=n2)
    assert n2.flush(10)
    assert _notices(cp)[-1][1:3] == ("delivered", 2)

    gone = hook_factory(lambda i: (404, 0))  # a 4xx is not: retrying would not help
    n3 = notify.Notifier(cp.dsn, gone.url, timeout=1, attempts=3)
    with cp.connect() as c:
        rq.create(c, cp.cat, cp.conns, "ws-3", "eu", _window(), "sales@example.com", actor=ALICE, planner=fm.plan, notifier=n3)
    assert n3.flush(10)
    assert _notices(cp)[-1][1:4] == ("failed", 1, "webhook http://127.0.0.1:%d/… answered HTTP 404" % gone.server.server_address[1])

    # failed notices are tried again later, once the webhook works
    ok = hook_factory(lambda i: (200, 0))
    n4 = notify.Notifier(cp.dsn, ok.url)
    n4.retry_undelivered()
    assert n4.flush(10)
    assert {d for _, d, _, _ in _notices(cp)} == {"delivered"}
    assert r.id in {p["request_id"] for p in ok.received}


def test_without_a_webhook_notices_are_kept(cp):
    cp.register(("ws-1", "us"))
    fm = FakeMover(cp.dsn)
    n = notify.Notifier(cp.dsn, None)
    assert not n.enabled
    with cp.connect() as c:
        r = rq.create(c, cp.cat, cp.conns, "ws-1", "au", _window(), "sales@example.com", actor=ALICE, planner=fm.plan, notifier=n)
        (k,) = rq.notices(c, r.id)
    assert k["delivery"] == "kept" and k["subject"] == f"Move request {r.id}: ws-1 us → au awaits approval"


def test_webhook_url_comes_from_env_or_the_connections_file(tmp_path, monkeypatch):
    f = tmp_path / "connections.yaml"
    f.write_text("control: {dsn: 'postgresql://x@h/db'}\nnotify: {webhook_url: 'https://hooks.example.com/abc'}\n")
    monkeypatch.setenv("RESIDENCY_CONNECTIONS", str(f))
    assert notify.webhook_url_from_config({}) == "https://hooks.example.com/abc"
    assert notify.webhook_url_from_config({"RESIDENCY_WEBHOOK_URL": "http://127.0.0.1:9/h"}) == "http://127.0.0.1:9/h"
    with pytest.raises(InputError, match="http"):
        notify.webhook_url_from_config({"RESIDENCY_WEBHOOK_URL": "ftp://example.com/x"})
    f.write_text("control: {dsn: 'postgresql://x@h/db'}\n")
    assert notify.webhook_url_from_config({}) is None
    assert notify.redact_url("https://hooks.example.com/services/T0/B1/SECRET?token=x") == "https://hooks.example.com/…"
