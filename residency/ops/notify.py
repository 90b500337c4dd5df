"""Notices: every request and move state change, rendered from a template and kept or delivered.

Each notice is written to ``residency.notices`` in the same transaction as the state change it
reports (an outbox): so a notice exists exactly when its change committed, and without a webhook
the notices are simply kept with the request (``residency request show ID``).

With a webhook (``$RESIDENCY_WEBHOOK_URL``, or ``notify: {webhook_url: ...}`` in the connections
file; never regions.yaml, since a webhook URL is usually a secret) a :class:`Notifier` posts
each notice as JSON after the commit, from a background thread, with short timeouts and bounded
tenacity retries. Delivery is recorded on the notice (``delivered`` or ``failed`` with the
error); an unreachable or slow webhook never blocks or fails a move. ``retry_undelivered`` tries
failed ones again later.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, is_dataclass
from typing import Any, Iterable, Mapping

import psycopg
from psycopg.types.json import Jsonb
from tenacity import RetryError

from residency.errors import first_line
from residency.retrying import bounded_retry

log = logging.getLogger("residency.notify")

WEBHOOK_ENV = "RESIDENCY_WEBHOOK_URL"
EVENTS = (
    "created", "refused", "approved", "cancelled", "started", "resumed", "skipped", "done", "failed",
    "move.planned", "move.fenced", "move.copied", "move.verified", "move.cut_over", "move.cleaned",
    "move.rolled_back", "move.failed",
)
MAX_ATTEMPTS_TOTAL = 10  # across retry_undelivered runs; after that a notice stays failed


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def render_notice(event: str, req: Any, *, cat: Any = None, move: Any = None, **extra: Any) -> tuple[str, str]:
    """(subject, body) of a notice, from ``playbooks/templates/events/notice.txt.j2``."""
    from residency.playbooks import environment

    if event not in EVENTS:
        raise ValueError(f"unknown notice event {event!r}")
    r = _plain(req)
    region_info = {}
    if cat is not None:
        for name in (r["source"], r["target"]):
            if name in cat.regions:
                reg = cat.regions[name]
                region_info[name] = {"jurisdiction": reg.jurisdiction, "law": cat.jurisdictions[reg.jurisdiction].law or ""}
    from residency.windows import Window
    from residency.units import format_duration

    ctx = {
        "event": event,
        "request": r,
        "window": str(Window(req.window_start, req.window_end)),
        "estimate": format_duration(r["estimate"]["seconds"]) if r.get("estimate", {}).get("seconds") else "",
        "move": _plain(move) if move is not None else None,
        "regions": region_info,
        "detail": extra.get("detail", ""),
    }
    text = environment().get_template("events/notice.txt.j2").render(**ctx).strip()
    subject, _, body = text.partition("\n")
    return subject.strip(), body.strip()


def record(conn: psycopg.Connection[Any], event: str, req: Any, *, cat: Any = None, move: Any = None, deliver: bool = False, **extra: Any) -> int:
    """Render and keep a notice in the caller's transaction; returns its id.

    ``deliver`` marks it for the webhook (``pending``); otherwise it is ``kept``.
    """
    subject, body = render_notice(event, req, cat=cat, move=move, **extra)
    move_id = getattr(move, "id", None) if move is not None else getattr(req, "move_id", None)
    payload = {
        "event": event,
        "request_id": req.id,
        "workspace_id": req.workspace_id,
        "source": req.source,
        "target": req.target,
        "state": req.state,
        "state_reason": req.state_reason,
        "window": {"start": req.window_start.isoformat(), "end": req.window_end.isoformat()},
        "requested_by": req.requested_by,
        "move_id": move_id,
        "move_state": getattr(move, "state", None),
        "subject": subject,
        "text": body,
    }
    row = conn.execute(
        "INSERT INTO residency.notices (request_id, move_id, event, subject, body, payload, delivery)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (req.id, move_id, event, subject, body, Jsonb(payload), "pending" if deliver else "kept"),
    ).fetchone()
    assert row is not None
    return int(row[0])


# --------------------------------------------------------------------------- delivery


def webhook_url_from_config(env: Mapping[str, str] | None = None) -> str | None:
    """``$RESIDENCY_WEBHOOK_URL``, else ``notify.webhook_url`` in the connections file, else None."""
    env = os.environ if env is None else env
    url = env.get(WEBHOOK_ENV)
    if not url:
        from residency.connections import _connections_file, _read_file

        try:
            data = _read_file(_connections_file())
        except Exception:  # a broken connections file is reported by whoever needs connections
            data = {}
        url = ((data.get("notify") or {}) if isinstance(data, dict) else {}).get("webhook_url")
    if not url:
        return None
    parts = urllib.parse.urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        from residency.errors import InputError

        raise InputError(f"webhook URL must be http(s)://host/...; got a {parts.scheme or 'schemeless'} URL")
    return str(url)


def redact_url(url: str) -> str:
    """scheme://host[:port]/… : webhook paths and queries often carry tokens."""
    p = urllib.parse.urlsplit(url)
    host = p.hostname or "?"
    return f"{p.scheme}://{host}{':' + str(p.port) if p.port else ''}/…"


