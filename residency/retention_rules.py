"""Retention rules: regions.yaml's ``retention:`` section, validated, and the rules in force for a
workspace in a region.

::

    retention:
      jurisdictions:
        EU: {deleted_workspaces: {after: 30d, marked_by: deleted_at}, backups: 35d}
      regions:
        eu: {tables: {audit_events: {column: created_at, older_than: 400d}}}
      workspaces:
        "7":                                   # a workspace id, quoted
          tables:
            messages: {column: created_at, older_than: 1h, dependants: delete}

A scope (a jurisdiction, a region, a workspace) may say:

- ``tables``: rows of TABLE whose ``column`` (a timestamp) is older than ``older_than`` are deleted.
  ``dependants: delete`` (the default): rows that hang off an expired row (by the reach graph's
  links, or by a NOT NULL foreign key: attachments, their previews, reactions) go with it, and
  nullable foreign keys pointing at it (a reply's ``parent_id``) are set to NULL; ``keep``: an
  expired row anything still points at stays until nothing does.
- ``deleted_workspaces``: a workspace whose root row's ``marked_by`` timestamp is older than
  ``after`` is purged (every row the mover would move).
- ``backups``: how long a workspace backup is kept.

How scopes combine for a workspace homed in region R of jurisdiction J: a table rule and
``deleted_workspaces`` are **maximums** -- every applicable rule (J's, R's, the workspace's)
applies, so the shortest wins (a customer may ask for less than the law allows, never more);
``backups`` is a **setting** -- the most specific scope that says it wins (workspace, region,
jurisdiction), else ``environment.retention.backups_days``.

The environment's ``retention: {backups_days, deleted_workspace_days}`` keeps its meaning: what
the stacks configure for the automated database backups and the buckets' noncurrent versions
(:mod:`residency.retention`).

Pure data and functions, no I/O. The validator is driven by :mod:`residency.catalogue`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from .yamlpos import Map, YNode

Catalogue = Any  # residency.catalogue.Catalogue (which imports this module: no import back)

@dataclass(frozen=True)
class TableRule:
    """Rows of ``table`` whose ``column`` is older than ``older_than`` are deleted."""

    table: str
    column: str
    older_than: timedelta
    dependants: str = "delete"
    scope: str = ""  # "jurisdiction EU", "region eu", "workspace 7"
    at: str = ""  # where it is written: "regions.yaml:41:9"

    def describe(self) -> str:
        from .units import format_duration

        dep = "with their dependants" if self.dependants == "delete" else "unless something still points at them"
        return f"{self.table} older than {format_duration(self.older_than)} by {self.column}, {dep} ({self.scope})"

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "column": self.column, "older_than_seconds": int(self.older_than.total_seconds()),
                "dependants": self.dependants, "scope": self.scope, "at": self.at}


@dataclass(frozen=True)
class PurgeRule:
    """Workspaces whose root row's ``marked_by`` is older than ``after`` are purged."""

    after: timedelta
    marked_by: str
    scope: str = ""
    at: str = ""


@dataclass(frozen=True)
class Scope:
    kind: str  # jurisdiction | region | workspace
    name: str
    tables: tuple[TableRule, ...] = ()
    deleted_workspaces: PurgeRule | None = None
    backups: timedelta | None = None
    at: str = ""


@dataclass(frozen=True)
class RetentionRules:
    """The ``retention:`` section (empty when the file has none)."""

    jurisdictions: Mapping[str, Scope] = field(default_factory=lambda: MappingProxyType({}))
    regions: Mapping[str, Scope] = field(default_factory=lambda: MappingProxyType({}))
    workspaces: Mapping[str, Scope] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def empty(self) -> bool:
        return not (self.jurisdictions or self.regions or self.workspaces)


