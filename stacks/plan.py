"""The offline plan: run the stack program under Pulumi's mocks, one region at a time, and compare.

Needs neither the pulumi CLI nor cloud credentials. For each region it records every resource the
program registers (type, logical name, inputs, the AWS region of its provider), checks them against
the residency guardrails (:func:`residency.policy.check_resources`), and then lines the regions up:
the same resource types and counts everywhere, and every property that differs between regions once
region-specific values (names, AWS regions, CIDRs, jurisdictions) are set aside — each difference
either explained by a declared override in regions.yaml or reported as unexplained.

Pulumi's runtime state is global to the process: :func:`run_program` resets it before each run, so
plans must not run concurrently in one process.
"""

from __future__ import annotations

import asyncio

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import pulumi

from residency import policy
from residency.catalogue import Catalogue, Region

from .names import DEFAULT_ENV, stack_name
from .orchestrate import deployable

ACCOUNT = "123456789012"
PROJECT = "residency"


# --------------------------------------------------------------------------- running under mocks


@dataclass(frozen=True)
class PlannedResource:
    type: str
    name: str          # the logical name, as registered
    key: str           # the logical name with the region's name generalised, to line regions up
    aws_region: str | None
    props: dict[str, Any]  # inputs, snake_case keys


class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks that record every registration and answer with plausible, region-correct outputs
    (ARNs carry the AWS region of the resource's provider)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any], str | None]] = []
        self.provider_regions: dict[str, str] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        inputs = _whole_numbers(dict(args.inputs))
        rid = f"{args.name}-id"
        if args.typ.startswith("pulumi:providers:"):
            self.provider_regions[rid] = str(inputs.get("region", ""))
            self.records.append((args.typ, args.name, inputs, inputs.get("region")))
            return rid, inputs
        prov = args.provider.rsplit("::", 1)[-1] if args.provider else None
        aws_region = inputs.get("region") or (self.provider_regions.get(prov) if prov else None)
        self.records.append((args.typ, args.name, inputs, aws_region))
        state = dict(inputs)
        service = args.typ.split(":")[1].split("/")[0] if ":" in args.typ else "x"
        if args.typ == "aws:s3/bucket:Bucket":
            state["arn"] = policy.s3_bucket_arn(str(inputs.get("bucket", args.name)))
        elif service == "iam":
            state["arn"] = f"arn:aws:iam::{ACCOUNT}:role/{inputs.get('name', args.name)}"
        else:
            state["arn"] = f"arn:aws:{service}:{aws_region}:{ACCOUNT}:{args.name}"
        if args.typ == "aws:sqs/queue:Queue":
            state["url"] = f"https://sqs.{aws_region}.amazonaws.com/{ACCOUNT}/{inputs.get('name', args.name)}"
        if args.typ == "aws:rds/instance:Instance":
            state["resourceId"] = f"db-{args.name}"
            state["endpoint"] = f"{inputs.get('identifier', args.name)}.{aws_region}.rds.amazonaws.com:5432"
        if args.typ.startswith("aws:rds/") and "name" not in state:
            state["name"] = args.name
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        return {}, None


def reset_runtime() -> None:
    """Forget the root stack resource of a previous run in this process (Pulumi's public
    ``reset_options``; :func:`pulumi.runtime.set_mocks` then makes a fresh one)."""
    pulumi.runtime.reset_options(project=PROJECT, stack="stack")


def _ensure_event_loop() -> None:
    """Pulumi's runtime schedules on the thread's current event loop. A finished
    ``asyncio.run`` elsewhere in the process (the job engine's worker, for one) leaves none set,
    or a closed one: then set a fresh one."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
        if not loop.is_closed():
            return
    except RuntimeError:
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())


def run_program(program: Callable[[], Any], stack: str, preview: bool = False) -> RecordingMocks:
    """Run ``program`` under fresh mocks as stack ``stack`` and return what it registered.

    Only Pulumi's public testing API: :func:`pulumi.runtime.set_mocks` installs the mocks (with a
    fresh settings bag, so nothing outstanding from a previous run is awaited), and the
    :func:`pulumi.runtime.test` wrapper runs the program and waits until every registration and
    every ``apply`` has been answered; an exception of the program is raised here."""
    mocks = RecordingMocks()
    _ensure_event_loop()
    pulumi.runtime.reset_options(project=PROJECT, stack=stack, preview=preview)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview)

    def run() -> None:  # the program's return value is not an output to wait for
        program()

    pulumi.runtime.test(run)()
    return mocks


# --------------------------------------------------------------------------- one region


@dataclass
class RegionPlan:
    region: str
    aws_region: str
    backup_region: str
    resources: list[PlannedResource]
    violations: list[str]

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.type for r in self.resources).items()))


def plan_region(cat: Catalogue, region: Region | str, env: str = DEFAULT_ENV) -> RegionPlan:
    """Every resource the stack ``<env>-<region>`` would get, recorded under mocks (nothing deployed)."""
    from .component import RegionalEnvironment, RegionalEnvironmentArgs  # late: importing pulumi_aws is slow

    r = cat.region(region) if isinstance(region, str) else region
    args = RegionalEnvironmentArgs(catalogue=cat, region=r, env=env)
    mocks = run_program(lambda: RegionalEnvironment(r.name, args), stack=stack_name(env, r.name))
    norm = _Normaliser(cat, r)
    resources = [
        PlannedResource(typ, name, norm.name(name), aws_region, policy.normalize_props(inputs))  # type: ignore[arg-type]
        for typ, name, inputs, aws_region in mocks.records
    ]
    violations = [d.reason for d in policy.check_resources(cat, r.name, [(p.type, p.props, p.aws_region) for p in resources])]
    return RegionPlan(r.name, r.aws_region, r.backup_region, resources, violations)


class _Normaliser:
    """Replaces region-specific values with placeholders, so regions can be compared."""

    def __init__(self, cat: Catalogue, r: Region):
        self.r = r
        self.net = ipaddress.ip_network(r.cidr)
        self.subs = [(r.backup_region, "<backup-region>"), (r.aws_region, "<aws-region>")]
        self.token = re.compile(rf"(?<![A-Za-z0-9]){re.escape(r.name)}(?![A-Za-z0-9])")
        self.juris = re.compile(rf"(?<![A-Za-z0-9]){re.escape(r.jurisdiction)}(?![A-Za-z0-9])")

    def name(self, name: str) -> str:
        return self.token.sub("<region>", name)

    def value(self, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: self.value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, str):
            try:
                sub = ipaddress.ip_network(v)
                if sub.version == self.net.version and sub.subnet_of(self.net):  # type: ignore[arg-type]
                    off = int(sub.network_address) - int(self.net.network_address)
                    return f"<cidr>+{off}/{sub.prefixlen - self.net.prefixlen:+d}"
            except ValueError:
                pass
            for raw, ph in self.subs:
                v = v.replace(raw, ph)
            v = self.token.sub("<region>", v)
            return self.juris.sub("<jurisdiction>", v)
        return v


# --------------------------------------------------------------------------- all regions side by side


@dataclass
class Difference:
    resource: str                   # generalised logical name, e.g. "<region>-db"
    type: str
    prop: str                       # dotted path, e.g. "instance_class"
    values: dict[str, Any]          # region -> value (None: the region lacks it)
    explained_by: dict[str, str]    # region -> the override that declares its value
    explained: bool


@dataclass
class Plan:
    regions: dict[str, RegionPlan]
    types: list[str]
    differences: list[Difference] = field(default_factory=list)

    @property
    def unexplained(self) -> list[Difference]:
        return [d for d in self.differences if not d.explained]

    @property
    def violations(self) -> dict[str, list[str]]:
        return {n: p.violations for n, p in self.regions.items() if p.violations}

    def as_dict(self) -> dict[str, Any]:
        return {
            "regions": {n: {"aws_region": p.aws_region, "backup_region": p.backup_region, "resources": len(p.resources),
                            "counts": p.counts, "violations": p.violations} for n, p in self.regions.items()},
            "types": self.types,
            "differences": [d.__dict__ for d in self.differences],
            "unexplained": len(self.unexplained),
        }


def plan(cat: Catalogue, regions: list[str] | None = None, env: str = DEFAULT_ENV) -> Plan:
    """Plan every region's stack in ``env`` (default: every region that is not retired) and compare them."""
    names = regions or deployable(cat)
    plans = {n: plan_region(cat, n, env) for n in names}
    types = sorted({r.type for p in plans.values() for r in p.resources})
    return Plan(plans, types, compare(cat, plans))


