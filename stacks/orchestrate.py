"""Deploy orchestration: the canary region first, then the rest in parallel waves.

``run(cat, op, regions, env=..., canary=..., parallel=..., engine=...)`` previews, updates or
refreshes the stacks of the given regions in one environment (one stack per region and
environment, named ``<env>-<region>``: :mod:`residency.stacks.names`):

1. the canary region alone; if it fails, nothing else runs;
2. the remaining regions in waves of at most ``parallel`` stacks, in regions.yaml order. Before a
   wave runs, its stacks are *selected one at a time* (concurrent ``pulumi stack select`` calls
   corrupt the workspace file); then the wave's operations run in parallel;
3. after the first wave with a failure, no further wave starts; its regions are reported skipped.

The engine is injected (:class:`Engine`), so tests drive the order with a fake one;
:class:`AutomationEngine` is the real one, on Pulumi's Automation API and the pulumi CLI.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from residency.catalogue import Catalogue
from residency.errors import InputError, OperationError

from .names import DEFAULT_ENV, env_name, stack_name

OPS = ("preview", "up", "refresh")
PROJECT_DIR = Path(__file__).resolve().parent
POLICY_PACK = PROJECT_DIR / "policypack"
INSTALL_HINT = (
    "the pulumi CLI is not installed (no `pulumi` on PATH); install it with "
    "`curl -fsSL https://get.pulumi.com | sh` (or see https://www.pulumi.com/docs/install/) and retry"
)


class Engine(Protocol):
    """What the orchestration needs from Pulumi."""

    def ensure_available(self) -> None:
        """Raise :class:`InputError` when the engine can't run at all (no CLI)."""

    def select(self, stack: str) -> Any:
        """Select (or create) the stack ``<env>-<region>``; never called concurrently. Returns a handle."""

    def run(self, handle: Any, op: str) -> dict[str, int]:
        """Run ``op`` on a selected stack; return its change counts; raise on failure."""


Event = Callable[[str, str, str], None]  # (kind, region, detail); kinds: select, start, done, failed, skipped


@dataclass
class StackResult:
    region: str
    op: str
    wave: int             # 0 is the canary
    status: str           # succeeded | failed | skipped
    changes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    outputs_sha256: str | None = None  # after a successful up: the digest of the stack's outputs (stacks.deploys)
    stack: str = ""       # the stack's name, <env>-<region>


@dataclass
class Summary:
    op: str
    canary: str
    waves: list[list[str]]
    results: list[StackResult]
    env: str = DEFAULT_ENV

    @property
    def ok(self) -> bool:
        return all(r.status == "succeeded" for r in self.results)

    @property
    def failed(self) -> list[StackResult]:
        return [r for r in self.results if r.status == "failed"]

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "env": self.env, "canary": self.canary, "waves": self.waves, "ok": self.ok,
                "results": [asdict(r) for r in self.results]}


def deployable(cat: Catalogue) -> list[str]:
    """Every region that is not retired, in regions.yaml order."""
    return [r.name for r in cat.regions.values() if r.status != "retired"]


def default_canary(cat: Catalogue, names: list[str]) -> str:
    """The canary among ``names`` when none is given: the first active region, else the first."""
    active = [n for n in names if cat.region(n).status == "active"]
    return (active or names)[0]


def select_regions(cat: Catalogue, regions: list[str] | tuple[str, ...] | None, all_regions: bool) -> list[str]:
    """The regions an operation covers, in regions.yaml order: the named ones, or with ``all``
    every region that is not retired."""
    if regions and all_regions:
        raise InputError("give either --region R (one or more) or --all, not both")
    if all_regions:
        names = deployable(cat)
        if not names:
            raise InputError(f"{cat.path} has no region that is not retired")
        return names
    if not regions:
        raise InputError("say which regions: --region R (repeatable) or --all")
    for r in regions:
        cat.region(r)  # unknown names fail with a hint
    wanted = set(regions)
    return [n for n in cat.regions if n in wanted]


def order(cat: Catalogue, regions: list[str], canary: str | None = None, parallel: int = 4) -> tuple[str, list[list[str]]]:
    """The canary and the waves after it."""
    if parallel < 1:
        raise InputError(f"--parallel must be at least 1, not {parallel}")
    if not regions:
        raise InputError("no regions to run")
    if canary is None:
        canary = default_canary(cat, regions)
    else:
        cat.region(canary)
        if canary not in regions:
            raise InputError(f"canary region '{canary}' is not among the regions to run ({', '.join(regions)})")
    rest = [r for r in regions if r != canary]
    return canary, [rest[i:i + parallel] for i in range(0, len(rest), parallel)]


