"""Complete erasure: cleanup deletes every object version and delete marker of the workspace in the
source buckets and their replicas in the backup region, and the deletion record says what still
holds the data and until when (real PostgreSQL, moto S3)."""

from __future__ import annotations

from datetime import datetime, timedelta

from residency.migrate import cleanup_move, move_report, start_move
from residency.migrate.report import render
from move_support import run_mover


def _versions(env, region, ws):
    """(versions, delete markers) under the workspace's prefix, per bucket, source and replica."""
    prefix = env.catalogue.workspace.prefix_for(ws)
    ep = env.connections.region(region)
    out = {}
    for logical in env.buckets[region]:
        for bucket, client in ((ep.bucket(logical), env.s3(region)), (ep.replica_bucket(logical), env.s3(region, backup=True))):
            v = m = 0
            for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
                v += len(page.get("Versions") or [])
                m += len(page.get("DeleteMarkers") or [])
            out[bucket] = (v, m)
    return out


def test_cleanup_leaves_no_version_nor_delete_marker_in_source_and_replica(env):
    s = env.seed(workspaces=4, rows=2000, seed=21)
    ws = s.smallest_in("us")
    other = [w for w in s.workspaces["us"] if w != ws][0]
    before = _versions(env, "us", ws)
    replicas = [b for b in before if b.endswith("-replica")]
    assert replicas and all(before[b][0] > 0 for b in replicas), before  # the seed wrote the replica copies
    # an overwritten object and a deleted one: a noncurrent version and a delete marker
    ep = env.connections.region("us")
    key = sorted(k for b, k in s.objects[ws] if b == ep.bucket("attachments"))[0]
    c = env.s3("us")
    c.put_object(Bucket=ep.bucket("attachments"), Key=key, Body=b"second version")
    c.put_object(Bucket=ep.bucket("attachments"), Key=key + ".tmp", Body=b"gone")
    c.delete_object(Bucket=ep.bucket("attachments"), Key=key + ".tmp")
    other_before = _versions(env, "us", other)

    rec = start_move(env.catalogue, env.connections, ws, "eu")
    rec = cleanup_move(env.catalogue, env.connections, rec.id, grace=timedelta(0))
    assert rec.state == "cleaned"
    after = _versions(env, "us", ws)
    assert set(after) == set(before) and all(vm == (0, 0) for vm in after.values()), after
    assert _versions(env, "us", other) == other_before  # another workspace's objects are untouched

    d = move_report(env.connections, rec.id)["deletion"]
    listed = {(v["bucket"], v["key"], v["version_id"]) for v in d["object_versions"]}
    # the seeded versions (both sides) + the second version + the .tmp object; its delete marker
    assert d["versions_deleted"] == sum(v for v, _ in before.values()) + 2 and d["delete_markers_deleted"] == 1
    assert len(listed) == d["versions_deleted"] + d["delete_markers_deleted"]
    assert {v["place"] for v in d["object_versions"]} == {"bucket", "replica"}
    assert {v["aws_region"] for v in d["object_versions"] if v["place"] == "replica"} == {"us-west-2"}
    assert d["versions_remaining"] == 0


def test_deletion_record_lists_backup_expiry_and_report_the_last_copy_date(env):
    s = env.seed(workspaces=3, rows=1500, seed=22)
    ws = s.smallest_in("us")
    rec = start_move(env.catalogue, env.connections, ws, "eu")
    p = run_mover(env, "move", "cleanup", str(rec.id), "--grace", "0", "--yes")
    assert p.returncode == 0, p.stderr
    days = env.catalogue.region("us").environment.retention.backups_days
    d = move_report(env.connections, rec.id)["deletion"]
    deleted = datetime.fromisoformat(d["deleted_at"])
    backups = [h for h in d["still_held"] if "backups" in h["what"]]
    assert {h["where"].split(" in ")[-1].rstrip(")") for h in backups} >= {"us-west-2"}
    assert all(datetime.fromisoformat(h["until"]) == deleted + timedelta(days=days) for h in backups)
    assert datetime.fromisoformat(d["no_copy_after"]) == deleted + timedelta(days=days)
    expected = (deleted + timedelta(days=days)).isoformat()
    assert f"no copy remains in US after {expected}" in render(move_report(env.connections, rec.id))
    assert f"no copy remains in US after {expected}" in p.stdout
