"""Errors a user can cause or meet, each mapped to the CLI's exit code.

The library raises these; the CLI turns them into one line on stderr and an exit code
(2 for bad input, 1 for a failed operation). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ResidencyError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code = 1


class InputError(ResidencyError):
    """The user's input (a file, an argument, a name) is wrong. Exit code 2."""

    exit_code = 2


class OperationError(ResidencyError):
    """A valid request that could not be carried out. Exit code 1."""

    exit_code = 1


class CatalogueError(InputError):
    """regions.yaml is invalid. Carries every problem found, each already formatted
    as ``file:line:column: message``."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first non-blank line of an exception's message, stripped: how one is shown in a
    one-line report. Without a message: ``default``, or the exception's class name."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__ if default is None else default
