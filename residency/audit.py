"""The audit log: append-only, each entry carrying the hash of the one before it.

Every deploy, move step, approval and purge is an entry: who, what, when, from where. An entry's
hash covers its own fields and the previous entry's hash, so editing or deleting any entry breaks
the chain from that point on; ``audit_head`` holds the newest sequence number and hash, so
removing entries from the end is detected too. A trigger refuses UPDATE and DELETE outright;
the chain is what catches someone who gets around the trigger.

:func:`append` joins the caller's transaction: a step and its audit entry commit together.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

import psycopg
from psycopg import sql

from .db import columns

GENESIS = "0" * 64
_APPEND_LOCK = 0x6175_6469_74  # serialises appends so the chain never forks


@dataclass(frozen=True)
class Actor:
    """Who did something and from where, as the caller says: ``who`` comes from
    ``$RESIDENCY_ACTOR`` (set it to the person or CI job) or the login name; ``origin`` is host and
    process. :func:`append` records the authenticated role as the entry's who and keeps this
    ``who`` as an annotation of the origin."""

    who: str
    origin: str

    @classmethod
    def current(cls) -> "Actor":
        who = os.environ.get("RESIDENCY_ACTOR")
        if not who:
            try:
                who = getpass.getuser()
            except (KeyError, OSError):
                who = f"uid:{os.getuid()}"
        origin = f"{socket.gethostname()} pid {os.getpid()}"
        if os.environ.get("CI"):
            origin += " (CI)"
        return cls(who, origin)


def _authenticated(conn: psycopg.Connection[Any], actor: Actor) -> Actor:
    """The entry's who is the authenticated role (``session_user``); what the actor calls itself
    ($RESIDENCY_ACTOR, a worker's name) only annotates the origin."""
    role = str(conn.execute("SELECT session_user").fetchone()[0])  # type: ignore[index]
    if actor.who and actor.who != role:
        return Actor(role, f"{actor.origin} for {actor.who}")
    return Actor(role, actor.origin)


@dataclass(frozen=True)
class Entry:
    seq: int
    at: datetime
    actor: str
    origin: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


def _canonical(value: Any) -> Any:
    """Details as they will read back from jsonb (so the hash is reproducible)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def entry_hash(seq: int, at: datetime, actor: str, origin: str, action: str, subject: str, details: Any, prev_hash: str) -> str:
    payload = json.dumps(
        {
            "seq": seq,
            "at": at.astimezone(timezone.utc).isoformat(timespec="microseconds"),
            "actor": actor,
            "origin": origin,
            "action": action,
            "subject": subject,
            "details": _canonical(details),
            "prev": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def append(conn: psycopg.Connection[Any], action: str, subject: str, details: dict[str, Any] | None = None, actor: Actor | None = None) -> Entry:
    """Append an entry inside the caller's transaction (it is visible once the caller commits)."""
    from .redaction import redact_obj  # the one redaction rule: no secret in the log

    actor = actor or Actor.current()
    details = _canonical(redact_obj(details or {}))
    actor = _authenticated(conn, actor)
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_APPEND_LOCK,))
    row = conn.execute("SELECT seq, hash FROM residency.audit_head").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
    at = datetime.now(timezone.utc)
    h = entry_hash(seq, at, actor.who, actor.origin, action, subject, details, prev)
    conn.execute(
        "INSERT INTO residency.audit (seq, at, actor, origin, action, subject, details, prev_hash, hash)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (seq, at, actor.who, actor.origin, action, subject, psycopg.types.json.Jsonb(details), prev, h),
    )
    conn.execute(
        "INSERT INTO residency.audit_head (id, seq, hash) VALUES (true, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        (seq, h),
    )
    return Entry(seq, at, actor.who, actor.origin, action, subject, details, prev, h)


def record(dsn_or_conn: Any, action: str, subject: str, details: dict[str, Any] | None = None, actor: Actor | None = None) -> Entry:
    """Append and commit an entry on its own (for events outside any other transaction)."""
    if isinstance(dsn_or_conn, psycopg.Connection):
        with dsn_or_conn.transaction():
            return append(dsn_or_conn, action, subject, details, actor)
    from .db import connect

    with connect(dsn_or_conn) as conn:
        with conn.transaction():
            return append(conn, action, subject, details, actor)


def entries(conn: psycopg.Connection[Any], subject: str | None = None, limit: int | None = None) -> Iterator[Entry]:
    params: list[Any] = ([subject] if subject is not None else []) + [limit]  # LIMIT NULL: no limit
    q = sql.SQL("SELECT {} FROM residency.audit{} ORDER BY seq LIMIT %s").format(
        columns(Entry), sql.SQL(" WHERE subject = %s" if subject is not None else "")
    )
    with conn.cursor(name="audit_entries") if not conn.autocommit else conn.cursor() as cur:
        cur.execute(q, params)
        for r in cur:
            yield Entry(*r)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    problems: list[str]
    head_seq: int | None


def verify(conn: psycopg.Connection[Any]) -> VerifyResult:
    """Walk the whole chain; report every entry whose hash, link or sequence is wrong."""
    problems: list[str] = []
    prev = GENESIS
    expected_seq = 1
    n = 0
    last_seq, last_hash = 0, GENESIS
    for e in entries(conn):
        n += 1
        if e.seq != expected_seq:
            problems.append(f"entries {expected_seq}..{e.seq - 1} are missing (deleted?)")
        if e.prev_hash != prev:
            problems.append(f"entry {e.seq}: does not link to the entry before it (prev_hash differs)")
        recomputed = entry_hash(e.seq, e.at, e.actor, e.origin, e.action, e.subject, e.details, e.prev_hash)
        if recomputed != e.hash:
            problems.append(f"entry {e.seq} ({e.action} {e.subject}): content does not match its hash (edited?)")
        prev = e.hash
        expected_seq = e.seq + 1
        last_seq, last_hash = e.seq, e.hash
    head = conn.execute("SELECT seq, hash FROM residency.audit_head").fetchone()
    if head is None and n:
        problems.append("the audit head is missing")
    elif head is not None:
        if head[0] != last_seq:
            problems.append(f"the log ends at entry {last_seq} but the head says {head[0]} (entries deleted from the end?)")
        elif head[1] != last_hash:
            problems.append(f"entry {last_seq}: hash differs from the recorded head")
    return VerifyResult(not problems, n, problems, head[0] if head else None)
