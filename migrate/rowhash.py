"""Batches of a binary COPY stream, and the source's checksum taken from the stream itself.

A chunk's source side is summed where its rows already pass: the COPY out of the source carries
each row's hash (:meth:`ChecksumSql.row_hash`, the very value verify sums) as one more, last,
column; :class:`RowHashes` takes it off each row before the row goes on to the target, and keeps
the count and the sum. The source is then read once per chunk, not once more by a checksum
query that evaluates the workspace's predicate (its joins) a second time.

The binary COPY format (PostgreSQL's "Binary Format"): a header (11-byte signature, 32-bit flags,
32-bit header-extension length and that many bytes) before the first tuple, one tuple per
CopyData message (a 16-bit field count, then per field a 32-bit length and the bytes), and a
16-bit -1 trailer. The hash column is an ``int8`` that is never NULL, so it is always the last 12
bytes of a tuple: length 8, then the value.
"""

from __future__ import annotations

from typing import Iterable, Iterator

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = len(SIGNATURE) + 8
HASH_FIELD = b"\x00\x00\x00\x08"


class StreamFormatError(ValueError):
    """The stream is not binary COPY rows ending in an int8 hash column."""


def batches(messages: Iterable[bytes | memoryview], size: int) -> Iterator[tuple[bytes, int]]:
    """The messages joined into batches of at least ``size`` bytes: (bytes, messages in it)."""
    buf = bytearray()
    n = 0
    for m in messages:
        buf += m
        n += 1
        if len(buf) >= size:
            yield bytes(buf), n
            buf = bytearray()
            n = 0
    if buf:
        yield bytes(buf), n


class RowHashes:
    """The rows of a stream whose last column is each row's hash, passed on without it:
    ``rows`` and ``total`` (the sum of the hashes, a Python int: exact) so far."""

    def __init__(self) -> None:
        self.rows = 0
        self.total = 0

    @property
    def sums(self) -> list[int | str]:
        """[rows, sum as text]: how a chunk records its source side (as verify's sums are kept)."""
        return [self.rows, str(self.total)]

    def batches(self, messages: Iterable[bytes | memoryview], size: int) -> Iterator[tuple[bytes, int]]:
        """Like :func:`batches`, each tuple without its hash column: (bytes, rows in it)."""
        fb = int.from_bytes
        buf = bytearray()
        rows = total = 0
        count: bytes | None = None  # the field count the target gets (one less), the same for every row
        first = True
        for m in messages:
            if first:
                first = False
                if bytes(m[: len(SIGNATURE)]) != SIGNATURE or len(m) < HEADER:
                    raise StreamFormatError("not a binary COPY stream (no header)")
                end = HEADER + fb(m[HEADER - 4:HEADER], "big")
                buf += m[:end]
                m = m[end:]
                if not m:
                    continue
            if len(m) == 2:  # the trailer
                buf += m
                continue
            if count is None:
                if m[-12:-8] != HASH_FIELD:
                    raise StreamFormatError("the rows do not end in an 8-byte hash column")
                count = (fb(m[:2], "big") - 1).to_bytes(2, "big")
            buf += count
            buf += m[2:-12]
            total += fb(m[-8:], "big", signed=True)
            rows += 1
            if len(buf) >= size:
                self.rows += rows
                self.total += total
                yield bytes(buf), rows
                buf = bytearray()
                rows = total = 0
        self.rows += rows
        self.total += total
        if buf:
            yield bytes(buf), rows
