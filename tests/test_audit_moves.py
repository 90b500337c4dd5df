"""Every move step is in the hash-chained audit log; an edited or deleted entry is caught by
`residency audit verify` (exit 1)."""

from __future__ import annotations

import json

import psycopg

from residency.migrate import start_move
from move_support import run_mover


def test_move_steps_audited_and_tampering_detected(env):
    s = env.seed(workspaces=3, rows=900, seed=41)
    ws = s.smallest_in("us")
    rec = start_move(env.catalogue, env.connections, ws, "eu")
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        rows = c.execute("SELECT action, actor, origin, details FROM residency.audit WHERE subject = %s ORDER BY seq", (f"move/{rec.id}",)).fetchall()
    assert [r[0] for r in rows] == ["move.planned", "move.fenced", "move.copied", "move.verified", "move.cut_over"]
    assert all(r[1] and r[2] and r[3]["source"] == "us" and r[3]["target"] == "eu" for r in rows)

    p = run_mover(env, "audit", "verify", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["ok"] is True

    # tamper: the trigger refuses UPDATE; a superuser disables it, edits an entry, re-enables it
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        with psycopg.connect(env.control_dsn) as c2:
            try:
                c2.execute("UPDATE residency.audit SET actor = 'someone else' WHERE action = 'move.cut_over'")
                raise AssertionError("the audit table accepted an UPDATE")
            except psycopg.errors.InsufficientPrivilege:
                pass
        c.execute("ALTER TABLE residency.audit DISABLE TRIGGER audit_append_only")
        seq = c.execute("SELECT seq FROM residency.audit WHERE action = 'move.copied'").fetchone()[0]
        c.execute("UPDATE residency.audit SET details = jsonb_set(details, '{rows}', '1') WHERE seq = %s", (seq,))
        c.execute("ALTER TABLE residency.audit ENABLE TRIGGER audit_append_only")
    p = run_mover(env, "audit", "verify")
    assert p.returncode == 1
    assert f"entry {seq} (move.copied move/{rec.id}): content does not match its hash (edited?)" in p.stdout
    assert "CHAIN BROKEN" in p.stdout
