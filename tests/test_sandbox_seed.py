"""Seeding: deterministic, skewed, no id collisions across regions; the CLI around it."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from click.testing import CliRunner

from conftest import Env
from residency import sandbox as sb
from residency.sandbox.seed import TABLES, table_checksums


def _checksums(env: Env) -> dict[str, dict]:
    return {r: table_checksums(env.dsn(r)) for r in env.regions}


def test_same_seed_same_data_different_seed_different_data(env, sandbox):
    a = env.seed(workspaces=5, rows=2500, seed=42)
    other = Env(sandbox, uuid.uuid4().hex[:10])
    other.create()
    try:
        b = other.seed(workspaces=5, rows=2500, seed=42)
        assert a.rows == b.rows and a.workspaces == b.workspaces and a.biggest == b.biggest
        assert _checksums(env) == _checksums(other)
        assert {w: [k for _, k in objs] for w, objs in a.objects.items()} == {w: [k for _, k in objs] for w, objs in b.objects.items()}
    finally:
        other.drop()
    third = Env(sandbox, uuid.uuid4().hex[:10])
    third.create()
    try:
        third.seed(workspaces=5, rows=2500, seed=43)
        assert _checksums(third)["us"]["messages"] != _checksums(env)["us"]["messages"]
    finally:
        third.drop()


def test_sizes_are_skewed_one_big_many_small(env):
    res = env.seed(workspaces=12, rows=12000, seed=1)
    sizes = sorted((res.rows_of(w) for w in res.rows), reverse=True)
    assert sizes[0] >= 2 * sizes[1]
    assert sizes[0] >= 0.25 * sum(sizes)
    assert sorted(len(v) for v in res.workspaces.values()) == [4, 4, 4]


def test_ids_never_collide_across_regions(env, sandbox):
    env.seed(workspaces=6, rows=3000, seed=9)
    numbers = sandbox.state["region_numbers"]
    seen: dict[str, dict[int, str]] = {}
    for r in env.regions:
        with psycopg.connect(env.dsn(r)) as c:
            # every sequence is confined to the region's range
            for name, lo, hi in c.execute("SELECT sequencename, min_value, max_value FROM pg_sequences"):
                assert (lo, hi) == (numbers[r] * 10**12, (numbers[r] + 1) * 10**12 - 1), name
            for t in ("users", "workspaces", "channels", "conversations", "messages", "attachments", "reactions"):
                for (i,) in c.execute(f"SELECT id FROM {t}"):
                    assert i // 10**12 == numbers[r]
                    assert i not in seen.setdefault(t, {}), f"{t}.id {i} in {r} and {seen[t][i]}"
                    seen[t][i] = r
    assert len(set(numbers.values())) == len(numbers)


def test_region_numbers_survive_reordering_regions(sandbox, tmp_path):
    # a catalogue listing the regions in another order does not renumber them
    before = dict(sandbox.state["region_numbers"])
    sb.up(sandbox.catalogue, sandbox.home)
    assert sb.read_state(sandbox.home)["region_numbers"] == before


def test_cli_status_json_lists_every_server_healthy(sandbox):
    from residency.cli import main

    r = CliRunner().invoke(main, ["--regions", str(sandbox.catalogue.path), "sandbox", "status", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["healthy"] is True
    names = {s["name"]: s for s in data["servers"]}
    assert set(names) == {"control", "us", "eu", "au", "s3"}
    assert all(s["healthy"] for s in data["servers"])
    assert names["s3"]["endpoint"].startswith("http://127.0.0.1:")


def test_cli_seed_bad_input_is_one_line(sandbox):
    from residency.cli import main

    r = CliRunner().invoke(main, ["--regions", str(sandbox.catalogue.path), "sandbox", "seed", "--workspaces", "10", "--rows", "5"])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "too few" in r.output
    r = CliRunner().invoke(main, ["--regions", str(sandbox.catalogue.path), "sandbox", "seed", "--rows", "5000", "--size-mb", "1"])
    assert r.exit_code == 2 and "either" in r.output


def test_cli_status_without_sandbox(tmp_path, monkeypatch):
    from residency.cli import main

    monkeypatch.setenv("RESIDENCY_SANDBOX_HOME", str(tmp_path / "none"))
    r = CliRunner().invoke(main, ["sandbox", "status"])
    assert r.exit_code == 1 and "no sandbox" in r.output


def test_tables_listed_are_the_schema_tables(env):
    with psycopg.connect(env.dsn("us")) as c:
        names = {n for (n,) in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert names == {"users", *TABLES}
