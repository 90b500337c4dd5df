"""The benchmark harness (bench/, issue 8) runs end to end at a tiny scale: every section
produces its figures and the Markdown table. No timing is asserted: targets are benchmark
results, not tests. Uses the session's sandbox (tests/conftest.py) instead of starting another."""

from __future__ import annotations

import json
from pathlib import Path

from bench.harness import SECTIONS, TINY, run  # the repository root is on the path (pyproject's pytest pythonpath)
from bench.sandbox import BenchSandbox


def test_bench_harness_tiny(sandbox, tmp_path: Path) -> None:
    res = run(TINY, SECTIONS, sandbox=BenchSandbox(sandbox.home, sandbox.catalogue), out_dir=tmp_path)
    assert res["errors"] == {}, res["errors"]
    c = res["copy"]
    assert c["moved_rows"] > 0 and c["pipe_target_verified"]["ok"]
    assert sum(v for t, v in c["pipe_rows"].items() if t != "users") == c["moved_rows"]
    assert c["ratio_pipe_over_ours"] and c["verify_over_copy"]
    assert all(v["state"] == "cut_over" and v["peak_rss_mb"] for k, v in res["memory"].items() if k.endswith("x"))
    for v in res["fence"]["snapshot"].values():
        assert v["state"] == "cut_over" and v["fence_seconds"] is not None
        assert v["writer"]["bystander_refused"] == 0 and v["writer"]["accepted"] > 0
    assert res["plan"]["tables"] == TINY.plan_tables
    md = (tmp_path / "latest.md").read_text()
    assert "| copy ratio baseline/ours |" in md and "| plan a move, 20 tables" in md
    assert json.loads((tmp_path / "latest.json").read_text())["table"] == res["table"]
