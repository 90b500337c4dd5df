"""PostgreSQL logical replication for online moves: one publication per move in the source with
row filters on the workspace key, one subscription in the target (``copy_data = true``: the
initial copy, then the changes), the slot it streams from, the TRUNCATE guard, catch-up waits,
teardown and the search for leftovers. Every statement comes from :mod:`migrate.sqlbuild`.

Names: publication, subscription and slot are all ``residency_move_<move id>``; the table-sync
slots PostgreSQL creates during the initial copy are ``pg_<subscription oid>_sync_<relid>_<sysid>``.

TRUNCATE is not published (it ignores row filters and would empty the target's tables for every
workspace); a statement-level AFTER TRUNCATE trigger per table records it in
``residency_online.events`` so the move stops instead of silently keeping rows the source lost.
Schema changes are caught by comparing an introspected fingerprint of both schemas with the one
taken when replication started.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import psycopg
from psycopg import sql

from residency import db
from residency.connections import Connections, redact
from residency.errors import OperationError, first_line

from .graph import Graph
from .introspect import introspect
from .sqlbuild import ONLINE_GUARD_FN, ONLINE_SCHEMA, Builder

PREFIX = "residency_move_"
_GUARD_LOCK = 0x6F6E_6C69_6E65  # advisory lock serialising TRUNCATE-guard DDL in a database
SOURCE_DSN_ENV = "RESIDENCY_REPLICATION_DSN_{region}"


class ReplicationStopped(OperationError):
    """Replication can't be trusted any more (TRUNCATE, schema change, apply error)."""


def name_for(move_id: int) -> str:
    return f"{PREFIX}{int(move_id)}"


def row_filtered(g: Graph) -> list[str]:
    """Tables that carry the key (root, own key column): published with a row filter."""
    return [t for t in g.order if g.reach[t].by_column and g.table(t).primary_key]


def path_tables(g: Graph) -> list[str]:
    """Tables that reach the workspace through foreign keys or configured paths: a row filter
    can't follow them, so they are copied ahead of the fence, and the rows the change log names
    (by primary key) again under it."""
    return [t for t in g.order if not g.reach[t].by_column and g.table(t).primary_key]


def fenced_tables(g: Graph) -> list[str]:
    """Tables without a primary key (join tables): no replica identity to publish their UPDATEs
    and DELETEs by (the source would refuse them), no key for the change log; copied whole under
    the fence from the (then static) source, the snapshot way."""
    return [t for t in g.order if not g.table(t).primary_key]


def source_conninfo(region: str, dsn: str) -> str:
    """The source's DSN as the *target server* sees it: ``$RESIDENCY_REPLICATION_DSN_<REGION>``
    when the servers reach each other differently than this process does, else the source DSN."""
    return os.environ.get(SOURCE_DSN_ENV.format(region=region.upper().replace("-", "_"))) or dsn


# ------------------------------------------------------------------------------ fingerprint


