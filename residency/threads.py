"""Threads the library starts and waits for (the copy's streams, the request workers)."""

from __future__ import annotations

import threading
from typing import Sequence


def start_and_wait(threads: Sequence[threading.Thread]) -> None:
    """Start ``threads`` and wait until all have ended, waking twice a second so that a signal
    (Ctrl-C: KeyboardInterrupt) reaches the calling thread instead of waiting inside a join.
    The caller decides what an interruption means for its threads."""
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
