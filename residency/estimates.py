"""How long a move takes: a plan's sizes and the throughput estimate a request's window is checked against."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, is_dataclass
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


def _as_dict(obj: Any) -> Any:
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return dict(obj)
    for attr in ("to_dict", "as_dict"):
        if callable(getattr(obj, attr, None)):
            return getattr(obj, attr)()
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    return obj


def _num(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def plan_sizes(plan: Any) -> dict[str, Any]:
    """A plan's sizes as ``{rows, bytes, objects, object_bytes, tables: {name: {rows, bytes}}}``.

    Accepts the mover's plan object (or its dict): tables as a list of entries or a mapping
    name → entry, each with ``rows`` and ``bytes``; objects as a count, a list of entries with
    ``size``, or a mapping with ``count`` and ``bytes``.
    """
    p = _as_dict(plan)
    if not isinstance(p, Mapping):
        return {"rows": 0, "bytes": 0, "objects": 0, "object_bytes": 0, "tables": {}}
    if "sizes" in p and isinstance(_as_dict(p["sizes"]), Mapping):
        p = {**p, **_as_dict(p["sizes"])}
    tables: dict[str, dict[str, int]] = {}
    raw = p.get("tables") or {}
    items = raw.items() if isinstance(raw, Mapping) else [(None, t) for t in raw]
    for name, t in items:
        t = _as_dict(t)
        if not isinstance(t, Mapping):
            continue
        n = str(name or t.get("name") or t.get("table") or f"table{len(tables) + 1}")
        if t.get("global") or t.get("kind") == "global" or t.get("how") == "global":
            continue
        tables[n] = {"rows": _num(t.get("rows")), "bytes": _num(t.get("bytes"))}
    objs = p.get("objects")
    objs = _as_dict(objs) if objs is not None and not isinstance(objs, (int, list, tuple)) else objs
    if isinstance(objs, Mapping) and objs and all(isinstance(_as_dict(v), Mapping) for v in objs.values()):
        per = [_as_dict(v) for v in objs.values()]  # per bucket: {objects, bytes}
        count = sum(_num(v.get("objects", v.get("count"))) for v in per)
        obytes = sum(_num(v.get("bytes")) for v in per)
    elif isinstance(objs, Mapping):
        count, obytes = _num(objs.get("count", objs.get("objects"))), _num(objs.get("bytes"))
    elif isinstance(objs, (list, tuple)):
        count = len(objs)
        obytes = sum(_num((_as_dict(o) or {}).get("size")) if isinstance(_as_dict(o), Mapping) else 0 for o in objs)
    else:
        count, obytes = _num(objs), 0
    obytes = obytes or _num(p.get("object_bytes"))
    rows = sum(t["rows"] for t in tables.values()) or _num(p.get("rows"))
    nbytes = sum(t["bytes"] for t in tables.values()) or _num(p.get("bytes"))
    return {"rows": rows, "bytes": nbytes, "objects": count, "object_bytes": obytes, "tables": tables}
