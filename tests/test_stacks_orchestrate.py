"""Deploy orchestration with a fake engine: canary first, waves, stop at the first failure,
stacks selected one at a time; and the missing pulumi CLI."""

from __future__ import annotations

import os
import threading
import time

import pytest
from click.testing import CliRunner

from residency.catalogue import load, loads
from residency.errors import InputError
from residency.stacks import orchestrate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGIONS = os.path.join(ROOT, "regions.yaml")


def _six_regions():
    text = open(REGIONS, encoding="utf-8").read().replace("\nworkspace:", (
        "\n  de: {aws_region: eu-central-1, jurisdiction: EU, cidr: 10.40.0.0/16, backup_region: eu-north-1, status: active}"
        "\n  us2: {aws_region: us-east-2, jurisdiction: US, cidr: 10.50.0.0/16, backup_region: us-west-2, status: active}"
        "\n  au2: {aws_region: ap-southeast-4, jurisdiction: AU, cidr: 10.60.0.0/16, backup_region: ap-southeast-2, status: active}"
        "\n\nworkspace:"), 1)
    return loads(text, "regions.yaml")


class FakeEngine:
    """Records the order of calls (by region; the stack names selected in ``stacks``); fails where
    told; proves selects never overlap."""

    def __init__(self, fail: set[str] = frozenset(), fail_select: set[str] = frozenset(), delay: float = 0.05):
        self.fail, self.fail_select, self.delay = set(fail), set(fail_select), delay
        self.calls: list[tuple[str, str]] = []
        self.stacks: list[str] = []
        self.lock = threading.Lock()
        self.selecting = 0
        self.max_selecting = 0
        self.running = 0
        self.max_running = 0

    def ensure_available(self) -> None:
        self.calls.append(("check", ""))

    def select(self, stack: str):
        region = stack.partition("-")[2]
        with self.lock:
            self.stacks.append(stack)
            self.selecting += 1
            self.max_selecting = max(self.max_selecting, self.selecting)
            self.calls.append(("select", region))
        time.sleep(0.01)
        with self.lock:
            self.selecting -= 1
            self.running_during_select = self.running
        if region in self.fail_select:
            raise RuntimeError(f"cannot select {region}")
        return region

    def run(self, handle, op: str):
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.calls.append(("run", handle))
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
            self.calls.append(("end", handle))
        if handle in self.fail:
            raise RuntimeError(f"error: update of {handle} failed\nerror: bucket already exists")
        return {"create": 43} if op == "up" else {"same": 43}


@pytest.fixture
def cat6():
    return _six_regions()


def _runs(engine):
    return [r for k, r in engine.calls if k == "run"]


def test_canary_first_then_waves_selected_one_at_a_time(cat6):
    eng = FakeEngine()
    s = orchestrate.run(cat6, "up", list(cat6.regions), engine=eng, canary="eu", parallel=2)
    assert s.ok and s.canary == "eu"
    assert s.waves == [["us", "au"], ["de", "us2"], ["au2"]]
    # the canary ends before anything else is selected
    assert eng.calls[:4] == [("check", ""), ("select", "eu"), ("run", "eu"), ("end", "eu")]
    # each wave: all its selects, one at a time, before any of its runs; waves don't overlap
    kinds = [(k, r) for k, r in eng.calls[4:]]
    assert kinds[:2] == [("select", "us"), ("select", "au")]
    assert {r for k, r in kinds[2:6] if k in ("run", "end")} == {"us", "au"}
    assert kinds[6:8] == [("select", "de"), ("select", "us2")]
    assert eng.max_selecting == 1
    assert eng.max_running == 2  # a wave runs in parallel
    assert [r.region for r in s.results] == ["eu", "us", "au", "de", "us2", "au2"]
    assert [r.wave for r in s.results] == [0, 1, 1, 2, 2, 3]
    assert all(r.changes == {"create": 43} for r in s.results)
    assert eng.stacks[:3] == ["production-eu", "production-us", "production-au"]  # <env>-<region>, production by default
    assert [r.stack for r in s.results][:2] == ["production-eu", "production-us"] and s.as_dict()["env"] == "production"


def test_staging_and_production_are_different_stacks(cat6, monkeypatch):
    eng = FakeEngine()
    s = orchestrate.run(cat6, "preview", ["us", "eu"], engine=eng, env="staging")
    assert eng.stacks == ["staging-us", "staging-eu"] and s.env == "staging"
    monkeypatch.setenv("RESIDENCY_ENV", "qa")
    eng = FakeEngine()
    orchestrate.run(cat6, "preview", ["us"], engine=eng)
    assert eng.stacks == ["qa-us"]
    with pytest.raises(InputError, match="environment 'Prod-1'"):
        orchestrate.run(cat6, "preview", ["us"], engine=FakeEngine(), env="Prod-1")


def test_a_failed_canary_stops_everything(cat6):
    eng = FakeEngine(fail={"us"})
    s = orchestrate.run(cat6, "preview", list(cat6.regions), engine=eng, parallel=3)
    assert s.canary == "us"  # default: the first active region
    assert _runs(eng) == ["us"]
    assert [(r.region, r.status) for r in s.results][:2] == [("us", "failed"), ("eu", "skipped")]
    assert all(r.status == "skipped" for r in s.results[1:])
    assert s.results[0].error == "error: bucket already exists"
    assert not s.ok


def test_a_failure_in_a_wave_lets_the_wave_finish_and_stops_later_waves(cat6):
    eng = FakeEngine(fail={"au"})
    s = orchestrate.run(cat6, "up", list(cat6.regions), engine=eng, parallel=2)
    status = {r.region: r.status for r in s.results}
    assert status == {"us": "succeeded", "eu": "succeeded", "au": "failed", "de": "skipped", "us2": "skipped", "au2": "skipped"}
    assert sorted(_runs(eng)) == ["au", "eu", "us"]
    assert [r for k, r in eng.calls if k == "select"] == ["us", "eu", "au"]  # later waves never selected


def test_a_failed_select_stops_before_the_wave_runs(cat6):
    eng = FakeEngine(fail_select={"eu"})
    s = orchestrate.run(cat6, "up", ["us", "eu", "au"], engine=eng, parallel=4)
    assert _runs(eng) == ["us"]
    assert {r.region: r.status for r in s.results} == {"us": "succeeded", "eu": "failed", "au": "skipped"}


def test_region_selection_and_arguments():
    cat = load(REGIONS)
    assert orchestrate.select_regions(cat, ["au", "us"], False) == ["us", "au"]  # regions.yaml order
    assert orchestrate.select_regions(cat, None, True) == ["us", "eu", "au"]
    for args in ((None, False), (["us"], True)):
        with pytest.raises(InputError):
            orchestrate.select_regions(cat, *args)
    with pytest.raises(InputError, match="did you mean 'eu'"):
        orchestrate.select_regions(cat, ["ue"], False)
    with pytest.raises(InputError, match="not among"):
        orchestrate.order(cat, ["us", "eu"], canary="au")
    with pytest.raises(InputError, match="at least 1"):
        orchestrate.order(cat, ["us"], parallel=0)


def test_missing_pulumi_cli_is_one_line_and_exit_2(monkeypatch):
    monkeypatch.setattr(orchestrate.shutil, "which", lambda name: None)
    with pytest.raises(InputError, match="get.pulumi.com"):
        orchestrate.AutomationEngine(REGIONS).ensure_available()
    from residency.cli import main

    result = CliRunner().invoke(main, ["--regions", REGIONS, "stacks", "up", "--all"])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the pulumi CLI is not installed"), result.output
