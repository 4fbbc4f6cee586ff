"""Catalog schemas (the prompt catalog and each data release): creation and registry."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg

from ._version import code_version
from .errors import ReleaseStateError
from .schema import added_columns_ddl, catalog_ddl, meta_ddl

__all__ = [
    "create_meta",
    "create_catalog",
    "upgrade_catalogs",
    "record_version",
    "catalog_info",
    "writable_catalog",
    "WRITABLE_RELEASE_STATES",
]

log = logging.getLogger(__name__)


def _execute_all(conn: psycopg.Connection, statements: list[str]) -> None:
    """Run generated DDL in one round trip (simple query protocol, same transaction)."""
    if statements:
        conn.execute(";\n".join(statements).encode())  # type: ignore[call-overload]


def create_meta(conn: psycopg.Connection, version: int, since: int | None = None) -> None:
    """Create the ``dpdb_meta`` bookkeeping tables at schema ``version`` (only those new since ``since``)."""
    _execute_all(conn, meta_ddl(version, since))


def catalog_info(conn: psycopg.Connection, name: str) -> tuple[str, int] | None:
    """(kind, schema version) of catalog ``name``, or None if there is no such catalog."""
    row = conn.execute(
        "SELECT kind, schema_version FROM dpdb_meta.catalog WHERE name = %s", (name,)
    ).fetchone()
    return (row[0], int(row[1])) if row else None


def create_catalog(
    conn: psycopg.Connection,
    name: str,
    kind: str,
    version: int,
    partition_order: int,
    weights: Sequence[float] | None = None,
) -> None:
    """Create catalog schema ``name`` with all its tables, partitions and indexes, and register it.

    While shards are registered a release is distributed over them, balanced by
    ``weights`` (rows per partition; default: equal), see dpdb/shards/placement.py.
    """
    log.info("creating %s catalog %s (schema v%d, partition order %d)", kind, name, version, partition_order)
    from .shards import placement  # late: the shards package builds on this module's neighbours

    if kind == "release" and placement.is_sharded(conn):
        placement.create_sharded_catalog(conn, name, version, partition_order, weights)
    else:
        _execute_all(conn, catalog_ddl(name, version, kind, partition_order))
    conn.execute(
        "INSERT INTO dpdb_meta.catalog (name, kind, schema_version, partition_order, created_at) "
        "VALUES (%s, %s, %s, %s, now())",
        (name, kind, version, partition_order),
    )


def upgrade_catalogs(conn: psycopg.Connection, old: int, new: int) -> None:
    """Bring every registered catalog from schema ``old`` to ``new`` (append-only: add columns/tables)."""
    catalogs = conn.execute(
        "SELECT name, kind, partition_order FROM dpdb_meta.catalog WHERE schema_version = %s", (old,)
    ).fetchall()
    for name, kind, order in catalogs:
        _execute_all(conn, added_columns_ddl(name, kind, old, new, order))
        conn.execute("UPDATE dpdb_meta.catalog SET schema_version = %s WHERE name = %s", (new, name))


def record_version(conn: psycopg.Connection, version: int) -> None:
    conn.execute(
        "INSERT INTO dpdb_meta.schema_version (version, code_version, applied_at) VALUES (%s, %s, now())",
        (version, code_version()),
    )


WRITABLE_RELEASE_STATES = ("created", "loaded", "failed", "restoring")
"""Release states that accept loads; validated, active, retired and archived releases are frozen."""


def writable_catalog(conn: psycopg.Connection, name: str) -> tuple[str, int]:
    """(kind, schema version) of catalog ``name`` if data may be loaded into it, else a named error."""
    info = catalog_info(conn, name)
    if info is None:
        known = [r[0] for r in conn.execute("SELECT name FROM dpdb_meta.catalog ORDER BY name")]
        raise ReleaseStateError(f"target {name} does not exist (catalogs: {', '.join(known)})")
    kind, version = info
    if kind == "release":
        state = conn.execute("SELECT state FROM dpdb_meta.release WHERE name = %s", (name,)).fetchone()
        if state is None or state[0] not in WRITABLE_RELEASE_STATES:
            raise ReleaseStateError(
                f"release {name} is {state[0] if state else 'unregistered'}; only "
                f"{', '.join(WRITABLE_RELEASE_STATES)} releases can be loaded into"
            )
    return kind, version
