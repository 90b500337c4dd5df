"""A fresh, isolated "world" inside a running sandbox: its own databases and buckets.

In every region server a new database made from the sample-schema template (``CREATE DATABASE
... TEMPLATE``, fast), a new control-plane database with the control-plane schema, and bucket
names of its own in the sandbox S3. ``World.connections`` points the whole toolkit at them, so
tests and benchmarks can run moves side by side without seeing each other. ``drop()`` removes
everything again (subscriptions and replication slots first, so no slot is left behind).

Moved here from tests/conftest.py (whose ``env`` fixture is now a thin subclass) so the
benchmarks in bench/ reuse the same machinery.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType
from typing import Any

import psycopg
from psycopg import sql

from ..catalogue import Catalogue
from .core import APP_TEMPLATE, CONTROL_TEMPLATE, ensure_anchor, ensure_backup_store, ensure_buckets, read_state, s3_endpoint, server_dsn


class World:
    """Fresh databases (one per region server plus the control plane) and buckets named by ``token``."""

    def __init__(self, catalogue: Catalogue, home: str | os.PathLike[str], token: str):
        from ..connections import Connections, RegionEndpoints

        self.home = str(home)
        self.catalogue = catalogue
        self.token = token
        self.dbname = f"t_{token}"
        self.state = read_state(home) or {}
        self.regions = list(self.state.get("regions", {}))
        self.s3_endpoint = s3_endpoint(home)
        self.buckets: dict[str, dict[str, str]] = {
            r: {b: f"t{token}-{r}-{b}" for b in catalogue.region(r).environment.buckets}
            for r in self.regions
            if r in catalogue.regions
        }
        # each region's backup bucket, in its backup AWS region (residency.backups.store): in the
        # endpoints' bucket map as the logical bucket "backups", not among the replicated buckets
        self.backup_buckets: dict[str, str] = {r: f"t{token}-{r}-backups" for r in self.buckets}
        self.control_dsn = server_dsn(home, "control", self.dbname)
        eps = {
            r: RegionEndpoints(
                r, catalogue.region(r).aws_region, server_dsn(home, r, self.dbname),
                self.s3_endpoint, MappingProxyType({**self.buckets[r], "backups": self.backup_buckets[r]}), catalogue.region(r).backup_region,
            )
            for r in self.buckets
        }
        from ..connections import AnchorConfig
        from .core import AUDIT_AWS_REGION

        self.anchor = AnchorConfig(f"alias/t{token}-audit", f"t{token}-audit-digests", AUDIT_AWS_REGION, self.s3_endpoint)
        self.connections = Connections(self.control_dsn, MappingProxyType(eps), f"sandbox:{self.home}", self.anchor)
        self._roles: list[tuple[str, str]] = []  # (server, role) made for this world, dropped with it

    def dsn(self, region: str) -> str:
        return self.connections.region(region).dsn

    def admin_dsn(self, name: str) -> str:
        """The ``postgres`` maintenance database of a server ('control' or a region)."""
        return server_dsn(self.home, name)

    def s3(self, region: str, backup: bool = False) -> Any:
        """An S3 client for a region (``backup``: in its backup region, where the replicas are)."""
        from ..connections import s3_client

        ep = self.connections.region(region)
        return s3_client(ep, ep.backup_aws_region if backup else None)

    def seed(self, workspaces: int = 6, rows: int = 3000, seed: int = 1, **kwargs: Any) -> Any:
        from .seed import seed as do_seed

        return do_seed(self.catalogue, self.connections, workspaces=workspaces, rows=rows, seed=seed, **kwargs)

    # ---- lifecycle
    def create_database(self, server: str, template: str | None = None) -> None:
        """(Re)create this world's database on one server ('control' or a region) from its template."""
        template = template or (CONTROL_TEMPLATE if server == "control" else APP_TEMPLATE)
        with psycopg.connect(server_dsn(self.home, server), autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(self.dbname), sql.Identifier(template)))

    def create(self) -> None:
        jobs = ["control", *self.regions]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            for f in [pool.submit(self.create_database, j) for j in jobs]:
                f.result()
        ensure_buckets(self.catalogue, self.state, names=self.buckets)
        ensure_backup_store(self.catalogue, self.state, names=self.backup_buckets)
        # its own audit key and Object Lock bucket (compliance mode: the bucket outlives the world)
        ensure_anchor(self.state, self.anchor.kms_key_id, self.anchor.bucket, self.anchor.aws_region)

    def _drop_subscriptions(self, server: str) -> list[str]:
        problems: list[str] = []
        try:
            with psycopg.connect(server_dsn(self.home, server, self.dbname), autocommit=True) as c:
                for (name,) in c.execute("SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = current_database()").fetchall():
                    ident = sql.Identifier(name)
                    c.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
                    c.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
                    c.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))
        except psycopg.OperationalError:
            pass  # database never created or already gone
        except psycopg.Error as exc:
            problems.append(f"{server}: subscriptions: {exc}")
        return problems

    def _drop_slots_and_database(self, server: str) -> list[str]:
        problems: list[str] = []
        try:
            with psycopg.connect(server_dsn(self.home, server), autocommit=True) as c:
                c.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = %s AND active_pid IS NOT NULL",
                    (self.dbname,),
                )
                for (slot,) in c.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (self.dbname,)).fetchall():
                    try:
                        c.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    except psycopg.Error as exc:
                        problems.append(f"{server}: slot {slot}: {exc}")
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.dbname)))
        except psycopg.Error as exc:
            problems.append(f"{server}: drop database {self.dbname}: {exc}")
        return problems

    def recreate_database(self, server: str, template: str | None = None) -> list[str]:
        """Drop this world's database on one server (subscriptions and slots first) and create it
        again, empty, from its template; returns problems met while dropping."""
        problems = self._drop_subscriptions(server) + self._drop_slots_and_database(server)
        self.create_database(server, template)
        return problems

    def drop(self) -> list[str]:
        """Drop the world's databases (subscriptions and slots first) and buckets; returns problems."""
        problems: list[str] = []
        servers = ["control", *self.regions]
        # 1. subscriptions in our databases: detach from their slots, then drop
        for s in servers:
            problems += self._drop_subscriptions(s)
        # 2. replication slots on our databases, then the databases
        for s in servers:
            problems += self._drop_slots_and_database(s)
        # 2b. roles made for this world (grant_role with a fresh name)
        for server, role in self._roles:
            try:
                from .roles import drop_role

                with psycopg.connect(server_dsn(self.home, server), autocommit=True) as c:
                    drop_role(c, role)
            except psycopg.Error as exc:
                problems.append(f"{server}: drop role {role}: {exc}")
        # 3. buckets
        # 3. buckets (every version and delete marker first: they are versioned) and their replicas
        try:
            for r, names in self.buckets.items():
                ep = self.connections.region(r)
                for logical in [*names, "backups"]:
                    if logical == "backups":  # in the backup region, with no replica
                        pairs = ((ep.bucket(logical), self.s3(r, backup=True)),)
                    else:
                        pairs = ((ep.bucket(logical), self.s3(r)), (ep.replica_bucket(logical), self.s3(r, backup=True)))
                    for bucket, client in pairs:
                        try:
                            empty_bucket(client, bucket)
                            client.delete_bucket(Bucket=bucket)
                        except client.exceptions.NoSuchBucket:
                            pass
        except Exception as exc:  # noqa: BLE001 - report, don't mask the caller's own result
            problems.append(f"s3: {exc}")
        return problems

    # ---- non-superuser roles (see residency.sandbox.roles)
    def grant_role(self, region: str, role: str | None = None, *, owner: bool = True, set_replication_role: bool = True) -> str:
        """A DSN of this world's database in ``region`` as a non-superuser LOGIN role, granted
        what a managed database's admin could grant. ``role`` None: the sandbox's standard
        ``residency_mover`` (SET on session_replication_role, member of the tables' owner);
        otherwise a role of that name is created on the server for this world (dropped with it)
        with exactly ``owner`` (membership in the owner role ``residency_app``) and
        ``set_replication_role`` (GRANT SET ON PARAMETER session_replication_role). Either way,
        this world's tables there are handed to ``residency_app`` first."""
        from psycopg.conninfo import make_conninfo

        from . import roles

        with psycopg.connect(server_dsn(self.home, region), autocommit=True) as admin:
            if role is None:
                role = roles.MOVER
                roles.ensure_mover(admin)
            else:
                roles.create_role(admin, role, set_replication_role=set_replication_role, owner_member=owner)
                self._roles.append((region, role))
        with psycopg.connect(self.dsn(region), autocommit=True) as c:
            from residency.migrate.introspect import app_schema

            roles.grant_database(c, role, owned_by_app=True, schema=app_schema())
        return make_conninfo(self.dsn(region), user=role)

    def connections_as(self, dsns: dict[str, str]) -> Any:
        """This world's connections with some regions' DSNs replaced (e.g. by :meth:`grant_role`'s)."""
        from dataclasses import replace

        from ..connections import Connections

        eps = {r: (replace(ep, dsn=dsns[r]) if r in dsns else ep) for r, ep in self.connections.regions.items()}
        return Connections(self.connections.control_dsn, MappingProxyType(eps), self.connections.source, self.connections.anchor)

def empty_bucket(client: Any, bucket: str) -> None:
    """Delete every object version and delete marker of a bucket."""
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        items = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in (page.get("Versions") or []) + (page.get("DeleteMarkers") or [])]
        for i in range(0, len(items), 1000):
            client.delete_objects(Bucket=bucket, Delete={"Objects": items[i:i + 1000], "Quiet": True})
