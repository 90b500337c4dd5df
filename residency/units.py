"""Durations and sizes as people write and read them: one grammar, one way to print each.

Durations are written ``30m``, ``1h30m``, ``2d``, ``2w`` (units ``w d h m s``, largest first, each at
most once) or in ISO 8601 (``PT2H``, ``P1DT2H``, ``P2W``); windows, ``--grace`` and every other
option use the same grammar. Sizes are printed in binary units (1 KiB = 1024 bytes).
"""

from __future__ import annotations

import re
from datetime import timedelta

from .errors import InputError

_SHORT = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_ISO = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")


def parse_duration(text: str, *, what: str = "duration", allow_zero: bool = False) -> timedelta:
    """``30m``, ``1h30m``, ``2d``, ``2w``, ``45s`` or ISO 8601 ``PT1H30M``; ``0`` where
    ``allow_zero``. ``what`` names the value in the one-line :class:`InputError`."""
    t = text.strip()
    m = _ISO.fullmatch(t.upper()) if t.upper().startswith("P") else _SHORT.fullmatch(t.lower())
    if t == "0" and allow_zero:
        return timedelta(0)
    if not m or not any(m.groups()):
        examples = "2h, 90m, 1h30m, 2d, 2w or ISO 8601 PT2H" + (", or 0" if allow_zero else "")
        raise InputError(f"{what} '{text}' is not understood: use e.g. {examples}")
    w, d, h, mi, s = m.groups()
    td = timedelta(weeks=int(w or 0), days=int(d or 0), hours=int(h or 0), minutes=int(mi or 0), seconds=float(s or 0))
    if td <= timedelta(0) and not allow_zero:
        raise InputError(f"{what} '{text}' must be longer than zero")
    return td


def format_duration(value: timedelta | float | None) -> str:
    """``2h``, ``1h30m``, ``5m3s``, ``45s``; under ten seconds with a fraction, ``2.4s``; ``?`` for
    an unknown duration. Whole durations print in the grammar :func:`parse_duration` reads
    (weeks are shown as days)."""
    if value is None:
        return "?"
    secs = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if secs <= 0:
        return "0s"
    if round(secs, 1) < 10 and round(secs, 1) != round(secs):
        return f"{secs:.1f}s"
    d, rem = divmod(int(round(secs)), 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return "".join(f"{n}{unit}" for n, unit in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if n) or "0s"


def format_bytes(n: float | None) -> str:
    """``512 B``, ``1.5 MiB``, ``2.0 TiB``."""
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
