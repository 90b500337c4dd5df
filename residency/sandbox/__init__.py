"""The sandbox: every region, the control plane and S3 on one machine (see :mod:`.core`).

``up``, ``status``, ``down``, ``reset``, ``destroy`` and :func:`sandbox_connections` (used by
:func:`residency.connections.resolve`) live in :mod:`.core`; seeding in :mod:`.seed`; the demo
in :mod:`.demo`.
"""

from .core import (
    APP_DB,
    APP_TEMPLATE,
    CONTROL_DB,
    CONTROL_TEMPLATE,
    HOME_ENV,
    DownResult,
    SandboxStatus,
    ServerStatus,
    default_home,
    destroy,
    down,
    ensure_buckets,
    read_state,
    region_number,
    reset,
    s3_endpoint,
    sandbox_connections,
    server_dsn,
    status,
    up,
)

__all__ = [
    "APP_DB", "APP_TEMPLATE", "CONTROL_DB", "CONTROL_TEMPLATE", "HOME_ENV", "DownResult", "SandboxStatus",
    "ServerStatus", "default_home", "destroy", "down", "ensure_buckets", "read_state", "region_number", "reset",
    "s3_endpoint", "sandbox_connections", "server_dsn", "status", "up",
]
