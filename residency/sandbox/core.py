"""The sandbox: every region's database, the control plane and S3, on one machine, loopback only.

``up`` starts one PostgreSQL server per region in regions.yaml, one for the control plane and one
moto S3 server; ``status`` checks each; ``down`` stops what ``up`` started; ``reset`` wipes the
sandbox and starts a fresh one; ``destroy`` wipes it and leaves it stopped.

Everything the sandbox knows is in ONE state file, ``<home>/state.json``, where ``<home>`` is
``$RESIDENCY_SANDBOX_HOME`` or ``$XDG_CACHE_HOME/residency/sandbox`` (default
``~/.cache/residency/sandbox``). It records the ports, pids, data directories, the server
binaries, the account the servers run as and each region's permanent id-range number, so later
commands and other processes (``residency.connections.resolve``) find the running sandbox.

Data directories live in ``<home>/data`` when the server account can reach it. When this process
is root, the servers run as an unprivileged account (see :mod:`residency.pgserver`), which cannot
enter a 0700 home such as /root; the data then goes to
``/var/tmp/residency-sandbox-<account>-<hash of home>`` (owned by that account, mode 0700), or
``$RESIDENCY_SANDBOX_DATA`` if set. The state file records which. Nothing outside the home and
that data directory is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator

from .. import pgserver
from ..catalogue import Catalogue
from ..connections import Connections, RegionEndpoints, default_bucket_name
from ..errors import OperationError

HOME_ENV = "RESIDENCY_SANDBOX_HOME"
DATA_ENV = "RESIDENCY_SANDBOX_DATA"
STATE_FILE = "state.json"
STATE_VERSION = 1
MARKER = ".residency-sandbox"

APP_DB = "app"
APP_TEMPLATE = "app_template"
CONTROL_DB = "control"
CONTROL_TEMPLATE = "control_template"
SCHEMA_SQL = Path(__file__).with_name("schema.sql")

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------- where


def default_home() -> Path:
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base).absolute() / "residency" / "sandbox"


def _home(home: str | os.PathLike[str] | None) -> Path:
    return Path(home).expanduser().absolute() if home is not None else default_home()


def read_state(home: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The state file's content, or None when there is no sandbox in ``home``."""
    path = _home(home) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OperationError(f"{path}: unreadable sandbox state ({exc}); run `residency sandbox reset`") from None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise OperationError(f"{path}: sandbox state from another version; run `residency sandbox reset`")
    return data


