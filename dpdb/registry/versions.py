"""The schema version in force (``dpdb_meta.schema_version``): one row per version applied, with the
dpdb version that applied it."""

from __future__ import annotations

import psycopg

from dpdb._version import code_version

__all__ = ["database_version", "applied_by", "record_version"]


def database_version(conn: psycopg.Connection) -> int | None:
    """Schema version in force in the database (None: dpdb was never set up there)."""
    present = conn.execute("SELECT to_regclass('dpdb_meta.schema_version')").fetchone()
    if not present or present[0] is None:
        return None
    row = conn.execute("SELECT max(version) FROM dpdb_meta.schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else None


def applied_by(conn: psycopg.Connection) -> tuple[int | None, str | None]:
    """(schema version in force, the dpdb version that applied it)."""
    row = conn.execute(
        "SELECT version, code_version FROM dpdb_meta.schema_version ORDER BY version DESC LIMIT 1"
    ).fetchone()
    return (int(row[0]), row[1]) if row else (None, None)


def record_version(conn: psycopg.Connection, version: int) -> None:
    """Record that schema ``version`` is now in force, applied by this code."""
    conn.execute(
        "INSERT INTO dpdb_meta.schema_version (version, code_version, applied_at) VALUES (%s, %s, now())",
        (version, code_version()),
    )