def run(
    cat: Catalogue,
    op: str,
    regions: list[str],
    *,
    engine: Engine,
    env: str | None = None,
    canary: str | None = None,
    parallel: int = 4,
    on_event: Event | None = None,
) -> Summary:
    """Run ``op`` over the stacks ``<env>-<region>`` of ``regions``: canary first, then parallel
    waves, stopping at the first failure. ``env``: see :func:`residency.stacks.names.env_name`."""
    if op not in OPS:
        raise InputError(f"unknown operation '{op}'; one of {', '.join(OPS)}")
    env = env_name(env)
    canary, waves = order(cat, regions, canary, parallel)
    engine.ensure_available()
    emit = on_event or (lambda kind, region, detail: None)
    results: dict[str, StackResult] = {}
    plan = [[canary]] + waves
    stopped = False
    for w, wave in enumerate(plan):
        if stopped:
            for r in wave:
                results[r] = StackResult(r, op, w, "skipped", error="an earlier stack failed")
                emit("skipped", r, "an earlier stack failed")
            continue
        handles: dict[str, Any] = {}
        for r in wave:  # one at a time: concurrent selects corrupt the workspace
            emit("select", r, f"wave {w}")
            try:
                handles[r] = engine.select(stack_name(env, r))
            except Exception as exc:  # noqa: BLE001 - reported per stack
                results[r] = StackResult(r, op, w, "failed", error=f"select: {_one_line(exc)}")
                emit("failed", r, results[r].error or "")
                stopped = True
                break
        if stopped:
            for r in wave:
                if r not in results:
                    results[r] = StackResult(r, op, w, "skipped", error="a stack of its wave could not be selected")
            continue
        with ThreadPoolExecutor(max_workers=len(wave), thread_name_prefix=f"{op}-wave{w}") as pool:
            futures = {r: pool.submit(_run_one, engine, handles[r], r, op, w, emit) for r in wave}
            for r in wave:
                results[r] = futures[r].result()
        if any(results[r].status == "failed" for r in wave):
            stopped = True
    ordered = [results[r] for wave in plan for r in wave]
    for res in ordered:
        res.stack = stack_name(env, res.region)
    return Summary(op, canary, waves, ordered, env)


def _run_one(engine: Engine, handle: Any, region: str, op: str, wave: int, emit: Event) -> StackResult:
    emit("start", region, op)
    t0 = time.monotonic()
    try:
        changes = engine.run(handle, op) or {}
    except Exception as exc:  # noqa: BLE001 - a failed stack is a result, not a crash
        res = StackResult(region, op, wave, "failed", seconds=time.monotonic() - t0, error=_one_line(exc))
        emit("failed", region, res.error or "")
        return res
    res = StackResult(region, op, wave, "succeeded", {k: int(v) for k, v in changes.items()}, time.monotonic() - t0)
    read_outputs = getattr(engine, "outputs", None)  # optional: engines that can read a stack's outputs
    if op == "up" and callable(read_outputs):
        from .deploys import outputs_digest

        try:
            res.outputs_sha256 = outputs_digest(read_outputs(handle))
        except Exception as exc:  # noqa: BLE001 - the deploy succeeded; the digest is missing, and says why
            res.error = f"outputs not read: {_one_line(exc)}"
    emit("done", region, ", ".join(f"{k} {v}" for k, v in res.changes.items()) or "no changes")
    return res


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # the CLI's stderr is long; its last "error:" line is the one that says why
    errs = [ln for ln in lines if ln.lower().startswith("error:")]
    return (errs[-1] if errs else lines[-1])[:300]


# --------------------------------------------------------------------------- the real engine


class AutomationEngine:
    """Pulumi's Automation API over the project in ``stacks/`` (a local program: each stack's
    operation runs the CLI in its own process, so stacks can run in parallel safely)."""

    def __init__(self, regions_path: str, project_dir: Path = PROJECT_DIR, policy_pack: Path | None = POLICY_PACK,
                 on_output: Callable[[str, str], None] | None = None):
        self.regions_path = str(Path(regions_path).resolve())
        self.project_dir = project_dir
        self.policy_pack = policy_pack
        self.on_output = on_output
        self._lock = threading.Lock()

    def ensure_available(self) -> None:
        if shutil.which("pulumi") is None:
            raise InputError(INSTALL_HINT)

    def select(self, stack: str) -> Any:
        from pulumi import automation as auto

        opts = auto.LocalWorkspaceOptions(work_dir=str(self.project_dir), env_vars={"RESIDENCY_REGIONS": self.regions_path})
        with self._lock:
            return auto.create_or_select_stack(stack_name=stack, work_dir=str(self.project_dir), opts=opts)

    def run(self, handle: Any, op: str) -> dict[str, int]:
        from pulumi import automation as auto

        name = handle.name
        out = (lambda line: self.on_output(name, line)) if self.on_output else None  # noqa: E731
        packs = [str(self.policy_pack)] if self.policy_pack else None
        try:
            if op == "preview":
                return dict(handle.preview(policy_packs=packs, on_output=out).change_summary or {})
            if op == "up":
                return dict(handle.up(policy_packs=packs, on_output=out).summary.resource_changes or {})
            if op == "refresh":
                return dict(handle.refresh(on_output=out).summary.resource_changes or {})
        except auto.errors.CommandError as exc:
            raise OperationError(_one_line(exc)) from None
        raise InputError(f"unknown operation '{op}'")

    def outputs(self, handle: Any) -> dict[str, Any]:
        """The stack's outputs (secret values included: only their digest is recorded)."""
        return {k: v.value for k, v in handle.outputs().items()}
