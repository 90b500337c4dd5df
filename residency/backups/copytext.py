"""Reading PostgreSQL's COPY text format (what the key index is written in): fields split on tabs,
``\\N`` for NULL, backslash escapes undone."""

from __future__ import annotations

import re

_ESC = re.compile(rb"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")
_SIMPLE = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def _one(m: re.Match[bytes]) -> bytes:
    s = m.group(1)
    if s[:1] == b"x":
        return bytes([int(s[1:], 16)])
    if s[:1].isdigit():
        return bytes([int(s, 8) & 0xFF])
    return _SIMPLE.get(s, s)


def field(raw: bytes) -> str | None:
    if raw == b"\\N":
        return None
    if b"\\" in raw:
        raw = _ESC.sub(_one, raw)
    return raw.decode("utf-8")


def split(line: bytes) -> list[str | None]:
    return [field(f) for f in line.split(b"\t")]
