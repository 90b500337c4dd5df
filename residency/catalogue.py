"""The catalogue: regions.yaml loaded, validated and frozen into typed objects.

``load(path)`` returns a :class:`Catalogue` or raises :class:`~residency.errors.CatalogueError`
carrying *every* problem in the file, each as ``file:line:column: what is wrong, what would be right``.
Nothing else in the toolkit reads regions.yaml.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from .aws_regions import AWS_REGIONS, OTHER_PARTITIONS
from .errors import CatalogueError, InputError
from .yamlpos import Map, Mark, Scalar, Seq, YamlSyntaxError, YNode, parse, plain

MAX_BYTES = 1024 * 1024
STATUSES = ("planned", "active", "draining", "retired")
DEFAULT_PATH = "regions.yaml"
ENV_VAR = "RESIDENCY_REGIONS"

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,40}[a-z0-9]$")
_JURIS = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Jurisdiction:
    name: str
    aws_regions: tuple[str, ...]
    law: str | None = None


@dataclass(frozen=True)
class DatabaseSpec:
    engine: str
    version: str
    instance_class: str
    storage_gb: int
    multi_az: bool


@dataclass(frozen=True)
class Retention:
    backups_days: int
    deleted_workspace_days: int


@dataclass(frozen=True)
class Environment:
    """What every region gets, identically (before a region's declared overrides)."""

    database: DatabaseSpec
    buckets: tuple[str, ...]
    queues: tuple[str, ...]
    retention: Retention


@dataclass(frozen=True)
class Region:
    name: str
    aws_region: str
    jurisdiction: str
    cidr: str
    backup_region: str
    status: str
    overrides: Mapping[str, Any]
    environment: Environment
    """The effective environment: the shared one with this region's overrides applied."""

    @property
    def is_active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class PathSpec:
    """How a table reaches its workspace where foreign keys can't say it.

    Either ``references`` (the column points at that table's primary key, without a declared
    foreign key) or ``type_column`` + ``targets`` (a polymorphic pair: the type column's value
    names which table ``column`` points at).
    """

    table: str
    column: str
    references: str | None = None
    type_column: str | None = None
    targets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class RefSpec:
    """A column that points at rows of another table without a foreign key (``workspace.references``).

    ``table.column: TARGET`` where TARGET is ``table`` (its primary key), ``table.column`` (a unique
    column, e.g. a name), or a polymorphic pair ``{type_column, targets: {value: table}}``.
    """

    table: str
    column: str
    target: str | None = None  # plain reference: the target table
    target_column: str | None = None  # plain reference by a unique column (None: the primary key)
    type_column: str | None = None
    targets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class OwnedSpec:
    """Rows of ``table`` belong to a workspace because a workspace row points at them
    (``workspace.owned_through``: ``active_storage_blobs: active_storage_attachments.blob_id``)."""

    table: str
    via_table: str
    via_column: str


@dataclass(frozen=True)
class SharedRowsSpec:
    """Rows of a keyed ``table`` whose key is a shared value (NULL, '') but that belong to several
    tenants through a membership table (``workspace.shared_rows``). ``policy``: ``all`` copies a
    row when every member moves, ``any`` when one does, ``keep`` leaves it (the default).
    Members: rows of ``members_table`` whose ``members_column`` points at the shared row; each
    member's ``member_column`` value belongs to a tenant through ``tenant_table.tenant_column``
    (a table carrying the key column)."""

    table: str
    policy: str
    members_table: str | None = None
    members_column: str | None = None
    member_column: str | None = None
    tenant_table: str | None = None
    tenant_column: str | None = None


@dataclass(frozen=True)
class WorkspaceSpec:
    root_table: str
    key_column: str
    global_tables: tuple[str, ...]
    paths: Mapping[str, PathSpec]
    object_prefix: str
    tenant_objects: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    """Per-tenant database objects by kind (``sequences``), as name patterns with {workspace_id}."""
    shared_key_values: tuple[Any, ...] = ()  # key values meaning "shared by every tenant" (None: NULL)
    references: tuple[RefSpec, ...] = ()
    owned_through: Mapping[str, OwnedSpec] = field(default_factory=lambda: MappingProxyType({}))
    natural_keys: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    shared_rows: Mapping[str, SharedRowsSpec] = field(default_factory=lambda: MappingProxyType({}))
    key_type: str = "text"
    """The type of the root table's key (``workspace.key_type``), by which ids are parsed."""

    def prefix_for(self, workspace_id: object) -> str:
        """The workspace's object layout (residency.objectkeys.ObjectPrefix: a str, plus a key matcher)."""
        from .objectkeys import ObjectPrefix

        return ObjectPrefix(self.object_prefix, workspace_id)

    def parse_id(self, workspace_id: object) -> str:
        """A user's workspace id, parsed by the root key's type (InputError if it can't be one)."""
        from .workspace_ids import parse

        return parse(workspace_id, self.key_type)


@dataclass(frozen=True)
class OperatorAccess:
    """``operator_access:``: who may be granted a look at a workspace, and from where (issue 13).

    ``operators`` maps an email pattern (``*`` matches any characters; first match wins) to the
    jurisdiction its staff are ``based_in`` and the jurisdictions they ``may_access`` (default: only
    their own). ``max_duration`` bounds a grant; ``consent_valid_for`` a consent token."""

    operators: tuple[tuple[str, str, tuple[str, ...]], ...]
    """(pattern, based_in, may_access), in file order."""
    max_duration_seconds: int = 8 * 3600
    consent_valid_for_seconds: int = 24 * 3600


@dataclass(frozen=True)
class Catalogue:
    path: str
    jurisdictions: Mapping[str, Jurisdiction]
    environment: Environment
    regions: Mapping[str, Region]
    workspace: WorkspaceSpec
    operator_access: OperatorAccess | None = None
    backups: "BackupPolicy | None" = None
    """The ``backups:`` section (how often each workspace is backed up, how long kept); None: absent."""
    retention: Any = None
    """The ``retention:`` section (:class:`residency.retention_rules.RetentionRules`), empty if absent."""

    def region(self, name: str) -> Region:
        """The region called ``name``, or an :class:`InputError` naming the known ones."""
        try:
            return self.regions[name]
        except KeyError:
            known = ", ".join(self.regions)
            hint = _closest(name, self.regions, limit=1 if len(name) <= 3 else 2)
            extra = f"; did you mean '{hint}'?" if hint else ""
            raise InputError(f"unknown region '{name}' (regions in {self.path}: {known}){extra}") from None


# --------------------------------------------------------------------------- loading


def find(start: str | os.PathLike[str] | None = None) -> str | None:
    """The nearest regions.yaml: in ``start`` (default: the working directory) or the closest
    folder above it, as git finds its repository and pulumi its project; None when there is
    none. Relative to the working directory, as messages show it (``regions.yaml``, ``../regions.yaml``)."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / DEFAULT_PATH
        if candidate.is_file():
            return os.path.relpath(candidate)
    return None


def default_path() -> str:
    """``$RESIDENCY_REGIONS``, else the nearest regions.yaml (:func:`find`), else ``regions.yaml``."""
    return os.environ.get(ENV_VAR) or find() or DEFAULT_PATH


def load(path: str | os.PathLike[str] | None = None) -> Catalogue:
    """Load and validate a regions file (default: :func:`default_path`). A file named and missing
    is just that; without a name, the error says how to name one."""
    from .files import read_bytes

    p = Path(path if path is not None else default_path())
    shown = str(path if path is not None else default_path())
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        if path is not None:
            raise InputError(f"{shown}: no such file") from None
        raise InputError(f"{shown}: no such file here or in any folder above; pass --regions FILE or set {ENV_VAR}") from None
    except OSError as exc:
        raise InputError(f"{shown}: cannot read: {exc.strerror}") from None
    if p.is_dir():
        raise InputError(f"{shown}: is a directory, expected a regions.yaml file")
    if size > MAX_BYTES:
        raise CatalogueError(
            [f"{shown}:1:1: file is {size / 1048576:.1f} MiB; a regions file is at most 1 MiB"]
        )
    # regular files only (a FIFO or /dev/zero is refused), and never more than MAX_BYTES read
    raw = read_bytes(p, max_bytes=MAX_BYTES, what="regions file", shown=shown)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        raise CatalogueError(
            [f"{shown}:{line}:{column}: byte 0x{raw[exc.start]:02x} is not UTF-8; save the file as UTF-8"]
        ) from None
    return loads(text, shown)


def loads(text: str, file: str = "regions.yaml") -> Catalogue:
    """Validate regions.yaml text; ``file`` is the name used in error messages."""
    try:
        root = parse(text, file)
    except YamlSyntaxError as exc:
        raise CatalogueError([str(exc)]) from None
    v = _Validator(file)
    cat = v.catalogue(root)
    if v.problems or cat is None:
        raise CatalogueError(v.sorted_problems())
    return cat


# --------------------------------------------------------------------------- validation


_TYPE_NAMES = {str: "a string", int: "a whole number", bool: "true or false", list: "a list", dict: "a mapping"}


class _Validator:
    def __init__(self, file: str):
        self.file = file
        self.problems: list[tuple[int, int, str]] = []
        self.broken_jurisdictions: set[str] = set()
        """Jurisdictions that are defined but invalid (already reported)."""

    # -- reporting
    def err(self, mark: Mark, message: str) -> None:
        self.problems.append((mark.line, mark.column, f"{mark}: {message}"))

    def sorted_problems(self) -> list[str]:
        seen: set[str] = set()
        out = []
        for _, _, msg in sorted(self.problems, key=lambda p: (p[0], p[1])):
            if msg not in seen:
                seen.add(msg)
                out.append(msg)
        return out

    # -- structural helpers
    def mapping(
        self, node: YNode | None, where: str, mark: Mark, required: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> Map | None:
        if node is None:
            return None  # a missing key: the parent mapping reports it
        if isinstance(node, Scalar) and node.value is None:
            self.err(mark, f"{where}: is empty; expected a mapping with {', '.join(required) or 'entries'}")
            return None
        if not isinstance(node, Map):
            self.err(node.mark, f"{where}: expected a mapping{_with(required)}, got {_kind(node)}")
            return None
        self.check_keys(node, where)
        allowed = set(required) | set(optional)
        for key, kmark in node.keys.items():
            if allowed and key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), n=1)
                tip = f"did you mean '{hint[0]}'?" if hint else f"allowed: {', '.join(sorted(allowed))}"
                self.err(kmark, f"{where}: unknown key '{key}'; {tip}")
        for key in required:
            if key not in node.items:
                self.err(node.mark, f"{where}: missing key '{key}'{_KEY_HINTS.get(key, '')}")
        return node

    def check_keys(self, node: Map, where: str) -> None:
        for key, kmark in node.duplicates:
            first = node.keys[key]
            self.err(kmark, f"{where}: duplicate key '{key}' (first defined at line {first.line})")
        for key, kmark in node.bad_keys:
            what = _describe(key) if not isinstance(key, str) else key
            self.err(kmark, f"{where}: key {what} must be a string; write names as text, quoted if need be")

    def scalar(self, m: Map, key: str, where: str, typ: type, default: Any = ..., check: Callable[[Any], str | None] | None = None) -> Any:
        node = m.items.get(key)
        if node is None:
            if default is ...:
                return None  # a missing required key is already reported by mapping()
            return default
        if not isinstance(node, Scalar):
            self.err(node.mark, f"{where}: '{key}' must be {_TYPE_NAMES[typ]}, got {_kind(node)}")
            return None
        value = node.value
        if typ is str and isinstance(value, int) and not isinstance(value, bool) and key == "version":
            value = str(value)
        if typ is str and isinstance(value, float) and key == "version":
            self.err(node.mark, f"{where}: 'version' must be a string; write it quoted, as \"{node.text or value}\"")
            return None
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if not ok:
            self.err(node.mark, f"{where}: '{key}' must be {_TYPE_NAMES[typ]}, got {_describe(value)}")
            return None
        if check is not None:
            problem = check(value)
            if problem:
                self.err(node.mark, f"{where}: {problem}")
                return None
        return value

    def str_list(self, m: Map, key: str, where: str, check: Callable[[str], str | None] | None = None, default: Any = ...) -> tuple[str, ...] | None:
        node = m.items.get(key)
        if node is None:
            return () if default is not ... else None
        if not isinstance(node, Seq):
            self.err(node.mark, f"{where}: '{key}' must be a list, got {_kind(node)}")
            return None
        out: list[str] = []
        seen: dict[str, Mark] = {}
        for item in node.items:
            if not isinstance(item, Scalar) or not isinstance(item.value, str):
                self.err(item.mark, f"{where}: every entry of '{key}' must be a string, got {_kind(item)}")
                continue
            if item.value in seen:
                self.err(item.mark, f"{where}: '{item.value}' is listed twice in '{key}' (first at line {seen[item.value].line})")
                continue
            if check is not None:
                problem = check(item.value)
                if problem:
                    self.err(item.mark, f"{where}: {problem}")
                    continue
            seen[item.value] = item.mark
            out.append(item.value)
        return tuple(out)

    # -- the document
    def catalogue(self, root: YNode | None) -> Catalogue | None:
        if root is None or (isinstance(root, Scalar) and root.value is None):
            self.err(Mark(self.file, 1, 1), "file is empty; expected a mapping with jurisdictions, environment, regions, workspace")
            return None
        top = self.mapping(root, "top level", Mark(self.file, 1, 1), ("jurisdictions", "environment", "regions", "workspace"), ("operator_access", "backups", "retention"))
        if top is None:
            return None
        jur = self.jurisdictions(top.items.get("jurisdictions"), top.keys.get("jurisdictions", top.mark))
        before = len(self.problems)
        env, env_node = self.environment(top.items.get("environment"), top.keys.get("environment", top.mark))
        if len(self.problems) > before:
            env = None  # already reported; don't report it again through each region's overrides
        regions = self.regions(top.items.get("regions"), top.keys.get("regions", top.mark), jur, env, env_node)
        ws = self.workspace(top.items.get("workspace"), top.keys.get("workspace", top.mark))
        access = self.operator_access(top.items.get("operator_access"), top.keys.get("operator_access", top.mark), jur)
        backups = _backup_policy(self, top.items.get("backups"), top.keys.get("backups", top.mark), regions, ws)
        from .retention_rules import RetentionRules, validate as validate_retention  # issue 14: its own module

        ret = RetentionRules()
        if "retention" in top.items:
            ret = validate_retention(self, top.items["retention"], top.keys["retention"], jur, regions, ws, _ident_problem)
        if self.problems or jur is None or env is None or regions is None or ws is None or ret is None:
            return None
        return Catalogue(self.file, MappingProxyType(jur), env, MappingProxyType(regions), ws, operator_access=access, backups=backups, retention=ret)

    def operator_access(self, node: YNode | None, mark: Mark, jur: dict[str, Jurisdiction] | None) -> OperatorAccess | None:
        """The optional ``operator_access:`` section (see :class:`OperatorAccess`)."""
        from .units import parse_duration

        where = "operator_access"
        m = self.mapping(node, where, mark, ("operators",), ("max_duration", "consent_valid_for"))
        if m is None:
            return None
        seconds: dict[str, int] = {}
        for key, default, ceiling in (("max_duration", 8 * 3600, 7 * 86400), ("consent_valid_for", 24 * 3600, 30 * 86400)):
            text = self.scalar(m, key, where, str, default=None)
            if text is None:
                seconds[key] = default
                continue
            try:
                secs = int(parse_duration(text, what=key).total_seconds())
            except InputError as exc:
                self.err(m.items[key].mark, f"{where}: {exc}")
                continue
            if secs > ceiling:
                self.err(m.items[key].mark, f"{where}: {key} {text} is too long; at most {ceiling // 86400}d")
                continue
            seconds[key] = secs
        om = self.mapping(m.items.get("operators"), f"{where}.operators", m.keys.get("operators", m.mark), ())
        known = sorted(jur or {})

        def juris_problem(v: str) -> str | None:
            if jur is None or v in jur or v in self.broken_jurisdictions:
                return None
            hint = _closest(v.lower(), [j.lower() for j in known], limit=1)
            return f"jurisdiction '{v}' is not defined (defined: {', '.join(known) or 'none'})" + (f"; did you mean {hint.upper()}?" if hint else "")

        ops: list[tuple[str, str, tuple[str, ...]]] = []
        for pattern, onode in (om.items.items() if om else []):
            w = f"{where}.operators.'{pattern}'"
            pmark = om.keys[pattern]  # type: ignore[union-attr]
            if pattern.count("@") != 1 or any(ch.isspace() for ch in pattern) or pattern.endswith("@"):
                self.err(pmark, f"{w}: an operator is an email pattern such as '*@eu.support.example.com'")
                continue
            em = self.mapping(onode, w, pmark, ("based_in",), ("may_access",))
            if em is None:
                continue
            based = self.scalar(em, "based_in", w, str, check=juris_problem)
            may = self.str_list(em, "may_access", w, check=juris_problem, default=None)
            if based is None or may is None:
                continue
            ops.append((pattern.lower(), based, may or (based,)))
        if om is not None and not om.items:
            self.err(om.mark, f"{where}.operators: list at least one operator pattern, such as '*@eu.support.example.com': {{based_in: EU}}")
        if len(seconds) < 2 or om is None:
            return None
        return OperatorAccess(tuple(ops), seconds["max_duration"], seconds["consent_valid_for"])

    def jurisdictions(self, node: YNode | None, mark: Mark) -> dict[str, Jurisdiction] | None:
        m = self.mapping(node, "jurisdictions", mark, ())
        if m is None:
            return None
        if not m.items:
            self.err(m.mark, "jurisdictions: define at least one jurisdiction")
        out: dict[str, Jurisdiction] = {}
        owner: dict[str, str] = {}
        for name, jnode in m.items.items():
            where = f"jurisdiction '{name}'"
            if not _JURIS.match(name):
                self.err(m.keys[name], f"{where}: name must be upper-case letters and digits, such as EU or US")
            jm = self.mapping(jnode, where, m.keys[name], ("aws_regions",), ("law",))
            self.broken_jurisdictions.add(name)  # until it proves valid below
            if jm is None:
                continue
            regs = self.str_list(jm, "aws_regions", where, check=_aws_region_problem)
            law = self.scalar(jm, "law", where, str, default=None)
            if regs is not None and not regs and "aws_regions" in jm.items:
                self.err(jm.items["aws_regions"].mark, f"{where}: aws_regions must name at least one AWS region")
            if regs:
                seq = jm.items["aws_regions"]
                assert isinstance(seq, Seq)
                for item in seq.items:
                    if isinstance(item, Scalar) and item.value in owner and owner[item.value] != name:
                        self.err(item.mark, f"{where}: AWS region {item.value} already belongs to jurisdiction {owner[item.value]}")
                for r in regs:
                    owner.setdefault(r, name)
                out[name] = Jurisdiction(name, regs, law)
                self.broken_jurisdictions.discard(name)
        return out

    def environment(self, node: YNode | None, mark: Mark) -> tuple[Environment | None, Map | None]:
        m = self.mapping(node, "environment", mark, ("database", "buckets", "queues", "retention"))
        if m is None:
            return None, None
        db = self.database(m.items.get("database"), m.keys.get("database", m.mark), "environment.database")
        buckets = self.str_list(m, "buckets", "environment", check=_bucket_problem)
        queues = self.str_list(m, "queues", "environment", check=_bucket_problem)
        ret = self.retention(m.items.get("retention"), m.keys.get("retention", m.mark), "environment.retention")
        if None in (db, buckets, queues, ret):
            return None, m
        return Environment(db, buckets, queues, ret), m  # type: ignore[arg-type]

    def database(self, node: YNode | None, mark: Mark, where: str) -> DatabaseSpec | None:
        keys = ("engine", "version", "instance_class", "storage_gb", "multi_az")
        m = self.mapping(node, where, mark, keys)
        if m is None:
            return None
        engine = self.scalar(m, "engine", where, str, check=lambda v: None if v == "postgres" else f"engine must be postgres, not '{v}'")
        version = self.scalar(m, "version", where, str, check=_pg_version_problem)
        ic = self.scalar(m, "instance_class", where, str, check=lambda v: None if re.match(r"^db\.[a-z0-9]+\.[a-z0-9]+$", v) else f"instance_class '{v}' is not an RDS class such as db.r6g.large")
        gb = self.scalar(m, "storage_gb", where, int, check=lambda v: None if 20 <= v <= 65536 else f"storage_gb must be between 20 and 65536, not {v}")
        maz = self.scalar(m, "multi_az", where, bool)
        if None in (engine, version, ic, gb, maz):
            return None
        return DatabaseSpec(engine, version, ic, gb, maz)

    def retention(self, node: YNode | None, mark: Mark, where: str) -> Retention | None:
        m = self.mapping(node, where, mark, ("backups_days", "deleted_workspace_days"))
        if m is None:
            return None
        b = self.scalar(m, "backups_days", where, int, check=lambda v: None if 1 <= v <= 35 else f"backups_days must be between 1 and 35 (the RDS limit), not {v}")
        d = self.scalar(m, "deleted_workspace_days", where, int, check=lambda v: None if 0 <= v <= 3650 else f"deleted_workspace_days must be between 0 and 3650, not {v}")
        if b is None or d is None:
            return None
        return Retention(b, d)

    def regions(self, node: YNode | None, mark: Mark, jur: dict[str, Jurisdiction] | None, env: Environment | None, env_node: Map | None) -> dict[str, Region] | None:
        m = self.mapping(node, "regions", mark, ())
        if m is None:
            return None
        if not m.items:
            self.err(m.mark, "regions: define at least one region")
        out: dict[str, Region] = {}
        cidrs: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
        aws_used: dict[str, str] = {}
        every_cidr = _all_cidrs(m)
        for name, rnode in m.items.items():
            where = f"region '{name}'"
            if not _NAME.match(name):
                self.err(m.keys[name], f"{where}: name must be lower-case letters, digits and dashes, starting with a letter (such as 'eu' or 'us-2')")
            rm = self.mapping(rnode, where, m.keys[name], ("aws_region", "jurisdiction", "cidr", "backup_region", "status"), ("overrides",))
            if rm is None:
                continue
            aws = self.scalar(rm, "aws_region", where, str, check=_aws_region_problem)
            jname = self.scalar(rm, "jurisdiction", where, str)
            cidr = self.scalar(rm, "cidr", where, str, check=_cidr_problem)
            backup = self.scalar(rm, "backup_region", where, str, check=_aws_region_problem)
            status = self.scalar(rm, "status", where, str, check=lambda v: None if v in STATUSES else f"status '{v}' is not one of {', '.join(STATUSES)}")
            j = None
            if jname is not None and jur is not None:
                j = jur.get(jname)
                if j is None and jname not in self.broken_jurisdictions:
                    self.err(rm.items["jurisdiction"].mark, f"{where}: jurisdiction '{jname}' is not defined (defined: {', '.join(jur) or 'none'})")
            if aws is not None:
                if aws in aws_used:
                    self.err(rm.items["aws_region"].mark, f"{where}: aws_region {aws} is already used by region '{aws_used[aws]}'; one region per AWS region")
                aws_used.setdefault(aws, name)
                if j is not None and aws not in j.aws_regions:
                    self.err(rm.items["aws_region"].mark, f"{where}: aws_region {aws} is not in jurisdiction {j.name} ({', '.join(j.aws_regions)})")
            if backup is not None:
                if backup == aws:
                    self.err(rm.items["backup_region"].mark, f"{where}: backup_region {backup} is the primary region; choose another region of jurisdiction {jname}")
                elif j is not None and backup not in j.aws_regions:
                    other = next((x.name for x in (jur or {}).values() if backup in x.aws_regions), None)
                    inside = f"in jurisdiction {other}" if other else "in no jurisdiction"
                    choices = [r for r in j.aws_regions if r != aws]
                    self.err(rm.items["backup_region"].mark, f"{where}: backup_region {backup} is {inside}, not {j.name}" + (f"; choose one of {', '.join(choices)}" if choices else ""))
            if cidr is not None:
                net = ipaddress.ip_network(cidr, strict=False)
                for other_name, other_net in cidrs:
                    if net.version == other_net.version and net.overlaps(other_net):
                        free = _free_cidr(net, every_cidr)
                        tip = f"; choose a range no other region uses, such as {free}" if free else ""
                        self.err(rm.items["cidr"].mark, f"{where}: cidr {cidr} overlaps region '{other_name}' ({other_net}){tip}")
                cidrs.append((name, net))
            overrides: dict[str, Any] = {}
            effective = env
            if "overrides" in rm.items:
                overrides, effective = self.overrides(rm.items["overrides"], where, env, env_node)
            if None in (aws, jname, cidr, backup, status) or j is None or effective is None:
                continue
            out[name] = Region(name, aws, jname, str(ipaddress.ip_network(cidr, strict=False)), backup, status, _freeze(overrides), effective)
        return out

    def overrides(self, node: YNode, where: str, env: Environment | None, env_node: Map | None) -> tuple[dict[str, Any], Environment | None]:
        w = f"{where}: overrides"
        if not isinstance(node, Map):
            self.err(node.mark, f"{w} must be a mapping of environment keys, got {_kind(node)}")
            return {}, None
        self.check_keys(node, w)
        if env_node is None:
            return plain(node), None
        ok = self._check_override_keys(node, env_node, f"{where}: overrides", "environment", shapes=env is not None)
        if not ok or env is None:
            return plain(node), None
        # Rebuild the environment with the overrides merged in and validate it: every value keeps
        # its own position, so a bad override value is reported where it is written.
        merged = _merge_nodes(env_node, node)
        sub = _Validator(self.file)
        new_env, _ = sub.environment(merged, node.mark)
        for line, col, msg in sub.problems:
            mark_text, _, text = msg.partition(": ")
            self.problems.append((line, col, f"{mark_text}: {where}: overrides: {text}"))
        if sub.problems:
            return plain(node), None
        return plain(node), new_env

    def _check_override_keys(self, node: Map, base: Map, where: str, path: str, shapes: bool = True) -> bool:
        """Every key of ``node`` must exist in ``base``; with ``shapes``, a mapping may only
        override a mapping (without it the base is itself invalid and already reported)."""
        ok = True
        for key, kmark in node.keys.items():
            if key not in base.items:
                hint = difflib.get_close_matches(key, list(base.items), n=1)
                tip = f"did you mean '{hint[0]}'?" if hint else f"{path} has {', '.join(base.items)}"
                self.err(kmark, f"{where}: '{key}' is not a key of {path}; {tip}")
                ok = False
                continue
            sub = node.items[key]
            target = base.items[key]
            if isinstance(sub, Map):
                if not isinstance(target, Map):
                    if not shapes:
                        ok = False
                        continue
                    shape = "a list; override it with a whole list" if isinstance(target, Seq) else "a single value; override it with a value"
                    self.err(sub.mark, f"{where}: {path}.{key} is {shape}, not a mapping")
                    ok = False
                    continue
                self.check_keys(sub, where)
                ok = self._check_override_keys(sub, target, where, f"{path}.{key}", shapes) and ok
        return ok

    def workspace(self, node: YNode | None, mark: Mark) -> WorkspaceSpec | None:
        where = "workspace"
        m = self.mapping(
            node, where, mark, ("root_table", "key_column", "object_prefix"),
            ("global_tables", "paths", "key_type", "tenant_objects", "shared_key_values", "references", "owned_through", "natural_keys", "shared_rows"),
        )
        if m is None:
            return None
        root = self.scalar(m, "root_table", where, str, check=_ident_problem)
        key = self.scalar(m, "key_column", where, str, check=_ident_problem)
        prefix = self.scalar(m, "object_prefix", where, str, check=_prefix_problem)
        from .workspace_ids import KEY_TYPES, normalise_type

        key_type = self.scalar(m, "key_type", where, str, default="text",
                               check=lambda v: None if normalise_type(v) else f"key_type '{v}' is not one of {', '.join(KEY_TYPES)}")
        glob = self.str_list(m, "global_tables", where, check=_ident_problem, default=())
        if glob is not None and root in glob:
            gnode = m.items["global_tables"]
            at = next((i.mark for i in gnode.items if isinstance(i, Scalar) and i.value == root), gnode.mark)  # type: ignore[union-attr]
            self.err(at, f"{where}: the root table '{root}' cannot also be global; every workspace has its own row in it")
        paths: dict[str, PathSpec] = {}
        pnode = m.items.get("paths")
        if pnode is not None and not (isinstance(pnode, Scalar) and pnode.value is None):
            pm = self.mapping(pnode, "workspace.paths", m.keys["paths"], ())
            for table, tnode in (pm.items.items() if pm else []):
                pw = f"workspace.paths.{table}"
                if _ident_problem(table):
                    self.err(pm.keys[table], f"{pw}: {_ident_problem(table)}")  # type: ignore[union-attr]
                tm = self.mapping(tnode, pw, pm.keys[table], ("column",), ("references", "type_column", "targets"))  # type: ignore[union-attr]
                if tm is None:
                    continue
                col = self.scalar(tm, "column", pw, str, check=_ident_problem)
                ref = self.scalar(tm, "references", pw, str, default=None, check=_ident_problem)
                tcol = self.scalar(tm, "type_column", pw, str, default=None, check=_ident_problem)
                targets: dict[str, str] = {}
                if "targets" in tm.items:
                    tg = self.mapping(tm.items["targets"], f"{pw}.targets", tm.keys["targets"], ())
                    for tv, tt in (tg.items.items() if tg else []):
                        if not isinstance(tt, Scalar) or not isinstance(tt.value, str) or _ident_problem(tt.value):
                            self.err(tt.mark, f"{pw}.targets: '{tv}' must name a table")
                        else:
                            targets[tv] = tt.value
                if (ref is None) == (tcol is None):
                    self.err(tm.mark, f"{pw}: give either 'references: TABLE' or 'type_column' with 'targets'" + (", not both" if ref else "; it has neither"))
                elif tcol is not None and not targets:
                    self.err(tm.mark, f"{pw}: a polymorphic path needs 'targets' (type value: table)")
                elif ref is not None and targets:
                    self.err(tm.keys["targets"], f"{pw}: 'targets' goes with 'type_column', not 'references'")
                if glob and table in glob:
                    self.err(pm.keys[table], f"{pw}: '{table}' is declared global; a global table has no path")  # type: ignore[union-attr]
                if col is not None:
                    paths[table] = PathSpec(table, col, ref, tcol, MappingProxyType(targets))
        tenant_objects = self.tenant_objects(m)
        extra = _WorkspaceExtras(self, m)
        if None in (root, key, prefix, glob, tenant_objects) or extra.broken:
            return None
        return WorkspaceSpec(
            root, key, glob, MappingProxyType(paths), prefix, tenant_objects,  # type: ignore[arg-type]
            shared_key_values=extra.shared_values, references=tuple(extra.references),
            owned_through=MappingProxyType(extra.owned), natural_keys=MappingProxyType(extra.natural),
            shared_rows=MappingProxyType(extra.shared_rows), key_type=normalise_type(key_type) or "text",
        )

    def tenant_objects(self, m: Map) -> Mapping[str, tuple[str, ...]] | None:
        """workspace.tenant_objects: {sequences: [name pattern with {workspace_id}, ...]}."""
        node = m.items.get("tenant_objects")
        if node is None or (isinstance(node, Scalar) and node.value is None):
            return MappingProxyType({})
        where = "workspace.tenant_objects"
        tm = self.mapping(node, where, m.keys["tenant_objects"], (), TENANT_OBJECT_KINDS)
        if tm is None:
            return None
        out = {k: self.str_list(tm, k, where, check=_tenant_pattern_problem) for k in TENANT_OBJECT_KINDS if k in tm.items}
        if any(v is None for v in out.values()) or len(tm.items) != len(out):
            return None
        return MappingProxyType(out)  # type: ignore[arg-type]


class _WorkspaceExtras:
    """The ``workspace:`` keys for applications not designed for the mover (README: "Real
    applications"): shared key values, references without foreign keys, rows owned through a
    reference, natural keys of global tables, and rows shared by several tenants."""

    def __init__(self, v: "_Validator", m: Map):
        self.v = v
        self.broken = False
        self.shared_values: tuple[Any, ...] = ()
        self.references: list[RefSpec] = []
        self.owned: dict[str, OwnedSpec] = {}
        self.natural: dict[str, tuple[str, ...]] = {}
        self.shared_rows: dict[str, SharedRowsSpec] = {}
        self._shared_values(m)
        self._references(m)
        self._owned(m)
        self._natural(m)
        self._shared_rows(m)

    def err(self, mark: Mark, msg: str) -> None:
        self.v.err(mark, msg)
        self.broken = True

    def _present(self, m: Map, key: str) -> YNode | None:
        node = m.items.get(key)
        if node is None or (isinstance(node, Scalar) and node.value is None):
            return None
        return node

    def _column_ref(self, node: YNode, where: str, what: str) -> tuple[str, str] | None:
        """'table.column' → (table, column), or a problem reported."""
        if not isinstance(node, Scalar) or not isinstance(node.value, str) or node.value.count(".") != 1:
            self.err(node.mark, f"{where}: {what} must be written 'table.column', got {_describe(getattr(node, 'value', None)) if isinstance(node, Scalar) else _kind(node)}")
            return None
        t, c = node.value.split(".")
        for part in (t, c):
            if _ident_problem(part):
                self.err(node.mark, f"{where}: {_ident_problem(part)}")
                return None
        return t, c

    def _shared_values(self, m: Map) -> None:
        node = self._present(m, "shared_key_values")
        if node is None:
            return
        if not isinstance(node, Seq):
            self.err(node.mark, f"workspace: 'shared_key_values' must be a list such as [null, ''], got {_kind(node)}")
            return
        out: list[Any] = []
        for item in node.items:
            if not isinstance(item, Scalar) or isinstance(item.value, (bool, float)) or not (item.value is None or isinstance(item.value, (str, int))):
                self.err(item.mark, "workspace: every entry of 'shared_key_values' must be null, a string or a whole number")
                continue
            out.append(item.value)
        self.shared_values = tuple(out)

    def _references(self, m: Map) -> None:
        node = self._present(m, "references")
        if node is None:
            return
        rm = self.v.mapping(node, "workspace.references", m.keys["references"], ())
        for key, tnode in (rm.items.items() if rm else []):
            where = f"workspace.references.{key}"
            kmark = rm.keys[key]  # type: ignore[union-attr]
            if key.count(".") != 1 or any(_ident_problem(x) for x in key.split(".")):
                self.err(kmark, f"{where}: a reference is named 'table.column', such as 'posts.user_id'")
                continue
            table, column = key.split(".")
            if isinstance(tnode, Scalar):
                if not isinstance(tnode.value, str) or tnode.value.count(".") > 1 or any(_ident_problem(x) for x in tnode.value.split(".")):
                    self.err(tnode.mark, f"{where}: the target must be 'table' (its primary key) or 'table.column' (a unique column)")
                    continue
                target, _, tcol = tnode.value.partition(".")
                self.references.append(RefSpec(table, column, target, tcol or None))
                continue
            tm = self.v.mapping(tnode, where, kmark, ("type_column", "targets"))
            if tm is None:
                self.broken = True
                continue
            tcol = self.v.scalar(tm, "type_column", where, str, check=_ident_problem)
            targets: dict[str, str] = {}
            tg = self.v.mapping(tm.items.get("targets"), f"{where}.targets", tm.keys.get("targets", tm.mark), ())
            for tv, tt in (tg.items.items() if tg else []):
                if not isinstance(tt, Scalar) or not isinstance(tt.value, str) or _ident_problem(tt.value):
                    self.err(tt.mark, f"{where}.targets: '{tv}' must name a table")
                else:
                    targets[tv] = tt.value
            if tcol is None or not targets:
                self.broken = True
                continue
            self.references.append(RefSpec(table, column, type_column=tcol, targets=MappingProxyType(targets)))

    def _owned(self, m: Map) -> None:
        node = self._present(m, "owned_through")
        if node is None:
            return
        om = self.v.mapping(node, "workspace.owned_through", m.keys["owned_through"], ())
        for table, tnode in (om.items.items() if om else []):
            where = f"workspace.owned_through.{table}"
            if _ident_problem(table):
                self.err(om.keys[table], f"{where}: {_ident_problem(table)}")  # type: ignore[union-attr]
                continue
            ref = self._column_ref(tnode, where, "the referencing column")
            if ref is not None:
                self.owned[table] = OwnedSpec(table, ref[0], ref[1])

    def _natural(self, m: Map) -> None:
        node = self._present(m, "natural_keys")
        if node is None:
            return
        nm = self.v.mapping(node, "workspace.natural_keys", m.keys["natural_keys"], ())
        for table, tnode in (nm.items.items() if nm else []):
            where = f"workspace.natural_keys.{table}"
            if isinstance(tnode, Scalar) and isinstance(tnode.value, str) and not _ident_problem(tnode.value):
                self.natural[table] = (tnode.value,)
            elif isinstance(tnode, Seq) and tnode.items and all(isinstance(i, Scalar) and isinstance(i.value, str) and not _ident_problem(i.value) for i in tnode.items):
                self.natural[table] = tuple(i.value for i in tnode.items)  # type: ignore[union-attr]
            else:
                self.err(tnode.mark, f"{where}: give the unique column(s) that name a row, such as [name]")

    def _shared_rows(self, m: Map) -> None:
        node = self._present(m, "shared_rows")
        if node is None:
            return
        sm = self.v.mapping(node, "workspace.shared_rows", m.keys["shared_rows"], ())
        for table, tnode in (sm.items.items() if sm else []):
            where = f"workspace.shared_rows.{table}"
            tm = self.v.mapping(tnode, where, sm.keys[table], ("policy",), ("members", "member", "tenant_of_member"))  # type: ignore[union-attr]
            if tm is None:
                self.broken = True
                continue
            policy = self.v.scalar(tm, "policy", where, str, check=lambda p: None if p in ("all", "any", "keep") else f"policy must be all, any or keep, not '{p}'")
            if policy is None:
                self.broken = True
                continue
            if policy == "keep":
                self.shared_rows[table] = SharedRowsSpec(table, policy)
                continue
            missing = [k for k in ("members", "member", "tenant_of_member") if k not in tm.items]
            if missing:
                self.err(tm.mark, f"{where}: policy '{policy}' needs members (table.column pointing at the row), member (its column naming the member) and tenant_of_member (table.column of a keyed table)")
                continue
            mem = self._column_ref(tm.items["members"], where, "members")
            member = self.v.scalar(tm, "member", where, str, check=_ident_problem)
            ten = self._column_ref(tm.items["tenant_of_member"], where, "tenant_of_member")
            if mem is None or ten is None or member is None:
                self.broken = True
                continue
            self.shared_rows[table] = SharedRowsSpec(table, policy, mem[0], mem[1], member, ten[0], ten[1])


# --------------------------------------------------------------------------- value checks


def _kind(node: YNode) -> str:
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    return _describe(node.value)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (a boolean)"
    if isinstance(value, int):
        return f"{value} (a number)"
    if isinstance(value, float):
        return f"{value} (a number)"
    if isinstance(value, str):
        return f"'{value}' (a string)"
    if isinstance(value, bytes):
        return "binary data (!!binary)"
    return f"{value} (a {type(value).__name__})"


def _aws_region_problem(v: str) -> str | None:
    if v in AWS_REGIONS:
        return None
    if v in OTHER_PARTITIONS:
        return f"'{v}' is in AWS partition {OTHER_PARTITIONS[v]}; only the commercial partition (aws) is supported"
    hint = _closest(v, AWS_REGIONS)
    return f"'{v}' is not an AWS region" + (f"; did you mean {hint}?" if hint else "")


def _edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of
    two neighbouring characters (the typo ``us-esat-1``) each cost one."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def _closest(word: str, candidates: Any, limit: int = 3) -> str | None:
    """The candidate nearest to ``word`` by edit distance (ties: alphabetical), if close enough."""
    best = min(sorted(candidates), key=lambda c: _edit_distance(word.lower(), c), default=None)
    if best is None or _edit_distance(word.lower(), best) > limit:
        return None
    return best


def _cidr_problem(v: str) -> str | None:
    try:
        net = ipaddress.ip_network(v, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            fixed = ipaddress.ip_network(v, strict=False)
            return f"cidr {v} has host bits set; did you mean {fixed}?"
        return f"cidr '{v}' is not a network such as 10.10.0.0/16"
    if net.version != 4:
        return f"cidr {v} is IPv6; a VPC's primary range is IPv4, such as 10.40.0.0/16"
    if not net.is_private:
        return f"cidr {v} is not a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)"
    if not 16 <= net.prefixlen <= 24:
        return f"cidr {v}: a VPC's prefix must be between /16 and /24"
    return None


def _bucket_problem(v: str) -> str | None:
    return None if _BUCKET.match(v) else f"'{v}' must be 3-42 lower-case letters, digits and dashes"


def _ident_problem(v: str) -> str | None:
    return None if _IDENT.match(v) else f"'{v}' is not a plain SQL identifier (letters, digits, underscores)"


TENANT_OBJECT_KINDS = ("sequences",)
_TENANT_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _tenant_pattern_problem(v: str) -> str | None:
    if v.count("{workspace_id}") != 1:
        return f"'{v}' must contain {{workspace_id}} once, such as 'conv_dpid_seq_{{workspace_id}}'"
    if not _TENANT_PATTERN.match(v.replace("{workspace_id}", "0")):
        return f"'{v}' is not a plain SQL identifier around {{workspace_id}} (letters, digits, underscores)"
    return None


def _prefix_problem(v: str) -> str | None:
    from .objectkeys import layout_problem  # {workspace_id} anywhere, {date}/{any}: one segment each

    return layout_problem(v)


def _pg_version_problem(v: str) -> str | None:
    if re.match(r"^(1[5-9]|[2-9][0-9])(\.[0-9]+)?$", v):
        return None
    return f"version '{v}': PostgreSQL 15 or later is required (row-filtered publications)"


_KEY_HINTS = {
    "jurisdictions": " (the legal areas and their AWS regions, such as EU: {aws_regions: [eu-west-1]})",
    "environment": " (what every region gets: database, buckets, queues, retention)",
    "regions": " (one entry per region, such as eu: {aws_region: eu-west-1, ...})",
    "workspace": " (what one workspace's data is: root_table, key_column, object_prefix)",
    "database": " (engine, version, instance_class, storage_gb, multi_az)",
    "buckets": " (a list of bucket names, such as [attachments])",
    "queues": " (a list of queue names, such as [events])",
    "retention": " (backups_days, deleted_workspace_days)",
    "aws_region": " (the AWS region it runs in, such as eu-west-1)",
    "jurisdiction": " (the name of one of the jurisdictions)",
    "cidr": " (a private IPv4 range no other region uses, such as 10.40.0.0/16)",
    "backup_region": " (another AWS region of the same jurisdiction)",
    "status": f" (one of {', '.join(STATUSES)})",
    "aws_regions": " (the AWS regions inside this jurisdiction, such as [eu-west-1, eu-central-1])",
    "root_table": " (the table with one row per workspace, such as workspaces)",
    "key_column": " (the column that holds the workspace id, such as workspace_id)",
    "object_prefix": " (such as 'workspaces/{workspace_id}/')",
    "key_type": " (the type of the root table's key: text, bigint, integer, smallint or uuid)",
    "column": " (the column that points at the parent row)",
}


_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def _all_cidrs(regions: Map) -> list[ipaddress.IPv4Network]:
    out = []
    for rnode in regions.items.values():
        c = rnode.items.get("cidr") if isinstance(rnode, Map) else None
        if isinstance(c, Scalar) and isinstance(c.value, str):
            try:
                net = ipaddress.ip_network(c.value, strict=False)
            except ValueError:
                continue
            if isinstance(net, ipaddress.IPv4Network):
                out.append(net)
    return out


def _free_cidr(net: Any, taken: list[ipaddress.IPv4Network]) -> str | None:
    """The first range of ``net``'s size, in the private block that holds it, that overlaps
    none of ``taken``."""
    block = next((b for b in _PRIVATE if net.version == 4 and net.subnet_of(b)), None)
    if block is None:
        return None
    for i, candidate in enumerate(block.subnets(new_prefix=net.prefixlen)):
        if i > 4096:
            break
        if not any(candidate.overlaps(t) for t in taken):
            return str(candidate)
    return None


def _with(required: tuple[str, ...]) -> str:
    return f" with {', '.join(required)}" if required else ""


def _freeze(value: Any) -> Any:
    """A read-only copy of plain data: mappings become ``MappingProxyType``, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _merge_nodes(base: YNode, over: YNode) -> YNode:
    """``over`` laid on ``base``: mappings merge key by key, anything else replaces."""
    if isinstance(base, Map) and isinstance(over, Map):
        items = dict(base.items)
        keys = dict(base.keys)
        for k, v in over.items.items():
            items[k] = _merge_nodes(base.items[k], v) if k in base.items else v
            keys[k] = over.keys[k]
        return Map(items, keys, base.mark)
    return over


def with_region(cat: Catalogue, region: Region) -> Catalogue:
    """A copy of the catalogue with one region added or replaced (for tests and tools)."""
    regions = dict(cat.regions)
    regions[region.name] = region
    return replace(cat, regions=MappingProxyType(regions))


# --------------------------------------------------------------------------- backups: (issue 14)


@dataclass(frozen=True)
class BackupRule:
    """How one workspace is backed up: ``every`` (None: not on a schedule), ``objects`` (``copy``
    them into the backup, or ``list`` their version ids when the bucket is versioned). Fields left
    unset fall through workspace → region → section. How long a backup is kept is a retention rule
    (``retention: ... backups:``, :func:`residency.retention_rules.backups_kept`), said once there."""

    every: Any = None  # datetime.timedelta | None
    objects: str | None = None


@dataclass(frozen=True)
class BackupPolicy:
    default: BackupRule
    regions: Mapping[str, BackupRule] = field(default_factory=lambda: MappingProxyType({}))
    workspaces: Mapping[str, BackupRule] = field(default_factory=lambda: MappingProxyType({}))


_BACKUP_KEYS = ("every", "objects")


def _backup_rule(v: _Validator, node: YNode, where: str, mark: Mark, extra: tuple[str, ...] = ()) -> BackupRule | None:
    from .units import parse_duration

    if isinstance(node, Map) and "keep" in node.items:  # the one place for keep times is retention:
        v.err(node.keys["keep"], f"{where}: how long backups are kept is a retention rule, not a backups: key; "
                                 "write it as retention: {regions: {NAME: {backups: 35d}}} (or jurisdictions:, workspaces:)")
        node = Map({k: n for k, n in node.items.items() if k != "keep"}, {k: mk for k, mk in node.keys.items() if k != "keep"}, node.mark)
    m = v.mapping(node, where, mark, (), _BACKUP_KEYS + extra)
    if m is None:
        return None
    out: dict[str, Any] = {}
    for key in ("every",):
        n = m.items.get(key)
        if n is None:
            continue
        if key == "every" and isinstance(n, Scalar) and (n.value is False or n.value == "off"):
            out[key] = False  # `every: off`: not on a schedule here
            continue
        if not isinstance(n, Scalar) or not isinstance(n.value, str):
            v.err(n.mark, f"{where}: '{key}' must be a duration such as 1d or 12h, got {_kind(n)}")
            continue
        try:
            out[key] = parse_duration(n.value, what=key)
        except InputError as exc:
            v.err(n.mark, f"{where}: {exc}")
    objects = v.scalar(m, "objects", where, str, default=None,
                       check=lambda x: None if x in ("copy", "list") else f"objects must be copy or list, not '{x}'")
    return BackupRule(out.get("every"), objects)


def _backup_policy(v: _Validator, node: YNode | None, mark: Mark, regions: dict[str, Region] | None,
                   ws: WorkspaceSpec | None) -> BackupPolicy | None:
    """The ``backups:`` section: defaults, ``regions: {NAME: rule}``, ``workspaces: {ID: rule}``."""
    if node is None:
        return None
    where = "backups"
    default = _backup_rule(v, node, where, mark, ("regions", "workspaces"))
    if default is None or not isinstance(node, Map):
        return None
    per: dict[str, dict[str, BackupRule]] = {"regions": {}, "workspaces": {}}
    for section in per:
        sn = node.items.get(section)
        if sn is None:
            continue
        sm = v.mapping(sn, f"{where}.{section}", node.keys[section], ())
        for name, rn in (sm.items.items() if sm else []):
            kmark = sm.keys[name]  # type: ignore[union-attr]
            if section == "regions" and regions is not None and name not in regions:
                v.err(kmark, f"{where}.regions: unknown region '{name}' (regions: {', '.join(regions)})")
                continue
            if section == "workspaces" and ws is not None:
                try:
                    name = ws.parse_id(name)
                except InputError as exc:
                    v.err(kmark, f"{where}.workspaces: {exc}")
                    continue
            rule = _backup_rule(v, rn, f"{where}.{section}.{name}", kmark)
            if rule is not None:
                per[section][name] = rule
    return BackupPolicy(default, MappingProxyType(per["regions"]), MappingProxyType(per["workspaces"]))
