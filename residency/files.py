"""Reading the files a user hands us: regular files only, with a size limit, as UTF-8 text.

One helper for every input file (regions.yaml, the connections file, a CSV batch), so that
``/dev/zero`` is refused instead of eating memory, a FIFO is refused instead of hanging, and a
directory or a missing file is one line naming the path.
"""

from __future__ import annotations

import os
import stat

from .errors import InputError

MiB = 1024 * 1024


def read_bytes(path: str | os.PathLike[str], *, max_bytes: int, what: str = "file", shown: str | None = None) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; InputError (one line) otherwise.

    The file is opened non-blocking (a FIFO never blocks the open) and checked with ``fstat`` on
    the descriptor itself, so what is checked is what is read; then at most ``max_bytes + 1``
    bytes are read, so a file that grows meanwhile is still refused.
    """
    name = shown if shown is not None else str(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(os.fspath(path), flags)
    except FileNotFoundError:
        raise InputError(f"{name}: no such {what}") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, expected a {what}") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{name}: is a directory, expected a {what}")
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise InputError(f"{name}: is {kind}, expected a regular {what}")
        if st.st_size > max_bytes:
            raise InputError(f"{name}: is {_size(st.st_size)}; a {what} is at most {_size(max_bytes)}")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0:
            try:
                b = os.read(fd, min(left, MiB))
            except OSError as exc:
                raise InputError(f"{name}: cannot read: {exc.strerror or type(exc).__name__}") from None
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise InputError(f"{name}: is larger than {_size(max_bytes)}, the most a {what} may be")
        return data
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike[str], *, max_bytes: int, what: str = "file", shown: str | None = None,
              encoding: str = "utf-8") -> str:
    """:func:`read_bytes`, decoded; a file that is not UTF-8 (a binary) is one line naming where."""
    raw = read_bytes(path, max_bytes=max_bytes, what=what, shown=shown)
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{shown if shown is not None else path}:{line}: byte 0x{raw[exc.start]:02x} is not UTF-8; a {what} is UTF-8 text") from None


def _size(n: int) -> str:
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"
