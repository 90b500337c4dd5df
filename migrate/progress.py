"""Progress of long work: rows, bytes, rate and ETA per table. The library only emits events;
the CLI decides how to show them (an updating line on a terminal, plain lines otherwise)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from residency.units import format_bytes, format_duration

human_bytes = format_bytes  # the name migrate/plan.py imports


@dataclass(frozen=True)
class Progress:
    phase: str  # fence | copy | objects | verify | cutover | cleanup | rollback | state
    item: str  # a table, a bucket, or a message
    done: int = 0  # rows (or objects)
    total: int | None = None
    bytes: int = 0
    elapsed: float = 0.0
    finished: bool = False
    message: str = ""

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if self.total is None or self.finished or self.rate <= 0:
            return None
        return max(self.total - self.done, 0) / self.rate


ProgressFn = Callable[[Progress], None]


class Meter:
    """Counts work for one item and emits at most every ``interval`` seconds (and at the end)."""

    def __init__(self, emit: Callable[[Progress], None], phase: str, item: str, total: int | None, interval: float = 0.5):
        self.emit, self.phase, self.item, self.total, self.interval = emit, phase, item, total, interval
        self.start = time.monotonic()
        self.last = 0.0
        self.done = 0
        self.bytes = 0

    def add(self, rows: int, nbytes: int) -> None:
        self.done += rows
        self.bytes += nbytes
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.emit(Progress(self.phase, self.item, self.done, self.total, self.bytes, now - self.start))

    def finish(self, rows: int | None = None) -> Progress:
        if rows is not None:
            self.done = rows
        p = Progress(self.phase, self.item, self.done, self.total, self.bytes, time.monotonic() - self.start, finished=True)
        self.emit(p)
        return p


def render(p: Progress) -> str:
    """One line describing an event (used by the CLI for both terminal and plain output)."""
    if p.phase == "state" or p.message:
        return f"{p.phase}: {p.message or p.item}"
    total = f"/{p.total:,}" if p.total is not None else ""
    rate = f"{p.rate:,.0f}/s" if p.elapsed > 0 else ""
    tail = "done" if p.finished else f"ETA {format_duration(p.eta)}"
    parts = [f"{p.phase} {p.item}: {p.done:,}{total}"]
    if p.bytes:
        parts.append(format_bytes(p.bytes))
    if rate:
        parts.append(rate)
    parts.append(f"{format_duration(p.elapsed)}, {tail}")
    return ", ".join(parts)
