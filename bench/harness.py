"""The benchmark harness: start a sandbox in a temporary home, run the selected sections, write
JSON and a Markdown table under bench/results/, return the results.

Sections (``--only``): copy and verify (one section: verify is measured on the copy runs), memory,
fence, plan. Targets (issue 8) are reported against, never asserted.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from residency.errors import first_line

from .sandbox import REPO, BenchSandbox, temporary_sandbox

SECTIONS = ("copy", "verify", "memory", "fence", "plan")
RESULTS = Path(__file__).resolve().parent / "results"

TARGETS = {
    "copy_ratio": 1.0,  # baseline/ours >= 1.0
    "verify_over_copy": 0.35,  # <= 0.35x
    "peak_rss_mb": 200.0,  # < 200 MB, flat with size
    "online_fence_seconds": 1.0,  # < 1 s at every size
    "plan_seconds": 2.0,  # < 2 s for 200 tables
}


@dataclass(frozen=True)
class Config:
    name: str = "full"
    copy_rows: int = 1_000_000  # the workspace of the copy benchmark (1x of the memory benchmark)
    runs: int = 3  # alternating runs of each side, median reported
    memory_scales: tuple[int, ...] = (1, 5)
    fence_demo_rows: int = 200_000  # residency demo's data set: 1x of the fence benchmark
    fence_scales: tuple[int, ...] = (1, 10)
    writer_rate: float = 50.0  # steady writer, writes per second to the moving workspace
    plan_tables: int = 200
    plan_runs: int = 3
    online: bool = True  # call bench/online_fence.py


FULL = Config()
QUICK = Config("quick", copy_rows=50_000, fence_demo_rows=20_000, plan_runs=3)
TINY = Config("tiny", copy_rows=3_000, runs=1, memory_scales=(1, 2), fence_demo_rows=2_400, fence_scales=(1, 2),
              plan_tables=20, plan_runs=1, online=False, writer_rate=20.0)


def _git() -> dict[str, Any]:
    def out(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": out("rev-parse", "--short", "HEAD"), "dirty_paths": len(out("status", "--porcelain").splitlines())}


def _meta(cfg: Config, sbx: BenchSandbox) -> dict[str, Any]:
    from residency import sandbox as sb

    st = sb.read_state(sbx.home) or {}
    return {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": asdict(cfg),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "postgres": st.get("pg", {}).get("version"),
        "platform": platform.platform(),
        "git": _git(),
    }


def run(cfg: Config = FULL, only: tuple[str, ...] = SECTIONS, *, sandbox: BenchSandbox | None = None,
        out_dir: Path | None = RESULTS, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the selected sections; returns the results (also written to ``out_dir`` unless None)."""
    say = say or (lambda _m: None)
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if sandbox is None:
        with temporary_sandbox() as sbx:
            say(f"sandbox in {sbx.home}")
            return run(cfg, only, sandbox=sbx, out_dir=out_dir, say=say)

    from . import copybench, fencebench, memorybench, planbench

    t0 = time.monotonic()
    results: dict[str, Any] = {"meta": _meta(cfg, sandbox), "sections": list(only)}
    errors: dict[str, str] = {}

    def section(name: str, fn: Callable[[], Any]) -> None:
        t = time.monotonic()
        try:
            results[name] = fn()
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
            errors[name] = f"{type(exc).__name__}: {first_line(exc, '')}"
            results[name] = {"error": errors[name], "traceback": traceback.format_exc(limit=8)}
            say(f"{name}: FAILED: {errors[name]}")
        results.setdefault("section_seconds", {})[name] = round(time.monotonic() - t, 1)

    if "copy" in only or "verify" in only:
        section("copy", lambda: copybench.run(sandbox, cfg.copy_rows, cfg.runs, say))
    if "memory" in only:
        section("memory", lambda: memorybench.run(sandbox, cfg.copy_rows, list(cfg.memory_scales), say))
    if "fence" in only:
        def fence() -> dict[str, Any]:
            snap = fencebench.snapshot(sandbox, list(cfg.fence_scales), cfg.writer_rate, say, demo_rows=cfg.fence_demo_rows)
            if cfg.online:
                onl = fencebench.online(sandbox, [s * cfg.fence_demo_rows / fencebench.DEMO_ROWS for s in cfg.fence_scales], say)
            else:
                onl = {"status": "skipped", "reason": f"not run at the {cfg.name} scale"}
            return {"snapshot": snap, "online": onl}

        section("fence", fence)
    if "plan" in only:
        section("plan", lambda: planbench.run(sandbox, cfg.plan_tables, cfg.plan_runs, say))

    results["meta"]["total_seconds"] = round(time.monotonic() - t0, 1)
    results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["errors"] = errors
    results["table"] = rows(results, cfg)
    results["markdown"] = markdown(results, cfg)
    if out_dir is not None:
        write(results, out_dir)
    return results


