"""Bad input, one rule (issue 15): every probe ends in one line, the right exit code, no
traceback and nothing changed. Through click's CliRunner (and a subprocess where a real
terminal-less process matters), against the real sandbox servers where a database is involved.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import psycopg
import pytest
import yaml
from click.testing import CliRunner

from residency.cli import main
from move_support import connections_env, run_mover

REPO = Path(__file__).resolve().parents[1]
BASE = ["--regions", str(REPO / "regions.yaml")]


def _run(args, env=None, input=None):
    return CliRunner().invoke(main, BASE + list(args), env=env, input=input)


def _one_line(r, code):
    """Exit ``code``, exactly one line on stderr, no traceback."""
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.output and "Traceback" not in r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return lines[0]


@pytest.fixture
def cli_env(env, monkeypatch):
    """The CLI pointed at this test's world (connections file + control DSN)."""
    for k, v in connections_env(env).items():
        monkeypatch.setenv(k, v)
    return env


def _empty(tmp_path):
    f = tmp_path / "empty-connections.yaml"
    f.write_text("{}\n")
    return f


def _directory(env):
    with psycopg.connect(env.control_dsn) as c:
        return c.execute("SELECT workspace_id, region, status, version FROM residency.directory ORDER BY 1").fetchall()


# --------------------------------------------------------------------------- hostile ids


@pytest.mark.parametrize("ws", ["1; DROP TABLE workspaces", "1 OR 1=1", "'1'", "x", "1e3", "9223372036854775808", "", "\x00"])
def test_hostile_workspace_ids_are_one_line_before_any_connection(ws, monkeypatch, tmp_path):
    # no control plane, no regions configured: a parse error must come before any of that
    monkeypatch.setenv("RESIDENCY_CONNECTIONS", str(tmp_path / "none.yaml"))
    monkeypatch.delenv("RESIDENCY_CONTROL_DSN", raising=False)
    for args in (["verify", ws, "--between", "us", "eu"], ["move", "plan", ws, "--to", "eu"],
                 ["move", "start", ws, "--to", "eu", "--yes"],
                 ["request", "create", ws, "--to", "eu", "--window", "now/2h", "--requested-by", "a@example.com"]):
        line = _one_line(_run(args), 2)
        assert ("unknown workspace" in line or "workspace id is required" in line) and "connect" not in line, line


def test_verify_hostile_id_with_a_real_world_changes_nothing(cli_env):
    cli_env.seed(workspaces=2, rows=50, seed=2)
    before = _directory(cli_env)
    line = _one_line(_run(["verify", "1; DROP TABLE workspaces", "--between", "us", "eu"]), 2)
    assert line == "error: unknown workspace '1; DROP TABLE workspaces': not a whole number (the workspace key is bigint)"
    with psycopg.connect(cli_env.dsn("us")) as c:
        assert c.execute("SELECT count(*) FROM workspaces").fetchone()[0] >= 1
    assert _directory(cli_env) == before


