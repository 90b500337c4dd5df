"""The chunked, parallel, checkpointed copy: chunk bounds for integer, text, uuid and composite
keys; a kill -9 mid-copy then resume redoes only the unrecorded chunks and gives exactly one copy;
the per-region stream cap holds across processes."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import time
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from residency import moves
from residency.migrate import move_status, resume_move, start_move, verify_workspace
from residency.migrate.chunks import CopyOptions, chunks_of, dependencies, plan_bounds
from residency.migrate.context import make_context
from residency.migrate.throttle import StreamSlots
from move_support import counts, home, run_mover

EXTRA = [
    "CREATE TABLE notes_text (id text PRIMARY KEY, workspace_id bigint NOT NULL REFERENCES workspaces (id), body text)",
    "CREATE TABLE notes_uuid (id uuid PRIMARY KEY, workspace_id bigint NOT NULL REFERENCES workspaces (id), n int)",
    "CREATE TABLE notes_pair (a int, b text, workspace_id bigint NOT NULL REFERENCES workspaces (id), PRIMARY KEY (a, b))",
    "CREATE TABLE notes_nopk (workspace_id bigint NOT NULL REFERENCES workspaces (id), tag text, n int)",  # duplicates allowed
]


def _extra_tables(env, ws, n=900):
    for r in ("us", "eu"):
        with psycopg.connect(env.dsn(r), autocommit=True) as c:
            for stmt in EXTRA:
                c.execute(stmt)
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        # text keys whose order differs between collations ('B' < 'a' in C, not in en_US)
        c.execute("INSERT INTO notes_text SELECT (ARRAY['a','B','é','Z','m'])[1 + i %% 5] || i, %s, 'x' || i FROM generate_series(1, %s) i", (ws, n))
        c.execute("INSERT INTO notes_uuid SELECT gen_random_uuid(), %s, i FROM generate_series(1, %s) i", (ws, n))
        c.execute("INSERT INTO notes_pair SELECT i %% 7, 'k' || i, %s FROM generate_series(1, %s) i", (ws, n))
        c.execute("INSERT INTO notes_nopk SELECT %s, 't' || (i %% 10), i %% 3 FROM generate_series(1, %s) i", (ws, n))


def test_chunk_bounds_cover_every_row_once(env):
    s = env.seed(workspaces=3, rows=3000, seed=8)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    _extra_tables(env, ws)
    ctx = make_context(env.catalogue, env.connections, ws, "us", "eu")
    b = ctx.builder
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        # reached through joins too (attachments through messages, reactions polymorphic): the
        # sample is drawn before the predicate, and still only the workspace's keys are cuts
        for table in ("messages", "attachments", "reactions", "notes_text", "notes_uuid", "notes_pair", "notes_nopk"):
            total, total_sum = c.execute(b.checksum(table), b.params(str(ws))).fetchone()
            bounds = plan_bounds(c, b, str(ws), table, total, min(200, max(10, total // 4)), fk_order=False)
            if table in ("notes_pair", "notes_nopk"):
                assert bounds == [[None, None]]  # composite key, no primary key: one chunk
                continue
            assert len(bounds) >= 3, (table, bounds)
            assert bounds[0][0] is None and bounds[-1][1] is None
            n = 0
            sums = Decimal(0)
            for ch in chunks_of(table, bounds, total):
                k, h = c.execute(b.checksum_chunk(table, ch.lo is not None, ch.hi is not None), ch.params(b, str(ws))).fetchone()
                assert k > 0
                n += k
                sums += Decimal(h)
            assert (n, sums) == (total, Decimal(total_sum)), table
        # messages references itself (thread replies): when foreign-key checks fire its roots (no
        # parent) are cut in ranges and every reply is one last chunk; together, every row once
        total, total_sum = c.execute(b.checksum("messages"), b.params(str(ws))).fetchone()
        bounds = plan_bounds(c, b, str(ws), "messages", total, 200, fk_order=True)
        assert [x[2] for x in bounds] == ["roots"] * (len(bounds) - 1) + ["rest"] and len(bounds) >= 3
        assert bounds[-1][:2] == [None, None]
        n, sums = 0, Decimal(0)
        for ch in chunks_of("messages", bounds, total):
            k, h = c.execute(b.checksum_chunk("messages", ch.lo is not None, ch.hi is not None, ch.part), ch.params(b, str(ws))).fetchone()
            rows = b.select_rows("messages", ["parent_id"], where=b.chunk_cond("messages", sql.Identifier("t"), ch.lo is not None, ch.hi is not None, ch.part))
            (with_parent,) = c.execute(sql.SQL("SELECT count(parent_id) FROM ({}) r").format(rows), ch.params(b, str(ws))).fetchone()
            assert k > 0 and with_parent == (0 if ch.part == "roots" else k), ch
            n += k
            sums += Decimal(h)
        assert (n, sums) == (total, Decimal(total_sum))


def test_chunked_parallel_move_is_exact(env):
    s = env.seed(workspaces=3, rows=3000, seed=9)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    _extra_tables(env, ws)
    before = counts(env.dsn("us"), ws)
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="snapshot", copy_options=CopyOptions(jobs=3, chunk_rows=300))
    assert rec.state == "cut_over"
    assert counts(env.dsn("eu"), ws) == before
    tables = rec.report["copy"]["tables"]
    assert tables["notes_text"]["chunks"] >= 3 and tables["notes_uuid"]["chunks"] >= 3 and tables["notes_pair"]["chunks"] == 1
    assert tables["notes_nopk"]["chunks"] == 1 and tables["notes_nopk"]["rows"] == 900
    assert tables["messages"]["chunks"] > 1
    assert rec.report["copy"]["options"]["jobs"] == 3
    # the global rows went as a task of the scheduler, and every table's target sums were
    # recorded as its chunks landed, so verify read none of the target's tables again
    assert rec.report["copy"]["globals"]["users"]["referenced"] > 0
    n = len(rec.plan["tables"])
    assert rec.report["verify"]["target_checksums"].startswith(f"{n} of {n} tables recorded")
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        for t in ("notes_text", "notes_uuid", "notes_pair", "notes_nopk"):
            assert c.execute(f"SELECT count(*) FROM {t} WHERE workspace_id = %s", (ws,)).fetchone()[0] == 900
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok


@pytest.mark.parametrize("point", ["chunk_copied", "copy_batch"])
def test_kill9_mid_copy_redoes_only_unrecorded_chunks(env, point):
    s = env.seed(workspaces=3, rows=12000, seed=21)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    before = counts(env.dsn("us"), ws)
    p = run_mover(env, "move", "start", str(ws), "--to", "eu", "--yes", "--strategy", "snapshot", "--jobs", "2", "--chunk-rows", "400",
                  kill_at=point, kill_after=4)
    assert p.returncode == -signal.SIGKILL, p.stderr
    (rec,) = move_status(env.connections, None)[:1]
    recorded = {t: dict(v["done"]) for t, v in rec.checkpoints["copy"]["chunks"].items()}
    assert sum(len(v) for v in recorded.values()) >= 1
    rec = resume_move(env.catalogue, env.connections, rec.id, copy_options=CopyOptions(jobs=2, chunk_rows=400))
    assert rec.state == "cut_over"
    assert counts(env.dsn("eu"), ws) == before
    after = rec.checkpoints["copy"]["chunks"]
    for t, chunks in recorded.items():
        for i, res in chunks.items():
            assert after[t]["done"][i] == res  # recorded before the kill: not copied again
    n = len(rec.plan["tables"])  # every table's target sums recorded, the redone chunks' anew
    assert rec.report["verify"]["target_checksums"].startswith(f"{n} of {n} tables recorded")
    removed = sum(v.get("removed_first", 0) for v in rec.report["copy"]["tables"].values())
    assert removed <= 2 * 400  # at most one chunk per stream was redone
    # the users go after every chunk pointing at them; the resumed copy did not see the
    # chunks recorded before the kill land, so it finds them with the workspace's predicate
    assert rec.report["copy"]["globals"]["users"]["found"] == "with the workspace's predicate"
    if point == "chunk_copied":
        assert removed > 0  # the 4th chunk had committed, unrecorded: its rows were removed, then copied again
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok
    assert home(env, ws)[:2] == ("eu", "active")


def test_a_child_chunk_landed_before_its_parents_is_found_and_replaced_on_resume(env):
    """A first attempt lets chunks run in any order (replica): on one stream the largest chunk goes
    first, here a table reached through a parent none of whose rows is in the target yet, and
    the mover dies with it committed, not recorded. The resume finds those rows by the keys the
    chunk's rows have in the fenced source (not through the parent, absent), removes them and
    copies the chunk again: exactly one copy."""
    s = env.seed(workspaces=3, rows=3000, seed=23)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    for r in ("us", "eu"):
        with psycopg.connect(env.dsn(r), autocommit=True) as c:
            c.execute("CREATE TABLE lazy_parent (id bigint PRIMARY KEY, workspace_id bigint NOT NULL REFERENCES workspaces (id))")
            c.execute("CREATE TABLE lazy_child (id bigint PRIMARY KEY, parent_id bigint NOT NULL REFERENCES lazy_parent (id), n int)")
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        c.execute("INSERT INTO lazy_parent SELECT 900000 + i, %s FROM generate_series(1, 20) i", (ws,))
        c.execute("INSERT INTO lazy_child SELECT i, 900001 + i % 20, i FROM generate_series(1, 9000) i")  # the largest table
    before = counts(env.dsn("us"), ws)

    def rows(table):
        with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
            return c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]

    p = run_mover(env, "move", "start", str(ws), "--to", "eu", "--yes", "--strategy", "snapshot", "--jobs", "1", "--chunk-rows", "100000",
                  kill_at="chunk_copied", kill_after=1)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert (rows("lazy_child"), rows("lazy_parent")) == (9000, 0)  # the child landed first, alone
    (rec,) = move_status(env.connections, None)[:1]
    assert rec.checkpoints["copy"]["method"]["method"] == "replica"
    rec = resume_move(env.catalogue, env.connections, rec.id)
    assert rec.state == "cut_over"
    assert counts(env.dsn("eu"), ws) == before and (rows("lazy_child"), rows("lazy_parent")) == (9000, 20)
    assert rec.report["copy"]["tables"]["lazy_child"]["removed_first"] == 9000
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok


HOLDER = """
import sys, time
from residency.migrate.throttle import StreamSlots
s = StreamSlots({dsn!r}, 'us', 2)
with s.slot():
    with s.slot():
        print('held', flush=True)
        time.sleep(2)
        print('releasing', flush=True)
