"""The mover's chunked parallel copy against what a skilled engineer would run, in one run.

    python -m bench.parallelbench [--sizes 1M,10M] [--target super|owner|granted|both|all] [--runs 3]
                                  [--jobs 2,4] [--pipes 2,4] [--pgcopydb-jobs 2,4] [--json] [--out DIR]

Per size (``--sizes``; ``--rows N`` is one size of N rows) one workspace is seeded in ``us`` (the
sample app: several tables plus its referenced users). Per target kind, every contender copies it
into the same target state (``eu``'s database dropped and created again from the sample-schema
template: every index and constraint, no rows; both servers CHECKPOINTed), in rounds whose order
rotates, median of ``--runs``. The target kinds:

- ``super``: the target reached as the sandbox's superuser;
- ``owner``: as a non-superuser member of the tables' owner role, *without* ``SET`` on
  ``session_replication_role``: the mover copies with ``disable_triggers`` (foreign-key order) and
  the peers run as the same role, their pipes in foreign-key order with the checks on; pgcopydb
  cannot run there (it needs replica for tables with foreign keys) and is left out, saying so;
- ``granted``: a non-superuser member of the owner with ``GRANT SET ON PARAMETER
  session_replication_role`` (PostgreSQL 15+): replica for everyone.

Contenders (the same rows: the mover's own SELECTs for every pipe):

- ``mover --jobs N``: a real snapshot move in a child process (bench/child.py) stopped once
  verified, then rolled back; the copy time is the wall time of its copy phase (referenced global
  rows, every chunk with its target checksums, objects, sequences, checkpoints), its verify phase
  and peak RSS reported beside it;
- ``serial pipe``: ``psql \\copy (SELECT ...) TO STDOUT (FORMAT binary) | psql \\copy t FROM STDIN``
  one table after another, the target with ``session_replication_role = replica`` where allowed;
- ``N parallel pipes``: the same pipes N at a time, largest first (in foreign-key order without
  replica);
- ``pgcopydb --table-jobs N``: ``pgcopydb copy table-data`` from a prepared database on the source
  server that holds only the workspace's rows, replica injected through the target URI's options;
  its target's rows are counted, since 0.10 can exit 0 with tables failed; what making that
  database took is printed under the table (it is not in pgcopydb's row);
- ``N parallel pipes + checksums`` (N: the first of --pipes): a copy checked as a careful
  engineer would check it by hand: those pipes, then each table's count and sum of row hashes
  (the mover's own checksum SQL) on both sides, N queries at a time, and every pair compared. It
  is not a copy peer (its ratio is not in the verdict on the copy): it stands against the
  mover's copy *and* verify, the same work done;
- ``read limit``: the same SELECTs ``\\copy ... TO '/dev/null'``, max(--pipes) at a time;
- ``write limit``: ``\\copy t FROM`` local binary files (dumped once per size) into the target,
  max(--pipes) at a time.

Targets (reported, never asserted): copy ≥ 1.0x the best peer (aim 1.2), within 1.3x of the write
limit, verify ≤ 0.15x copy, peak RSS < 200 MB. Reported beside them: the verified copy (the
mover's copy + verify) against the checked pipes. The load average is printed with the figures: on a
machine shared with other work they are indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import Say, checkpoint, mb, median, psql_binary, run_child, seed_workspace, vacuum_analyze
from bench.copybench import SOURCE, TARGET, mover_statements, pipe_commands
from bench.sandbox import REPO, BenchSandbox, temporary_sandbox

TARGET_KINDS = ("super", "owner", "granted")
GOALS = {"copy_vs_best_peer": 1.0, "copy_vs_best_peer_aim": 1.2, "copy_over_write_limit": 1.3, "verify_over_copy": 0.15, "peak_rss_mb": 200}
Command = tuple[str, str, str]  # (table, source \copy ... TO STDOUT, target \copy ... FROM STDIN)
CHECKED = "parallel pipes + checksums"  # the pipes, then both sides' checksums: a copy checked by hand


# ------------------------------------------------------------------------------ running pipes


def _psql(psql: str, dsn: str, command: str, *, replica: bool, stdin: Any = None, stdout: Any = subprocess.PIPE) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PGOPTIONS="-c session_replication_role=replica") if replica else None
    return subprocess.Popen([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", command], stdin=stdin, stdout=stdout,
                            stderr=subprocess.PIPE, env=env)


def _pipe(psql: str, src_dsn: str, dst_dsn: str, out_cmd: str, in_cmd: str, replica: bool) -> None:
    src = _psql(psql, src_dsn, out_cmd, replica=False)
    dst = _psql(psql, dst_dsn, in_cmd, replica=replica, stdin=src.stdout)
    assert src.stdout is not None
    src.stdout.close()  # the target psql owns the read end now
    _, derr = dst.communicate()
    serr = src.stderr.read() if src.stderr else b""
    src.wait()
    if src.returncode or dst.returncode:
        raise RuntimeError(f"pipe failed: {(serr or derr).decode(errors='replace').strip()[:300]}")


def _one(psql: str, dsn: str, command: str, replica: bool) -> None:
    p = _psql(psql, dsn, command, replica=replica, stdout=subprocess.DEVNULL)
    _, err = p.communicate()
    if p.returncode:
        raise RuntimeError(f"psql failed: {err.decode(errors='replace').strip()[:300]}")


def schedule(jobs: int, items: list[tuple[str, Any]], sizes: dict[str, int], deps: dict[str, set[str]]) -> float:
    """Run ``items`` ((table, thunk)) ``jobs`` at a time, largest first, a table only once the
    tables in ``deps`` are done. Returns the wall seconds."""
    todo = sorted(items, key=lambda i: -sizes.get(i[0], 0))
    left = {t for t, _ in todo}
    t0 = time.monotonic()
    running: dict[Future[None], str] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while todo or running:
            for item in list(todo):
                if len(running) >= jobs:
                    break
                if not (deps.get(item[0], set()) & left):
                    todo.remove(item)
                    running[pool.submit(item[1])] = item[0]
            if not running:
                raise RuntimeError(f"pipes: nothing can start ({[t for t, _ in todo]} wait for each other)")
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for f in finished:
                f.result()
                left.discard(running.pop(f))
    return round(time.monotonic() - t0, 3)


# ------------------------------------------------------------------------------ one size's set-up


@dataclass
class Setup:
    world: Any
    ws: str
    ws_rows: int
    commands: list[Command]
    sizes: dict[str, int]
    fk_parents: dict[str, set[str]]
    expected: int
    psql: str
    files: Path
    pgcopydb: str | None
    pc_src: str | None = None
    pc_prepare_seconds: float | None = None  # making pc_src (not in pgcopydb's row: see prepare_pgcopydb_source)
    notes: list[str] = field(default_factory=list)
    checksums: list[tuple[str, str]] = field(default_factory=list)  # (table, query): checksum_queries


def _fk_parents(world: Any, ws: str, tables: list[str]) -> dict[str, set[str]]:
    from residency.migrate.context import make_context

    g = make_context(world.catalogue, world.connections, ws, SOURCE, TARGET).graph
    return {t: {fk.ref_table for fk in g.table(t).foreign_keys if fk.ref_table != t and fk.ref_table in tables} for t in tables}


def prepare_pgcopydb_source(world: Any, psql: str, commands: list[Command], sizes: dict[str, int]) -> str:
    """A database on the source server holding only the workspace's rows (and its global rows),
    filled by the same SELECTs as the pipes (2 at a time), then VACUUM ANALYZEd. pgcopydb's row
    does not include this, as the issue defines that peer: it reads whole tables with no
    workspace predicate (for the tables reached through joins, an index probe per row in the
    mover's and the pipes' reads); what making such a database cost is reported beside it."""
    from residency.sandbox.core import APP_TEMPLATE, server_dsn

    name = f"pc_{world.token}"
    with psycopg.connect(world.admin_dsn(SOURCE), autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(APP_TEMPLATE)))
    dsn = server_dsn(world.home, SOURCE, name)
    with psycopg.connect(dsn, autocommit=True) as c:  # the template's own rows (none expected) go
        tables = [r[0] for r in c.execute("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND relkind = 'r'")]
        if tables:
            c.execute(sql.SQL("TRUNCATE {} CASCADE").format(sql.SQL(", ").join(sql.Identifier(t) for t in tables)))
    schedule(2, [(t, (lambda o=o, i=i: _pipe(psql, world.dsn(SOURCE), dsn, o, i, True))) for t, o, i in commands], sizes, {})
    vacuum_analyze(dsn)
    return dsn


def drop_database(world: Any, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(world.admin_dsn(SOURCE), autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))


def checksum_queries(world: Any, ws: str) -> list[tuple[str, str]]:
    """(table, query): the count and sum of row hashes of the workspace's rows of each table and
    of the shared rows it needs, the mover's own checksum SQL; run as is on either side."""
    return mover_statements(world, ws, lambda b, t: b.checksum(t, global_=True), lambda b, t: b.checksum(t))[1]


