"""`residency`: the command line. Thin: parse, call the library, render.

Every command calls a library function a test can call directly; nothing here holds logic.
Errors the user can cause (:class:`residency.errors.ResidencyError`) end in one line on stderr
and exit code 2 (bad input) or 1 (failed operation); ``--debug`` shows the traceback.

The root group and the shared plumbing are in :mod:`.core`; each command group has its own module,
which registers its commands on import.
"""

from __future__ import annotations

from . import access, audit, backup, controlplane, directory, move, playbook, regions, request, retention, sandbox, stacks  # noqa: F401 - register the groups
from .core import main

__all__ = ["main"]