"""


def test_stream_cap_holds_across_processes(env):
    slots = StreamSlots(env.control_dsn, "us", 2)
    child = subprocess.Popen([sys.executable, "-c", HOLDER.format(dsn=env.control_dsn)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with psycopg.connect(env.control_dsn, autocommit=True) as c:
            assert slots.held(c) == 2
        other = StreamSlots(env.control_dsn, "eu", 2)  # another region's slots are free
        with other.slot():
            pass
        with slots.slot():
            # acquired only once the other process let go: it said so before releasing
            ready, _, _ = select.select([child.stdout], [], [], 0)
            assert ready and child.stdout.readline().strip() == "releasing"
    finally:
        child.wait(timeout=30)


@pytest.mark.parametrize("mode", ["recorded", "recompute"])
def test_a_chunk_failing_its_checksum_is_named_and_recopied_alone(env, monkeypatch, mode):
    """recompute: the target is read again by verify, so a row changed after the copy is caught;
    recorded (the default): verify trusts the sums each chunk recorded as it landed, so the chunk
    is made to land wrong (its row changed and its recorded sums being what the target holds)."""
    if mode == "recompute":
        monkeypatch.setenv("RESIDENCY_VERIFY_TARGET", "recompute")
    s = env.seed(workspaces=3, rows=6000, seed=4)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    before = counts(env.dsn("us"), ws)
    opts = CopyOptions(jobs=2, chunk_rows=300)
    rec = start_move(env.catalogue, env.connections, ws, "eu", strategy="snapshot", copy_options=opts, stop_after="copied")
    bounds = rec.checkpoints["copy"]["chunks"]["messages"]["bounds"]
    assert len(bounds) >= 3
    assert all("target" in d for d in rec.checkpoints["copy"]["chunks"]["messages"]["done"].values())
    lo, hi = bounds[1]
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        (victim,) = c.execute("SELECT min(id) FROM messages WHERE workspace_id = %s AND id > %s AND id <= %s", (ws, lo, hi)).fetchone()
        c.execute("UPDATE messages SET body = 'tampered' WHERE id = %s", (victim,))
        if mode == "recorded":
            b = make_context(env.catalogue, env.connections, ws, "us", "eu").builder
            n, h = c.execute(b.checksum_chunk("messages", True, True), b.params(str(ws), chunk_lo=lo, chunk_hi=hi)).fetchone()
            copy = rec.checkpoints["copy"]
            copy["chunks"]["messages"]["done"]["1"]["target"] = [int(n), str(h)]
            with psycopg.connect(env.control_dsn) as cp:
                moves.checkpoint(cp, rec.id, {"copy": copy})
    with pytest.raises(Exception) as exc:
        resume_move(env.catalogue, env.connections, rec.id, copy_options=opts)
    msg = str(exc.value)
    assert f"differing chunks: 2/{len(bounds)} ({lo}..{hi}]" in msg and str(victim) in msg
    (rec,) = move_status(env.connections, rec.id)
    assert rec.checkpoints["copy"]["redo_after_verify"] == {"messages": [1]}
    rec = resume_move(env.catalogue, env.connections, rec.id, copy_options=opts)
    assert rec.state == "cut_over"
    chunk_rows = rec.report["copy"]["tables"]["messages"]
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        (in_chunk,) = c.execute("SELECT count(*) FROM messages WHERE workspace_id = %s AND id > %s AND id <= %s", (ws, lo, hi)).fetchone()
    assert chunk_rows["removed_first"] == in_chunk  # only that chunk was removed and copied again
    assert counts(env.dsn("eu"), ws) == before
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM messages WHERE body = 'tampered'").fetchone()[0] == 0


def test_global_rows_are_a_task_waited_for_only_with_foreign_key_checks(env):
    s = env.seed(workspaces=2, rows=500, seed=3)
    ws = s.workspaces["us"][0]
    b = make_context(env.catalogue, env.connections, ws, "us", "eu").builder
    tables = list(b.graph.order)
    referencing = [t for t in tables if any(fk.ref_table == "users" for fk in b.graph.table(t).foreign_keys)]
    assert referencing and b.graph.global_order == ["users"]
    free = dependencies(b, tables, ["users"], fk_order=False)  # replica: nothing waits for the global rows
    assert free["global:users"] == set() and not any("global:users" in d for d in free.values())
    checked = dependencies(b, tables, ["users"], fk_order=True)  # FK checks on: the referencing tables wait
    assert all("global:users" in checked[t] for t in referencing)


def test_reached_tables_wait_for_their_parents_only_when_their_rows_cannot_be_found_by_key(env):
    s = env.seed(workspaces=2, rows=500, seed=3)
    ws = s.workspaces["us"][0]
    b = make_context(env.catalogue, env.connections, ws, "us", "eu").builder
    tables = list(b.graph.order)
    # reactions is reached through messages and conversations (polymorphic, no foreign key)
    assert not any(fk.ref_table in ("messages", "conversations") for fk in b.graph.table("reactions").foreign_keys)
    fenced = dependencies(b, tables, ["users"], fk_order=True, fenced=True)  # a snapshot move: cleared by its keys
    assert fenced["reactions"] == {"global:users"}
    online = dependencies(b, tables, ["users"], fk_order=True, fenced=False)  # unfenced source: found through its parents
    assert {"messages", "conversations"} <= online["reactions"]
    split = dependencies(b, tables, ["users"], fk_order=True, fenced=True, split={"messages"})
    assert split["messages:roots"] == fenced["messages"] and split["messages"] == {"messages:roots"}
    assert "messages" in split["attachments"]  # the children wait for the replies too


def test_owner_target_kill9_mid_copy_of_a_split_table_resumes_exactly_once(env):
    """A non-superuser owner (foreign-key checks on): messages (thread replies) is cut in roots
    ranges copied side by side and one chunk of replies; reactions runs beside them. A kill -9
    with chunks committed and unrecorded, then a resume: every row exactly once, verified."""
    s = env.seed(workspaces=3, rows=12000, seed=29)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    before = counts(env.dsn("us"), ws)
    dst = env.grant_role("eu", f"mv_split_{env.token}", owner=True, set_replication_role=False)
    p = run_mover(env, "move", "start", str(ws), "--to", "eu", "--yes", "--strategy", "snapshot", "--jobs", "2", "--chunk-rows", "700",
                  kill_at="chunk_copied", kill_after=9, extra_env={"RESIDENCY_EU_DSN": dst})
    assert p.returncode == -signal.SIGKILL, p.stderr
    (rec,) = move_status(env.connections, None)[:1]
    assert rec.checkpoints["copy"]["method"]["method"] == "disable_triggers"
    parts = [x[2] if len(x) > 2 else None for x in rec.checkpoints["copy"]["chunks"]["messages"]["bounds"]]
    assert parts.count("roots") >= 2 and parts[-1] == "rest"
    rec = resume_move(env.catalogue, env.connections_as({"eu": dst}), rec.id, copy_options=CopyOptions(jobs=2, chunk_rows=700))
    assert rec.state == "cut_over"
    assert counts(env.dsn("eu"), ws) == before
    assert sum(v.get("removed_first", 0) for v in rec.report["copy"]["tables"].values()) > 0
    assert verify_workspace(env.catalogue, env.connections, ws, "us", "eu").ok


def test_a_copy_stream_is_one_backend_on_the_source(env):
    """The cap on streams per source region caps the source's processes too: a stream's source
    session (and the snapshot's) plans no parallel workers, whatever the server's default."""
    from residency.migrate.chunks import SourceSnapshot, StreamConnections

    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        assert c.execute("SHOW max_parallel_workers_per_gather").fetchone()[0] != "0"
    streams = StreamConnections(env.dsn("us"), env.dsn("eu"))
    snap = SourceSnapshot(env.dsn("us"))
    try:
        src, dst = streams.get()
        assert src.execute("SHOW max_parallel_workers_per_gather").fetchone()[0] == "0"
        assert snap.conn.execute("SHOW max_parallel_workers_per_gather").fetchone()[0] == "0"
        assert dst.execute("SHOW max_parallel_workers_per_gather").fetchone()[0] != "0"  # the target's own choice
    finally:
        snap.close()
        streams.close()