# ----------------------------------------------------------------------------- the table


def _fmt_s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f} s"


def _status(ok: bool | None) -> str:
    return "pending" if ok is None else ("meets" if ok else "MISSES")


def rows(results: dict[str, Any], cfg: Config) -> list[dict[str, str]]:
    """One row per figure: what, measured, target, result."""
    out: list[dict[str, str]] = []

    def add(what: str, measured: str, target: str = "", result: str = "") -> None:
        out.append({"benchmark": what, "measured": measured, "target": target, "result": result})

    c = results.get("copy")
    if c is not None:
        if "error" in c:
            add("copy / verify", f"error: {c['error']}", "", "ERROR")
        else:
            n = f"{c['moved_rows']:,} rows, {c['tables']} tables + referenced global rows"
            fk = "per-row FK triggers off, verify checks" if c.get("target_superuser") else "per-row FK checks on"
            add(f"copy: mover (snapshot copy phase, {fk}), {n}", f"{_fmt_s(c['median_ours_seconds'])} median of {len(c['ours_copy_seconds'])} "
                f"({c['ours_rows_per_second']:,} rows/s) {c['ours_copy_seconds']}")
            add("copy: psql \\copy | psql \\copy pipe, same rows and target state", f"{_fmt_s(c['median_pipe_seconds'])} median of "
                f"{len(c['pipe_seconds'])} {c['pipe_seconds']}")
            r = c["ratio_pipe_over_ours"]
            add("copy ratio baseline/ours", f"{r:.2f}x" if r else "—", f">= {TARGETS['copy_ratio']:.1f}x",
                _status(None if r is None else r >= TARGETS["copy_ratio"]))
            v = c["verify_over_copy"]
            add("verify time / copy time", f"{v:.2f}x ({_fmt_s(c['median_verify_seconds'])})" if v else "—",
                f"<= {TARGETS['verify_over_copy']}x", _status(None if v is None else v <= TARGETS["verify_over_copy"]))
    m = results.get("memory")
    if m is not None:
        if "error" in m:
            add("memory", f"error: {m['error']}", "", "ERROR")
        else:
            scales = [v for k, v in m.items() if isinstance(v, dict) and "peak_rss_mb" in v]
            first = scales[0]["peak_rss_mb"] if scales else None
            for v in scales:
                flat = v["peak_rss_mb"] <= max(first + 10, first * 1.1) if first else None
                ok = v["peak_rss_mb"] < TARGETS["peak_rss_mb"] and (flat if flat is not None else True)
                add(f"mover peak RSS, whole move, {v['scale']}x ({v['rows']:,} rows)", f"{v['peak_rss_mb']:.0f} MB (move {v['move_seconds']:.0f} s)",
                    f"< {TARGETS['peak_rss_mb']:.0f} MB, flat", _status(ok))
    f = results.get("fence")
    if f is not None:
        if "error" in f:
            add("fence", f"error: {f['error']}", "", "ERROR")
        else:
            for k, v in f["snapshot"].items():
                w = v["writer"]
                add(f"fence, snapshot, {k} ({v['rows']:,} rows), writer {w['rate_per_second']:g}/s",
                    f"{_fmt_s(v['fence_seconds'])} (writer: {w['refused']} refused, longest gap {_fmt_s(w['longest_unwritable_seconds'])}, "
                    f"bystander refused {w['bystander_refused']})", "— (fenced for copy + verify)", "info")
            onl = f["online"]
            if onl.get("status") == "skipped":
                for s in cfg.fence_scales:
                    add(f"fence, online, {s}x", f"{onl['status']}: {onl.get('reason', '')}", f"< {TARGETS['online_fence_seconds']:.0f} s", onl["status"])
            else:
                from . import fencebench
                from .fencebench import online_fence_seconds

                for k, v in onl.items():
                    if not isinstance(v, dict):
                        continue
                    if "error" in v:
                        add(f"fence, online, {k}", f"error: {v['error']}", f"< {TARGETS['online_fence_seconds']:.0f} s", "ERROR")
                        continue
                    secs = online_fence_seconds(v)
                    wr = v.get("writer") or {}
                    rows_ = v.get("workspace_rows")
                    sc = v.get("scale")
                    label = f"fence, online, {sc * fencebench.DEMO_ROWS / cfg.fence_demo_rows:g}x" if isinstance(sc, (int, float)) else f"fence, online, {k}"
                    label += f" ({rows_:,} rows)" if isinstance(rows_, int) else ""
                    extra = f" (writer: {wr.get('ok')} ok, {wr.get('refused')} refused; verified {v.get('verified')})" if wr else ""
                    add(label, _fmt_s(secs) + extra, f"< {TARGETS['online_fence_seconds']:.0f} s",
                        _status(None if secs is None else secs < TARGETS["online_fence_seconds"]))
    p = results.get("plan")
    if p is not None:
        if "error" in p:
            add("plan", f"error: {p['error']}", "", "ERROR")
        else:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(p["reach_kinds"].items()))
            add(f"plan a move, {p['tables']} tables ({kinds})", f"{_fmt_s(p['median_seconds'])} median of {len(p['runs_seconds'])}",
                f"< {TARGETS['plan_seconds']:.0f} s", _status(p["median_seconds"] < TARGETS["plan_seconds"]))
    return out


