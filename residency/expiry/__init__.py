"""Retention enforcement (issue 14): the rules of regions.yaml's ``retention:`` section
(:mod:`residency.retention_rules`) applied to a region's database, in batches, each run leaving a
deletion record in the control plane. An engine beside the mover, whose reach graph it uses."""

from typing import Any

from residency.catalogue import Catalogue

from .sweep import SweepReport, sweep

__all__ = ["SweepReport", "sweep", "plan", "run"]


def plan(cat: Catalogue, conns: Any, **kwargs: Any) -> SweepReport:
    """What the rules would delete now (changes nothing): :func:`sweep` with ``mode='plan'``."""
    return sweep(cat, conns, mode="plan", **kwargs)


def run(cat: Catalogue, conns: Any, **kwargs: Any) -> SweepReport:
    """Delete what the rules expire, in batches, with a deletion record: ``mode='run'``."""
    return sweep(cat, conns, mode="run", **kwargs)
