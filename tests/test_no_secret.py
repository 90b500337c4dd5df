"""No secret anywhere (issue 15): a password planted in every DSN appears in no output, no file
the sandbox writes, no server log and no control-plane table -- including a failing online
connectivity probe (whose CREATE SUBSCRIPTION carries the source's connection string) and DSN
typos that libpq echoes back.

The sandbox's servers authenticate loopback connections with ``trust``, so a DSN with a password
still connects: the password is carried everywhere a real one would be.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from residency import sandbox as sb

REPO = Path(__file__).resolve().parents[1]


def _with_password(dsn: str, pw: str) -> str:
    assert dsn.startswith("postgresql://") and "@" in dsn
    user, rest = dsn[len("postgresql://"):].split("@", 1)
    return f"postgresql://{user}:{pw}@{rest}"


def _cli(env_vars: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("RESIDENCY_") or k == "RESIDENCY_SANDBOX_HOME"}
    e.update(env_vars)
    return subprocess.run([sys.executable, str(REPO / "cli.py"), "--regions", str(REPO / "regions.yaml"), *args],
                          env=e, capture_output=True, text=True, timeout=300, cwd=str(REPO))


def _sandbox_text_files(home: str) -> list[Path]:
    """Every file the sandbox writes outside PostgreSQL's own data directories (state, logs)."""
    state = sb.read_state(home)
    roots = [Path(home)]
    if state and state.get("data_root"):
        roots.append(Path(state["data_root"]))
    datadirs = set()
    for e in [state["control"], *state["regions"].values()]:
        datadirs.add(Path(e["datadir"]).resolve())
    out = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if (Path(dirpath) / d).resolve() not in datadirs]
            out += [Path(dirpath) / f for f in filenames]
    return out


def _server_logs(home: str) -> list[Path]:
    state = sb.read_state(home)
    logs = [Path(state["control"]["log"])] + [Path(e["log"]) for e in state["regions"].values()]
    for e in [state["control"], *state["regions"].values()]:  # a logging collector's directory, if any
        d = Path(e["datadir"]) / "log"
        if d.is_dir():
            logs += list(d.iterdir())
    return [p for p in logs if p.is_file()]


def _control_plane_rows(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as c:
        tables = [r[0] for r in c.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'residency' ORDER BY 1")]
        rows: list[str] = []
        for t in tables:
            rows += [r[0] for r in c.execute(sql.SQL("SELECT x::text FROM {} x").format(sql.Identifier("residency", t)))]
    return rows


def test_a_planted_password_appears_nowhere(env, tmp_path):
    pw = f"S3cretPW{uuid.uuid4().hex[:12]}"
    seed = env.seed(workspaces=3, rows=300, seed=9)
    ws = seed.smallest_in("us")
    regions = {r: {"dsn": _with_password(ep.dsn, pw), "s3_endpoint": ep.s3_endpoint, "buckets": dict(ep.buckets)}
               for r, ep in env.connections.regions.items()}
    conf = tmp_path / "connections.yaml"  # holds the password on purpose; outside the sandbox
    audit = {"kms_key": env.anchor.kms_key_id, "bucket": env.anchor.bucket, "aws_region": env.anchor.aws_region,
             "endpoint": env.anchor.endpoint}  # this test's own anchor, not the session sandbox's shared one
    conf.write_text(yaml.safe_dump({"control": {"dsn": _with_password(env.control_dsn, pw)}, "regions": regions, "audit": audit}))
    base = {"RESIDENCY_CONNECTIONS": str(conf), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "RESIDENCY_SANDBOX_HOME": env.sandbox.home}

    runs: list[tuple[tuple[str, ...], subprocess.CompletedProcess[str]]] = []

    def run(extra: dict[str, str], *args: str, code: int | None = None) -> subprocess.CompletedProcess[str]:
        p = _cli({**base, **extra}, *args)
        runs.append((args, p))
        if code is not None:
            assert p.returncode == code, (args, p.returncode, p.stdout[-2000:], p.stderr[-2000:])
        return p

    refused_port = _with_password(env.dsn("us"), pw).rsplit("@", 1)[0] + "@127.0.0.1:1/nowhere"
    # the online connectivity probe fails: the target server tries the (password-carrying) string
    p = run({"RESIDENCY_REPLICATION_DSN_US": refused_port}, "move", "plan", str(ws), "--to", "eu", "--strategy", "online")
    assert p.returncode == 1 and "connectivity from target to source" in p.stdout + p.stderr, p.stdout + p.stderr
    # a typo in the replication string: refused before any server sees it
    typo = _with_password(env.dsn("us"), pw).replace("postgresql://", "postgresql//")
    p = run({"RESIDENCY_REPLICATION_DSN_US": typo}, "move", "plan", str(ws), "--to", "eu", "--strategy", "online")
    assert p.returncode == 1 and "is not valid" in p.stdout, p.stdout
    # a typo in the control DSN, and a region that refuses connections (retried, logged)
    run({"RESIDENCY_CONTROL_DSN": _with_password(env.control_dsn, pw).replace("://", "//")}, "move", "status", code=2)
    run({"RESIDENCY_EU_DSN": refused_port}, "move", "plan", str(ws), "--to", "eu", "--json")
    run({"RESIDENCY_CONTROL_DSN": refused_port}, "--debug", "move", "status")
    run({"RESIDENCY_CONTROL_DSN": refused_port}, "move", "status", "--json", code=1)
    # a whole move with the password in every DSN, and everything that reads it back
    run({}, "move", "plan", str(ws), "--to", "eu", code=0)
    start = run({}, "move", "start", str(ws), "--to", "eu", "--yes", "--json", code=0)
    move_id = str(yaml.safe_load(start.stdout)["move"]["id"]) if "move" in yaml.safe_load(start.stdout) else None
    run({}, "verify", str(ws), "--between", "us", "eu", "--json")
    run({}, "move", "status", "--all", "--json", code=0)
    if move_id:
        run({}, "move", "report", move_id, "--json", code=0)
        run({}, "move", "cleanup", move_id, "--grace", "0", "--yes", code=0)
    run({}, "audit", "verify", code=0)
    run({}, "request", "create", str(seed.smallest_in("eu")), "--to", "au", "--window", "now/1s", "--requested-by", "a@example.com")

    for args, p in runs:
        assert pw not in p.stdout and pw not in p.stderr, (args, p.stdout[-1500:], p.stderr[-1500:])
        assert "Traceback" not in p.stderr or args[0] == "--debug", (args, p.stderr[-1500:])
    assert any("***" in p.stdout + p.stderr for _, p in runs)  # the strings were shown, redacted

    for f in _sandbox_text_files(env.sandbox.home):
        if f.resolve() == conf.resolve():
            continue
        try:
            data = f.read_bytes()
        except OSError:
            continue
        assert pw.encode() not in data, f"{f} holds the password"
    # the logs read are the ones the servers write: a failing statement of ours shows up in them
    marker = f"marker{uuid.uuid4().hex[:8]}"
    with psycopg.connect(env.dsn("eu"), autocommit=True) as c:
        try:
            c.execute(sql.SQL("SELECT 1 / 0 AS {}").format(sql.Identifier(marker)))
        except psycopg.errors.DivisionByZero:
            pass
    logs = _server_logs(env.sandbox.home)
    assert any(marker.encode() in lf.read_bytes() for lf in logs)
    for lf in logs:
        assert pw.encode() not in lf.read_bytes(), f"server log {lf} holds the password"
    rows = _control_plane_rows(env.control_dsn)
    assert rows and not [r for r in rows if pw in r]