def run_checksums(s: Setup, src: str, dst: str, jobs: int) -> float:
    """Every table's checksum query on both sides, ``jobs`` at a time, largest first; raises if
    a pair differs. Returns the wall seconds."""
    got: dict[tuple[str, str], tuple[Any, ...]] = {}

    def one(table: str, side: str, dsn: str, query: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            got[(table, side)] = tuple(c.execute(query).fetchone() or ())

    items = [(f"{t} {side}", (lambda t=t, side=side, dsn=dsn, q=q: one(t, side, dsn, q))) for t, q in s.checksums for side, dsn in (("source", src), ("target", dst))]
    secs = schedule(jobs, items, {f"{t} {side}": s.sizes.get(t, 0) for t, _ in s.checksums for side in ("source", "target")}, {})
    bad = [t for t, _ in s.checksums if got[(t, "source")] != got[(t, "target")]]
    if bad:
        raise RuntimeError(f"checksums differ between source and target for {', '.join(bad)}")
    return secs


def _file_of(files: Path, table: str) -> str:
    return str(files / f"{table}.bin")


def dump_files(s: Setup) -> None:
    """The workspace's rows as local binary COPY files (the write limit's input), once per size."""
    items = [(t, (lambda t=t, o=o: _one(s.psql, s.world.dsn(SOURCE), o.replace(" TO STDOUT ", f" TO '{_file_of(s.files, t)}' "), False)))
             for t, o, _ in s.commands]
    schedule(2, items, s.sizes, {})


def setup_size(sbx: BenchSandbox, rows: int, say: Say, *, pgcopydb: bool = True) -> Setup:
    """The seeded workspace, the peers' commands and files; ``pgcopydb``: its source database
    prepared too (it runs only against a target that may set replica)."""
    from residency.migrate import plan_move

    world = sbx.world("p")
    ws, ws_rows, seed_s = seed_workspace(world, rows, region=SOURCE, seed=11)
    vacuum_analyze(world.dsn(SOURCE))
    say(f"seeded workspace {ws} with {ws_rows:,} rows in {seed_s}s")
    plan = plan_move(world.catalogue, world.connections, ws, TARGET, "snapshot")
    sizes = {t.table: t.rows for t in plan.tables} | {g.table: g.referenced_rows for g in plan.globals}
    commands = pipe_commands(world, ws)
    s = Setup(world, ws, ws_rows, commands, sizes, _fk_parents(world, ws, list(sizes)), sum(sizes.values()), psql_binary(sbx),
              Path(tempfile.mkdtemp(prefix="residency-bench-files-")), shutil.which("pgcopydb"))
    s.checksums = checksum_queries(world, ws)
    dump_files(s)
    if s.pgcopydb and pgcopydb:
        t0 = time.monotonic()
        s.pc_src = prepare_pgcopydb_source(world, s.psql, commands, sizes)
        s.pc_prepare_seconds = round(time.monotonic() - t0, 3)
    elif not s.pgcopydb:
        s.notes.append("pgcopydb: not installed (apt-get install -y pgcopydb)")
    return s


def teardown_size(s: Setup) -> None:
    try:
        if s.pc_src:
            drop_database(s.world, s.pc_src)
    finally:
        shutil.rmtree(s.files, ignore_errors=True)
        s.world.drop()


# ------------------------------------------------------------------------------ contenders


def _with_options(dsn: str) -> str:
    return dsn + ("&" if "?" in dsn else "?") + "options=-csession_replication_role%3Dreplica"


def _uri(dsn: str) -> str:
    """pgcopydb takes URIs: a key=value DSN turned into one."""
    if dsn.startswith("postgres"):
        return dsn
    from urllib.parse import quote

    d = psycopg.conninfo.conninfo_to_dict(dsn)
    host = str(d.pop("host", "localhost"))
    port = d.pop("port", None)
    user = d.pop("user", None)
    dbname = d.pop("dbname", "")
    auth = f"{quote(str(user))}@" if user else ""
    netloc = f"{quote(host, safe='')}" + (f":{port}" if port else "")
    extra = "&".join(f"{k}={quote(str(v))}" for k, v in d.items())
    return f"postgresql://{auth}{netloc}/{quote(str(dbname))}" + (f"?{extra}" if extra else "")


def run_pgcopydb(exe: str, src_dsn: str, dst_dsn: str, jobs: int) -> float:
    work = tempfile.mkdtemp(prefix="residency-bench-pgcopydb-")
    try:
        t0 = time.monotonic()
        p = subprocess.run([exe, "copy", "table-data", "--source", _uri(src_dsn), "--target", _with_options(_uri(dst_dsn)),
                            "--table-jobs", str(jobs), "--dir", work], capture_output=True, text=True)
        secs = round(time.monotonic() - t0, 3)
        if p.returncode:
            raise RuntimeError(f"pgcopydb failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
        return secs
    finally:
        shutil.rmtree(work, ignore_errors=True)


def target_rows(dsn: str, tables: list[str]) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        return sum(c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0] for t in tables)


def contenders(kind: str, jobs: list[int], pipes: list[int], pc_jobs: list[int], s: Setup) -> list[str]:
    out = [f"mover --jobs {j}" for j in jobs] + ["serial pipe"] + [f"{p} parallel pipes" for p in pipes] + [f"{p} {CHECKED}" for p in pipes[:1]]
    if s.pgcopydb and kind != "owner":
        out += [f"pgcopydb --table-jobs {j}" for j in pc_jobs]
    return out + ["read limit", "write limit"]


def target_dsn(s: Setup, kind: str) -> str:
    """The target database, freshly created, reached as the role of ``kind``."""
    w = s.world
    w.recreate_database(TARGET)
    if kind == "super":
        return str(w.dsn(TARGET))
    return str(w.grant_role(TARGET, f"bench_{kind}_{w.token}", owner=True, set_replication_role=kind == "granted"))


def run_one(sbx: BenchSandbox, s: Setup, kind: str, c: str, dst: str, limit_jobs: int) -> dict[str, Any]:
    from residency.migrate import rollback_move

    replica = kind != "owner"
    deps = {} if replica else s.fk_parents
    src = str(s.world.dsn(SOURCE))
    if c.startswith("mover"):
        res = run_child(sbx, s.world, s.ws, TARGET, stop_after="verified", jobs=int(c.split()[-1]), target_dsn=None if kind == "super" else dst)
        if res["state"] != "verified" or not res.get("verify_ok"):
            raise RuntimeError(f"benchmark move ended in {res['state']} (verified: {res.get('verify_ok')})")
        rollback_move(s.world.catalogue, s.world.connections, res["move_id"])
        return {"seconds": res["phases"].get("fenced"), "verify": res["phases"].get("copied"), "rss_mb": mb(res.get("vmhwm_kb")),
                "method": ((res.get("copy") or {}).get("method") or {}).get("method"), "chunks": (res.get("copy") or {}).get("chunks"),
                "throttled": ((res.get("throttle") or {}).get("throttled_seconds")), "verify_timings": res.get("verify_timings"),
                "copy_timings": (res.get("copy") or {}).get("timings"), "stream_seconds": (res.get("copy") or {}).get("stream_seconds")}
    if c == "read limit":
        items = [(t, (lambda o=o: _one(s.psql, src, o.replace(" TO STDOUT ", " TO '/dev/null' "), False))) for t, o, _ in s.commands]
        return {"seconds": schedule(limit_jobs, items, s.sizes, {})}
    if c.startswith("pgcopydb"):
        assert s.pgcopydb and s.pc_src
        secs = run_pgcopydb(s.pgcopydb, s.pc_src, dst, int(c.split()[-1]))
    elif c == "write limit":
        items = [(t, (lambda t=t, i=i: _one(s.psql, dst, i.replace(" FROM STDIN ", f" FROM '{_file_of(s.files, t)}' "), replica)))
                 for t, _, i in s.commands]
        secs = schedule(limit_jobs, items, s.sizes, deps)
    else:
        n = 1 if c == "serial pipe" else int(c.split()[0])
        items = [(t, (lambda o=o, i=i: _pipe(s.psql, src, dst, o, i, replica))) for t, o, i in s.commands]
        if n == 1:  # the mover's order (global rows, then foreign-key order), one after another
            t0 = time.monotonic()
            for _, f in items:
                f()
            secs = round(time.monotonic() - t0, 3)
        else:
            secs = schedule(n, items, s.sizes, deps)
    got = target_rows(s.world.dsn(TARGET), list(s.sizes))
    if got != s.expected:
        raise RuntimeError(f"{c} left {got:,} rows in the target, expected {s.expected:,}")
    if c.endswith(CHECKED):
        sums = run_checksums(s, src, dst, int(c.split()[0]))
        return {"seconds": round(secs + sums, 3), "copy": secs, "checksums": sums}
    return {"seconds": secs}


def run_kind(sbx: BenchSandbox, s: Setup, kind: str, runs: int, jobs: list[int], pipes: list[int], pc_jobs: list[int], say: Say) -> dict[str, Any]:
    names = contenders(kind, jobs, pipes, pc_jobs, s)
    got: dict[str, list[dict[str, Any]]] = {c: [] for c in names}
    load = [os.getloadavg()[0]]
    for r in range(runs):
        order = names[r % len(names):] + names[: r % len(names)]
        if r % 2:
            order.reverse()
        for c in order:
            dst = target_dsn(s, kind)
            checkpoint(s.world, [SOURCE, TARGET])
            res = run_one(sbx, s, kind, c, dst, max(pipes))
            got[c].append(res)
            say(f"[{kind}] round {r + 1}/{runs} {c}: {res['seconds']}s" + (f" (verify {res['verify']}s, {res['rss_mb']} MB, {res['method']})" if "verify" in res else ""))
    load.append(os.getloadavg()[0])
    return summarize(kind, got, load, s)


def summarize(kind: str, got: dict[str, list[dict[str, Any]]], load: list[float], s: Setup) -> dict[str, Any]:
    med = {c: median(r["seconds"] for r in v) for c, v in got.items()}
    movers = {c: v for c, v in med.items() if c.startswith("mover") and v}
    best_c = min(movers, key=lambda c: movers[c]) if movers else None
    best = movers.get(best_c) if best_c else None
    peers = {c: v for c, v in med.items() if not c.startswith("mover") and "limit" not in c and not c.endswith(CHECKED) and v}
    best_peer = min(peers.values()) if peers else None
    verify = median(r["verify"] for r in got.get(best_c, []) if r.get("verify") is not None) if best_c else None
    rss = max((r["rss_mb"] for c, v in got.items() if c.startswith("mover") for r in v if r.get("rss_mb") is not None), default=None)
    write = med.get("write limit")
    pc_rows = [f"pgcopydb's rows exclude preparing its source database (the workspace's rows alone, by the same SELECTs as the pipes, 2 at a time,"
               f" then VACUUM ANALYZE): {s.pc_prepare_seconds} s, once per size"] if s.pc_prepare_seconds is not None and any(c.startswith("pgcopydb") for c in med) else []
    checked = next((c for c in med if c.endswith(CHECKED) and med[c]), None)
    verified = round(best + verify, 3) if best and verify else None
    goals = {
        "copy_vs_best_peer": round(best_peer / best, 3) if best and best_peer else None,
        "copy_over_write_limit": round(best / write, 3) if best and write else None,
        "verify_over_copy": round(verify / best, 3) if verify and best else None,
        "peak_rss_mb": rss,
    }
    beside = {"mover_copy_and_verify_seconds": verified, "checked_peer": checked,
              "checked_peer_over_copy_and_verify": round(med[checked] / verified, 3) if checked and verified else None}
    return {"target": kind, "workspace_rows": s.ws_rows, "rows_copied": s.expected, "tables": len(s.sizes), "runs": {c: [r["seconds"] for r in v] for c, v in got.items()},
            "median_seconds": med, "best_mover": best_c, "ratio_peer_over_best_mover": {c: round(v / best, 3) for c, v in med.items() if not c.startswith("mover") and not c.endswith(CHECKED) and v and best},
            "mover_details": {c: v for c, v in got.items() if c.startswith("mover")}, "verify_seconds": verify, "goals": goals, "verified": beside,
            "pgcopydb_source_prepare_seconds": s.pc_prepare_seconds if pc_rows else None,
            "loadavg_1m": [round(x, 1) for x in load], "cpus": os.cpu_count(), "notes": list(s.notes) + pc_rows + (["pgcopydb: left out on the owner target (it needs session_replication_role = replica for tables with foreign keys; this role may not set it)"] if kind == "owner" and s.pgcopydb else [])}


# ------------------------------------------------------------------------------ output


def _mark(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "MISSED")


def render(res: dict[str, Any]) -> str:
    out = []
    for r in res["results"]:
        g = r["goals"]
        out += [f"### {r['rows_copied']:,} rows ({r['tables']} tables), target: {r['target']}; median of {len(next(iter(r['runs'].values())))}, "
                f"{r['cpus']} CPUs, load average {r['loadavg_1m'][0]} → {r['loadavg_1m'][1]}",
                "", "| contender | median s | runs s | peer / best mover |", "|---|---|---|---|"]
        for c, m in r["median_seconds"].items():
            ratio: Any = r["ratio_peer_over_best_mover"].get(c)
            if c.endswith(CHECKED) and (r.get("verified") or {}).get("checked_peer_over_copy_and_verify") is not None:
                ratio = f"{r['verified']['checked_peer_over_copy_and_verify']} (over copy + verify)"
            extra = ""
            if c in r["mover_details"]:
                d = r["mover_details"][c][-1]
                extra = f" ({d.get('method')}, verify {d.get('verify')} s, {d.get('rss_mb')} MB)"
            out.append(f"| {c}{extra} | {m} | {', '.join(str(x) for x in r['runs'][c])} | {ratio if ratio is not None else '—'} |")
        out += ["",
                f"- copy vs best peer: {g['copy_vs_best_peer']}x (target ≥ {GOALS['copy_vs_best_peer']}, aim {GOALS['copy_vs_best_peer_aim']}): "
                f"{_mark(None if g['copy_vs_best_peer'] is None else g['copy_vs_best_peer'] >= GOALS['copy_vs_best_peer'])}",
                f"- copy / write limit: {g['copy_over_write_limit']} (target ≤ {GOALS['copy_over_write_limit']}): "
                f"{_mark(None if g['copy_over_write_limit'] is None else g['copy_over_write_limit'] <= GOALS['copy_over_write_limit'])}",
                f"- verify / copy: {g['verify_over_copy']} (target ≤ {GOALS['verify_over_copy']}): "
                f"{_mark(None if g['verify_over_copy'] is None else g['verify_over_copy'] <= GOALS['verify_over_copy'])}",
                f"- peak RSS: {g['peak_rss_mb']} MB (target < {GOALS['peak_rss_mb']}): {_mark(None if g['peak_rss_mb'] is None else g['peak_rss_mb'] < GOALS['peak_rss_mb'])}"]
        v = r.get("verified") or {}
        if v.get("checked_peer_over_copy_and_verify") is not None:
            out.append(f"- verified copy: the mover's copy + verify {v['mover_copy_and_verify_seconds']} s against {v['checked_peer']} "
                       f"{r['median_seconds'][v['checked_peer']]} s: {v['checked_peer_over_copy_and_verify']}x (beside the targets: the same work on both sides)")
        out += [f"- {n}" for n in r["notes"]] + [""]
    return "\n".join(out)


def parse_size(v: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", v)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {v!r} (e.g. 1M, 10M, 250k, 50000)")
    return int(float(m.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()])


def _ints(v: str) -> list[int]:
    return [int(x) for x in v.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.parallelbench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1M", help="workspace sizes in rows, comma-separated (e.g. 1M,10M)")
    ap.add_argument("--rows", type=int, default=None, help="one size of this many rows (instead of --sizes)")
    ap.add_argument("--target", default="both", choices=[*TARGET_KINDS, "both", "all"],
                    help="super, owner (non-superuser owner, no replica), granted (non-superuser with SET on session_replication_role), both (super and owner), all")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", default="2,4", help="the mover's --jobs values")
    ap.add_argument("--pipes", default="2,4", help="parallel psql pipes (the largest is also the limits' parallelism)")
    ap.add_argument("--pgcopydb-jobs", default="2,4", help="pgcopydb --table-jobs values")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"), help="where the table and JSON are written")
    a = ap.parse_args(argv)
    sizes = [a.rows] if a.rows else [parse_size(x) for x in a.sizes.split(",") if x.strip()]
    kinds = {"both": ["super", "owner"], "all": list(TARGET_KINDS)}.get(a.target, [a.target])

    def say(m: str) -> None:
        print(m, file=sys.stderr, flush=True)

    results = []
    with temporary_sandbox() as sbx:
        for rows in sizes:
            s = setup_size(sbx, rows, say, pgcopydb=any(k != "owner" for k in kinds))
            try:
                for kind in kinds:
                    results.append(run_kind(sbx, s, kind, a.runs, _ints(a.jobs), _ints(a.pipes), _ints(a.pgcopydb_jobs), say))
            finally:
                teardown_size(s)
    res = {"command": "python -m bench.parallelbench " + " ".join(argv if argv is not None else sys.argv[1:]), "results": results}
    text = render(res)
    os.makedirs(a.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    Path(a.out, f"parallel-{stamp}.md").write_text(text + "\n")
    Path(a.out, f"parallel-{stamp}.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(json.dumps(res, indent=2, default=str) if a.json else text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