def _write_state(home: Path, state: dict[str, Any]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=home, prefix=".state-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, home / STATE_FILE)


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """Serialise up/down/reset across processes."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _data_root(home: Path, acct: pgserver.RunAs) -> Path:
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().absolute()
    if pgserver.reachable_by(home, acct, write=False):
        return home / "data"
    base = "/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir()
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    return Path(base) / f"residency-sandbox-{acct.user}-{digest}"


def _ensure_owned_dir(path: Path, acct: pgserver.RunAs) -> None:
    """Create ``path`` (mode 0700, owned by the server account) or check an existing one is ours."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
        if not acct.is_self:
            os.chown(path, acct.uid, acct.gid)
        return
    import stat as _stat

    if not _stat.S_ISDIR(st.st_mode):
        raise OperationError(f"{path} exists and is not a directory; remove it or set {DATA_ENV}")
    if st.st_uid != acct.uid:
        raise OperationError(
            f"{path} belongs to uid {st.st_uid}, not to '{acct.user}' who runs the servers; remove it or set {DATA_ENV}"
        )


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ServerStatus:
    name: str  # 'control' or the region's name
    kind: str  # 'control' | 'region' | 's3'
    port: int | None
    pid: int | None
    state: str  # 'running' | 'stopped' | 'unhealthy' | 'missing'
    healthy: bool
    endpoint: str
    detail: str = ""
    datadir: str | None = None
    run_as: str | None = None
    id_range: str | None = None


@dataclass(frozen=True)
class SandboxStatus:
    home: str
    exists: bool
    data_root: str | None = None
    servers: tuple[ServerStatus, ...] = ()
    postgres: str | None = None  # "15 (/usr/lib/postgresql/15/bin)"
    messages: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return self.exists and bool(self.servers) and all(s.healthy for s in self.servers)

    def server(self, name: str) -> ServerStatus:
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(name)


# --------------------------------------------------------------------------- up


def _server(state: dict[str, Any], entry: dict[str, Any]) -> pgserver.Server:
    acct = pgserver.RunAs(**state["run_as"])
    b = pgserver.Binaries(state["pg"]["bindir"], state["pg"]["version"])
    return pgserver.Server(entry["datadir"], entry["port"], b, acct, entry["log"])


def _pg_entries(state: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, kind, entry) for every PostgreSQL server in the state: control first."""
    out = [("control", "control", state["control"])] if state.get("control") else []
    out += [(n, "region", e) for n, e in state.get("regions", {}).items()]
    return out


def up(cat: Catalogue, home: str | os.PathLike[str] | None = None, progress: Progress | None = None) -> SandboxStatus:
    """Start (or finish starting) the sandbox for ``cat``'s regions; idempotent.

    A server that is already running is left alone; a stopped or killed one is started again
    (on its old port if still free, else a new one); regions added to regions.yaml since get
    their server. Returns the resulting status.
    """
    say = progress or _quiet
    h = _home(home)
    with _locked(h):
        state = read_state(h)
        messages: list[str] = []
        if state is None:
            binaries = pgserver.find_binaries()
            acct = pgserver.server_account()
            state = {
                "version": STATE_VERSION,
                "home": str(h),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "pg": {"bindir": binaries.bindir, "version": binaries.version},
                "run_as": {"user": acct.user, "uid": acct.uid, "gid": acct.gid},
                "data_root": str(_data_root(h, acct)),
                "region_numbers": {},
                "regions": {},
                "control": None,
                "s3": None,
            }
            say(f"new sandbox in {h} (PostgreSQL {binaries.version} from {binaries.bindir}, servers run as {acct.user})")
        else:
            if not os.path.exists(os.path.join(state["pg"]["bindir"], "pg_ctl")):
                raise OperationError(
                    f"the sandbox's PostgreSQL binaries are gone ({state['pg']['bindir']}); run `residency sandbox reset`"
                )
        acct = pgserver.RunAs(**state["run_as"])
        root = Path(state["data_root"])
        _ensure_owned_dir(root, acct)
        marker = root / MARKER
        if not marker.exists():
            marker.write_text(f"residency sandbox data for {h}\n")
        _ensure_owned_dir(root / "regions", acct)

        # permanent region numbers (id ranges): first come, first numbered, never renumbered
        numbers: dict[str, int] = state["region_numbers"]
        for name in cat.regions:
            if name not in numbers:
                numbers[name] = max(numbers.values(), default=0) + 1
        if state["control"] is None:
            state["control"] = {"datadir": str(root / "control"), "log": str(root / "control.log"), "port": 0, "pid": None}
        for name in cat.regions:
            if name not in state["regions"]:
                state["regions"][name] = {
                    "datadir": str(root / "regions" / name),
                    "log": str(root / "regions" / f"{name}.log"),
                    "port": 0,
                    "pid": None,
                }
        extra = [n for n in state["regions"] if n not in cat.regions]
        if extra:
            messages.append(f"servers for regions no longer in {cat.path} are kept: {', '.join(extra)}")

        lock = threading.Lock()
        taken: set[int] = set()

        def pick_port(current: int) -> int:
            with lock:
                if current and current not in taken and not pgserver.port_in_use(current):
                    taken.add(current)
                    return current
                while True:
                    p = pgserver.free_port()
                    if p not in taken:
                        taken.add(p)
                        return p

        def bring_up(name: str, kind: str, entry: dict[str, Any]) -> None:
            srv = _server(state, entry)
            if srv.initialised and srv.pid() and entry["port"] and srv.accepting():
                with lock:
                    taken.add(entry["port"])
                entry["pid"] = srv.pid()
                return
            if srv.pid():  # running but not answering on the recorded port: restart it
                srv.stop(mode="immediate")
            if not srv.initialised:
                say(f"initdb {name}")
            srv.port = pick_port(entry["port"])
            srv.init()
            for attempt in range(3):
                try:
                    entry["pid"] = srv.start()
                    break
                except OperationError as exc:
                    if "already in use" not in str(exc) or attempt == 2:
                        raise
                    srv.port = pick_port(0)
            if entry["port"] and entry["port"] != srv.port:
                with lock:
                    messages.append(f"{name}: port {entry['port']} was taken, now on port {srv.port}")
            entry["port"] = srv.port
            say(f"started {name} PostgreSQL on 127.0.0.1:{srv.port}")

        try:
            items = _pg_entries(state)
            with ThreadPoolExecutor(max_workers=len(items)) as pool:
                futures = [pool.submit(bring_up, *it) for it in items]
                errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                raise errors[0]  # type: ignore[misc]
            _provision(state, numbers, say)
            _s3_up(state, h, cat, messages, say)
        finally:
            _write_state(h, state)
        st = _status_from(h, state)
        return SandboxStatus(st.home, st.exists, st.data_root, st.servers, st.postgres, tuple(messages))


def _provision(state: dict[str, Any], numbers: dict[str, int], say: Progress) -> None:
    """Create the template and working databases where missing (region app, control plane)."""
    import psycopg

    from .. import controlplane

    def ensure(entry: dict[str, Any], template: str, db: str, fill: Callable[[psycopg.Connection[Any]], None]) -> None:
        srv = _server(state, entry)
        with psycopg.connect(srv.dsn("postgres"), autocommit=True) as admin:
            have = {r[0] for r in admin.execute("SELECT datname FROM pg_database")}
            if template not in have:
                admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(template)))
                with psycopg.connect(srv.dsn(template)) as c:
                    fill(c)
                    c.commit()
                admin.execute(psycopg.sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(psycopg.sql.Identifier(template)))
            if db not in have:
                admin.execute(
                    psycopg.sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        psycopg.sql.Identifier(db), psycopg.sql.Identifier(template)
                    )
                )

    def region_fill(name: str, n: int) -> Callable[[psycopg.Connection[Any]], None]:
        def fill(c: psycopg.Connection[Any]) -> None:
            from ..idranges import confine

            c.execute(SCHEMA_SQL.read_text())  # static DDL from our own file
            confine(c, c.execute("SELECT current_schema()").fetchone()[0], name, n)  # per-region id ranges

        return fill

    def control_refresh() -> None:
        # the control-plane schema grows with the toolkit: bring existing databases up to date
        # (ensure_schema is idempotent) so an old sandbox keeps working after an upgrade
        srv = _server(state, state["control"])
        for db in (CONTROL_TEMPLATE, CONTROL_DB):
            with psycopg.connect(srv.dsn(db)) as c:
                controlplane.ensure_schema(c)
                # one login per role (sandbox_requester, ...), so authorization is exercised for real
                controlplane.ensure_roles(c, logins=controlplane.SANDBOX_LOGINS)
                from ..ops import jobs as job_engine  # the job engine's tables, as `controlplane init` makes them

                job_engine.apply_schema(c)

    jobs = [(state["control"], CONTROL_TEMPLATE, CONTROL_DB, controlplane.ensure_schema)]
    jobs += [(e, APP_TEMPLATE, APP_DB, region_fill(name, numbers[name])) for name, e in state["regions"].items()]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        for f in [pool.submit(ensure, *j) for j in jobs]:
            f.result()
    control_refresh()
    from . import roles

    for e in state["regions"].values():  # the non-superuser mover role (cluster-wide, idempotent)
        with psycopg.connect(_server(state, e).dsn("postgres"), autocommit=True) as admin:
            roles.ensure_mover(admin)


# --------------------------------------------------------------------------- S3 (moto)


def _s3_endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def _s3_ok(port: int | None, timeout: float = 2) -> tuple[bool, str]:
    if not port:
        return False, "not started"
    try:
        with urllib.request.urlopen(_s3_endpoint(port) + "/", timeout=timeout) as r:
            body = r.read(4096)
            if r.status == 200 and b"ListAllMyBucketsResult" in body:
                return True, ""
            return False, f"HTTP {r.status} but not an S3 answer"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))


def _is_our_s3(pid: int | None, port: int | None) -> bool:
    if not pid or not pgserver.pid_alive(pid):
        return False
    args = pgserver.cmdline(pid)
    return not args or ("residency.sandbox.s3server" in args and str(port) in args)


def _s3_up(state: dict[str, Any], home: Path, cat: Catalogue, messages: list[str], say: Progress) -> None:
    s3 = state.get("s3") or {"port": 0, "pid": None, "log": str(home / "s3.log")}
    state["s3"] = s3
    fresh = False
    if not (_is_our_s3(s3["pid"], s3["port"]) and _s3_ok(s3["port"])[0]):
        try:
            import moto.server  # noqa: F401
        except ImportError:
            raise OperationError(
                "moto's S3 server is not installed: pip install 'moto[server]>=5' (or `pip install -e .[test]`)"
            ) from None
        if _is_our_s3(s3["pid"], s3["port"]):  # alive but not answering
            _terminate(s3["pid"])
        port = s3["port"]
        if not port or pgserver.port_in_use(port):
            if port:
                messages.append(f"s3: port {port} was taken, now on a new port")
            port = pgserver.free_port()
        with open(s3["log"], "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "residency.sandbox.s3server", "--port", str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=str(home),
                env={**os.environ, "PYTHONPATH": _pythonpath()},
            )
        deadline = time.monotonic() + 30
        while not _s3_ok(port, timeout=1)[0]:
            if proc.poll() is not None:
                tail = _tail(s3["log"])
                raise OperationError(f"moto S3 server exited (code {proc.returncode}): {tail} (log: {s3['log']})")
            if time.monotonic() > deadline:
                proc.terminate()
                raise OperationError(f"moto S3 server did not answer on port {port} within 30s (log: {s3['log']})")
            time.sleep(0.1)
        s3.update(port=port, pid=proc.pid)
        fresh = True
        say(f"started S3 (moto) on {_s3_endpoint(port)}")
    made = ensure_buckets(cat, state)
    made += ensure_backup_store(cat, state)
    ensure_anchor(state)
    if made and not fresh:
        messages.append(f"s3: recreated {len(made)} missing bucket(s) (moto keeps objects in memory only)")


def _pythonpath() -> str:
    # the residency package must be importable by the child even when run from a source tree
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH")
    return root + (os.pathsep + rest if rest else "")


def ensure_buckets(cat: Catalogue, state: dict[str, Any], names: dict[str, dict[str, str]] | None = None) -> list[str]:
    """Create every region's buckets in the sandbox S3 where missing; returns those created.

    As the stacks make them: each bucket versioned, with a versioned replica bucket (its name +
    ``-replica``) in the region's backup region and a replication configuration pointing at it.
    moto stores the replication configuration but copies nothing, so the sandbox's seed writes
    the replica copies itself. ``names`` maps region -> logical -> bucket name (default
    :func:`default_bucket_name`).
    """
    from ..connections import REPLICA_SUFFIX, s3_client

    endpoint = _s3_endpoint(state["s3"]["port"])
    created: list[str] = []

    def make(client: Any, bucket: str, aws_region: str, have: set[str]) -> None:
        if bucket not in have:
            kwargs: dict[str, Any] = {"Bucket": bucket}
            if aws_region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": aws_region}
            client.create_bucket(**kwargs)
            created.append(bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    for region in cat.regions.values():
        if region.name not in state.get("regions", {}):
            continue
        ep = RegionEndpoints(region.name, region.aws_region, "", endpoint)
        client = s3_client(ep)
        backup = s3_client(ep, region.backup_region)
        have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for logical in region.environment.buckets:
            bucket = (names or {}).get(region.name, {}).get(logical) or default_bucket_name(region.name, logical)
            replica = bucket + REPLICA_SUFFIX
            make(backup, replica, region.backup_region, have)
            make(client, bucket, region.aws_region, have)
            client.put_bucket_replication(Bucket=bucket, ReplicationConfiguration={
                "Role": f"arn:aws:iam::123456789012:role/residency-{region.name}-s3-replication",
                "Rules": [{"ID": "backup", "Status": "Enabled", "Priority": 1, "Filter": {"Prefix": ""},
                           "DeleteMarkerReplication": {"Status": "Enabled"},
                           "Destination": {"Bucket": f"arn:aws:s3:::{replica}"}}],
            })
    return created


def ensure_backup_store(cat: Catalogue, state: dict[str, Any], names: dict[str, str] | None = None) -> list[str]:
    """Every region's backup bucket (logical ``backups``: ``residency-<region>-backups``, or
    ``names[region]``) in its *backup* AWS region, and the KMS key that encrypts it there
    (``alias/<bucket>``, symmetric, in the backup region), created where missing (issue 14)."""
    import boto3

    from ..backups.store import kms_alias
    from ..connections import s3_client

    endpoint = _s3_endpoint(state["s3"]["port"])
    creds = {"aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
             "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing")}
    created: list[str] = []
    for region in cat.regions.values():
        if region.name not in state.get("regions", {}):
            continue
        bucket = (names or {}).get(region.name) or default_bucket_name(region.name, "backups")
        s3 = s3_client(RegionEndpoints(region.name, region.aws_region, "", endpoint), region.backup_region)
        if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region.backup_region}) \
                if region.backup_region != "us-east-1" else s3.create_bucket(Bucket=bucket)
            created.append(bucket)
        kms = boto3.client("kms", region_name=region.backup_region, endpoint_url=endpoint, **creds)
        aliases = {a["AliasName"] for p in kms.get_paginator("list_aliases").paginate() for a in p.get("Aliases", [])}
        if kms_alias(bucket) not in aliases:
            key = kms.create_key(Description=f"residency sandbox: backups of region {region.name}")
            kms.create_alias(AliasName=kms_alias(bucket), TargetKeyId=key["KeyMetadata"]["KeyId"])
    return created


AUDIT_KEY_ALIAS = "alias/residency-audit"
AUDIT_BUCKET = "residency-audit-digests"
AUDIT_AWS_REGION = "us-east-1"
AUDIT_RETENTION_DAYS = 1
"""Object Lock (compliance) retention of the sandbox's digests: short, as moto keeps them in memory."""