def fingerprint(conn: psycopg.Connection[Any], g: Graph) -> str:
    """Columns, types and keys of the moving and global tables: changes iff their schema does."""
    s = introspect(conn, g.schema.name)
    out = {}
    for name in sorted(g.target_tables):
        t = s.table(name)
        out[name] = None if t is None else [[(c.name, c.type, c.generated) for c in t.columns], list(t.primary_key)]
    return hashlib.sha256(json.dumps(out, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ truncate guard


DDL_LOCK_TIMEOUT = "250ms"  # below deadlock_timeout (1s): we give way before a writer is chosen as a deadlock's victim
DDL_ATTEMPTS = 80


def again_after_deadlock(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Trigger DDL takes each table's lock in turn while a writer's transaction may hold one and
    want the next. It waits at most DDL_LOCK_TIMEOUT per lock, so it gives way (rolled back whole)
    before the deadlock detector would pick a victim, possibly the application's transaction; then
    it runs again."""

    def run(*a: Any, **k: Any) -> Any:
        for attempt in range(DDL_ATTEMPTS):
            try:
                return fn(*a, **k)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable):
                if attempt == DDL_ATTEMPTS - 1:
                    raise
                time.sleep(0.01 * (1 + attempt % 5))

    run.__name__, run.__doc__ = fn.__name__, fn.__doc__
    return run


@again_after_deadlock
def install_guard(conn: psycopg.Connection[Any], b: Builder, move_id: int) -> None:
    with conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (DDL_LOCK_TIMEOUT,))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_GUARD_LOCK,))
        for stmt in b.truncate_guard_setup():
            conn.execute(stmt)
        for t in b.graph.target_tables:
            conn.execute(b.truncate_guard(t, move_id))


@again_after_deadlock
def install_change_log(conn: psycopg.Connection[Any], b: Builder, move_id: int, workspace_id: str) -> None:
    """Row triggers on every moving table recording the key of every changed row of the workspace
    (before and after the change: a row can change workspace), committed before the path tables'
    copy ahead of the fence. Path tables: which rows to copy again under the fence. All tables:
    which key ranges incremental verification must check again (:mod:`migrate.incremental`)."""
    with conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (DDL_LOCK_TIMEOUT,))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_GUARD_LOCK,))
        for stmt in b.truncate_guard_setup() + b.change_log_setup():
            conn.execute(stmt)
        for t in b.graph.order:
            if b.graph.table(t).primary_key:  # tables without one are copied whole under the fence
                for stmt in b.change_log_trigger(t, move_id, workspace_id):
                    conn.execute(stmt)


def changed_keys(conn: psycopg.Connection[Any], b: Builder, move_id: int, table: str, since: int = 0) -> list[Any]:
    """Keys of ``table`` changed (committed or not yet) with a change id above ``since``."""
    return [r[0] for r in conn.execute(b.changed_keys(table), {"move_id": int(move_id), "table": table, "since": int(since)})]


def change_log_present(conn: psycopg.Connection[Any], b: Builder, move_id: int) -> bool:
    """Every moving table still carries this move's change-log trigger."""
    n = conn.execute(
        "SELECT count(DISTINCT tgrelid) FROM pg_trigger WHERE tgname = %s AND NOT tgisinternal",
        (f"residency_online_changes_{int(move_id)}",),
    ).fetchone()[0]
    return int(n) == len([t for t in b.graph.order if b.graph.table(t).primary_key])


def truncations(conn: psycopg.Connection[Any], b: Builder, move_id: int) -> list[tuple[str, str, Any]]:
    try:
        return [tuple(r) for r in conn.execute(b.truncate_events(), {"move_id": int(move_id)})]  # type: ignore[misc]
    except psycopg.errors.UndefinedTable:
        return []


@again_after_deadlock
def drop_guard(conn: psycopg.Connection[Any], b: Builder, move_id: int) -> bool:
    """Remove this move's triggers and events; the schema goes when no move uses it."""
    with conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (DDL_LOCK_TIMEOUT,))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_GUARD_LOCK,))
        if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (ONLINE_SCHEMA,)).fetchone():
            return False
        for t in b.graph.target_tables:
            if b.graph.schema.table(t) is not None:
                conn.execute(b.truncate_guard_drop(t, move_id))
                conn.execute(b.change_log_drop(t, move_id))
        for q in (b.truncate_events_clear(), b.change_log_clear()):
            try:
                with conn.transaction():
                    conn.execute(q, {"move_id": int(move_id)})
            except psycopg.errors.UndefinedTable:
                pass
        (users,) = conn.execute(
            "SELECT count(*) FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = %s",
            (ONLINE_SCHEMA,),
        ).fetchone()
        if users == 0:
            conn.execute(b.online_schema_drop())
    return True


# ------------------------------------------------------------------------------ create


def create_publication(conn: psycopg.Connection[Any], b: Builder, move_id: int, workspace_id: str) -> None:
    name = name_for(move_id)
    if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone():
        conn.execute(b.publication_drop(name))
    conn.execute(b.publication_create(name, row_filtered(b.graph), workspace_id))


# The server settings that could copy a statement's text (and so a CONNECTION string's password)
# into the target server's log: every statement, a slow one, a failing one, or its error message.
_QUIET_LOGGING = (("log_statement", "none"), ("log_min_duration_statement", "-1"),
                  ("log_min_error_statement", "panic"), ("log_min_messages", "panic"))


def check_conninfo(conninfo: str) -> None:
    """A connection string the target server will be handed, parsed here first: a malformed one
    is one redacted line (exit 2), never sent to a server that would echo it into its log."""
    from psycopg.conninfo import conninfo_to_dict

    from residency.errors import InputError
    from residency.redaction import redact, register_dsn

    register_dsn(conninfo)
    try:
        conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"the replication connection string {redact(conninfo)} is not valid: {redact(first)}") from None


def has_password(conninfo: str) -> bool:
    from residency.redaction import redact

    return redact(conninfo) != conninfo


