"""What the target role allows the copy to do about triggers, and doing it.

The copy must reproduce the source rows exactly: no user trigger may rewrite them, and per-row
foreign-key checks (internal triggers) are a large share of the target's time. Managed PostgreSQL
gives no superuser, so the copy uses the best of what the target role is allowed:

- ``replica``: ``SET LOCAL session_replication_role = replica`` in each chunk's transaction (a
  superuser, or a role with ``GRANT SET ON PARAMETER session_replication_role``, PostgreSQL 15+).
  Neither ordinary user triggers nor foreign-key triggers fire, so tables copy in any order.
  Triggers marked ``ENABLE ALWAYS`` or ``ENABLE REPLICA`` would still fire; those are disabled by
  name where the role owns the table.
- ``disable_triggers``: the role owns (or is a member of the owner of) every target table that
  has enabled user triggers: ``ALTER TABLE ... DISABLE TRIGGER name`` inside each chunk's
  transaction and the trigger's own mode restored before commit, so no other session ever sees it
  disabled (they wait on the table's lock instead; the scheduler runs one chunk of such a table
  at a time). Foreign-key triggers stay on: tables copy in foreign-key order.
- ``triggers_on``: neither; user triggers on tables the role doesn't own fire (the plan lists
  them), foreign-key checks fire, tables copy in foreign-key order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import psycopg
from psycopg import sql

_EVENTS = ((4, "INSERT"), (8, "DELETE"), (16, "UPDATE"), (32, "TRUNCATE"))
_ENABLE = {"O": sql.SQL("ENABLE TRIGGER"), "A": sql.SQL("ENABLE ALWAYS TRIGGER"), "R": sql.SQL("ENABLE REPLICA TRIGGER")}


@dataclass(frozen=True)
class Trigger:
    table: str
    name: str
    enabled: str  # pg_trigger.tgenabled: O (origin), A (always), R (replica)
    timing: str  # BEFORE | AFTER | INSTEAD OF
    level: str  # ROW | STATEMENT
    events: tuple[str, ...]

    def describe(self) -> str:
        mode = {"A": ", ENABLE ALWAYS", "R": ", ENABLE REPLICA"}.get(self.enabled, "")
        return f"{self.table}.{self.name} ({self.timing} {'/'.join(self.events)} FOR EACH {self.level}{mode})"


@dataclass
class TargetAccess:
    role: str
    superuser: bool
    set_replication_role: bool
    owned: list[str] = field(default_factory=list)  # tables (among those checked) whose triggers the role may alter
    triggers: list[Trigger] = field(default_factory=list)  # enabled user triggers firing on INSERT or DELETE
    method: str = "triggers_on"
    reason: str = ""

    @property
    def replica(self) -> bool:
        return self.method == "replica"

    @property
    def fk_order(self) -> bool:
        """Foreign-key triggers fire: a child's chunks may start only after its parents' are done."""
        return not self.replica

    def _fires(self, t: Trigger) -> bool:
        # in replica mode only ALWAYS and REPLICA triggers fire; otherwise ORIGIN and ALWAYS ones
        return t.enabled in ("A", "R") if self.replica else t.enabled in ("O", "A")

    def disable_on(self, table: str) -> list[Trigger]:
        """Triggers of ``table`` the copy disables by name in its transaction (owned tables only)."""
        if table not in self.owned:
            return []
        return [t for t in self.triggers if t.table == table and self._fires(t)]

    def would_fire(self) -> list[Trigger]:
        """User triggers that fire while the copy writes (tables the role cannot alter)."""
        return [t for t in self.triggers if self._fires(t) and t.table not in self.owned]

    def exclusive(self, table: str) -> bool:
        """One chunk of ``table`` at a time: ALTER TABLE locks the table until commit. (With
        foreign-key checks on, concurrent chunks of one table share-lock the same parent rows from
        several transactions, MultiXacts: each chunk is ~1.3x slower, but two side by side still
        finish sooner than one after the other, measured on the 1M-row bench's owner target.)"""
        return bool(self.disable_on(table))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["triggers"] = [asdict(t) for t in self.triggers]
        d["would_fire"] = [t.describe() for t in self.would_fire()]
        d["fk_order"] = self.fk_order
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TargetAccess":
        trig = [Trigger(**{**t, "events": tuple(t.get("events") or ())}) for t in d.get("triggers") or []]
        return cls(d["role"], bool(d["superuser"]), bool(d["set_replication_role"]), list(d.get("owned") or []), trig,
                   d.get("method", "triggers_on"), d.get("reason", ""))

    def notes(self) -> list[str]:
        """The plan's note lines: the method and why, then what would fire."""
        out = [f"copy method: {self.method}: {self.reason}"]
        fire = self.would_fire()
        if fire:
            out.append(f"user triggers on target tables that would fire during the copy ({len(fire)}): "
                       + ", ".join(t.describe() for t in fire))
        return out


def inspect(conn: psycopg.Connection[Any], schema: str, tables: Sequence[str]) -> TargetAccess:
    """Read what the connection's role may do on the target (changes nothing)."""
    role, su, ver = conn.execute(
        "SELECT current_user, current_setting('is_superuser') = 'on', current_setting('server_version_num')::int").fetchone()
    can_set = bool(su)
    if not su and ver >= 150000:
        (can_set,) = conn.execute("SELECT has_parameter_privilege(current_user, 'session_replication_role', 'SET')").fetchone()
    names = list(tables)
    owned = [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = ANY(%s) AND pg_has_role(current_user, c.relowner, 'USAGE') ORDER BY c.relname",
        (schema, names))]
    trig = []
    for rel, name, enabled, tgtype in conn.execute(
        "SELECT c.relname, t.tgname, t.tgenabled::text, t.tgtype::int FROM pg_trigger t"
        " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = ANY(%s) AND NOT t.tgisinternal AND t.tgenabled <> 'D'"
        " AND (t.tgtype::int & 12) <> 0 ORDER BY c.relname, t.tgname",
        (schema, names),
    ):
        timing = "INSTEAD OF" if tgtype & 64 else ("BEFORE" if tgtype & 2 else "AFTER")
        events = tuple(e for bit, e in _EVENTS if tgtype & bit)
        trig.append(Trigger(rel, name, enabled, timing, "ROW" if tgtype & 1 else "STATEMENT", events))
    acc = TargetAccess(role, bool(su), bool(can_set), owned, trig)
    _choose(acc)
    return acc


