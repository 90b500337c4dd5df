"""The one redaction rule (residency/redaction.py), on the shapes libraries echo secrets in."""

from __future__ import annotations

import logging

import pytest

from residency import redaction
from residency.redaction import redact, redact_obj


@pytest.mark.parametrize("text, shown", [
    ('missing "=" after "postgresql//mover:S3cretPW1@db.us/app" in connection info string',
     'missing "=" after "postgresql//mover:***@db.us/app" in connection info string'),
    ("postgresql://mover:S3cretPW1@db.us:5432/app", "postgresql://mover:***@db.us:5432/app"),
    ("host=db user=mover password=S3cretPW1 dbname=app", "host=db user=mover password=*** dbname=app"),
    ("host=db password='S3cret PW1' dbname=app", "host=db password=*** dbname=app"),
    ("PGPASSWORD=S3cretPW1 psql", "PGPASSWORD=*** psql"),
    ("https://host:443/path@x", "https://host:443/path@x"),
    ('password authentication failed for user "mover"', 'password authentication failed for user "mover"'),
])
def test_patterns(text, shown):
    assert redact(text) == shown


def test_registered_secrets_are_blanked_wherever_they_appear():
    redaction.register_dsn("host=db user=mover password=Plant3dSecret9 dbname=app")
    assert redact("server said: Plant3dSecret9 is wrong") == "server said: *** is wrong"
    assert redact_obj({"error": ["x Plant3dSecret9"], "n": 1}) == {"error": ["x ***"], "n": 1}
    redaction.register("short")  # too short to be told from ordinary words: not registered
    assert redact("a short note") == "a short note"


def test_log_records_are_redacted(caplog):
    log = logging.getLogger("residency.test_redaction")
    log.addFilter(redaction.RedactingFilter())
    with caplog.at_level(logging.WARNING, logger="residency.test_redaction"):
        log.warning("cannot connect to %s", "postgresql://u:Hunter2Hunter2@h/db")
    assert "Hunter2Hunter2" not in caplog.text and "postgresql://u:***@h/db" in caplog.text