@dataclass(frozen=True)
class Effective:
    """The rules in force for ``workspace_id`` (or the region as a whole) in ``region``."""

    region: str
    workspace_id: str | None
    tables: tuple[TableRule, ...]
    deleted_workspaces: PurgeRule | None
    backups: timedelta
    backups_from: str

    def to_dict(self) -> dict[str, Any]:
        from .units import format_duration

        p = self.deleted_workspaces
        return {
            "region": self.region, "workspace_id": self.workspace_id,
            "tables": [t.to_dict() for t in self.tables],
            "deleted_workspaces": None if p is None else {"after_seconds": int(p.after.total_seconds()), "marked_by": p.marked_by, "scope": p.scope},
            "backups_seconds": int(self.backups.total_seconds()), "backups_from": self.backups_from,
            "summary": self.summary(), "backups": format_duration(self.backups),
        }

    def summary(self) -> list[str]:
        from .units import format_duration

        out = [t.describe() for t in self.tables]
        if self.deleted_workspaces:
            p = self.deleted_workspaces
            out.append(f"deleted workspaces purged {format_duration(p.after)} after {p.marked_by} ({p.scope})")
        out.append(f"backups kept {format_duration(self.backups)} ({self.backups_from})")
        return out


def effective(cat: Catalogue, region: str, workspace_id: object | None = None) -> Effective:
    """The rules in force for a workspace homed in ``region`` (``None``: the region's own rules)."""
    r = cat.region(region)
    rules: RetentionRules = getattr(cat, "retention", None) or RetentionRules()
    ws = None if workspace_id is None else str(workspace_id)
    scopes = [s for s in (rules.jurisdictions.get(r.jurisdiction), rules.regions.get(r.name),
                          rules.workspaces.get(ws) if ws is not None else None) if s is not None]
    best: dict[tuple[str, str], TableRule] = {}
    purge: PurgeRule | None = None
    for s in scopes:
        for t in s.tables:
            k = (t.table, t.column)
            if k not in best or t.older_than < best[k].older_than:
                best[k] = t
        p = s.deleted_workspaces
        if p is not None and (purge is None or p.after < purge.after):
            purge = p
    backups = timedelta(days=r.environment.retention.backups_days)
    frm = "environment.retention.backups_days"
    for s in scopes:  # most specific last
        if s.backups is not None:
            backups, frm = s.backups, f"{s.kind} {s.name}"
    return Effective(r.name, ws, tuple(sorted(best.values(), key=lambda t: (t.table, t.column))), purge, backups, frm)


def backups_kept(cat: Catalogue, region: str, workspace_id: object | None = None) -> timedelta:
    """How long a workspace backup is kept (for the backups engine's expiry)."""
    return effective(cat, region, workspace_id).backups


def workspaces_with_rules(cat: Catalogue) -> list[str]:
    rules: RetentionRules = getattr(cat, "retention", None) or RetentionRules()
    return list(rules.workspaces)


# --------------------------------------------------------------------------- validation

DEPENDANTS = ("delete", "keep")
SCOPE_KINDS = ("jurisdictions", "regions", "workspaces")


def validate(v: Any, node: "YNode", mark: Any, jurisdictions: Mapping[str, Any] | None, regions: Mapping[str, Any] | None, ws: Any,
             ident: Callable[[str], str | None]) -> RetentionRules | None:
    """The ``retention:`` section, each problem reported through the catalogue's validator ``v``
    at its own line and column (``ident``: its check of a plain SQL identifier); None when
    anything is wrong."""
    from .yamlpos import Scalar

    before = len(v.problems)
    if isinstance(node, Scalar) and node.value is None:
        return RetentionRules()
    m = v.mapping(node, "retention", mark, (), SCOPE_KINDS)
    if m is None:
        return None
    out: dict[str, dict[str, Scope]] = {k: {} for k in SCOPE_KINDS}
    for kind in SCOPE_KINDS:
        sub = m.items.get(kind)
        if sub is None or (isinstance(sub, Scalar) and sub.value is None):
            continue
        sm = v.mapping(sub, f"retention.{kind}", m.keys[kind], ())
        for name, snode in (sm.items.items() if sm else []):
            kmark = sm.keys[name]  # type: ignore[union-attr]
            where = f"retention.{kind}.{name}"
            if kind == "jurisdictions" and jurisdictions is not None and name not in jurisdictions and name not in v.broken_jurisdictions:
                v.err(kmark, f"{where}: jurisdiction '{name}' is not defined (defined: {', '.join(jurisdictions) or 'none'})")
                continue
            if kind == "regions" and regions is not None and name not in regions:
                v.err(kmark, f"{where}: region '{name}' is not defined (defined: {', '.join(regions) or 'none'})")
                continue
            if kind == "workspaces" and ws is not None:
                from .errors import InputError

                try:
                    ws.parse_id(name)
                except InputError as exc:
                    v.err(kmark, f"{where}: {exc}")
                    continue
            scope = _scope(v, snode, kmark, where, kind[:-1], name, ws, ident)
            if scope is not None:
                out[kind][name] = scope
    if len(v.problems) > before:
        return None
    return RetentionRules(*(MappingProxyType(out[k]) for k in SCOPE_KINDS))


