"""One duration grammar (windows, --grace, ...) and one way to print durations and sizes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner

from residency.cli import main
from residency.ops import requests as rq
from residency.errors import InputError
from residency.units import format_bytes, format_duration, parse_duration


@pytest.mark.parametrize("text, expected", [
    ("2h", timedelta(hours=2)), ("90m", timedelta(minutes=90)), ("1h30m", timedelta(minutes=90)),
    ("30m", timedelta(minutes=30)), ("2d", timedelta(days=2)), ("2w", timedelta(weeks=2)),
    ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)), (" 45s ", timedelta(seconds=45)),
    ("PT2H", timedelta(hours=2)), ("PT1H30M", timedelta(minutes=90)), ("P1DT2H", timedelta(days=1, hours=2)),
    ("P2W", timedelta(weeks=2)), ("pt1.5s", timedelta(seconds=1.5)),
])
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "2", "h", "-2h", "0m", "PT", "2 hours", "2x", "30m1h", "1h1h", "5ms", "0"])
def test_bad_durations_say_what_to_write(text):
    with pytest.raises(InputError, match="2h|zero"):
        parse_duration(text)


def test_zero_only_where_allowed_and_the_message_names_the_option():
    assert parse_duration("0", allow_zero=True) == parse_duration("0m", allow_zero=True) == timedelta(0)
    with pytest.raises(InputError) as exc:
        parse_duration("7 days", what="--grace", allow_zero=True)
    assert str(exc.value) == "--grace '7 days' is not understood: use e.g. 2h, 90m, 1h30m, 2d, 2w or ISO 8601 PT2H, or 0"


def test_windows_and_grace_read_the_same_grammar():
    w = rq.parse_window("2030-05-01T22:00Z/1h30m")
    assert w.duration == timedelta(minutes=90) and rq.parse_window("2030-05-01T22:00Z/2w").duration == timedelta(weeks=2)
    # --grace takes 1h30m and 2w too; a bad one is an input error (exit 2) before anything is touched
    result = CliRunner().invoke(main, ["move", "cleanup", "1", "--grace", "1.5 days"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].endswith("--grace '1.5 days' is not understood: use e.g. 2h, 90m, 1h30m, 2d, 2w or ISO 8601 PT2H, or 0")


@pytest.mark.parametrize("value, text", [
    (timedelta(hours=2), "2h"), (5400, "1h30m"), (303, "5m3s"), (45, "45s"), (2.4, "2.4s"), (9.96, "10s"), (12.7, "13s"), (0.04, "0s"),
    (59.96, "1m"), (0, "0s"), (-3, "0s"), (None, "?"), (timedelta(weeks=2), "14d"), (90061, "1d1h1m1s"),
])
def test_format_duration(value, text):
    assert format_duration(value) == text


def test_whole_durations_print_in_the_grammar_they_are_read_in():
    for secs in (1, 59, 60, 61, 3599, 3600, 86399, 86400, 1209600, 1_000_003):
        assert parse_duration(format_duration(secs)) == timedelta(seconds=secs)


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (None, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536 * 1024, "1.5 MiB"),
    (5 * 1024**3, "5.0 GiB"), (2 * 1024**4, "2.0 TiB"), (3 * 1024**5, "3072.0 TiB"),
])
def test_format_bytes(n, text):
    assert format_bytes(n) == text
