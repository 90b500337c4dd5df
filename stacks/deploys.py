"""Deploys are evidence too: every `stacks up` is an audit entry carrying the regions.yaml commit
and the digest of the stack's outputs.

:func:`regions_commit` says which version of regions.yaml was deployed (the last commit that
touched it, whether the working copy differs from it, and the file's own SHA-256);
:func:`outputs_digest` is the SHA-256 of a stack's outputs as canonical JSON (secret values are
hashed, never recorded); :func:`record` appends one ``stack.deployed`` entry per stack deployed.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

from residency import audit
from residency.digests import canonical


def subject(stack: str) -> str:
    """The audit subject of a stack's deploys: ``stack/<env>-<region>``."""
    return f"stack/{stack}"


def outputs_digest(outputs: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: outputs[k] for k in sorted(outputs)})).hexdigest()


def _git(cwd: Path, *args: str) -> str | None:
    try:
        p = subprocess.run(["git", *args], cwd=str(cwd), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def regions_commit(path: str | Path) -> dict[str, Any]:
    p = Path(path).resolve()
    commit = _git(p.parent, "log", "-1", "--format=%H", "--", p.name) or None
    dirty = None
    if commit:
        dirty = _git(p.parent, "status", "--porcelain", "--", p.name) not in ("", None)
    return {"path": p.name, "commit": commit, "modified_since_commit": dirty,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}


def record(control: Any, summary: Any, regions_path: str | Path, actor: audit.Actor | None = None) -> list[audit.Entry]:
    # summary: a stacks.orchestrate.Summary (not imported: orchestrate imports this module)
    """One ``stack.deployed`` entry (subject ``stack/<env>-<region>``) per stack ``up`` that succeeded."""
    if summary.op != "up":
        return []
    source = regions_commit(regions_path)
    out = []
    for r in summary.results:
        if r.status != "succeeded":
            continue
        out.append(audit.record(control, "stack.deployed", subject(r.stack), {
            "stack": r.stack, "env": summary.env, "region": r.region, "wave": r.wave, "changes": r.changes, "regions_yaml": source,
            "outputs_sha256": r.outputs_sha256, "seconds": round(r.seconds, 3),
        }, actor))
    return out