def _whole_numbers(v: Any) -> Any:
    """Inputs as declared: the engine sends numbers as doubles, but not always (7 and 7.0 both
    arrive for the same declared ``7``), so whole floats become ints before anything compares them."""
    if isinstance(v, dict):
        return {k: _whole_numbers(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_whole_numbers(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _flatten(v: Any, path: str = "") -> dict[str, Any]:
    if isinstance(v, dict):
        out: dict[str, Any] = {}
        for k, x in v.items():
            out.update(_flatten(x, f"{path}.{k}" if path else str(k)))
        return out or {path: {}}
    return {path: v}


def _override_leaves(v: Any, path: str = "") -> dict[str, Any]:
    if isinstance(v, dict) or hasattr(v, "items"):
        out: dict[str, Any] = {}
        for k, x in v.items():
            out.update(_override_leaves(x, f"{path}.{k}" if path else str(k)))
        return out
    return {path: v}


def compare(cat: Catalogue, plans: dict[str, RegionPlan]) -> list[Difference]:
    """Every (resource, property) whose region-generalised value is not the same in all regions."""
    # keyed by (name, type, property): resources of different types may share a name (a bucket and
    # its lifecycle configuration), and their properties must not overwrite each other
    tables: dict[str, dict[tuple[str, str, str], tuple[str, Any]]] = {}
    for n, p in plans.items():
        norm = _Normaliser(cat, cat.region(n))
        t: dict[tuple[str, str, str], tuple[str, Any]] = {}
        for res in p.resources:
            props = dict(res.props)
            props.pop("tags", None)  # tags name the region by design
            for prop, val in _flatten(norm.value(props)).items():
                t[(res.key, res.type, prop)] = (res.type, val)
        tables[n] = t
    keys = sorted({k for t in tables.values() for k in t})
    out: list[Difference] = []
    for key in keys:
        values = {n: tables[n].get(key, (None, None))[1] for n in plans}
        present = {n: key in tables[n] for n in plans}
        distinct = {repr(v) for v in values.values()}
        if len(distinct) <= 1 and all(present.values()):
            continue
        rtype = next(tables[n][key][0] for n in plans if key in tables[n])
        modal = Counter(repr(v) for v in values.values()).most_common(1)[0][0]
        explained_by: dict[str, str] = {}
        for n, v in values.items():
            if repr(v) == modal and present[n]:
                continue
            for path, leaf in _override_leaves(cat.region(n).overrides).items():
                if leaf == v or str(leaf) == str(v):
                    explained_by[n] = path
        odd = [n for n, v in values.items() if repr(v) != modal or not present[n]]
        out.append(Difference(key[0], rtype, key[2] or "(resource)", values, explained_by, all(n in explained_by for n in odd)))
    return out
