"""One local PostgreSQL server: find the binaries, initdb, start, stop, status.

Used by the sandbox (one server per region plus the control plane) and by the tests. A server
listens on 127.0.0.1 only, on a port chosen by the caller (:func:`free_port` picks one), with its
unix socket inside its own data directory, ``wal_level=logical`` and enough replication slots,
WAL senders and workers for several concurrent online moves.

PostgreSQL refuses to run as root. When this process is root, every server command runs as an
unprivileged account (``$RESIDENCY_SANDBOX_USER``, else ``postgres``, else ``nobody``) through
``subprocess``'s ``user=``/``group=`` (the same as ``runuser -u postgres -- ...``); the data
directory must then be reachable by that account, which :func:`reachable_by` checks.

Settings are sized for a laptop or a 2-core CI box (``shared_buffers=32MB``) and trade
durability for speed (``fsync=off``, ``full_page_writes=off``): a sandbox's data is disposable
and is lost only if the machine itself crashes. ``synchronous_commit`` stays on, so a killed
server loses no committed transaction. Authentication is ``trust`` on loopback and the socket only, but for operator-access roles
(members of ``residency_access_login``), which need their password.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OperationError
from .processes import pid_alive  # noqa: F401  (callers also use it as pgserver.pid_alive)

SUPERUSER = "residency"
"""The bootstrap superuser every sandbox server is initialised with."""

SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "60",
    "shared_buffers": "32MB",
    "work_mem": "4MB",
    "maintenance_work_mem": "32MB",
    "dynamic_shared_memory_type": "posix",
    # online moves: logical replication with several concurrent subscriptions
    "wal_level": "logical",
    "max_replication_slots": "16",
    "max_wal_senders": "16",
    "max_logical_replication_workers": "8",
    "max_sync_workers_per_subscription": "2",
    "max_worker_processes": "16",
    "max_wal_size": "512MB",
    "checkpoint_timeout": "15min",
    # a sandbox is disposable: trade durability against an OS crash or power loss for speed.
    # synchronous_commit stays on: with fsync off a commit costs only a write() to the page cache,
    # and a killed server (tests do kill them) then loses nothing it reported as committed.
    "fsync": "off",
    "synchronous_commit": "on",
    "full_page_writes": "off",
    # quiet, small
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "log_timezone": "'UTC'",
    "timezone": "'UTC'",
    "autovacuum_max_workers": "2",
    "jit": "off",
}

SHARED_BUFFERS_ENV = "RESIDENCY_SANDBOX_SHARED_BUFFERS"
"""Overrides ``shared_buffers`` (e.g. ``256MB``) for servers started by this process and its
children: the benchmarks' servers get a buffer pool like a production server's (bench/sandbox.py)."""


def settings() -> dict[str, str]:
    """:data:`SETTINGS`, with ``$RESIDENCY_SANDBOX_SHARED_BUFFERS`` when it is set (a size in kB,
    MB or GB; anything else is refused in one line)."""
    out = dict(SETTINGS)
    value = os.environ.get(SHARED_BUFFERS_ENV, "").strip()
    if value:
        if not re.fullmatch(r"[1-9][0-9]*(kB|MB|GB)", value):
            raise OperationError(f"{SHARED_BUFFERS_ENV}={value!r}: expected a size such as 256MB (kB, MB or GB)")
        out["shared_buffers"] = value
    return out


_CONF_FILE = "residency.conf"
_HBA_FILE = "residency_hba.conf"
HBA = """# written by residency.pgserver; changed on every start
# operator-access roles (residency/grants.py) log in with their password, so VALID UNTIL and a
# revoked password mean what they mean on a managed database; everyone else: trust, loopback only
local all +residency_access_login scram-sha-256
host all +residency_access_login 127.0.0.1/32 scram-sha-256
host all +residency_access_login ::1/128 scram-sha-256
local all all trust
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
local replication all trust
host replication all 127.0.0.1/32 trust
host replication all ::1/128 trust
"""
INSTALL_HINT = (
    "no PostgreSQL server binaries found (looked for initdb/pg_ctl on PATH, in `pg_config --bindir` "
    "and /usr/lib/postgresql/*/bin): install them, e.g. `apt-get install postgresql` "
    "(Debian/Ubuntu), `dnf install postgresql-server` or `brew install postgresql@15`, "
    "or set RESIDENCY_PG_BINDIR"
)


# --------------------------------------------------------------------------- binaries


@dataclass(frozen=True)
class Binaries:
    bindir: str
    version: int  # major version, e.g. 15

    def path(self, name: str) -> str:
        return os.path.join(self.bindir, name)


def _major_of(bindir: str) -> int | None:
    try:
        out = subprocess.run(
            [os.path.join(bindir, "postgres"), "--version"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"\b(\d+)(?:\.\d+)?", out)
    return int(m.group(1)) if m else None


def _has_server(bindir: str) -> bool:
    return all(os.access(os.path.join(bindir, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres"))


def candidate_bindirs() -> list[str]:
    """Every directory that may hold server binaries, in the order they are preferred."""
    seen: list[str] = []

    def add(d: str | None) -> None:
        if d and d not in seen and _has_server(d):
            seen.append(d)

    add(os.environ.get("RESIDENCY_PG_BINDIR"))
    for d in os.environ.get("PATH", "").split(os.pathsep):
        add(d)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            add(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=20).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    distro = glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin") + glob.glob(
        "/opt/homebrew/opt/postgresql@*/bin"
    ) + glob.glob("/usr/local/opt/postgresql@*/bin")

    def ver(d: str) -> float:
        m = re.search(r"(\d+(?:\.\d+)?)", d.replace("/usr/lib/postgresql/", "").replace("pgsql-", ""))
        return float(m.group(1)) if m else 0.0

    for d in sorted(distro, key=ver, reverse=True):
        add(d)
    return seen


def find_binaries(min_version: int = 15) -> Binaries:
    """The server binaries to use: ``$RESIDENCY_PG_BINDIR`` first, then PATH, ``pg_config
    --bindir`` and the distribution directories, newest first among those. Row-filtered
    publications need PostgreSQL 15 or newer."""
    found = []
    env_dir = os.environ.get("RESIDENCY_PG_BINDIR")
    for d in candidate_bindirs():
        v = _major_of(d)
        if v is None:
            continue
        if env_dir and d == env_dir:
            if v < min_version:
                raise OperationError(f"RESIDENCY_PG_BINDIR={d} is PostgreSQL {v}; the sandbox needs {min_version} or newer")
            return Binaries(d, v)
        found.append(Binaries(d, v))
    good = [b for b in found if b.version >= min_version]
    if good:
        return max(good, key=lambda b: b.version)  # the newest; on a tie, the first found
    if found:
        have = ", ".join(f"{b.version} in {b.bindir}" for b in found)
        raise OperationError(
            f"PostgreSQL {min_version}+ server binaries needed (row-filtered publications), found only {have}: "
            f"install a newer one (e.g. `apt-get install postgresql-15`) or set RESIDENCY_PG_BINDIR"
        )
    raise OperationError(INSTALL_HINT)


# --------------------------------------------------------------------------- the unprivileged account


@dataclass(frozen=True)
class RunAs:
    """Who runs the servers: ``None`` fields mean "this process's own user"."""

    user: str
    uid: int
    gid: int

    @property
    def is_self(self) -> bool:
        return self.uid == os.geteuid()

    def popen_kwargs(self) -> dict[str, Any]:
        if self.is_self:
            return {}
        home = pwd.getpwuid(self.uid).pw_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_ALL"))}
        env.update(HOME=home if home and os.path.isdir(home) else "/", USER=self.user, LOGNAME=self.user)
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "env": env, "cwd": "/"}


def server_account() -> RunAs:
    """This process's user, or, when root, an unprivileged account for the servers."""
    if os.geteuid() != 0:
        pw = pwd.getpwuid(os.geteuid())
        return RunAs(pw.pw_name, pw.pw_uid, os.getegid())
    wanted = os.environ.get("RESIDENCY_SANDBOX_USER")
    for name in ([wanted] if wanted else ["postgres", "nobody"]):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        if pw.pw_uid == 0:
            raise OperationError(f"RESIDENCY_SANDBOX_USER={name} is root; PostgreSQL refuses to run as root")
        return RunAs(pw.pw_name, pw.pw_uid, pw.pw_gid)
    if wanted:
        raise OperationError(f"RESIDENCY_SANDBOX_USER={wanted}: no such user")
    raise OperationError(
        "running as root and neither a 'postgres' nor a 'nobody' account exists to run PostgreSQL: "
        "create one (e.g. `useradd --system postgres`) or set RESIDENCY_SANDBOX_USER"
    )


