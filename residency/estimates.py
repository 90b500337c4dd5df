"""How long a move takes: a plan's sizes and the throughput estimate a request's window is checked against."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from residency.errors import InputError



def _parse_rate(text: str) -> float:
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b)?(?:/s)?\s*$", text.lower())
    if not m:
        raise InputError(f"throughput '{text}' is not understood: use bytes per second, e.g. 50MB/s")
    unit = (m.group(2) or "b").replace("i", "")
    return float(m.group(1)) * {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}[unit]


DEFAULT_THROUGHPUT = 20 * 1024**2  # bytes per second through copy + verify, end to end
DEFAULT_OVERHEAD = 30.0            # seconds: plan, fence, schema checks, cut-over
ONLINE_FENCE = 5.0                 # seconds an online move stays fenced: measured < 1 s (bench/online_fence.py), with margin


@dataclass(frozen=True)
class Throughput:
    """How fast a move goes, to estimate whether it fits its window. ``$RESIDENCY_MOVE_THROUGHPUT``
    (e.g. ``50MB/s``) and ``$RESIDENCY_MOVE_OVERHEAD`` (seconds) set them; the worker has flags."""

    bytes_per_second: float = DEFAULT_THROUGHPUT
    overhead_seconds: float = DEFAULT_OVERHEAD

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Throughput":
        env = dict(os.environ) if env is None else env
        bps = _parse_rate(env["RESIDENCY_MOVE_THROUGHPUT"]) if env.get("RESIDENCY_MOVE_THROUGHPUT") else DEFAULT_THROUGHPUT
        try:
            over = float(env.get("RESIDENCY_MOVE_OVERHEAD") or DEFAULT_OVERHEAD)
        except ValueError:
            raise InputError("RESIDENCY_MOVE_OVERHEAD must be a number of seconds") from None
        if bps <= 0 or over < 0:
            raise InputError("move throughput must be positive and overhead not negative")
        return cls(bps, over)

    @classmethod
    def parse(cls, rate: str | None = None, overhead: float | None = None) -> "Throughput":
        base = cls.from_env()
        return cls(_parse_rate(rate) if rate else base.bytes_per_second, base.overhead_seconds if overhead is None else overhead)


def estimate(sizes: dict[str, Any], strategy: str, throughput: Throughput | None = None) -> dict[str, Any]:
    """How long a move of ``sizes`` (from :func:`residency.worker.plan_sizes`) should take, and how
    long the workspace stays fenced (read-only)."""
    tp = throughput or Throughput.from_env()
    total_bytes = int(sizes.get("bytes", 0)) + int(sizes.get("object_bytes", 0))
    seconds = tp.overhead_seconds + total_bytes / tp.bytes_per_second
    fence = seconds if strategy == "snapshot" else min(seconds, ONLINE_FENCE)
    return {
        "rows": int(sizes.get("rows", 0)),
        "bytes": int(sizes.get("bytes", 0)),
        "objects": int(sizes.get("objects", 0)),
        "object_bytes": int(sizes.get("object_bytes", 0)),
        "tables": sizes.get("tables", {}),
        "seconds": round(seconds, 1),
        "fence_seconds": round(fence, 1),
        "throughput_bytes_per_second": tp.bytes_per_second,
        "overhead_seconds": tp.overhead_seconds,
        "strategy": strategy,
    }


def plan_sizes(plan: Any) -> dict[str, Any]:
    """A plan's sizes as the mover gives them (``MovePlan.sizes()``; its dict and a move record's
    stored plan keep them as ``sizes``): ``{rows, bytes, objects, object_bytes, tables: {name:
    {rows, bytes}}}``. Zeros when a plan has none."""
    if callable(getattr(plan, "sizes", None)):
        return plan.sizes()
    s = (plan.get("sizes") if isinstance(plan, Mapping) else None) or {}
    return {"rows": int(s.get("rows", 0)), "bytes": int(s.get("bytes", 0)), "objects": int(s.get("objects", 0)),
            "object_bytes": int(s.get("object_bytes", 0)), "tables": dict(s.get("tables") or {})}
