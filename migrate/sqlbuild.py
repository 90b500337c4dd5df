"""The one object the mover's phases compose SQL through: :class:`Builder`.

Each phase's statements live next to it, in :mod:`migrate.sql` (one module per phase, each a
mixin over :class:`migrate.sql.reach.ReachSql`, the predicate "this row belongs to workspace
W"); ``Builder`` only composes them, so every phase calls ``b.<statement>(...)`` on one builder
made from the move's graph. Identifiers only through ``psycopg.sql.Identifier``, values only as
parameters (``%(ws)s`` is the workspace id), never string formatting.
"""

from __future__ import annotations

from .sql.buckets import BucketSql
from .sql.base import WS
from .sql.chunks import ChunkSql
from .sql.copy import CopySql
from .sql.fence import BYPASS_SETTING, FENCE_SCHEMA, FENCE_TABLE, FenceSql
from .sql.online import ONLINE_CHANGE_IDS, ONLINE_CHANGES, ONLINE_EVENTS, ONLINE_GUARD_FN, ONLINE_SCHEMA, OnlineSql

__all__ = ["Builder", "WS", "BYPASS_SETTING", "FENCE_SCHEMA", "FENCE_TABLE",
           "ONLINE_CHANGE_IDS", "ONLINE_CHANGES", "ONLINE_EVENTS", "ONLINE_GUARD_FN", "ONLINE_SCHEMA"]


class Builder(ChunkSql, BucketSql, CopySql, FenceSql, OnlineSql):
    """Composes every statement the mover runs against a region's database: reach
    (:mod:`.sql.reach`), shared rows (:mod:`.sql.globals`), copy, plan clash checks
    (:mod:`.sql.unique`), checksums, bucketed checksums, the change log (:mod:`.sql.changes`),
    fence, online replication and chunks."""
