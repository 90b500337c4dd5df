"""The parallel copy benchmark's verdicts (bench/parallelbench.py): from the contenders' runs to
the ratios, the targets met or missed and the notes under the table. The runs themselves need
minutes of copying (``python -m bench.parallelbench``); what is judged from them is checked here
on given figures."""

from __future__ import annotations

from pathlib import Path

from bench.parallelbench import Setup, render, summarize


def _setup(prepared: float | None) -> Setup:
    return Setup(world=None, ws="1", ws_rows=1000, commands=[], sizes={"a": 600, "b": 402}, fk_parents={}, expected=1002,
                 psql="psql", files=Path("/nonexistent"), pgcopydb="/usr/bin/pgcopydb", pc_src="dsn" if prepared else None,
                 pc_prepare_seconds=prepared)


def _runs(**seconds: list[float]) -> dict[str, list[dict]]:
    names = {"mover": "mover --jobs 2", "pipes": "2 parallel pipes", "pgcopydb": "pgcopydb --table-jobs 2", "write": "write limit",
             "checked": "2 parallel pipes + checksums"}
    out = {}
    for k, xs in seconds.items():
        out[names[k]] = [{"seconds": x, **({"verify": 0.2, "rss_mb": 70.0, "method": "replica"} if k == "mover" else {})} for x in xs]
    return out


def test_a_slower_mover_is_reported_missed_against_its_best_peer_with_pgcopydbs_preparation_beside() -> None:
    res = summarize("super", _runs(mover=[3.0, 2.9, 3.1], pipes=[2.7, 2.8, 2.75], pgcopydb=[3.2, 3.0, 3.1], write=[2.4, 2.5, 2.45]),
                    [1.0, 1.0], _setup(44.9))
    assert res["median_seconds"]["mover --jobs 2"] == 3.0
    assert res["goals"]["copy_vs_best_peer"] == round(2.75 / 3.0, 3)  # the best peer, not pgcopydb
    assert res["ratio_peer_over_best_mover"]["pgcopydb --table-jobs 2"] == round(3.1 / 3.0, 3)
    assert res["pgcopydb_source_prepare_seconds"] == 44.9
    text = render({"results": [res]})
    assert "copy vs best peer: 0.917x (target ≥ 1.0, aim 1.2): MISSED" in text
    assert "pgcopydb's rows exclude preparing its source database" in text and "44.9 s" in text


def test_a_faster_mover_is_met_and_the_owner_target_says_pgcopydb_was_left_out() -> None:
    res = summarize("owner", _runs(mover=[7.5, 7.6, 8.2], pipes=[10.5, 10.4, 11.0], write=[9.0, 9.1, 9.8]), [1.0, 1.0], _setup(3.1))
    assert res["goals"]["copy_vs_best_peer"] == round(10.5 / 7.6, 3)
    assert res["pgcopydb_source_prepare_seconds"] is None  # no pgcopydb row to put it beside
    text = render({"results": [res]})
    assert "(target ≥ 1.0, aim 1.2): met" in text
    assert "pgcopydb: left out on the owner target" in text and "exclude preparing" not in text


def test_the_checked_pipes_stand_against_copy_and_verify_not_in_the_copy_verdict() -> None:
    """Pipes followed by both sides' checksums are faster than nothing: they are no copy peer,
    and are set beside the mover's copy plus its verify (0.2 s in these runs)."""
    res = summarize("super", _runs(mover=[3.0, 2.9, 3.1], pipes=[2.7, 2.8, 2.75], checked=[3.9, 4.0, 3.8], write=[2.4, 2.5, 2.45]),
                    [1.0, 1.0], _setup(None))
    assert res["goals"]["copy_vs_best_peer"] == round(2.75 / 3.0, 3)  # the plain pipes, not the checked ones
    assert res["verified"] == {"mover_copy_and_verify_seconds": 3.2, "checked_peer": "2 parallel pipes + checksums",
                               "checked_peer_over_copy_and_verify": round(3.9 / 3.2, 3)}
    assert "2 parallel pipes + checksums" not in res["ratio_peer_over_best_mover"]
    text = render({"results": [res]})
    assert "| 2 parallel pipes + checksums | 3.9 | 3.9, 4.0, 3.8 | 1.219 (over copy + verify) |" in text
    assert "verified copy: the mover's copy + verify 3.2 s against 2 parallel pipes + checksums 3.9 s: 1.219x" in text
