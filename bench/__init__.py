"""Benchmarks of the workspace mover (issue 8): copy against the plain psql pipe, verify, memory,
fence and plan time. Run ``.venv/bin/python -m bench`` (see README.md, "Benchmarks")."""
