"""Reading a ``COPY ... TO STDOUT`` at libpq's pace.

psycopg's ``Copy`` hands out one CopyData message (one row of a binary COPY) per call, through a
generator and its wait loop: about 0.45 µs of Python a row here, most of the relay's own cost on
a million-row copy. :func:`messages` asks libpq for the next message directly and waits on the
socket only when none is buffered (about 0.2 µs a row), then takes the COPY's final result as
psycopg would. It is used inside a ``cursor.copy(...)`` block, which still starts the COPY and, on
an error, cancels and drains it (psycopg's ``Copy.finish``).
"""

from __future__ import annotations

import select
from typing import Any, Iterator

import psycopg
from psycopg import pq
from psycopg.errors import error_from_result


def _wait_readable(pg: pq.abc.PGconn, poller: select.poll) -> None:
    while not poller.poll(1000):
        pass
    pg.consume_input()


def messages(conn: psycopg.Connection[Any]) -> Iterator[memoryview]:
    """The messages of the COPY TO STDOUT that ``conn`` is in, until its end; then its final
    result is read (an error there is raised as psycopg raises it)."""
    pg = conn.pgconn
    poller = select.poll()
    poller.register(pg.socket, select.POLLIN)
    get = pg.get_copy_data
    while True:
        n, data = get(1)  # -2 (a broken connection) is raised by psycopg as OperationalError
        if n > 0:
            yield data
        elif n == 0:
            _wait_readable(pg, poller)
        else:
            break
    results = []
    while True:
        while pg.is_busy():
            _wait_readable(pg, poller)
        res = pg.get_result()
        if res is None:
            break
        results.append(res)
    bad = [r for r in results if r.status != pq.ExecStatus.COMMAND_OK]
    if bad:
        raise error_from_result(bad[0], encoding=conn.info.encoding)
