"""The one redaction rule: no password reaches a message, report, audit entry or log line.

:func:`redact` replaces, in any text:

- the password of anything URL-shaped, even malformed (``postgresql://u:PW@h``,
  ``postgresql//u:PW@h`` as a typo leaves it, ``s3://key:PW@h``);
- ``password=...`` / ``password: ...`` / ``PGPASSWORD=...`` pairs, quoted or not;
- every secret :func:`register`-ed by whoever read it (the connections resolver registers each
  DSN's password and ``$PGPASSWORD``), wherever it appears -- so a library that echoes its
  input in some other shape is caught too.

:func:`redact_obj` applies it to every string in a JSON-like value; :class:`RedactingFilter`
applies it to every log record.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

MASK = "***"

_URL_PASSWORD = re.compile(r"((?:[A-Za-z][A-Za-z0-9+.-]*:?)?//[^:/@\s'\"]*:)([^@\s'\"/]+)(@)")
_KV_PASSWORD = re.compile(r"""(\b(?:pg)?pass(?:word|wd)?\b\s*[=:]\s*)('[^']*'|"[^"]*"|[^\s,;'"}]+)""", re.I)
_MIN_SECRET = 8  # shorter "secrets" would blank out ordinary words (the patterns still catch them in DSNs)

_lock = threading.Lock()
_secrets: set[str] = set()


def register(secret: str | None) -> None:
    """Remember a secret so that :func:`redact` blanks it wherever it appears."""
    if secret and len(secret) >= _MIN_SECRET and secret != MASK:
        with _lock:
            _secrets.add(secret)
            if len(_secrets) > 1000:  # bounded: a long-running worker sees few distinct secrets
                _secrets.pop()


def register_dsn(dsn: str | None) -> None:
    """Register the password a DSN carries (URL or key=value form, even a malformed one)."""
    if not dsn:
        return
    for m in _URL_PASSWORD.finditer(dsn):
        register(m.group(2))
    for m in _KV_PASSWORD.finditer(dsn):
        register(m.group(2).strip("'\""))
    try:
        from psycopg.conninfo import conninfo_to_dict

        register(str(conninfo_to_dict(dsn).get("password") or ""))
    except Exception:  # noqa: BLE001 - a DSN psycopg cannot parse was handled by the patterns
        pass


def register_environment(env: Any = None) -> None:
    env = os.environ if env is None else env
    register(env.get("PGPASSWORD"))


def redact(text: Any) -> str:
    """``text`` with every password replaced by ``***``."""
    s = text if isinstance(text, str) else str(text)
    s = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), s)
    s = _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, s)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for sec in secrets:
        if sec in s:
            s = s.replace(sec, MASK)
    return s


def redact_obj(value: Any) -> Any:
    """Every string inside a JSON-like value (dicts, lists, tuples) redacted; keys too."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_obj(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that formats each record's message once and redacts it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is logged as it is
            msg = str(record.msg)
        record.msg = redact(msg)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
