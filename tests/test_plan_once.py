"""A move is planned once (issue 17): the plan the CLI shows to confirm, or the one the worker
sized its window with, is the plan ``start_move`` records; the control plane's answer is still
checked again when the move is recorded, since it can change between plan and start."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

import residency.migrate as migrate_pkg
import residency.migrate.mover as mover_mod
from residency.migrate import MoveRefused, plan_move, rollback_move, start_move
from app16_support import cli, use_env_connections
from move_support import home


@pytest.fixture
def plans(monkeypatch):
    """Every call of plan_move, wherever it is called from (the CLI or start_move)."""
    made: list[str] = []

    def counted(*a, **k):
        made.append(str(a[2]))
        return plan_move(*a, **k)

    monkeypatch.setattr(migrate_pkg, "plan_move", counted)
    monkeypatch.setattr(mover_mod, "plan_move", counted)
    return made


def test_move_start_at_a_terminal_plans_once_shows_it_and_starts_it(env, tmp_path, monkeypatch, plans):
    s = env.seed(workspaces=3, rows=600, seed=41)
    ws = s.smallest_in("us")
    use_env_connections(env, tmp_path, monkeypatch)
    import residency.cli.move as cli_move

    monkeypatch.setattr(cli_move, "sys", SimpleNamespace(stdin=SimpleNamespace(isatty=lambda: True), exit=sys.exit))  # a terminal
    from click.testing import CliRunner
    from residency.cli import main

    r = CliRunner().invoke(main, ["--regions", str(env.catalogue.path), "move", "start", str(ws), "--to", "eu"], input="y\n")
    assert r.exit_code == 0, r.output
    assert f"move workspace {ws} from us to eu?" in r.output
    assert plans == [str(ws)]  # shown, confirmed and started: one plan
    assert home(env, ws)[:2] == ("eu", "active")


def test_a_plan_handed_to_start_move_is_not_made_again_but_a_stale_one_is_refused(env, plans):
    s = env.seed(workspaces=3, rows=600, seed=42)
    ws = s.smallest_in("us")
    plan = plan_move(env.catalogue, env.connections, ws, "eu")
    first = start_move(env.catalogue, env.connections, ws, "eu", stop_after="fenced")  # plans for itself
    assert plans == [str(ws)]
    with pytest.raises(MoveRefused) as exc:  # the plan said yes; since then a move of the workspace began
        start_move(env.catalogue, env.connections, ws, "eu", plan=plan)
    assert f"a move is already running for workspace '{ws}': move {first.id}" in str(exc.value)
    assert plans == [str(ws)]
    rollback_move(env.catalogue, env.connections, first.id)
    rec = start_move(env.catalogue, env.connections, ws, "eu", plan=plan_move(env.catalogue, env.connections, ws, "eu"))
    assert rec.state == "cut_over" and plans == [str(ws)]
    assert home(env, ws)[:2] == ("eu", "active")