def _duration(v: Any, m: "Map", key: str, where: str, *, minimum: timedelta = timedelta(minutes=1)) -> timedelta | None:
    from .errors import InputError
    from .units import format_duration, parse_duration

    text = v.scalar(m, key, where, str)
    if text is None:
        return None
    node = m.items[key]
    try:
        d = parse_duration(text, what=f"'{key}'")
    except InputError as exc:
        v.err(node.mark, f"{where}: {exc}")
        return None
    if d < minimum:
        v.err(node.mark, f"{where}: '{key}' {text} is shorter than {format_duration(minimum)}, the shortest allowed here")
        return None
    return d


def _scope(v: Any, node: "YNode", mark: Any, where: str, kind: str, name: str, ws: Any, _ident_problem: Callable[[str], str | None]) -> Scope | None:
    sm = v.mapping(node, where, mark, (), ("tables", "deleted_workspaces", "backups"))
    if sm is None:
        return None
    label = f"{kind} {name}"
    tables: list[TableRule] = []
    tnode = sm.items.get("tables")
    if tnode is not None:
        tm = v.mapping(tnode, f"{where}.tables", sm.keys["tables"], ())
        for table, rnode in (tm.items.items() if tm else []):
            tw = f"{where}.tables.{table}"
            tmark = tm.keys[table]  # type: ignore[union-attr]
            if _ident_problem(table):
                v.err(tmark, f"{tw}: {_ident_problem(table)}")
                continue
            if ws is not None and table == ws.root_table:
                v.err(tmark, f"{tw}: '{table}' is the root table; a workspace itself expires by 'deleted_workspaces', not a table rule")
                continue
            if ws is not None and table in ws.global_tables:
                v.err(tmark, f"{tw}: '{table}' is a global table (shared by every workspace); a retention rule deletes a workspace's own rows")
                continue
            rm = v.mapping(rnode, tw, tmark, (), ("column", "older_than", "dependants"))
            if rm is None:
                continue
            for key, hint in (("column", "the timestamp column a row's age is read from, such as created_at"),
                              ("older_than", "how old a row may get, such as 1h or 400d")):
                if key not in rm.items:
                    v.err(rm.mark, f"{tw}: missing key '{key}' ({hint})")
            col = v.scalar(rm, "column", tw, str, check=_ident_problem)
            age = _duration(v, rm, "older_than", tw)
            dep = v.scalar(rm, "dependants", tw, str, default="delete",
                           check=lambda d: None if d in DEPENDANTS else f"dependants must be {' or '.join(DEPENDANTS)}, not '{d}'")
            if col is None or age is None or dep is None:
                continue
            tables.append(TableRule(table, col, age, dep, label, str(tmark)))
    purge = None
    pnode = sm.items.get("deleted_workspaces")
    if pnode is not None:
        pw = f"{where}.deleted_workspaces"
        pm = v.mapping(pnode, pw, sm.keys["deleted_workspaces"], (), ("after", "marked_by"))
        if pm is not None:
            for key, hint in (("after", "how long after its deletion a workspace is purged, such as 30d"),
                              ("marked_by", "the root table's timestamp column set when a workspace is deleted, such as deleted_at")):
                if key not in pm.items:
                    v.err(pm.mark, f"{pw}: missing key '{key}' ({hint})")
            after = _duration(v, pm, "after", pw)
            col = v.scalar(pm, "marked_by", pw, str, check=_ident_problem)
            if after is not None and col is not None:
                purge = PurgeRule(after, col, label, str(sm.keys["deleted_workspaces"]))
    backups = None
    if "backups" in sm.items:
        backups = _duration(v, sm, "backups", where, minimum=timedelta(hours=1))
    return Scope(kind, name, tuple(tables), purge, backups, str(mark))
