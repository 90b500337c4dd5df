"""The lease: only the process holding a move's lease drives it. A heartbeat thread renews it;
if renewal fails the work stops at the next batch. A lease left by a process that died on this
host (kill -9) is taken over at once; otherwise it expires after its duration."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from typing import Any

from residency import db, moves
from residency.errors import OperationError
from residency.processes import pid_alive

LEASE_SECONDS = float(os.environ.get("RESIDENCY_MOVE_LEASE_SECONDS", "60"))



def _dead_local_owner(owner: str | None) -> bool:
    if not owner:
        return False
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname():
        return False
    try:
        return not pid_alive(int(parts[1]))
    except ValueError:
        return False


class Lease:
    def __init__(self, control_dsn: str, move_id: int, seconds: float = LEASE_SECONDS):
        self.control_dsn, self.move_id, self.seconds = control_dsn, move_id, seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def acquire(self) -> "Lease":
        with db.connect(self.control_dsn) as conn:
            with conn.transaction():
                ok = moves.claim(conn, self.move_id, self.owner, self.seconds)
                if not ok:
                    rec = moves.get(conn, self.move_id, for_update=True)
                    if _dead_local_owner(rec.lease_owner):
                        ok = moves.take_over(conn, self.move_id, rec.lease_owner or "", self.owner, self.seconds)
                    if not ok:
                        raise OperationError(
                            f"move {self.move_id} is being driven by {rec.lease_owner} (lease until {rec.lease_until:%Y-%m-%d %H:%M:%S %Z});"
                            " wait for it, or resume after the lease expires"
                        )
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.move_id}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        interval = max(self.seconds / 4, 0.5)
        conn: Any = None
        while not self._stop.wait(interval):
            try:
                if conn is None or conn.closed:
                    conn = db.connect(self.control_dsn, autocommit=True)
                if not moves.claim(conn, self.move_id, self.owner, self.seconds):
                    self._lost.set()
                    return
            except Exception:
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with db.connect(self.control_dsn, autocommit=True) as conn:
                moves.release(conn, self.move_id, self.owner)
        except Exception:
            pass

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
