"""Bounded, jittered retries of transient faults (dropped connections, lock timeouts, S3
throttling). Every unit of work wrapped here is idempotent; anything not transient is raised at
once and ends the move in ``failed`` with its reason, resumable."""

from __future__ import annotations

import logging
import os

import psycopg
from residency import db
from residency.errors import OperationError
from residency.retrying import bounded_retry

log = logging.getLogger("residency.migrate")

_S3_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable", "503", "500"}


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, OperationError) and exc.__cause__ is not None:
        return is_transient(exc.__cause__)
    if db.is_transient(exc):
        return True
    if isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
        return True
    if isinstance(exc, psycopg.InterfaceError) and "closed" in str(exc):
        return True
    try:
        from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, EndpointConnectionError
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, BotoConnectionError | EndpointConnectionError):
        return True
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return code in _S3_TRANSIENT_CODES
    return False


_ATTEMPTS = int(os.environ.get("RESIDENCY_MOVE_RETRIES", "5"))

transient = bounded_retry(is_transient, attempts=_ATTEMPTS, within=120, log=log)
