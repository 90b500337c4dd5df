"""The audit chain anchored outside the database: signed digests (moto KMS, ECDSA) in an Object
Lock bucket (moto S3). Each way a database administrator could rewrite the chain is caught by
`residency audit verify` (exit 1), naming the first entry that disagrees."""

from __future__ import annotations

import json

import psycopg
import pytest

from residency.migrate import start_move
from audit_support import as_admin as _admin, rehash_from as _rehash_from
from move_support import run_mover
from residency import anchor, audit
from residency.connections import AnchorConfig


def _record(env, n, what="test.event"):
    for i in range(n):
        audit.record(env.control_dsn, what, f"thing/{i}", {"i": i})


def _digest(env):
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        return anchor.write_digest(c, env.anchor)


def _verify(env):
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        return anchor.verify(c, env.anchor)


def _setup(env):
    """Entries 1..12 under three digests (1..4, 5..8, 9..12), then two unanchored ones."""
    _record(env, 4)
    assert (_digest(env).first_seq, _digest_last(env)) == (1, 4)
    _record(env, 4)
    _digest(env)
    _record(env, 4)
    w = _digest(env)
    assert (w.number, w.first_seq, w.last_seq) == (3, 9, 12)
    _record(env, 2)
    res = _verify(env)
    assert res.ok, res.problems
    assert (res.digests, res.anchored_through, res.entries) == (3, 12, 14)


def _digest_last(env):
    return anchor.read_digests(env.anchor).items[-1]["digest"]["last_seq"]


def test_a_move_ends_with_a_signed_digest_covering_its_entries(env):
    s = env.seed(workspaces=3, rows=900, seed=51)
    rec = start_move(env.catalogue, env.connections, s.smallest_in("us"), "eu")
    items = anchor.read_digests(env.anchor).items
    assert len(items) == 1
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        (cut,) = c.execute("SELECT seq FROM residency.audit WHERE subject = %s AND action = 'move.cut_over'", (f"move/{rec.id}",)).fetchone()
    assert items[0]["digest"]["last_seq"] == cut
    # the bucket holds it under Object Lock in compliance mode: it cannot be deleted
    s3 = anchor.client(env.anchor, "s3")
    head = s3.head_object(Bucket=env.anchor.bucket, Key=items[0]["name"])
    assert head["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(Exception, match="AccessDenied"):
        s3.delete_object(Bucket=env.anchor.bucket, Key=items[0]["name"], VersionId=head["VersionId"])
    p = run_mover(env, "audit", "verify")
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"anchored: 1 signed digests cover entries 1..{cut}" in p.stdout


def test_digest_command_and_edit_plus_rehash_detected(env):
    _record(env, 3)
    p = run_mover(env, "audit", "digest")
    assert p.returncode == 0, p.stderr
    assert "digest 1: entries 1..3" in p.stdout
    _record(env, 3)
    p = run_mover(env, "audit", "digest", "--json")
    assert json.loads(p.stdout)["first_seq"] == 4
    _record(env, 1)

    def edit(c):
        c.execute("UPDATE residency.audit SET details = jsonb_set(details, '{i}', '99') WHERE seq = 5")
        _rehash_from(c, 5)

    _admin(env, edit)
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        assert audit.verify(c).ok  # the chain alone no longer tells
    p = run_mover(env, "audit", "verify")
    assert p.returncode == 1
    assert "broken: entry 5 (test.event thing/1): differs from the hash signed in digest 2 (edited and re-hashed?)" in p.stdout
    assert "first entry that disagrees: 5" in p.stdout


def test_tail_cut_and_head_rewrite_detected(env):
    _setup(env)

    def cut(c):
        c.execute("DELETE FROM residency.audit WHERE seq > 10")
        c.execute("UPDATE residency.audit_head SET seq = 10, hash = (SELECT hash FROM residency.audit WHERE seq = 10)")

    _admin(env, cut)
    res = _verify(env)
    assert not res.ok and res.first_bad_seq == 11
    assert any("entries 11..12 are signed in digest 3" in p and "tail cut" in p for p in res.problems), res.problems


def test_a_removed_digest_detected(env):
    _setup(env)
    s3 = anchor.client(env.anchor, "s3")
    s3.delete_object(Bucket=env.anchor.bucket, Key=anchor.read_digests(env.anchor).items[1]["name"])  # a delete marker
    res = _verify(env)
    assert not res.ok and res.first_bad_seq == 5
    assert any("deleted (a delete marker hides it)" in p for p in res.problems)
    assert any(p.startswith("digest 2 missing (deleted?): entries from 5 to 8 are not anchored") for p in res.problems), res.problems


def test_a_digest_signed_by_another_key_detected(env):
    _setup(env)

    def edit(c):
        c.execute("UPDATE residency.audit SET details = jsonb_set(details, '{i}', '7') WHERE seq = 13")
        _rehash_from(c, 13)

    _admin(env, edit)
    kms = anchor.client(env.anchor, "kms")
    other = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    forged = AnchorConfig(other, env.anchor.bucket, env.anchor.aws_region, env.anchor.endpoint)
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        w = anchor.write_digest(c, forged)  # digest 4, covering the rewritten 13..14, by the wrong key
    assert (w.number, w.first_seq) == (4, 13)
    p = run_mover(env, "audit", "verify")
    assert p.returncode == 1
    assert "broken: digest 4 (entries 13..14): the signature does not verify with the audit key" in p.stdout
    assert "first entry that disagrees: 13" in p.stdout


def test_the_worker_writes_the_periodic_digest_when_idle(env, monkeypatch):
    from residency.ops.worker import Worker

    _record(env, 3)
    monkeypatch.setenv(anchor.INTERVAL_ENV, "0")
    Worker(env.catalogue, env.connections).run(once=True)
    items = anchor.read_digests(env.anchor).items
    assert [(i["digest"]["number"], i["digest"]["last_seq"]) for i in items] == [(1, 3)]
    Worker(env.catalogue, env.connections).run(once=True)  # nothing appended since: no new digest
    assert len(anchor.read_digests(env.anchor).items) == 1
