"""Acting as a database administrator on the control plane's audit chain, for the tampering tests."""

from __future__ import annotations

from typing import Any, Callable

import psycopg

from residency import audit


def as_admin(env: Any, fn: Callable[[psycopg.Connection[Any]], None]) -> None:
    """The append-only trigger off, the change, the trigger on."""
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        c.execute("ALTER TABLE residency.audit DISABLE TRIGGER audit_append_only")
        try:
            fn(c)
        finally:
            c.execute("ALTER TABLE residency.audit ENABLE TRIGGER audit_append_only")


def rehash_from(c: psycopg.Connection[Any], seq: int) -> None:
    """Recompute every hash from ``seq`` on and the head: the chain is consistent again."""
    prev = c.execute("SELECT hash FROM residency.audit WHERE seq = %s", (seq - 1,)).fetchone()
    prev = prev[0] if prev else audit.GENESIS
    for e in list(audit.entries(c)):
        if e.seq < seq:
            continue
        h = audit.entry_hash(e.seq, e.at, e.actor, e.origin, e.action, e.subject, e.details, prev)
        c.execute("UPDATE residency.audit SET prev_hash = %s, hash = %s WHERE seq = %s", (prev, h, e.seq))
        prev = h
    c.execute("UPDATE residency.audit_head SET seq = (SELECT max(seq) FROM residency.audit), hash = %s", (prev,))