def ensure_anchor(state: dict[str, Any], alias: str = AUDIT_KEY_ALIAS, bucket: str = AUDIT_BUCKET,
                  aws_region: str = AUDIT_AWS_REGION) -> Any:
    """The audit anchor in the sandbox's moto: an asymmetric signing key (ECC P-256) under
    ``alias`` and a bucket with Object Lock in compliance mode; created where missing. Returns
    the :class:`~residency.connections.AnchorConfig`."""
    import boto3

    from ..connections import AnchorConfig
    from ..digests import KEY_SPEC

    cfg = AnchorConfig(alias, bucket, aws_region, _s3_endpoint(state["s3"]["port"]))
    creds = {"aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
             "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing")}
    kms = boto3.client("kms", region_name=aws_region, endpoint_url=cfg.endpoint, **creds)
    aliases = {a["AliasName"] for p in kms.get_paginator("list_aliases").paginate() for a in p.get("Aliases", [])}
    if alias not in aliases:
        key = kms.create_key(KeySpec=KEY_SPEC, KeyUsage="SIGN_VERIFY", Description="residency sandbox: audit digests")
        kms.create_alias(AliasName=alias, TargetKeyId=key["KeyMetadata"]["KeyId"])
    s3 = boto3.client("s3", region_name=aws_region, endpoint_url=cfg.endpoint, **creds)
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": AUDIT_RETENTION_DAYS}}})
    return cfg


