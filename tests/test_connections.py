"""How the toolkit finds each region's database and object store (no servers needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from residency import catalogue, connections
from residency.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def cat():
    return catalogue.load(ROOT / "regions.yaml")


@pytest.fixture(autouse=True)
def isolated_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(connections.CONNECTIONS_ENV, raising=False)


def test_environment_variables_name_each_region(cat):
    env = {
        "RESIDENCY_CONTROL_DSN": "postgresql://cp@control/residency",
        "RESIDENCY_US_DSN": "postgresql://mover@db.us/app",
        "RESIDENCY_EU_DSN": "postgresql://mover@db.eu/app",
        "RESIDENCY_EU_S3_ENDPOINT": "http://127.0.0.1:9000",
    }
    conns = connections.resolve(cat, env)
    assert conns.control_dsn == "postgresql://cp@control/residency"
    assert set(conns.regions) == {"us", "eu"}
    assert conns.region("eu").s3_endpoint == "http://127.0.0.1:9000"
    assert conns.region("us").s3_endpoint is None
    assert conns.region("us").aws_region == "us-east-1"
    assert conns.region("us").bucket("attachments") == "residency-us-attachments"


def test_missing_region_explains_how_to_add_it(cat):
    conns = connections.resolve(cat, {"RESIDENCY_CONTROL_DSN": "postgresql://x/y"})
    with pytest.raises(InputError, match="RESIDENCY_AU_DSN"):
        conns.region("au")


def test_no_control_plane_is_one_clear_error(cat):
    with pytest.raises(InputError, match="no control plane configured"):
        connections.resolve(cat, {})


def test_connections_file_with_bucket_names_and_env_overrides(cat, tmp_path, monkeypatch):
    f = tmp_path / "conns.yaml"
    f.write_text(
        "control: {dsn: 'postgresql://cp@file/residency'}\n"
        "regions:\n"
        "  au: {dsn: 'postgresql://m@db.au/app', buckets: {attachments: acme-au-files}}\n"
        "  us: {dsn: 'postgresql://m@db.us/app'}\n"
    )
    monkeypatch.setenv(connections.CONNECTIONS_ENV, str(f))
    conns = connections.resolve(cat, {"RESIDENCY_US_DSN": "postgresql://m@override/app"})
    assert conns.control_dsn == "postgresql://cp@file/residency"
    assert conns.source == str(f)
    assert conns.region("au").bucket("attachments") == "acme-au-files"
    assert conns.region("au").bucket("exports") == "residency-au-exports"
    assert conns.region("us").dsn == "postgresql://m@override/app"


def test_named_connections_file_must_exist(cat, tmp_path, monkeypatch):
    monkeypatch.setenv(connections.CONNECTIONS_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(InputError, match="connections file not found"):
        connections.resolve(cat, {})


def test_broken_connections_file_names_line(cat, tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text("control: {dsn: x\nregions: [\n")
    monkeypatch.setenv(connections.CONNECTIONS_ENV, str(f))
    with pytest.raises(InputError, match=r"c\.yaml:\d+:\d+: connections file is not valid YAML"):
        connections.resolve(cat, {})


@pytest.mark.parametrize(
    "dsn, shown",
    [
        ("postgresql://mover:s3cret@db/app", "postgresql://mover:***@db/app"),
        ("host=db user=mover password=s3cret dbname=app", "host=db user=mover password=*** dbname=app"),
        ("postgresql://mover@db/app", "postgresql://mover@db/app"),
    ],
)
def test_redact_hides_passwords(dsn, shown):
    assert connections.redact(dsn) == shown
