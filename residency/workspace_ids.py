"""Workspace ids: parsed once, by the root key's type, before anything touches a database.

regions.yaml may declare the type of the root table's key (``workspace.key_type``: ``bigint``,
``integer``, ``smallint``, ``uuid`` or ``text``, the default). Every entry point that takes a
workspace id from a user (``move plan/start``, ``verify``, ``request create/import``) calls
:func:`parse` first, so ``'1; DROP TABLE workspaces'`` or ``' 1000000000000 '`` get the same
answer everywhere -- one line, exit 2, or the canonical id -- and nothing reaches a server that
would only fail there.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from .errors import InputError

KEY_TYPES = ("text", "bigint", "integer", "smallint", "uuid")
"""What ``workspace.key_type`` may say (PostgreSQL's names; ``int8``/``int4``/``int2`` too)."""

_ALIASES = {"int8": "bigint", "int4": "integer", "int": "integer", "int2": "smallint", "character varying": "text",
            "varchar": "text"}
_RANGES = {"bigint": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1), "smallint": (-(2**15), 2**15 - 1)}
_INT = re.compile(r"[+-]?[0-9]+")
MAX_TEXT = 256


def normalise_type(name: str | None) -> str | None:
    """A PostgreSQL type name as :data:`KEY_TYPES` spells it, or None if it is none of them."""
    if name is None:
        return None
    n = _ALIASES.get(name.strip().lower(), name.strip().lower())
    return n if n in KEY_TYPES else None


def _show(text: str) -> str:
    shown = text if len(text) <= 60 else text[:57] + "..."
    return shown.encode("unicode_escape").decode("ascii")


def parse(value: Any, key_type: str | None = "text") -> str:
    """The canonical text of workspace id ``value`` for a root key of ``key_type``; InputError if
    it cannot be one. Surrounding whitespace is ignored; integers lose leading zeros and ``+``."""
    kt = normalise_type(key_type) or "text"
    if isinstance(value, bool):
        raise InputError(f"workspace id {value!r} is not a workspace id")
    text = str(value).strip()
    if not text:
        raise InputError("a workspace id is required")
    if kt in _RANGES:
        lo, hi = _RANGES[kt]
        if not _INT.fullmatch(text):
            raise InputError(f"unknown workspace '{_show(text)}': not a whole number (the workspace key is {kt})")
        n = int(text)
        if not lo <= n <= hi:
            raise InputError(f"unknown workspace '{_show(text)}': out of range for the workspace key ({kt})")
        return str(n)
    if kt == "uuid":
        try:
            return str(uuid.UUID(text))
        except ValueError:
            raise InputError(f"unknown workspace '{_show(text)}': not a UUID (the workspace key is uuid)") from None
    if len(text) > MAX_TEXT:
        raise InputError(f"unknown workspace '{_show(text)}': longer than {MAX_TEXT} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InputError(f"unknown workspace '{_show(text)}': it contains control characters")
    return text
