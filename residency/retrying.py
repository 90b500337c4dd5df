"""Retries of transient faults: the one shape every retry in the toolkit takes.

Bounded by attempts *and* by elapsed time, with jittered exponential waits, retrying only what
``transient`` says is worth another try; the last failure is re-raised as it is. Callers supply
the predicate (what is transient for them) and the bounds; nothing else varies.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from tenacity import before_sleep_log, retry, retry_if_exception, stop_after_attempt, stop_after_delay, wait_random_exponential


def bounded_retry(
    transient: Callable[[BaseException], bool],
    *,
    attempts: int,
    within: float,
    max_wait: float = 5.0,
    log: logging.Logger | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A tenacity decorator: at most ``attempts`` tries and ``within`` seconds in all."""
    return retry(
        retry=retry_if_exception(transient),
        wait=wait_random_exponential(multiplier=0.2, max=max_wait),
        stop=stop_after_attempt(attempts) | stop_after_delay(within),
        before_sleep=before_sleep_log(log, logging.WARNING) if log is not None else None,
        reraise=True,
    )
