"""Deprecated alias of :mod:`dpdb.registry.catalogs` (with the old tuple-returning helpers) for branches
written before the registry. Nothing in dpdb imports it; delete it once no branch in flight does."""

from __future__ import annotations

import psycopg

from dpdb.registry.catalogs import create_catalog, create_meta, find_catalog, upgrade_catalogs
from dpdb.registry.catalogs import writable_catalog as _writable
from dpdb.registry.states import WRITABLE as WRITABLE_RELEASE_STATES
from dpdb.registry.versions import record_version

__all__ = [
    "create_meta",
    "create_catalog",
    "upgrade_catalogs",
    "record_version",
    "catalog_info",
    "writable_catalog",
    "WRITABLE_RELEASE_STATES",
]


def catalog_info(conn: psycopg.Connection, name: str) -> tuple[str, int] | None:
    """(kind, schema version) of catalog ``name``; use :func:`dpdb.registry.catalogs.find_catalog`."""
    found = find_catalog(conn, name)
    return (str(found.kind), found.schema_version) if found else None


def writable_catalog(conn: psycopg.Connection, name: str) -> tuple[str, int]:
    """(kind, schema version) of a loadable catalog; use :func:`dpdb.registry.catalogs.writable_catalog`."""
    found = _writable(conn, name)
    return str(found.kind), found.schema_version
