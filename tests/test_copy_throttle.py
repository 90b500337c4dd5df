"""The copy backs off while the source is loaded (migrate.load): busy backends the throttler sees
hold the copy back, the move's report says for how long and why, and lifting the load lets it
finish. A role without pg_read_all_stats sees less of the load, and says so."""

from __future__ import annotations

import threading
import time

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from residency.migrate import resume_move, start_move
from residency.migrate.chunks import CopyOptions
from residency.migrate import plan_move
from residency.migrate.load import LoadLimits, SourceLoad, measure, plan_note, visibility
from move_support import counts, home


class Sleepers:
    """``n`` connections on ``dsn`` each running a long pg_sleep (active backends), until lifted."""

    def __init__(self, dsn: str, n: int):
        self.conns = [psycopg.connect(dsn, autocommit=True, application_name="app-load") for _ in range(n)]
        self.threads = [threading.Thread(target=self._sleep, args=(c,), daemon=True) for c in self.conns]
        self.admin = psycopg.connect(dsn, autocommit=True)
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + 30
        pids = [c.info.backend_pid for c in self.conns]
        while time.monotonic() < deadline:  # every sleeper is running its statement
            (n_active,) = self.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND state = 'active'", (pids,)).fetchone()
            if n_active == len(pids):
                break
            time.sleep(0.05)

    @staticmethod
    def _sleep(c: psycopg.Connection) -> None:
        try:
            c.execute("SELECT pg_sleep(600)")
        except psycopg.errors.QueryCanceled:
            pass

    def lift(self) -> None:
        if self.admin.closed:
            return
        for c in self.conns:
            self.admin.execute("SELECT pg_cancel_backend(%s)", (c.info.backend_pid,))
        for t in self.threads:
            t.join(30)
        for c in self.conns + [self.admin]:
            c.close()


def test_a_loaded_source_holds_the_copy_back_until_the_load_lifts(env):
    s = env.seed(workspaces=2, rows=3000, seed=5)
    ws = s.biggest if s.home[s.biggest] == "us" else s.workspaces["us"][0]
    before = counts(env.dsn("us"), ws)
    conns = env.connections_as({"us": env.grant_role("us")})  # a non-superuser with pg_read_all_stats
    opts = CopyOptions(jobs=2, chunk_rows=400, load=LoadLimits(max_active=2, max_lag=30, check_seconds=0.2))
    rec = start_move(env.catalogue, conns, ws, "eu", strategy="snapshot", copy_options=opts, stop_after="fenced")
    load = Sleepers(env.dsn("us"), 3)  # after the fence: it waits for older transactions
    waiting = threading.Event()
    out: dict = {}

    def progress(ev) -> None:
        if ev.phase == "state" and ev.message.startswith("source loaded, copy waiting"):
            out.setdefault("message", ev.message)
            waiting.set()

    def mover() -> None:
        try:
            out["rec"] = resume_move(env.catalogue, conns, rec.id, progress=progress, copy_options=opts)
        except BaseException as exc:  # noqa: BLE001 - reported below
            out["error"] = exc

    t = threading.Thread(target=mover, daemon=True)
    try:
        t.start()
        assert waiting.wait(120), out.get("error")
        time.sleep(2)
        assert t.is_alive()
        with psycopg.connect(env.dsn("eu"), autocommit=True) as c:  # nothing copied while loaded
            assert c.execute("SELECT count(*) FROM channels WHERE workspace_id = %s", (ws,)).fetchone()[0] == 0
    finally:
        load.lift()
    t.join(300)
    assert "error" not in out, out.get("error")
    rec = out["rec"]
    assert rec.state == "cut_over"
    assert counts(env.dsn("eu"), ws) == before
    assert home(env, ws)[:2] == ("eu", "active")
    thr = rec.report["copy"]["throttle"]
    assert "3 active connections on the source (limit 2)" in out["message"]
    assert thr["throttled_seconds"] >= 2 and thr["waits"] >= 1 and thr["peak_active"] >= 3
    assert thr["reasons"] == ["3 active connections on the source (limit 2)"]
    assert thr["visibility"].startswith("full")
    with psycopg.connect(env.control_dsn, autocommit=True) as c:  # the audit entry of the copy says so too
        (waited,) = c.execute("SELECT (details->>'throttled_seconds')::float FROM residency.audit WHERE action = 'move.copied'"
                              " AND subject = %s", (f"move/{rec.id}",)).fetchone()
    assert waited == thr["throttled_seconds"]


def test_what_a_role_sees_of_the_load(env):
    s = env.seed(workspaces=2, rows=200, seed=6)
    plan = plan_move(env.catalogue, env.connections, s.workspaces["us"][0], "eu", "snapshot")
    assert any(n.startswith("source load: the copy waits while the source has more than 64 active connections or replication lag over 30 s;"
                            " the role's view: full") for n in plan.notes), plan.notes
    load = Sleepers(env.dsn("us"), 2)
    plain = f"plain_{env.token}"
    with psycopg.connect(env.admin_dsn("us"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(plain)))
    try:
        with psycopg.connect(env.grant_role("us"), autocommit=True) as c:  # pg_read_all_stats
            assert visibility(c).startswith("full")
            assert measure(c)[0] >= 2
        with psycopg.connect(make_conninfo(env.dsn("us"), user=plain), autocommit=True) as c:
            assert visibility(c).startswith("partial")
            assert measure(c)[0] == 0  # other roles' backends show no state to it
            assert "GRANT pg_read_all_stats" in plan_note(c)
        throttle = SourceLoad(env.dsn("us"), LoadLimits(max_active=1, max_lag=None, check_seconds=0.05))
        stop = threading.Timer(0.5, load.lift)
        stop.start()
        waited = throttle.wait()
        stop.join()
        throttle.close()
        assert waited >= 0.4 and throttle.report()["waits"] == 1
        assert SourceLoad(env.dsn("us"), LoadLimits(max_active=1, max_lag=None)).wait() == 0.0  # lifted: no wait
    finally:
        load.lift()
        with psycopg.connect(env.admin_dsn("us"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(plain)))