def quiet_statement_logging(conn: psycopg.Connection[Any], conninfo: str) -> list[str]:
    """Turn statement logging off for the statement that carries ``conninfo`` (``SET LOCAL`` in a
    transaction, ``SET`` for an autocommit session: undo with :func:`restore_statement_logging`).

    Needs superuser or, on PostgreSQL 15+, ``GRANT SET ON PARAMETER ...`` for each setting. A role
    without it is refused when the string carries a password (nothing is sent); a string without
    one (the password in the target server's passfile) needs no quieting. Returns what was set."""
    scope = "SESSION" if conn.autocommit else "LOCAL"
    done: list[str] = []
    for name, value in _QUIET_LOGGING:
        try:
            with conn.transaction():  # a savepoint (or a transaction), so a refusal leaves conn usable
                conn.execute(sql.SQL("SET {} {} = {}").format(sql.SQL(scope), sql.Identifier(name), sql.Literal(value)))
            done.append(name)
        except psycopg.errors.InsufficientPrivilege:
            if has_password(conninfo):
                restore_statement_logging(conn, done)
                role = conn.execute("SELECT current_user").fetchone()[0]
                raise OperationError(
                    f"the replication connection string carries a password and role {role} may not turn off {name} on the"
                    f" target server, so the password could reach its log: GRANT SET ON PARAMETER"
                    f" {', '.join(n for n, _ in _QUIET_LOGGING)} TO {role}, or put the password in the target server's"
                    f" passfile and leave it out of {SOURCE_DSN_ENV.format(region='<SOURCE REGION>')}"
                ) from None
    return done


def restore_statement_logging(conn: psycopg.Connection[Any], names: list[str]) -> None:
    if conn.autocommit:
        for name in names:
            conn.execute(sql.SQL("RESET {}").format(sql.Identifier(name)))


def create_subscription(conn: psycopg.Connection[Any], b: Builder, move_id: int, conninfo: str) -> int:
    name = name_for(move_id)
    check_conninfo(conninfo)
    quieted = quiet_statement_logging(conn, conninfo)
    try:
        conn.execute(b.subscription_create(name, conninfo, name, name))
    finally:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            restore_statement_logging(conn, quieted)
    oid = subscription_oid(conn, move_id)
    assert oid is not None
    return oid


def subscription_enabled(conn: psycopg.Connection[Any], move_id: int) -> bool | None:
    row = conn.execute(
        "SELECT s.subenabled FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
        " WHERE s.subname = %s AND d.datname = current_database()",
        (name_for(move_id),),
    ).fetchone()
    return None if row is None else bool(row[0])


def disable_subscription(conn: psycopg.Connection[Any], move_id: int) -> None:
    """Stop applying (a catalogue flag; the apply worker exits on its own): cheap enough for the
    fence. Subscription, slot and publication are dropped by :func:`teardown` afterwards."""
    conn.execute(Builder.subscription_disable(name_for(move_id)))


def enable_subscription(conn: psycopg.Connection[Any], move_id: int) -> None:
    conn.execute(Builder.subscription_enable(name_for(move_id)))


def subscription_oid(conn: psycopg.Connection[Any], move_id: int) -> int | None:
    row = conn.execute(
        "SELECT s.oid FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
        " WHERE s.subname = %s AND d.datname = current_database()",
        (name_for(move_id),),
    ).fetchone()
    return int(row[0]) if row else None


def slot_exists(conn: psycopg.Connection[Any], move_id: int) -> bool:
    return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name_for(move_id),)).fetchone() is not None


def publication_exists(conn: psycopg.Connection[Any], move_id: int) -> bool:
    return conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name_for(move_id),)).fetchone() is not None


# ------------------------------------------------------------------------------ watch


@dataclass
class SubState:
    tables: int
    ready: int
    states: dict[str, str]
    apply_errors: int
    sync_errors: int

    @property
    def synced(self) -> bool:
        return self.tables > 0 and self.ready == self.tables


def sub_state(conn: psycopg.Connection[Any], move_id: int) -> SubState:
    """Initial-copy state per table (pg_subscription_rel: i, d, f, s, r = ready) and the
    subscription's error counters (pg_stat_subscription_stats, PostgreSQL 15)."""
    name = name_for(move_id)
    rows = conn.execute(
        "SELECT r.srrelid::regclass::text, r.srsubstate FROM pg_subscription_rel r"
        " JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = %s",
        (name,),
    ).fetchall()
    errs = conn.execute(
        "SELECT coalesce(apply_error_count, 0), coalesce(sync_error_count, 0) FROM pg_stat_subscription_stats WHERE subname = %s",
        (name,),
    ).fetchone() or (0, 0)
    states = {r[0]: r[1] for r in rows}
    return SubState(len(rows), sum(1 for s in states.values() if s == "r"), states, int(errs[0]), int(errs[1]))