def _choose(acc: TargetAccess) -> None:
    triggered = sorted({t.table for t in acc.triggers})
    unowned = [t for t in triggered if t not in acc.owned]
    who = f"the target role {acc.role}"
    if acc.superuser or acc.set_replication_role:
        acc.method = "replica"
        why = "is a superuser" if acc.superuser else "has SET privilege on session_replication_role (GRANT SET ON PARAMETER)"
        acc.reason = (f"{who} {why}: each chunk runs with session_replication_role = replica, so neither user triggers nor "
                      "foreign-key checks fire and tables copy in any order")
    elif not unowned:
        acc.method = "disable_triggers"
        acc.reason = (f"{who} may not set session_replication_role (needs a superuser or, on PostgreSQL 15+, GRANT SET ON "
                      "PARAMETER session_replication_role) but owns every target table with user triggers"
                      + (f" ({', '.join(triggered)})" if triggered else " (there are none)")
                      + ": ALTER TABLE ... DISABLE TRIGGER inside each chunk's transaction; foreign-key checks stay on, "
                      "so tables copy in foreign-key order")
    else:
        acc.method = "triggers_on"
        acc.reason = (f"{who} may neither set session_replication_role (needs a superuser or, on PostgreSQL 15+, GRANT SET ON "
                      f"PARAMETER session_replication_role TO {acc.role}) nor alter the triggered tables "
                      f"{', '.join(unowned)} (not their owner): triggers stay on, tables copy in foreign-key order")


def enter(conn: psycopg.Connection[Any], acc: TargetAccess, schema: str, table: str) -> None:
    """Inside a target transaction about to write ``table``: switch off what the role may."""
    if acc.replica:
        conn.execute("SET LOCAL session_replication_role = replica")
    for t in acc.disable_on(table):
        conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(sql.Identifier(schema, table), sql.Identifier(t.name)))


def leave(conn: psycopg.Connection[Any], acc: TargetAccess, schema: str, table: str) -> None:
    """Before that transaction commits: every disabled trigger back in its own mode."""
    for t in acc.disable_on(table):
        conn.execute(sql.SQL("ALTER TABLE {} {} {}").format(
            sql.Identifier(schema, table), _ENABLE.get(t.enabled, _ENABLE["O"]), sql.Identifier(t.name)))