def _terminate(pid: int, timeout: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pgserver.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pgserver.pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _tail(path: str, n: int = 1) -> str:
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


# --------------------------------------------------------------------------- status


def status(home: str | os.PathLike[str] | None = None) -> SandboxStatus:
    """What is running, what is healthy. Never changes anything."""
    h = _home(home)
    state = read_state(h)
    if state is None:
        return SandboxStatus(str(h), False)
    return _status_from(h, state)


def _status_from(h: Path, state: dict[str, Any]) -> SandboxStatus:
    numbers = state.get("region_numbers", {})
    entries = _pg_entries(state)

    def one(name: str, kind: str, e: dict[str, Any]) -> ServerStatus:
        srv = _server(state, e)
        endpoint = srv.dsn(CONTROL_DB if kind == "control" else APP_DB)
        rng = None
        if kind == "region" and name in numbers:
            n = numbers[name]
            rng = f"{n * 10**12}..{(n + 1) * 10**12 - 1}"
        common = dict(name=name, kind=kind, port=e["port"], endpoint=endpoint, datadir=e["datadir"],
                      run_as=state["run_as"]["user"], id_range=rng)
        if not srv.initialised:
            return ServerStatus(pid=None, state="missing", healthy=False, detail=f"no data directory at {e['datadir']}", **common)
        pid = srv.pid()
        if not pid:
            detail = "not running"
            if e.get("pid") and not pgserver.pid_alive(e["pid"]):
                detail = f"not running (pid {e['pid']} is gone: killed or crashed? `residency sandbox up` restarts it)"
            return ServerStatus(pid=None, state="stopped", healthy=False, detail=detail, **common)
        if not srv.accepting():
            return ServerStatus(pid=pid, state="unhealthy", healthy=False, detail="process alive but not accepting connections", **common)
        return ServerStatus(pid=pid, state="running", healthy=True, **common)

    with ThreadPoolExecutor(max_workers=max(1, len(entries))) as pool:
        servers = list(pool.map(lambda it: one(*it), entries))
    s3 = state.get("s3")
    if s3:
        ok, why = _s3_ok(s3["port"])
        alive = _is_our_s3(s3["pid"], s3["port"])
        st = "running" if ok and alive else ("unhealthy" if alive else "stopped")
        if ok and not alive:
            why = f"something else answers on port {s3['port']}"
        servers.append(
            ServerStatus("s3", "s3", s3["port"], s3["pid"] if alive else None, st, ok and alive, _s3_endpoint(s3["port"]),
                         "" if ok and alive else (why or "not running"))
        )
    pg = f"{state['pg']['version']} ({state['pg']['bindir']})"
    return SandboxStatus(str(h), True, state["data_root"], tuple(servers), pg)


# --------------------------------------------------------------------------- down / reset


@dataclass(frozen=True)
class DownResult:
    home: str
    stopped: tuple[str, ...]
    already_stopped: tuple[str, ...]
    existed: bool = True


def down(home: str | os.PathLike[str] | None = None, progress: Progress | None = None) -> DownResult:
    """Stop every server this sandbox started (and nothing else). Running it twice is fine."""
    say = progress or _quiet
    h = _home(home)
    if read_state(h) is None:
        return DownResult(str(h), (), (), existed=False)
    with _locked(h):
        state = read_state(h)
        if state is None:
            return DownResult(str(h), (), (), existed=False)
        stopped: list[str] = []
        already: list[str] = []
        lock = threading.Lock()

        def stop(name: str, kind: str, e: dict[str, Any]) -> None:
            srv = _server(state, e)
            was = srv.stop() if srv.initialised else False
            e["pid"] = None
            with lock:
                (stopped if was else already).append(name)
            if was:
                say(f"stopped {name}")

        entries = _pg_entries(state)
        try:
            with ThreadPoolExecutor(max_workers=max(1, len(entries))) as pool:
                for f in [pool.submit(stop, *it) for it in entries]:
                    f.result()
            s3 = state.get("s3")
            if s3:
                if _is_our_s3(s3["pid"], s3["port"]):
                    _terminate(s3["pid"])
                    stopped.append("s3")
                    say("stopped s3")
                else:
                    already.append("s3")
                s3["pid"] = None
        finally:
            _write_state(h, state)
        order = [n for n, _, _ in entries] + ["s3"]
        return DownResult(str(h), tuple(sorted(stopped, key=order.index)), tuple(sorted(already, key=order.index)))


def destroy(home: str | os.PathLike[str] | None = None, progress: Progress | None = None) -> DownResult:
    """Stop the sandbox and delete its data directory and state (only what it created)."""
    h = _home(home)
    state = read_state(h) if (h / STATE_FILE).exists() else None
    result = down(h, progress)
    with _locked(h):
        if state:
            root = Path(state["data_root"])
            if (root / MARKER).exists():
                shutil.rmtree(root, ignore_errors=True)
            s3log = (state.get("s3") or {}).get("log")
            if s3log:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(s3log)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(h / STATE_FILE)
    return result


def reset(cat: Catalogue, home: str | os.PathLike[str] | None = None, progress: Progress | None = None) -> SandboxStatus:
    """Wipe the sandbox (servers, data, buckets) and start a fresh, empty one."""
    destroy(home, progress)
    return up(cat, home, progress)


# --------------------------------------------------------------------------- connections


def sandbox_connections(cat: Catalogue, home: str | os.PathLike[str] | None = None) -> Connections | None:
    """Connections to the running sandbox in ``home``; None when no sandbox is running there.

    Cheap (reads the state file, checks pids): :func:`residency.connections.resolve` calls it.
    """
    h = _home(home)
    try:
        state = read_state(h)
    except OperationError:
        return None
    if state is None:
        return None
    ctl = state.get("control") or {}
    if not (ctl.get("pid") and pgserver.pid_alive(ctl["pid"])):
        return None
    s3 = state.get("s3") or {}
    endpoint = _s3_endpoint(s3["port"]) if s3.get("port") else None
    regions: dict[str, RegionEndpoints] = {}
    for name, region in cat.regions.items():
        e = state.get("regions", {}).get(name)
        if not e or not e.get("port"):
            continue
        buckets = {b: default_bucket_name(name, b) for b in region.environment.buckets}
        regions[name] = RegionEndpoints(
            name, region.aws_region, pgserver.local_dsn(e["port"], APP_DB),
            endpoint, MappingProxyType(buckets), region.backup_region,
        )
    control = pgserver.local_dsn(ctl["port"], CONTROL_DB)
    from ..connections import AnchorConfig

    anchor = AnchorConfig(AUDIT_KEY_ALIAS, AUDIT_BUCKET, AUDIT_AWS_REGION, endpoint) if endpoint else None
    return Connections(control, MappingProxyType(regions), f"sandbox:{h}", anchor)


def region_number(home: str | os.PathLike[str] | None, region: str) -> int:
    state = read_state(home)
    if not state or region not in state.get("region_numbers", {}):
        raise OperationError(f"region '{region}' has no server in the sandbox; run `residency sandbox up`")
    return int(state["region_numbers"][region])


def server_dsn(home: str | os.PathLike[str] | None, name: str, dbname: str = "postgres") -> str:
    """DSN of one sandbox server ('control' or a region) and database (for admin work, tests)."""
    state = read_state(home)
    if not state:
        raise OperationError("no sandbox: run `residency sandbox up`")
    e = state["control"] if name == "control" else state.get("regions", {}).get(name)
    if not e:
        raise OperationError(f"no sandbox server for '{name}'")
    return pgserver.local_dsn(e["port"], dbname)


def s3_endpoint(home: str | os.PathLike[str] | None = None) -> str:
    state = read_state(home)
    if not state or not state.get("s3"):
        raise OperationError("no sandbox S3: run `residency sandbox up`")
    return _s3_endpoint(state["s3"]["port"])