def current_lsn(conn: psycopg.Connection[Any]) -> str:
    return str(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])


def lag(conn: psycopg.Connection[Any], move_id: int) -> tuple[bool, int | None]:
    """(slot exists, bytes of source WAL the subscription has not confirmed yet)."""
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = %s",
        (name_for(move_id),),
    ).fetchone()
    if row is None:
        return False, None
    return True, None if row[0] is None else int(row[0])


def applied_up_to(conn: psycopg.Connection[Any], move_id: int, lsn: str) -> bool:
    """True when the subscription has applied and flushed everything up to ``lsn`` of the source:
    its slot's confirmed_flush_lsn (the position the subscriber reported as durably applied)."""
    row = conn.execute(
        "SELECT confirmed_flush_lsn IS NOT NULL AND confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
        (lsn, name_for(move_id)),
    ).fetchone()
    if row is None:
        raise ReplicationStopped(f"replication slot {name_for(move_id)} is gone from the source")
    return bool(row[0])


def wait_applied(
    src: psycopg.Connection[Any],
    dst: psycopg.Connection[Any],
    move_id: int,
    lsn: str,
    *,
    timeout: float,
    should_stop: Callable[[], bool] = lambda: False,
    check: Callable[[], None] = lambda: None,
    poll: float = 0.01,
) -> float:
    """Wait until the target has applied the source's WAL up to ``lsn``; returns seconds waited."""
    t0 = time.monotonic()
    last_check = t0
    while not applied_up_to(src, move_id, lsn):
        now = time.monotonic()
        if should_stop():
            raise InterruptedError("the move's lease was lost; stopping")
        if now - last_check > 1.0:
            last_check = now
            st = sub_state(dst, move_id)
            if st.apply_errors or st.sync_errors:
                raise ReplicationStopped(_errors_line(move_id, st))
            check()
        if now - t0 > timeout:
            raise OperationError(f"the target did not apply the source's changes up to {lsn} within {timeout:.0f}s")
        time.sleep(poll)
    return time.monotonic() - t0


def _errors_line(move_id: int, st: SubState) -> str:
    return (
        f"subscription {name_for(move_id)} reports {st.apply_errors} apply and {st.sync_errors} initial-copy errors in the"
        " target (see its server log: a conflicting row or a changed schema); replication stopped"
    )


# ------------------------------------------------------------------------------ teardown


def teardown(src_dsn: str, dst_dsn: str, b: Builder | None, move_id: int, sub_oid: int | None = None) -> dict[str, Any]:
    """Remove this move's subscription (target), slots and publication (source) and TRUNCATE
    guard, whatever is left of them; idempotent. Returns what was removed."""
    name = name_for(move_id)
    out: dict[str, Any] = {"subscription": False, "slots": [], "publication": False, "guard": False}
    with db.connect(dst_dsn, autocommit=True, application_name="residency-online") as dst:
        oid = subscription_oid(dst, move_id)
        if oid is not None:
            sub_oid = oid
            try:
                # normal path: stops the workers, connects to the source and drops the slots
                dst.execute(Builder.subscription_drop(name))
            except psycopg.Error:
                # the source or its slot is unreachable/gone: detach from the slot, then drop
                dst.execute(Builder.subscription_disable(name))
                dst.execute(Builder.subscription_detach_slot(name))
                dst.execute(Builder.subscription_drop(name))
            out["subscription"] = True
    with db.connect(src_dsn, autocommit=True, application_name="residency-online") as src:
        like = [name] + ([f"pg_{int(sub_oid)}_sync_%"] if sub_oid else [])
        deadline = time.monotonic() + 10
        while True:
            rows = src.execute(
                "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = current_database()"
                " AND (slot_name = %s OR slot_name LIKE %s)",
                (like[0], like[-1] if len(like) > 1 else like[0]),
            ).fetchall()
            if not rows:
                break
            for slot, pid in rows:
                try:
                    if pid is not None:
                        src.execute("SELECT pg_terminate_backend(%s)", (pid,))
                        continue
                    src.execute(Builder.slot_drop(slot))
                    out["slots"].append(slot)
                except psycopg.errors.ObjectInUse:
                    pass
                except psycopg.errors.UndefinedObject:
                    pass
            if time.monotonic() > deadline:
                raise OperationError(f"cannot drop replication slot(s) {', '.join(r[0] for r in rows)} in the source: still in use")
            time.sleep(0.1)
        if publication_exists(src, move_id):
            src.execute(Builder.publication_drop(name))
            out["publication"] = True
        if b is not None:
            out["guard"] = drop_guard(src, b, move_id)
    return out


