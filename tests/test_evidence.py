"""The evidence pack: written from a real move (PostgreSQL, moto S3 and KMS), verified offline
(no database, no network), and any one-byte edit fails naming what."""

from __future__ import annotations

import json
import random
import socket
from datetime import timedelta

import psycopg
import pytest

from residency.migrate import cleanup_move, evidence as build, start_move
from audit_support import as_admin, rehash_from
from move_support import run_mover
from residency import anchor, audit, evidence
from residency.connections import AnchorConfig


@pytest.fixture
def cleaned(env, tmp_path):
    s = env.seed(workspaces=3, rows=900, seed=61)
    rec = start_move(env.catalogue, env.connections, s.smallest_in("us"), "eu")
    rec = cleanup_move(env.catalogue, env.connections, rec.id, grace=timedelta(0))
    audit.record(env.control_dsn, "test.later", "thing/1", {})  # an entry after the last digest
    path = tmp_path / "pack"
    p = run_mover(env, "move", "evidence", str(rec.id), "--out", str(path))
    assert p.returncode == 0, p.stderr
    return env, rec, path


def _offline(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("evidence verify touched the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_pack_of_a_cleaned_move_verifies_offline(cleaned, monkeypatch):
    env, rec, path = cleaned
    pack = json.loads(path.read_text())
    assert [e["action"] for e in pack["audit_entries"]][-1] == "move.cleaned"
    assert pack["deletion"]["versions_remaining"] == 0 and pack["deletion"]["object_versions"]
    assert all(t["source_rows"] == t["target_rows"] for t in pack["verification"]["tables"])
    _offline(monkeypatch)
    res = evidence.verify(path.read_bytes())
    assert res.ok, res.problems
    assert any("each signed" in f for f in res.facts) and any("no copy after" in f for f in res.facts)
    from click.testing import CliRunner

    from residency import cli

    r = CliRunner().invoke(cli.main, ["evidence", "verify", str(path)], env={"RESIDENCY_CONTROL_DSN": "postgresql://nowhere.invalid/x"})
    assert r.exit_code == 0, r.output
    assert f"move {rec.id}: evidence verified" in r.output


def test_any_one_byte_edit_fails_naming_what(cleaned):
    env, rec, path = cleaned
    data = path.read_bytes()
    rng = random.Random(7)
    # a digit of a row count, a character of a checksum, a signature, whitespace, and random bytes
    spots = [data.index(b'"rows": ') + 8, data.index(b'"checksum": "') + 14, data.index(b'"signature": "') + 20,
             data.index(b"\n ") + 1] + [rng.randrange(len(data)) for _ in range(60)]
    for pos in spots:
        b = data[pos]
        edited = data[:pos] + bytes([b + 1 if b < 0x7e else b - 1]) + data[pos + 1:]
        res = evidence.verify(edited)
        assert not res.ok, f"an edit at byte {pos} ({data[pos - 20:pos + 20]!r}) passed"
        assert res.problems[0]
    # a row count changed consistently, so the file stays canonical: named by section
    pack = json.loads(data)
    t = next(iter(pack["deletion"]["tables"]))
    pack["deletion"]["tables"][t]["rows"] += 1
    res = evidence.verify(evidence.dumps(pack))
    assert "deletion: differs from the sealed hash (edited after the pack was made)" in res.problems
    assert any(p.startswith("deletion: rows") for p in res.problems)
    assert any(p.startswith("deletion: differs from the one entry") for p in res.problems)
    p = run_mover(env, "evidence", "verify", "/dev/null/nope")
    assert p.returncode == 2


def test_pack_catches_a_rehashed_chain_and_a_digest_by_another_key(env, tmp_path):
    s = env.seed(workspaces=3, rows=900, seed=62)
    rec = start_move(env.catalogue, env.connections, s.smallest_in("us"), "eu")
    good = build.build(env.connections, rec.id)
    assert evidence.verify(evidence.dumps(good)).ok

    # edit + re-hash of an entry, as a DBA would, then the pack rebuilt from the database: the
    # digest still signs the old hash (the seal is fine: the tool sealed what it read)
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        seq = c.execute("SELECT seq FROM residency.audit WHERE subject = %s AND action = 'move.copied'", (f"move/{rec.id}",)).fetchone()[0]

    def edit(c):
        c.execute("UPDATE residency.audit SET details = jsonb_set(details, '{rows}', '1') WHERE seq = %s", (seq,))
        rehash_from(c, seq)

    as_admin(env, edit)
    res = evidence.verify(evidence.dumps(build.build(env.connections, rec.id)))
    assert any(p.startswith(f"entry {seq} (move.copied move/{rec.id}): differs from the hash signed in digest 1") for p in res.problems), res.problems

    # a pack whose digest is re-signed by another key (the forger's) fails on the audit key
    kms = anchor.client(env.anchor, "kms")
    other = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    forged = json.loads(evidence.dumps(good))
    from residency import digests
    import base64

    d = forged["digests"][0]["digest"]
    sig = kms.sign(KeyId=other, Message=digests.signing_message(digests.body_hash(d)), MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")
    forged["digests"][0]["signature"] = base64.b64encode(sig["Signature"]).decode()
    res = evidence.verify(evidence.dumps(forged))
    assert any("digests: digest 1" in p and "does not verify with the audit key" in p for p in res.problems), res.problems
    # and a pack re-keyed to the forger's key fails against the pinned, published key
    pinned = digests.to_pem(anchor.public_key(env.anchor).der).encode()
    rekeyed = AnchorConfig(other, env.anchor.bucket, env.anchor.aws_region, env.anchor.endpoint)
    fp = anchor.public_key(rekeyed)
    forged["public_key"] = fp.to_dict()
    res = evidence.verify(evidence.dumps(forged), pinned_key=pinned)
    assert any(p.startswith("public_key: not the pinned audit key") for p in res.problems), res.problems


def test_pack_catches_a_cut_tail_and_a_removed_digest(env):
    s = env.seed(workspaces=3, rows=900, seed=63)
    rec = start_move(env.catalogue, env.connections, s.smallest_in("us"), "eu")
    good = build.build(env.connections, rec.id)
    # a digest taken out of the pack
    cut = json.loads(evidence.dumps(good))
    cut["digests"] = []
    res = evidence.verify(evidence.dumps(cut))
    assert any("not covered by a signed digest" in p for p in res.problems), res.problems

    # the tail cut and the head rewritten in the database, the pack rebuilt
    with psycopg.connect(env.control_dsn, autocommit=True) as c:
        seq = c.execute("SELECT seq FROM residency.audit WHERE subject = %s AND action = 'move.cut_over'", (f"move/{rec.id}",)).fetchone()[0]
        c.execute("ALTER TABLE residency.audit DISABLE TRIGGER audit_append_only")
        c.execute("DELETE FROM residency.audit WHERE seq >= %s", (seq,))
        c.execute("UPDATE residency.audit_head SET seq = %s, hash = (SELECT hash FROM residency.audit WHERE seq = %s)", (seq - 1, seq - 1))
        c.execute("ALTER TABLE residency.audit ENABLE TRIGGER audit_append_only")
        assert audit.verify(c).ok
    res = evidence.verify(evidence.dumps(build.build(env.connections, rec.id)))
    assert "audit_entries: the move is cut_over but its move.cut_over entry is missing (entries deleted?)" in res.problems

    # a digest removed from the bucket (a delete marker): no pack is made from a broken anchor
    anchor.client(env.anchor, "s3").delete_object(Bucket=env.anchor.bucket, Key=good["digests"][0]["name"])
    from residency.errors import OperationError

    with pytest.raises(OperationError, match="deleted"):
        build.build(env.connections, rec.id)
