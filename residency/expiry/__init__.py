"""Retention enforcement (issue 14): the rules of regions.yaml's ``retention:`` section
(:mod:`residency.retention_rules`) applied to a region's database, in batches, each run leaving a
deletion record in the control plane. An engine beside the mover, whose reach graph it uses."""

from .sweep import SweepReport, sweep

__all__ = ["SweepReport", "sweep", "plan", "run"]


def plan(cat, conns, **kwargs):  # type: ignore[no-untyped-def]
    """What the rules would delete now (changes nothing): :func:`sweep` with ``mode='plan'``."""
    return sweep(cat, conns, mode="plan", **kwargs)


def run(cat, conns, **kwargs):  # type: ignore[no-untyped-def]
    """Delete what the rules expire, in batches, with a deletion record: ``mode='run'``."""
    return sweep(cat, conns, mode="run", **kwargs)