# ------------------------------------------------------------------------------ leftovers


@dataclass
class Leftover:
    region: str
    kind: str  # publication | subscription | slot | truncate-guard
    name: str
    move_id: int | None
    detail: str = ""
    drop: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _move_of(name: str) -> int | None:
    if name.startswith(PREFIX) and name[len(PREFIX):].isdigit():
        return int(name[len(PREFIX):])
    return None


def leftovers(conns: Connections, regions: list[str] | None = None) -> list[Leftover]:
    """Publications, subscriptions and slots named after moves (``residency_move_<id>``), their
    table-sync slots, and TRUNCATE guards, in every region's database."""
    out: list[Leftover] = []
    for region in regions or list(conns.regions):
        try:
            with db.connect(conns.region(region).dsn, autocommit=True, connect_timeout=5) as c:
                for (name,) in c.execute("SELECT pubname FROM pg_publication WHERE pubname LIKE %s", (PREFIX + "%",)):
                    out.append(Leftover(region, "publication", name, _move_of(name), drop=Builder.publication_drop(name).as_string(c)))
                for name, oid, enabled, slot in c.execute(
                    "SELECT s.subname, s.oid, s.subenabled, s.subslotname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
                    " WHERE d.datname = current_database() AND s.subname LIKE %s",
                    (PREFIX + "%",),
                ):
                    out.append(Leftover(region, "subscription", name, _move_of(name), f"oid {oid}, {'enabled' if enabled else 'disabled'}, slot {slot}",
                                        Builder.subscription_drop(name).as_string(c)))
                for slot, active, retained in c.execute(
                    "SELECT slot_name, active, pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) FROM pg_replication_slots"
                    " WHERE database = current_database() AND (slot_name LIKE %s OR slot_name ~ '^pg_[0-9]+_sync_')",
                    (PREFIX + "%",),
                ):
                    out.append(Leftover(region, "slot", slot, _move_of(slot), f"{'active' if active else 'inactive'}, retains {retained} of WAL",
                                        Builder.slot_drop(slot).as_string(c)))
                for (tg,) in c.execute(
                    "SELECT DISTINCT tgname FROM pg_trigger WHERE tgname LIKE 'residency_online_%%' AND NOT tgisinternal"
                ):
                    mid = tg.rsplit("_", 1)[-1]
                    out.append(Leftover(region, "trigger", tg, int(mid) if mid.isdigit() else None))
        except (OperationError, psycopg.Error) as exc:
            out.append(Leftover(region, "unreachable", redact(conns.region(region).dsn), None, first_line(exc, "")))
    return out


# ------------------------------------------------------------------------------ preconditions


@dataclass
class Precondition:
    check: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"online precondition '{self.check}' not met: {self.detail}" + (f"; fix: {self.fix}" if self.fix else "")


