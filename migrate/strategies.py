"""Every move strategy by name: ``snapshot`` (:mod:`.strategy`) and ``online`` (:mod:`.online`).

The one place that knows them all, so neither strategy module needs the other.
"""

from __future__ import annotations

from types import MappingProxyType

from residency.errors import InputError

from .online import ONLINE
from .strategy import SNAPSHOT, Strategy

STRATEGIES = MappingProxyType({s.name: s for s in (SNAPSHOT, ONLINE)})


def get(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InputError(f"unknown strategy '{name}' (known: {', '.join(STRATEGIES)})") from None
