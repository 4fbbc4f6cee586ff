"""Data releases: each a catalog schema (dr1, dr2, ...) with a lifecycle state in ``dpdb_meta.release``."""

from __future__ import annotations

import re

import psycopg

from .catalogs import create_catalog
from .errors import ReleaseStateError

__all__ = ["RESERVED_NAMES", "active_release", "create_release"]

RESERVED_NAMES = frozenset(
    {"prompt", "current", "previous", "samples", "dpdb_meta", "public", "prompt_as_of"}
)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def create_release(conn: psycopg.Connection, name: str, version: int, partition_order: int) -> None:
    """Create release ``name`` (a new catalog schema at schema ``version``) in state ``created``."""
    if not _NAME.match(name) or name in RESERVED_NAMES or name.startswith("pg_"):
        raise ReleaseStateError(
            f"invalid release name {name!r} (lower-case letters, digits and _, not a reserved schema name)"
        )
    exists = conn.execute("SELECT state FROM dpdb_meta.release WHERE name = %s", (name,)).fetchone()
    if exists:
        raise ReleaseStateError(f"release {name} already exists (state {exists[0]})")
    create_catalog(conn, name, "release", version, partition_order)
    conn.execute(
        "INSERT INTO dpdb_meta.release (name, state, created_at) VALUES (%s, 'created', now())", (name,)
    )


def active_release(conn: psycopg.Connection) -> str | None:
    """Name of the active data release (the one ``current`` points at), if any."""
    row = conn.execute("SELECT name FROM dpdb_meta.release WHERE state = 'active'").fetchone()
    return row[0] if row else None
