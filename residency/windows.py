"""Move windows: when a requested move may run (``START/DURATION`` or an ISO 8601 interval)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from residency.errors import InputError
from residency.units import format_duration, parse_duration


def parse_instant(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 date-time with an explicit offset (``Z`` or ``+01:00``), or ``now``."""
    t = text.strip()
    if t.lower() == "now":
        return now or datetime.now(timezone.utc)
    try:
        dt = datetime.fromisoformat(t.replace("z", "Z").replace("Z", "+00:00") if t.endswith(("Z", "z")) else t)
    except ValueError:
        raise InputError(f"window start '{text}' is not an ISO 8601 date-time such as 2025-03-01T22:00Z") from None
    if dt.tzinfo is None:
        raise InputError(f"window start '{text}' has no time zone: add Z for UTC or an offset such as +01:00")
    return dt.astimezone(timezone.utc)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def __str__(self) -> str:
        return f"{self.start.astimezone(timezone.utc).isoformat(timespec='minutes').replace('+00:00', 'Z')}/{format_duration(self.duration)}"


def parse_window(text: str, now: datetime | None = None) -> Window:
    """``START/DURATION`` (``2025-03-01T22:00Z/2h``) or an ISO 8601 interval ``START/END``."""
    if text.count("/") != 1:
        raise InputError(f"window '{text}' must be START/DURATION, e.g. 2025-03-01T22:00Z/2h")
    a, b = text.split("/")
    start = parse_instant(a, now)
    try:
        end = start + parse_duration(b)
    except InputError as dur_exc:
        try:
            end = parse_instant(b, now)
        except InputError:
            raise dur_exc from None
        if end <= start:
            raise InputError(f"window '{text}' ends before it starts") from None
    return Window(start, end)
