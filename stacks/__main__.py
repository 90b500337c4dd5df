"""The program the pulumi CLI runs for this project (Pulumi.yaml). Its Python language host runs
this directory's ``__main__.py`` with the project's virtualenv (``../.venv``), where ``residency``
is installed (``./run`` installs it, editable), so the package imports like any other library."""

from residency.stacks.program import main

main()
