"""Retries of transient faults: the one shape every retry in the toolkit takes.

Bounded by attempts *and* by elapsed time, with jittered exponential waits, retrying only what
``transient`` says is worth another try; the last failure is re-raised as it is. Callers supply
the predicate (what is transient for them) and the bounds; nothing else varies.

Quiet: the first retry of a call logs one line (WARNING) naming what is retried and why, later
ones log at DEBUG (shown with ``--debug``); never a traceback or a library's multi-line message,
and always through the one redaction rule (:func:`residency.redaction.redact`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from tenacity import RetryCallState, retry, retry_if_exception, stop_after_attempt, stop_after_delay, wait_random_exponential


def first_line(exc: BaseException | None) -> str:
    """One line saying what ``exc`` is, redacted."""
    from .redaction import redact

    if exc is None:
        return "no error"
    text = str(exc).strip().splitlines()
    return redact(f"{type(exc).__name__}: {text[0].strip()}" if text else type(exc).__name__)


def _before_sleep(log: logging.Logger, attempts: int) -> Callable[[RetryCallState], None]:
    def say(state: RetryCallState) -> None:
        fn = getattr(state.fn, "__qualname__", "call")
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        level = logging.WARNING if state.attempt_number == 1 else logging.DEBUG
        log.log(level, "retrying %s (attempt %d of %d failed, next in %.1fs): %s",
                fn.split(".")[-1].lstrip("_"), state.attempt_number, attempts, wait, first_line(exc))

    return say


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
        before_sleep=_before_sleep(log, attempts) if log is not None else None,
        reraise=True,
    )
