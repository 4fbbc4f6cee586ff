"""Catalog schemas (the prompt catalog and each data release): creation, upgrade and the catalog
registry ``dpdb_meta.catalog``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from dpdb.errors import ReleaseStateError
from dpdb.model.ddl import added_columns_ddl, catalog_ddl, meta_ddl

from .states import WRITABLE, CatalogKind, names

__all__ = [
    "Catalog",
    "create_meta",
    "create_catalog",
    "upgrade_catalogs",
    "find_catalog",
    "all_catalogs",
    "queue_all_catalogs",
    "present_catalog_names",
    "writable_catalog",
    "forget_catalog",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Catalog:
    """A catalog schema registered in ``dpdb_meta.catalog``."""

    name: str
    kind: CatalogKind
    schema_version: int
    partition_order: int
    created_at: datetime | None


def execute_ddl(conn: psycopg.Connection, statements: list[str]) -> None:
    """Run generated DDL in one round trip (simple query protocol, same transaction)."""
    if statements:
        # Generated from felis and our own identifiers, never from user input; as bytes, psycopg
        # sends it as one multi-statement script.
        conn.execute(";\n".join(statements).encode())


def create_meta(conn: psycopg.Connection, version: int, since: int | None = None) -> None:
    """Create the ``dpdb_meta`` tables at schema ``version`` (only what is new since ``since``)."""
    execute_ddl(conn, meta_ddl(version, since))


_COLUMNS = "name, kind, schema_version, partition_order, created_at"


def _catalog(row: tuple[Any, ...]) -> Catalog:
    return Catalog(row[0], CatalogKind(row[1]), int(row[2]), int(row[3]), row[4])


def find_catalog(conn: psycopg.Connection, name: str) -> Catalog | None:
    """Catalog ``name``, or None if there is no such catalog (never created, or unloaded)."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM dpdb_meta.catalog WHERE name = %s", (name,)).fetchone()
    return _catalog(row) if row else None


def all_catalogs(conn: psycopg.Connection) -> list[Catalog]:
    """Every registered catalog, by name."""
    return queue_all_catalogs(conn)()


def queue_all_catalogs(conn: psycopg.Connection) -> Callable[[], list[Catalog]]:
    """:func:`all_catalogs` queued in the caller's pipeline: the returned function gives them once the
    pipeline has synced."""
    cur = conn.execute(f"SELECT {_COLUMNS} FROM dpdb_meta.catalog ORDER BY name")  # noqa: S608
    return lambda: [_catalog(r) for r in cur.fetchall()]


def present_catalog_names(conn: psycopg.Connection) -> list[str]:
    """Names of the registered catalogs whose schema exists in the database, sorted."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT name FROM dpdb_meta.catalog WHERE to_regnamespace(quote_ident(name)) IS NOT NULL "
            "ORDER BY name"
        )
    ]


def create_catalog(
    conn: psycopg.Connection,
    name: str,
    kind: CatalogKind | str,
    version: int,
    partition_order: int,
    weights: Sequence[float] | None = None,
) -> None:
    """Create catalog schema ``name`` with all its tables, partitions and indexes, and register it.

    While shards are registered a release is distributed over them, balanced by
    ``weights`` (rows per partition; default: equal), see dpdb/shards/placement.py.
    """
    kind = CatalogKind(kind)
    log.info("creating %s catalog %s (schema v%d, partition order %d)", kind, name, version, partition_order)
    from dpdb.shards import placement  # late: the shards package builds on the registry

    if kind is CatalogKind.RELEASE and placement.is_sharded(conn):
        # Each shard enforces the keys of its partitions; validation checks them across the release.
        placement.create_sharded_catalog(conn, name, version, partition_order, weights)
    else:
        execute_ddl(conn, catalog_ddl(name, version, kind, partition_order))
        from dpdb.keymap import create_keymaps  # keys unique across each partitioned table

        create_keymaps(conn, name, version, str(kind))
    conn.execute(
        "INSERT INTO dpdb_meta.catalog (name, kind, schema_version, partition_order, created_at) "
        "VALUES (%s, %s, %s, %s, now())",
        (name, str(kind), version, partition_order),
    )


def upgrade_catalogs(conn: psycopg.Connection, old: int, new: int) -> None:
    """Bring every registered catalog from schema ``old`` to ``new`` (append-only: add columns/tables)."""
    catalogs = conn.execute(
        "SELECT name, kind, partition_order FROM dpdb_meta.catalog WHERE schema_version = %s", (old,)
    ).fetchall()
    from dpdb.shards import placement  # late: the shards package builds on the registry

    for name, kind, order in catalogs:
        # A sharded release changes on its shards first (idempotently), then on the coordinator.
        sharded = placement.upgrade_sharded_ddl(conn, name, old, new, order) if kind == "release" else None
        if sharded is None:
            execute_ddl(conn, added_columns_ddl(name, kind, old, new, order))
        else:
            statements, attach = sharded
            execute_ddl(conn, statements)
            attach(conn)
        conn.execute("UPDATE dpdb_meta.catalog SET schema_version = %s WHERE name = %s", (new, name))


def writable_catalog(conn: psycopg.Connection, name: str) -> Catalog:
    """Catalog ``name`` if data may be loaded into it, else a named error."""
    found = find_catalog(conn, name)
    if found is None:
        known = [c.name for c in all_catalogs(conn)]
        raise ReleaseStateError(f"target {name} does not exist (catalogs: {', '.join(known)})")
    if found.kind is CatalogKind.RELEASE:
        row = conn.execute("SELECT state FROM dpdb_meta.release WHERE name = %s", (name,)).fetchone()
        if row is None or row[0] not in WRITABLE:
            raise ReleaseStateError(
                f"release {name} is {row[0] if row else 'unregistered'}; only "
                f"{names(WRITABLE)} releases can be loaded into"
            )
    return found


def forget_catalog(conn: psycopg.Connection, name: str) -> None:
    """Unregister catalog ``name`` (its schema has been dropped by the caller in this transaction)."""
    conn.execute("DELETE FROM dpdb_meta.catalog WHERE name = %s", (name,))