def markdown(results: dict[str, Any], cfg: Config) -> str:
    meta = results["meta"]
    lines = [
        f"### residency benchmarks ({cfg.name} scale)",
        "",
        f"{meta['started_at']}, git {meta['git']['commit']}"
        f"{' (+' + str(meta['git']['dirty_paths']) + ' uncommitted paths)' if meta['git']['dirty_paths'] else ''}, "
        f"{meta['cpus']} CPUs, PostgreSQL {meta['postgres']}, Python {meta['python']}, "
        f"load average {meta['load_average_at_start'][0]} at start / {meta.get('load_average_at_end', ['?'])[0]} at end, "
        f"{meta.get('total_seconds', '?')} s in all",
        "",
        "| benchmark | measured | target | result |",
        "| --- | --- | --- | --- |",
    ]
    for r in results["table"]:
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in (r["benchmark"], r["measured"], r["target"], r["result"])) + " |")
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = results["meta"]["started_at"].replace(":", "").replace("-", "").replace("+0000", "Z")
    j, m = out_dir / f"bench-{stamp}.json", out_dir / f"bench-{stamp}.md"
    j.write_text(json.dumps(results, indent=2, default=str) + "\n")
    m.write_text(results["markdown"])
    for src, name in ((j, "latest.json"), (m, "latest.md")):
        (out_dir / name).write_text(src.read_text())
    results.setdefault("meta", {})["written"] = [str(j), str(m)]
    return j, m


def config_for(name: str, **overrides: Any) -> Config:
    base = {"full": FULL, "quick": QUICK, "tiny": TINY}[name]
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks of the workspace mover against the plain psql pipe (issue 8).")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="a fast smoke run (50k-row workspace, small fence data)")
    g.add_argument("--tiny", action="store_true", help="seconds: only proves the harness works (used by the tests)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)}")
    ap.add_argument("--rows", type=int, default=None, help="rows of the copy workspace (full: 1,000,000)")
    ap.add_argument("--runs", type=int, default=None, help="alternating runs per side (median reported; full: 3)")
    ap.add_argument("--no-online", action="store_true", help="do not call bench/online_fence.py")
    ap.add_argument("--out", default=str(RESULTS), help="directory for the JSON and Markdown results (git-ignored)")
    ap.add_argument("--json", action="store_true", help="print the JSON results instead of the table")
    a = ap.parse_args(argv)
    only = tuple(s.strip() for s in a.only.split(",") if s.strip())
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    cfg = config_for("quick" if a.quick else "tiny" if a.tiny else "full", copy_rows=a.rows, runs=a.runs,
                     online=False if a.no_online else None)

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    res = run(cfg, only, out_dir=Path(a.out), say=say)
    if a.json:
        print(json.dumps(res, indent=2, default=str))
    else:
        print(res["markdown"])
        for p in res["meta"].get("written", []):
            print(f"written: {p}")
    return 1 if res["errors"] else 0