class DeliveryError(Exception):
    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


def _post(url: str, payload: dict[str, Any], timeout: float) -> None:
    data = json.dumps(payload, default=str).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json", "User-Agent": "residency-notify"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (http(s) only, checked above)
            resp.read(1024)
    except urllib.error.HTTPError as exc:
        transient = exc.code in (408, 425, 429) or exc.code >= 500
        raise DeliveryError(f"webhook {redact_url(url)} answered HTTP {exc.code}", transient) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        why = getattr(exc, "reason", None) or exc
        if isinstance(why, TimeoutError) or "timed out" in str(why):
            raise DeliveryError(f"webhook {redact_url(url)} timed out (no answer within {timeout:g}s)", True) from None
        raise DeliveryError(f"webhook {redact_url(url)} unreachable: {why}", True) from None


class Notifier:
    """Delivers kept notices to a webhook, after commit, off the caller's thread.

    ``timeout`` bounds each HTTP attempt; ``attempts`` and ``budget`` (seconds) bound the retries
    of one notice. Without a webhook it is disabled and notices stay ``kept``.
    """

    def __init__(self, control_dsn: str, webhook_url: str | None, *, timeout: float = 2.0, attempts: int = 3, budget: float = 10.0):
        self.control_dsn = control_dsn
        self.webhook_url = webhook_url
        self.timeout = timeout
        self.attempts = attempts
        self.budget = budget
        self._q: queue.Queue[int | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, control_dsn: str, env: Mapping[str, str] | None = None, **kwargs: Any) -> "Notifier":
        return cls(control_dsn, webhook_url_from_config(env), **kwargs)

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url)

    # -- async API
    def submit(self, notice_ids: Iterable[int]) -> None:
        """Queue notices for delivery and return at once."""
        if not self.enabled:
            return
        for nid in notice_ids:
            self._q.put(int(nid))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="residency-notify", daemon=True)
                self._thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout`` seconds) until queued notices have been tried; True if drained."""
        if not self.enabled:
            return True
        done = threading.Event()

        def waiter() -> None:
            self._q.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            try:
                nid = self._q.get(timeout=5)
            except queue.Empty:
                return
            try:
                if nid is not None:
                    self.deliver([nid])
            except Exception:  # never let the delivery thread die on one notice
                log.exception("delivering notice %s", nid)
            finally:
                self._q.task_done()

    # -- sync API
    def deliver(self, notice_ids: Iterable[int]) -> dict[int, str]:
        """Post the notices now; record each outcome. Returns id → 'delivered' | 'failed'."""
        out: dict[int, str] = {}
        if not self.enabled:
            return out
        assert self.webhook_url
        try:
            conn = psycopg.connect(self.control_dsn, autocommit=True, connect_timeout=5, application_name="residency-notify")
        except psycopg.Error as exc:
            log.warning("notices not delivered: control plane unreachable: %s", first_line(exc))
            return out
        with conn:
            for nid in notice_ids:
                row = conn.execute("SELECT payload, delivery FROM residency.notices WHERE id = %s", (nid,)).fetchone()
                if row is None or row[1] == "delivered":
                    continue
                payload = dict(row[0])
                payload["notice_id"] = nid
                tries = {"n": 0}

                @bounded_retry(lambda e: isinstance(e, DeliveryError) and e.transient,
                               attempts=self.attempts, within=self.budget, max_wait=2)
                def send() -> None:
                    tries["n"] += 1
                    _post(self.webhook_url, payload, self.timeout)  # type: ignore[arg-type]

                try:
                    send()
                except (DeliveryError, RetryError) as exc:
                    conn.execute(
                        "UPDATE residency.notices SET delivery = 'failed', attempts = attempts + %s, last_error = %s WHERE id = %s",
                        (tries["n"], str(exc)[:500], nid),
                    )
                    log.warning("notice %s not delivered: %s", nid, exc)
                    out[nid] = "failed"
                else:
                    conn.execute(
                        "UPDATE residency.notices SET delivery = 'delivered', attempts = attempts + %s, delivered_at = now(), last_error = NULL WHERE id = %s",
                        (tries["n"], nid),
                    )
                    out[nid] = "delivered"
        return out

    def retry_undelivered(self, limit: int = 100) -> None:
        """Queue notices still pending or failed (under the attempt cap) for another try."""
        if not self.enabled:
            return
        try:
            with psycopg.connect(self.control_dsn, autocommit=True, connect_timeout=5) as conn:
                ids = [r[0] for r in conn.execute(
                    "SELECT id FROM residency.notices WHERE (delivery = 'failed' OR (delivery = 'pending' AND created_at < now() - interval '2 minutes'))"
                    " AND attempts < %s"
                    " AND created_at > now() - interval '7 days' ORDER BY id LIMIT %s",
                    (MAX_ATTEMPTS_TOTAL, limit),
                )]
        except psycopg.Error as exc:
            log.warning("cannot list undelivered notices: %s", exc)
            return
        self.submit(ids)
