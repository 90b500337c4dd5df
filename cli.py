"""The checkout's entry to the command line: ``python cli.py ...`` runs ``residency ...``.

The CLI itself is the package :mod:`residency.cli` (installed under the ``residency`` name, like the
rest); this file only lets a checkout run it without installing.
"""

from residency.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
