"""The source's checksums taken from the copy itself, the sampled chunk bounds and the order the
streams take chunks in: a snapshot move records the same source sums verify would compute,
rows arrive without the hash column they carried, and a chain of dependent tables starts early."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from residency.migrate import rollback_move, start_move
from residency.migrate.chunks import Chunk, chunks_of, plan_bounds, priority, run
from residency.migrate.context import make_context
from residency.migrate.copy import _stream
from residency.migrate.progress import Meter
from residency.migrate.rowhash import RowHashes, StreamFormatError
from move_support import counts


@pytest.fixture
def seeded(env):
    s = env.seed(workspaces=3, rows=12000, seed=57)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    return env, str(ws)


def _relay_into_temp(env, b, ws, table, hashes, *, hashed=True):
    """Stream the workspace's rows of ``table`` (hashed) from us into a temp copy of the table in
    eu; returns (rows the target took, the temp table's count and checksum)."""
    with psycopg.connect(env.dsn("us"), autocommit=True) as src, psycopg.connect(env.dsn("eu")) as dst:
        dst.execute(b.temp_like("landed", table))
        rows = _stream(src, dst, b.copy_out_chunk(table, False, False, hashed=hashed), b.copy_in(table, into=sql.Identifier("landed")),
                       b.params(ws), Meter(lambda e: None, "copy", table, None), lambda: False, None, hashes)
        h, x = sql.Identifier("h"), sql.Identifier("x")
        landed = dst.execute(sql.SQL("SELECT count(*), coalesce(sum(hash_record_extended({h}, 0)), 0) FROM (SELECT {hc} FROM {t} {x}) {h}").format(
            h=h, hc=b._hash_columns(b.graph.table(table), x), t=sql.Identifier("landed"), x=x)).fetchone()
        dst.rollback()
    return rows, (int(landed[0]), Decimal(landed[1]))


def test_hashed_stream_sums_what_verify_sums_and_delivers_rows_without_the_hash(seeded):
    env, ws = seeded
    b = make_context(env.catalogue, env.connections, ws, "us", "eu").builder
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        for table in b.graph.order:
            n, total = c.execute(b.checksum(table), b.params(ws)).fetchone()
            hashes = RowHashes()
            rows, landed = _relay_into_temp(env, b, ws, table, hashes)
            assert hashes.sums == [n, str(total)], table
            assert rows == n and landed == (n, Decimal(total)), table


def test_an_empty_stream_sums_to_zero_and_a_stream_without_hashes_is_refused(seeded):
    env, _ = seeded
    b = make_context(env.catalogue, env.connections, seeded[1], "us", "eu").builder
    hashes = RowHashes()
    assert _relay_into_temp(env, b, "424242424242", "messages", hashes) == (0, (0, Decimal(0)))  # no such workspace
    assert hashes.sums == [0, "0"]
    with pytest.raises(StreamFormatError, match="8-byte hash column"):
        _relay_into_temp(env, b, seeded[1], "messages", RowHashes(), hashed=False)


def test_sampled_bounds_cover_every_row_once_in_even_chunks(seeded):
    env, ws = seeded
    b = make_context(env.catalogue, env.connections, ws, "us", "eu").builder
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        total, total_sum = c.execute(b.checksum("messages"), b.params(ws)).fetchone()
        chunk_rows = total // 4  # 4 chunks: 1,600 sampled keys of several thousand, not every key
        assert 400 * 4 < total
        bounds = plan_bounds(c, b, ws, "messages", total, chunk_rows, fk_order=False)
        assert 3 <= len(bounds) <= 4 and bounds[0][0] is None and bounds[-1][1] is None
        got = []
        for ch in chunks_of("messages", bounds, total):
            got.append(c.execute(b.checksum_chunk("messages", ch.lo is not None, ch.hi is not None), ch.params(b, ws)).fetchone())
    assert sum(n for n, _ in got) == total and sum(Decimal(s) for _, s in got) == Decimal(total_sum)
    share = total / len(bounds)
    assert all(0.6 * share <= n <= 1.4 * share for n, _ in got), got


def test_the_last_range_is_cut_for_each_stream_so_the_streams_end_together(seeded):
    """With two streams the last quarter of four is cut in two: two smaller chunks the scheduler
    takes last, still every row once."""
    env, ws = seeded
    b = make_context(env.catalogue, env.connections, ws, "us", "eu").builder
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        total, total_sum = c.execute(b.checksum("messages"), b.params(ws)).fetchone()
        bounds = plan_bounds(c, b, ws, "messages", total, total // 4 + 1, fk_order=False, jobs=2)
        got = [c.execute(b.checksum_chunk("messages", ch.lo is not None, ch.hi is not None), ch.params(b, ws)).fetchone()
               for ch in chunks_of("messages", bounds, total)]
    assert len(bounds) == 5 and bounds[0][0] is None and bounds[-1][1] is None
    assert sum(n for n, _ in got) == total and sum(Decimal(s) for _, s in got) == Decimal(total_sum)
    quarter = total / 4
    assert all(0.6 * quarter <= n <= 1.4 * quarter for n, _ in got[:3]), got
    assert all(0.3 * quarter <= n <= 0.7 * quarter for n, _ in got[3:]), got


def test_streams_take_a_table_no_other_stream_is_copying_while_there_is_one():
    """Two streams, a big table's chunks and a smaller table's: they copy different tables side by
    side as long as both have chunks left, and the big table alone only at the end."""
    tasks = [Chunk("big", i, 6, None, None, 100) for i in range(6)] + [Chunk("small", i, 3, None, None, 90) for i in range(3)]
    running: dict[str, int] = {}
    both: list[tuple[str, ...]] = []
    lock = threading.Lock()

    def work(c: Chunk) -> dict:
        with lock:
            running[c.table] = running.get(c.table, 0) + 1
            both.append(tuple(sorted(t for t, n in running.items() for _ in range(n))))
        time.sleep(0.02)
        with lock:
            running[c.table] -= 1
        return {}

    run(tasks, jobs=2, deps={}, exclusive=lambda t: False, work=work, on_done=lambda c, r: None)
    pairs = [p for p in both if len(p) == 2]
    assert ("big", "big") not in pairs[:3] and ("big", "small") in pairs, both


def test_a_chain_of_waiting_tables_is_started_before_a_larger_lone_chunk():
    tasks = [Chunk("parents", 0, 1, None, None, 100), Chunk("children", 0, 1, None, None, 80), Chunk("grandchildren", 0, 1, None, None, 40),
             Chunk("lone", 0, 2, None, 1, 110), Chunk("lone", 1, 2, 1, None, 110), Chunk("users", 0, 1, None, None, 5, kind="global")]
    deps = {"children": {"parents"}, "grandchildren": {"children"}}
    order = [(c.table, c.index) for c in sorted(tasks, key=priority(tasks, deps))]
    # global rows first; then parents (100 + the chain 80 + 40 after it) before the lone 110s;
    # children (80 + 40) before a lone chunk too once ready
    assert order[0] == ("users", 0)
    assert order.index(("parents", 0)) < order.index(("lone", 0))
    assert order.index(("children", 0)) < order.index(("lone", 0))


def test_a_snapshot_move_records_the_sources_sums_from_its_chunks(seeded, monkeypatch):
    env, ws = seeded
    monkeypatch.setenv("RESIDENCY_COPY_CHUNK_ROWS", "300")  # several chunks per big table
    before = counts(env.dsn("us"), ws)
    rec = start_move(env.catalogue, env.connections, ws, "eu", stop_after="copied")
    b = make_context(env.catalogue, env.connections, ws, "us", "eu").builder
    stored = rec.checkpoints["source_checksums"]
    assert stored["taken"] == "in the copy stream" and stored["fence_token"] == rec.checkpoints["fence_token"]
    chunks = rec.checkpoints["copy"]["chunks"]
    assert len(chunks["messages"]["bounds"]) > 1 and len(chunks["reactions"]["bounds"]) > 1
    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        for table in b.graph.order:
            n, total = c.execute(b.checksum(table), b.params(ws)).fetchone()
            assert stored["tables"][table] == [n, str(total)], table
            assert n == before.get(table, n)
            # and the target's sums each chunk recorded as it landed add up to the same
            done = chunks[table]["done"]
            if all("target" in d for d in done.values()):
                assert sum(int(d["target"][0]) for d in done.values()) == n
                assert sum(Decimal(d["target"][1]) for d in done.values()) == Decimal(total)
    rollback_move(env.catalogue, env.connections, rec.id)


def test_reading_a_copy_directly_ends_like_psycopg_and_raises_its_errors(env):
    """copyread.messages gives every row, leaves the connection ready for the next statement, and
    an error the server raises mid-COPY arrives as psycopg's own exception class."""
    from residency.migrate import copyread

    with psycopg.connect(env.dsn("us"), autocommit=True) as c:
        with c.cursor().copy("COPY (SELECT i FROM generate_series(1, 5000) i) TO STDOUT (FORMAT BINARY)"):
            got = list(copyread.messages(c))
        assert len(got) == 5000 + 1  # the rows, then the trailer
        assert c.execute("SELECT 41 + 1").fetchone() == (42,)
        with pytest.raises(psycopg.errors.DivisionByZero):
            with c.cursor().copy("COPY (SELECT 1 / (i - 4000) FROM generate_series(1, 5000) i) TO STDOUT (FORMAT BINARY)"):
                for _ in copyread.messages(c):
                    pass
        assert c.execute("SELECT 1").fetchone() == (1,)