def reachable_by(path: str | os.PathLike[str], acct: RunAs, *, write: bool = True) -> bool:
    """Whether ``acct`` can traverse to ``path`` (and write it): mode bits of every ancestor."""
    if acct.is_self or acct.uid == 0:
        return True
    try:
        groups = set(os.getgrouplist(acct.user, acct.gid))
    except OSError:
        groups = {acct.gid}
    p = Path(os.path.abspath(path))
    chain = [p, *p.parents]
    for i, d in enumerate(chain):
        try:
            st = os.stat(d)
        except FileNotFoundError:
            continue
        need = stat.S_IXOTH | (stat.S_IWOTH if (write and i == 0) else 0)
        if st.st_uid == acct.uid:
            bits = (st.st_mode >> 6) & 7
        elif st.st_gid in groups:
            bits = (st.st_mode >> 3) & 7
        else:
            bits = st.st_mode & 7
        if bits & need != need:
            return False
    return True


# --------------------------------------------------------------------------- ports and processes


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False




def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def proc_uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


# --------------------------------------------------------------------------- one server


def local_dsn(port: int, dbname: str = "postgres") -> str:
    """The DSN of database ``dbname`` on a server of ours listening on loopback ``port``."""
    return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{dbname}"


@dataclass
class Server:
    """A PostgreSQL cluster in ``datadir``, started on 127.0.0.1:``port``."""

    datadir: str
    port: int
    binaries: Binaries
    account: RunAs
    logfile: str | None = None

    def __post_init__(self) -> None:
        self.datadir = os.path.abspath(self.datadir)
        if self.logfile is None:
            self.logfile = self.datadir + ".log"

    # ---- helpers
    def _run(self, args: list[str], *, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            cp = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                **self.account.popen_kwargs(),
            )
        except subprocess.TimeoutExpired:
            raise OperationError(f"{os.path.basename(args[0])} timed out after {timeout:.0f}s ({self.datadir})") from None
        if check and cp.returncode != 0:
            msg = _last_line(cp.stderr) or _last_line(cp.stdout) or f"exit code {cp.returncode}"
            raise OperationError(f"{os.path.basename(args[0])} failed for {self.datadir}: {msg}")
        return cp

    def dsn(self, dbname: str = "postgres") -> str:
        return local_dsn(self.port, dbname)

    @property
    def initialised(self) -> bool:
        return os.path.exists(os.path.join(self.datadir, "PG_VERSION"))

    # ---- lifecycle
    def init(self) -> None:
        """initdb (no-op if already initialised), then write our settings."""
        if not self.initialised:
            parent = os.path.dirname(self.datadir)
            if not reachable_by(parent, self.account):
                raise OperationError(
                    f"{parent} is not reachable by user '{self.account.user}' that runs PostgreSQL; "
                    "choose a data directory it can reach"
                )
            os.makedirs(self.datadir, mode=0o700, exist_ok=True)
            if not self.account.is_self:
                os.chown(self.datadir, self.account.uid, self.account.gid)
            self._run(
                [
                    self.binaries.path("initdb"), "-D", self.datadir, "-U", SUPERUSER, "--auth=trust",
                    "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions",
                ]
            )
            conf = os.path.join(self.datadir, "postgresql.conf")
            with open(conf, "a") as f:
                f.write(f"\n# residency sandbox settings\ninclude_if_exists = '{_CONF_FILE}'\n")
        self.write_settings()

    def write_settings(self) -> None:
        lines = [f"{k} = {v}" for k, v in settings().items()]
        lines.append(f"port = {self.port}")
        lines.append(f"unix_socket_directories = '{self.datadir}'")
        hba = os.path.join(self.datadir, _HBA_FILE)
        with open(hba, "w") as f:
            f.write(HBA)
        if not self.account.is_self:
            os.chown(hba, self.account.uid, self.account.gid)
        lines.append(f"hba_file = '{hba}'")
        path = os.path.join(self.datadir, _CONF_FILE)
        with open(path, "w") as f:
            f.write("# written by residency.pgserver; changed on every start\n" + "\n".join(lines) + "\n")
        if not self.account.is_self:
            os.chown(path, self.account.uid, self.account.gid)

    def pid(self) -> int | None:
        """The postmaster's pid if it is running for this data directory."""
        pid = self._pidfile_pid()
        if pid and pid_alive(pid) and self._is_our_postmaster(pid):
            return pid
        return None

    def _pidfile_pid(self) -> int | None:
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def _is_our_postmaster(self, pid: int) -> bool:
        args = cmdline(pid)
        if not args:
            return True  # cannot tell (no /proc); trust the pid file
        return any(os.path.basename(a) in ("postgres", "postmaster") for a in args[:1]) and self.datadir in args

    def remove_stale_pidfile(self) -> bool:
        """Remove postmaster.pid (and socket lock files) naming a dead or foreign process.

        PostgreSQL itself treats a zombie (a killed postmaster nobody reaped, common in
        containers) or an unrelated process that reused the pid as alive and refuses to start.
        Returns True if the pid file was removed.
        """
        removed = False
        pid = self._pidfile_pid()
        path = os.path.join(self.datadir, "postmaster.pid")
        if os.path.exists(path) and not (pid and pid_alive(pid) and self._is_our_postmaster(pid)):
            os.unlink(path)
            removed = True
        if not os.path.exists(path):
            for lock in glob.glob(os.path.join(self.datadir, ".s.PGSQL.*.lock")):
                try:
                    with open(lock) as f:
                        lpid = int(f.readline().strip())
                except (OSError, ValueError):
                    lpid = 0
                if not (pid_alive(lpid) and self._is_our_postmaster(lpid)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock)
        return removed

    def start(self, *, timeout: float = 60) -> int:
        """Start the server (no-op if running); returns the postmaster pid."""
        running = self.pid()
        if running:
            return running
        if not self.initialised:
            raise OperationError(f"{self.datadir}: not a PostgreSQL data directory (run init first)")
        if port_in_use(self.port):
            raise OperationError(f"port {self.port} on 127.0.0.1 is already in use by another process")
        self.remove_stale_pidfile()
        self.write_settings()
        if self.logfile and not os.path.exists(self.logfile):
            open(self.logfile, "a").close()
            if not self.account.is_self:
                os.chown(self.logfile, self.account.uid, self.account.gid)
        deadline = time.monotonic() + timeout
        while True:
            offset = os.path.getsize(self.logfile) if self.logfile and os.path.exists(self.logfile) else 0
            cp = self._run(
                [self.binaries.path("pg_ctl"), "start", "-D", self.datadir, "-l", str(self.logfile), "-w", "-t", str(int(timeout)), "-s"],
                timeout=timeout + 10, check=False,
            )
            pid = self.pid()
            if cp.returncode == 0 and pid:
                return pid
            log = _read_from(self.logfile, offset)
            if "Address already in use" in log or "could not bind" in log:
                raise OperationError(f"port {self.port} on 127.0.0.1 is already in use by another process")
            # a killed postmaster's children may still hold the old shared memory for a moment
            if "shared memory block is still in use" in log and time.monotonic() < deadline:
                time.sleep(0.5)
                self.remove_stale_pidfile()
                continue
            detail = _last_error(log) or _last_line(cp.stderr) or f"pg_ctl exit code {cp.returncode}"
            raise OperationError(f"PostgreSQL in {self.datadir} did not start: {detail} (log: {self.logfile})")

    def stop(self, *, mode: str = "fast", timeout: float = 60) -> bool:
        """Stop the server if running; True if it was running."""
        pid = self.pid()
        if not pid:
            self.remove_stale_pidfile() if self.initialised else None
            return False
        cp = self._run(
            [self.binaries.path("pg_ctl"), "stop", "-D", self.datadir, "-m", mode, "-w", "-t", str(int(timeout)), "-s"],
            timeout=timeout + 10, check=False,
        )
        if cp.returncode != 0 and pid_alive(pid):
            if mode != "immediate":
                return self.stop(mode="immediate", timeout=timeout)
            raise OperationError(f"PostgreSQL in {self.datadir} (pid {pid}) did not stop: {_last_line(cp.stderr)}")
        return True

    def accepting(self, timeout: float = 3) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn("postgres"), connect_timeout=max(1, int(timeout))) as c:
                c.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False


def _last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _last_error(log: str) -> str:
    for ln in reversed(log.splitlines()):
        if "FATAL" in ln or "ERROR" in ln or "PANIC" in ln:
            return ln.split("FATAL:", 1)[-1].split("PANIC:", 1)[-1].strip()
    return ""


def _read_from(path: str | None, offset: int) -> str:
    if not path:
        return ""
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return ""
