"""Sandbox lifecycle and faults: up/down twice, taken ports, stale state, killed servers, root.

These start their own small sandbox (control plane + one region + S3) in a temporary home, never
the session's and never the user's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from residency import catalogue as catalogue_mod
from residency import pgserver
from residency import sandbox as sb
from residency.errors import OperationError

SMALL = """\
jurisdictions:
  US: {aws_regions: [us-east-1, us-east-2, us-west-2]}
environment:
  database: {engine: postgres, version: "15", instance_class: db.r6g.large, storage_gb: 200, multi_az: true}
  buckets: [attachments]
  queues: [events]
  retention: {backups_days: 35, deleted_workspace_days: 30}
regions:
  us: {aws_region: us-east-1, jurisdiction: US, cidr: 10.10.0.0/16, backup_region: us-west-2, status: active}
workspace:
  root_table: workspaces
  key_column: workspace_id
  global_tables: [users]
  paths: {}
  object_prefix: "workspaces/{workspace_id}/"
"""


@pytest.fixture
def small(tmp_path):
    cat = catalogue_mod.loads(SMALL, "small.yaml")
    home = tmp_path / "home"
    yield cat, home
    sb.destroy(home)


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _pids(st) -> dict[str, int | None]:
    return {s.name: s.pid for s in st.servers}


def test_up_twice_is_idempotent_and_down_twice_is_harmless(small):
    cat, home = small
    first = sb.up(cat, home)
    assert first.healthy and [s.name for s in first.servers] == ["control", "us", "s3"]
    t = time.monotonic()
    second = sb.up(cat, home)
    assert time.monotonic() - t < 5
    assert second.healthy
    assert _pids(second) == _pids(first)
    assert {s.name: s.port for s in second.servers} == {s.name: s.port for s in first.servers}

    d1 = sb.down(home)
    assert d1.stopped == ("control", "us", "s3") and d1.already_stopped == ()
    for pid in _pids(first).values():
        assert not pgserver.pid_alive(pid)
    d2 = sb.down(home)
    assert d2.stopped == () and set(d2.already_stopped) == {"control", "us", "s3"}
    st = sb.status(home)
    assert not st.healthy and {s.state for s in st.servers} == {"stopped"}
    assert sb.sandbox_connections(cat, home) is None
    # and a home without any sandbox
    assert sb.down(home.parent / "nothing").existed is False
    assert sb.status(home.parent / "nothing").exists is False


def test_down_stops_only_what_the_sandbox_started(small, tmp_path):
    cat, home = small
    sb.up(cat, home)
    bystander = subprocess.Popen(["sleep", "60"])
    state = json.loads((home / "state.json").read_text())
    moto_pid = state["s3"]["pid"]
    try:
        state["s3"]["pid"] = bystander.pid  # a state file pointing at someone else's process
        (home / "state.json").write_text(json.dumps(state))
        r = sb.down(home)
        assert "s3" in r.already_stopped
        assert bystander.poll() is None, "down must not kill a process it did not start"
    finally:
        bystander.kill()
        bystander.wait()
        # the sandbox's own moto server is still running: point the state back at it, so the
        # fixture's destroy stops it instead of leaving it behind after the session
        state["s3"]["pid"] = moto_pid
        (home / "state.json").write_text(json.dumps(state))
    assert pgserver.pid_alive(moto_pid)
    assert sb.down(home).stopped == ("s3",)
    assert not pgserver.pid_alive(moto_pid)


def test_taken_port_is_reported_and_up_moves_to_a_free_one(small):
    cat, home = small
    first = sb.up(cat, home)
    sb.down(home)
    ctl_port = first.server("control").port
    s3_port = first.server("s3").port
    blockers = []
    try:
        for port in (ctl_port, s3_port):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
            blockers.append(s)
        # the server on its own: one clear line
        state = sb.read_state(home)
        e = state["control"]
        srv = pgserver.Server(e["datadir"], ctl_port, pgserver.Binaries(state["pg"]["bindir"], state["pg"]["version"]),
                              pgserver.RunAs(**state["run_as"]), e["log"])
        with pytest.raises(OperationError, match=rf"port {ctl_port} on 127.0.0.1 is already in use"):
            srv.start()
        # the sandbox: recovers on new ports and says so
        st = sb.up(cat, home)
        assert st.healthy
        assert st.server("control").port != ctl_port and st.server("s3").port != s3_port
        assert any("taken" in m for m in st.messages)
        conns = sb.sandbox_connections(cat, home)
        assert f":{st.server('control').port}/" in conns.control_dsn
    finally:
        for s in blockers:
            s.close()


def test_stale_state_file_with_dead_pids(small):
    cat, home = small
    sb.up(cat, home)
    sb.down(home)
    # as after a reboot: the state and the pid files name processes that no longer exist
    dead = _dead_pid()
    state = json.loads((home / "state.json").read_text())
    for e in [state["control"], *state["regions"].values()]:
        e["pid"] = dead
        pidfile = Path(e["datadir"]) / "postmaster.pid"
        pidfile.write_text(f"{dead}\n{e['datadir']}\n0\n{e['port']}\n")
        os.chown(pidfile, state["run_as"]["uid"], state["run_as"]["gid"])
    state["s3"]["pid"] = dead
    (home / "state.json").write_text(json.dumps(state))

    st = sb.status(home)
    assert not st.healthy and {s.state for s in st.servers} == {"stopped"}
    assert sb.sandbox_connections(cat, home) is None
    st = sb.up(cat, home)
    assert st.healthy, [(s.name, s.detail) for s in st.servers]


def test_killed_server_is_reported_and_up_recovers_it(small):
    cat, home = small
    st = sb.up(cat, home)
    dsn = sb.server_dsn(home, "us", sb.APP_DB)
    with psycopg.connect(dsn) as c:
        c.execute("INSERT INTO users (email, display_name) VALUES ('kept@example.test', 'Kept')")
    us = st.server("us")
    os.kill(us.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pgserver.pid_alive(us.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    after = sb.status(home)
    assert after.server("us").state == "stopped" and "killed" in after.server("us").detail
    assert after.server("control").healthy and after.server("s3").healthy
    assert not after.healthy

    recovered = sb.up(cat, home)
    assert recovered.healthy
    assert recovered.server("us").pid != us.pid
    # the old port is reused when still free; on a shared machine another process may have taken
    # it meanwhile, and then up says where the server went
    new_port = recovered.server("us").port
    moved = [m for m in recovered.messages if m.startswith("us: port")]
    if new_port == us.port:
        assert moved == []
    else:
        assert moved == [f"us: port {us.port} was taken, now on port {new_port}"]
    assert recovered.server("control").pid == st.server("control").pid  # the others were left alone
    dsn = sb.server_dsn(home, "us", sb.APP_DB)
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM users WHERE email = 'kept@example.test'").fetchone()[0] == 1


def test_killed_s3_comes_back_with_its_buckets(small):
    cat, home = small
    st = sb.up(cat, home)
    os.kill(st.server("s3").pid, signal.SIGKILL)
    time.sleep(0.2)
    assert not sb.status(home).server("s3").healthy
    st2 = sb.up(cat, home)
    assert st2.healthy
    assert any("recreated" in m for m in st2.messages) or st2.server("s3").pid != st.server("s3").pid
    from residency.connections import s3_client

    names = {b["Name"] for b in s3_client(sb.sandbox_connections(cat, home).region("us")).list_buckets()["Buckets"]}
    assert "residency-us-attachments" in names


def test_no_server_binaries_says_how_to_get_them(monkeypatch):
    monkeypatch.delenv("RESIDENCY_PG_BINDIR", raising=False)
    monkeypatch.setattr(pgserver, "candidate_bindirs", lambda: [])
    with pytest.raises(OperationError) as ei:
        pgserver.find_binaries()
    assert "apt-get install postgresql" in str(ei.value) and "\n" not in str(ei.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="only meaningful when the tests run as root")
def test_as_root_servers_run_as_an_unprivileged_user(sandbox):
    st = sb.status(sandbox.home)
    state = sb.read_state(sandbox.home)
    assert state["run_as"]["uid"] != 0
    for s in st.servers:
        if s.kind in ("control", "region"):
            assert pgserver.proc_uid(s.pid) == state["run_as"]["uid"]
            assert os.stat(s.datadir).st_uid == state["run_as"]["uid"]
    # and the data is outside root's private home, where that user can reach it
    assert pgserver.reachable_by(state["data_root"], pgserver.RunAs(**state["run_as"]))