def preconditions(src_dsn: str, dst_dsn: str, conninfo: str, g: Graph, b: Builder) -> list[Precondition]:
    """What logical replication with row filters needs, checked read-only; each failing check
    says what to run. The connectivity probe creates a subscription inside a transaction in the
    target that is rolled back (the target server connects to the source; nothing is kept)."""
    out: list[Precondition] = []
    with db.connect(src_dsn, autocommit=True) as s, db.connect(dst_dsn, autocommit=True) as t:
        for side, c in (("source", s), ("target", t)):
            v = int(c.execute("SHOW server_version_num").fetchone()[0])
            out.append(Precondition(f"{side} server version", v >= 150000, f"{side} runs PostgreSQL {v // 10000}; row filters need 15 or later",
                                    "" if v >= 150000 else f"upgrade the {side} server to PostgreSQL 15 or later"))
        wal = str(s.execute("SHOW wal_level").fetchone()[0])
        out.append(Precondition("source wal_level", wal == "logical", f"source wal_level is '{wal}', logical replication needs 'logical'",
                                "" if wal == "logical" else b.fix_wal_level().as_string(s)))
        max_slots, used = s.execute(
            "SELECT current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)"
        ).fetchone()
        need = 1 + int(t.execute("SELECT current_setting('max_sync_workers_per_subscription')::int").fetchone()[0])
        free = int(max_slots) - int(used)
        out.append(Precondition("source replication slots", free >= need, f"source has {free} free replication slots, the move needs {need}",
                                "" if free >= need else b.fix_setting("max_replication_slots", int(used) + need + 4).as_string(s)))
        workers = int(t.execute("SELECT current_setting('max_logical_replication_workers')::int").fetchone()[0])
        out.append(Precondition("target replication workers", workers >= 2, f"target max_logical_replication_workers is {workers}",
                                "" if workers >= 2 else b.fix_setting("max_logical_replication_workers", 8).as_string(t)))

        # privileges: source (publication, triggers, replication connection), target (subscription)
        role, sup, repl, dbname = s.execute(
            "SELECT current_user, rolsuper, rolreplication, current_database() FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        ok = sup or repl
        out.append(Precondition("source REPLICATION privilege", bool(ok), f"role {role} in the source has neither SUPERUSER nor REPLICATION",
                                "" if ok else b.fix_role(role, "REPLICATION").as_string(s)))
        if not sup:
            if not s.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()[0]:
                out.append(Precondition("source CREATE on database", False, f"role {role} cannot create a publication in {dbname}",
                                        b.fix_grant_create(dbname, role).as_string(s)))
            for tname in g.target_tables:
                owner = s.execute(
                    "SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relname = %s",
                    (g.schema.name, tname),
                ).fetchone()
                if owner and not owner[0]:
                    out.append(Precondition(f"source ownership of {tname}", False,
                                            f"role {role} does not own {tname} (publications and TRUNCATE guards need the owner)",
                                            b.fix_owner(tname, role).as_string(s)))
        trole, tsup = t.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        out.append(Precondition("target subscription privilege", bool(tsup),
                                f"role {trole} in the target is not a superuser; PostgreSQL 15 lets only superusers create subscriptions",
                                "" if tsup else b.fix_role(trole, "SUPERUSER").as_string(t)))

        # replica identity must include the key column of every row-filtered table
        for tname in row_filtered(g):
            key = g.reach[tname].key_column or ""
            ident, cols = _replica_identity(s, g.schema.name, tname)
            good = ident == "f" or key in cols
            what = {"d": "the primary key", "i": "an index", "f": "FULL", "n": "NOTHING"}.get(ident, ident)
            out.append(Precondition(
                f"replica identity of {tname}", good,
                f"{tname}'s replica identity is {what} ({', '.join(cols) or 'no columns'}), which lacks {key}: a row filter on {key} rejects its UPDATEs and DELETEs",
                "" if good else b.fix_replica_identity(tname, key).as_string(s),
            ))

    # connectivity from the target server itself to the source
    if tsup:
        probe = f"residency_probe_{os.getpid()}"
        try:
            check_conninfo(conninfo)
            with db.connect(dst_dsn, autocommit=False) as t2:
                try:
                    t2.execute("SET LOCAL statement_timeout = '20s'")
                    quiet_statement_logging(t2, conninfo)  # SET LOCAL: ends with the rolled-back transaction
                    t2.execute(Builder.subscription_probe(probe, conninfo))
                    out.append(Precondition("connectivity from target to source", True, "the target server reached the source"))
                finally:
                    t2.rollback()
        except (psycopg.Error, OperationError) as exc:
            first = redact(first_line(exc))
            out.append(Precondition("connectivity from target to source", False,
                                    f"the target server cannot open a replication connection to {redact(conninfo)}: {first}",
                                    "open the network path from the target's database server to the source's, allow a replication"
                                    " connection in the source's pg_hba.conf, or set the DSN the target should use in "
                                    + SOURCE_DSN_ENV.format(region="<SOURCE REGION>")))
    return out


def _replica_identity(conn: psycopg.Connection[Any], schema: str, table: str) -> tuple[str, list[str]]:
    row = conn.execute(
        "SELECT c.oid, c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, table),
    ).fetchone()
    if row is None:
        return "n", []
    oid, ident = row[0], str(row[1])
    if ident in ("d", "i"):
        flag = "indisprimary" if ident == "d" else "indisreplident"
        cols = [r[0] for r in conn.execute(
            sql.SQL("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
                    " WHERE i.indrelid = %s AND i.{}").format(sql.Identifier(flag)),
            (oid,),
        )]
        return ident, cols
    return ident, []