def test_request_create_and_move_start_parse_the_same_id_the_same_way(cli_env):
    seed = cli_env.seed(workspaces=2, rows=50, seed=4)
    ws = seed.workspaces["us"][0]
    padded = f"  {ws} "
    r = _run(["request", "create", padded, "--to", "eu", "--window", "now/2h", "--requested-by", "a@example.com", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["workspace_id"] == str(ws)
    r = _run(["move", "plan", padded, "--to", "eu", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["workspace_id"] == str(ws)
    # a padded id that is not there: both say the same thing (unknown workspace, bad input)
    big = " 999999999999 "
    a = _one_line(_run(["request", "create", big, "--to", "eu", "--window", "now/2h", "--requested-by", "a@example.com"]), 2)
    b = _one_line(_run(["move", "start", big, "--to", "eu", "--yes"]), 2)
    assert "unknown workspace '999999999999'" in a and "unknown workspace '999999999999'" in b
    with psycopg.connect(cli_env.control_dsn) as c:
        assert c.execute("SELECT count(*) FROM residency.moves").fetchone()[0] == 0


def test_unknown_workspace_is_bad_input_in_move_plan_and_start(cli_env):
    cli_env.seed(workspaces=2, rows=50, seed=2)
    r = _run(["move", "plan", "424242", "--to", "eu"])
    assert r.exit_code == 2 and "unknown workspace '424242'" in r.output
    _one_line(_run(["move", "start", "424242", "--to", "eu", "--yes"]), 2)


# --------------------------------------------------------------------------- regions before connections


def test_unknown_region_is_reported_before_a_missing_control_plane(monkeypatch, tmp_path):
    monkeypatch.setenv("RESIDENCY_CONNECTIONS", str(tmp_path / "none.yaml"))
    monkeypatch.delenv("RESIDENCY_CONTROL_DSN", raising=False)
    monkeypatch.setenv("RESIDENCY_SANDBOX_HOME", str(tmp_path / "no-sandbox"))
    for args in (["move", "plan", "1", "--to", "xx"], ["move", "start", "1", "--to", "xx", "--yes"],
                 ["verify", "1", "--between", "us", "xx"],
                 ["request", "create", "1", "--to", "xx", "--window", "now/2h", "--requested-by", "a@example.com"]):
        line = _one_line(_run(args), 2)
        assert "unknown region 'xx'" in line and "control plane" not in line, line


# --------------------------------------------------------------------------- broken connections files


@pytest.mark.parametrize("content, says", [
    ("control: {dsn: 12345}\n", "control.dsn must be a string"),
    ("control: [a, b]\n", "control must be a mapping"),
    ("regions: everywhere\n", "regions must be a mapping"),
    ("regions: {us: {dsn: 12345}}\n", "regions.us.dsn must be a string"),
    ("regions: {us: [1]}\n", "regions.us must be a mapping"),
    ("regions: {us: {dsn: x, buckets: [a]}}\n", "regions.us.buckets must be a mapping"),
    ("- just\n- a list\n", "expected a mapping"),
    ("control: {dsn: 'x'\n", "not valid YAML"),
    ("notify: https://hooks.example.com/x\n", "notify must be a mapping"),
])
def test_broken_connections_file_is_one_line_exit_2(content, says, tmp_path, monkeypatch):
    f = tmp_path / "connections.yaml"
    f.write_text(content)
    monkeypatch.setenv("RESIDENCY_CONNECTIONS", str(f))
    monkeypatch.delenv("RESIDENCY_CONTROL_DSN", raising=False)
    line = _one_line(_run(["move", "status"]), 2)
    assert says in line and str(f) in line, line


# --------------------------------------------------------------------------- odd files


def _fifo(tmp_path):
    p = tmp_path / "fifo.yaml"
    os.mkfifo(p)
    return p


@pytest.mark.parametrize("make, says", [
    (lambda t: Path("/dev/zero"), "is a device"),
    (lambda t: Path("/dev/null"), "is a device"),
    (_fifo, "is a FIFO"),
    (lambda t: t, "is a directory"),
    (lambda t: (t / "big.yaml").write_bytes(b"#" * (50 * 1024 * 1024)) and t / "big.yaml", "MiB"),
    (lambda t: (t / "bin.yaml").write_bytes(bytes(range(256))) and t / "bin.yaml", "not UTF-8"),
])
def test_odd_files_are_refused_quickly_in_one_line(make, says, tmp_path):
    path = make(tmp_path)
    done: dict[str, object] = {}

    def go():
        done["r"] = _run(["regions", "validate", str(path)])

    t = threading.Thread(target=go, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(20)
    assert not t.is_alive(), f"regions validate {path} hangs"
    assert time.monotonic() - t0 < 20
    r = done["r"]
    assert r.exit_code == 2
    assert says in r.stderr and "Traceback" not in r.output and "MemoryError" not in r.output


def test_odd_connections_and_csv_files_are_refused(tmp_path, monkeypatch):
    fifo = _fifo(tmp_path)
    monkeypatch.setenv("RESIDENCY_CONNECTIONS", str(fifo))
    line = _one_line(_run(["move", "status"]), 2)
    assert "is a FIFO" in line
    monkeypatch.setenv("RESIDENCY_CONNECTIONS", "/dev/zero")
    assert "is a device" in _one_line(_run(["move", "status"]), 2)


def test_csv_import_refuses_a_fifo(cli_env, tmp_path):
    fifo = _fifo(tmp_path)
    line = _one_line(_run(["request", "import", str(fifo)]), 2)
    assert "is a FIFO" in line


# --------------------------------------------------------------------------- --json errors


def test_json_errors_are_json_on_stdout(monkeypatch, tmp_path):
    monkeypatch.setenv("RESIDENCY_CONNECTIONS", str(tmp_path / "none.yaml"))
    r = _run(["move", "plan", "1", "--to", "xx", "--json"])
    assert r.exit_code == 2
    body = json.loads(r.stdout)
    assert body["code"] == 2 and "unknown region 'xx'" in body["error"]
    r = _run(["verify", "nope", "--between", "us", "eu", "--json"])
    assert r.exit_code == 2 and json.loads(r.stdout)["code"] == 2


def test_json_error_of_a_failed_operation_has_code_1(cli_env):
    r = _run(["move", "resume", "999999", "--json"])
    body = json.loads(r.stdout)
    assert r.exit_code == body["code"] == 2 and "unknown move 999999" in body["error"]
    r = _run(["request", "approve", "999999", "--json"])
    assert r.exit_code == 2 and json.loads(r.stdout) == {"error": "unknown request 999999", "code": 2}


# --------------------------------------------------------------------------- retries and authentication


def test_unknown_role_is_not_retried_and_is_one_line(sandbox, monkeypatch, tmp_path):
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    d = conninfo_to_dict(sandbox.server_dsn("control"))
    d.update(user="nosuchrole", password="S3cretPW")
    dsn = make_conninfo(**d)
    monkeypatch.setenv("RESIDENCY_CONTROL_DSN", dsn)
    monkeypatch.setenv("RESIDENCY_CONNECTIONS", str(_empty(tmp_path)))
    t0 = time.monotonic()
    r = _run(["move", "status"])
    took = time.monotonic() - t0
    line = _one_line(r, 1)
    assert "authentication failed" in line and "nosuchrole" in line and "S3cretPW" not in r.output + r.stderr
    assert "retrying" not in r.stderr and took < 5


def test_transient_failures_log_one_line_per_retry_at_most(monkeypatch, tmp_path):
    # port 1 refuses: transient, retried; the first retry is one warning line, later ones only with --debug
    monkeypatch.setenv("RESIDENCY_CONTROL_DSN", "postgresql://mover:S3cretPW@127.0.0.1:1/residency?connect_timeout=1")
    monkeypatch.setenv("RESIDENCY_CONNECTIONS", str(_empty(tmp_path)))
    r = _run(["move", "status"])
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert lines[-1].startswith("error: cannot connect to postgresql://mover:***@127.0.0.1:1/")
    assert len(lines) == 2 and lines[0].startswith("warning: retrying connect (attempt 1 of 6")
    assert "S3cretPW" not in r.stderr and "Traceback" not in r.stderr and "Retrying residency" not in r.stderr
    r = _run(["--debug", "move", "status"])
    retries = [ln for ln in r.stderr.splitlines() if "retrying connect" in ln]
    assert len(retries) >= 2 and all(ln.count("\n") == 0 for ln in retries)


def test_dsn_typo_is_bad_input_and_keeps_its_password(monkeypatch, tmp_path):
    monkeypatch.setenv("RESIDENCY_CONTROL_DSN", "postgresql//mover:S3cretPW@127.0.0.1:5432/residency")
    monkeypatch.setenv("RESIDENCY_CONNECTIONS", str(_empty(tmp_path)))
    r = _run(["move", "status"])
    line = _one_line(r, 2)
    assert "invalid connection string" in line and "S3cretPW" not in line and "***" in line


# --------------------------------------------------------------------------- destructive commands ask


def test_move_cleanup_needs_yes_without_a_terminal(cli_env):
    p = run_mover(cli_env, "move", "cleanup", "1", "--grace", "0")
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == ["error: move cleanup deletes the source copy: it needs --yes when not run from a terminal"]


def test_usage_errors_are_one_line_exit_2_and_json_with_json():
    line = _one_line(_run(["move", "plan"]), 2)
    assert line.startswith("error: Missing argument 'WORKSPACE'") and "--help" in line
    r = _run(["move", "plan", "1", "--json"])
    assert r.exit_code == 2 and json.loads(r.stdout)["code"] == 2 and "--to" in json.loads(r.stdout)["error"]
    assert "No such option '--bogus'" in _one_line(_run(["--bogus"]), 2)
    assert "not a valid integer" in _one_line(_run(["move", "status", "abc"]), 2)
