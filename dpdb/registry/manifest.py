"""The load manifest (``dpdb_meta.load_manifest``): what was loaded, from which file, when, by what.

Loads are idempotent by content: a file whose SHA-256 was already loaded into
the same table and target is skipped; a different content under an already
loaded path is refused unless replaced explicitly. All functions run on the
ADBC cursor of the file's load transaction, after :func:`lock`; the readers
(:func:`rows_by_target`, :func:`entries`) and :func:`forget_target` take a psycopg connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import adbc_driver_postgresql.dbapi as adbc
import psycopg
from psycopg.rows import dict_row

from dpdb._version import code_version

if TYPE_CHECKING:  # the ETL builds on the registry, not the other way round
    from dpdb.etl.files import ParquetFile

__all__ = [
    "Decision",
    "lock",
    "lock_path",
    "has_path",
    "same_content",
    "set_checksum",
    "PENDING",
    "decide",
    "add_entry",
    "set_row_count",
    "remove_entries",
    "rows_by_target",
    "forget_target",
    "entries",
    "is_recorded",
]


@dataclass(frozen=True)
class Decision:
    """What to do with a file: 'new', 'same' (already loaded: skip) or 'changed' (same path, new content)."""

    action: str
    load_ids: tuple[int, ...] = ()  # manifest entries involved (the loaded one, or the ones to replace)


def lock(cur: adbc.Cursor, f: ParquetFile) -> None:
    """Serialize loads of the same content until the transaction ends (no double load by racing runs)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", parameters=(f.sha256,))
    cur.fetchall()


def lock_path(cur: adbc.Cursor, path: str) -> None:
    """Serialize loads of the same path until the transaction ends (taken before :func:`lock`)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))", parameters=(path,))
    cur.fetchall()


PENDING = "pending"
"""The ``sha256`` of a manifest row whose file is still being hashed while it streams (not committed)."""


def has_path(cur: adbc.Cursor, path: str, table: str, target: str) -> bool:
    """Some file under ``path`` was loaded into ``target``.``table`` (its content must be compared first)."""
    return bool(_load_ids(cur, "path", path, table, target))


def same_content(cur: adbc.Cursor, sha256: str, table: str, target: str) -> tuple[int, ...]:
    """Loads of this content into ``target``.``table`` (committed, or of this transaction)."""
    return _load_ids(cur, "sha256", sha256, table, target)


def set_checksum(cur: adbc.Cursor, load_id: int, sha256: str) -> None:
    """Record the content hash computed while the file streamed (see :data:`PENDING`)."""
    cur.execute(
        "UPDATE dpdb_meta.load_manifest SET sha256 = $1 WHERE load_id = $2", parameters=(sha256, load_id)
    )


def _load_ids(cur: adbc.Cursor, column: str, value: str, table: str, target: str) -> tuple[int, ...]:
    cur.execute(
        f"SELECT load_id FROM dpdb_meta.load_manifest "
        f"WHERE {column} = $1 AND table_name = $2 AND target = $3",
        parameters=(value, table, target),
    )
    return tuple(int(r[0]) for r in cur.fetchall())


def decide(cur: adbc.Cursor, f: ParquetFile, table: str, target: str) -> Decision:
    """Compare a file with the manifest of ``target``.``table``."""
    same = _load_ids(cur, "sha256", f.sha256, table, target)
    if same:
        return Decision("same", same)
    changed = _load_ids(cur, "path", str(f.path), table, target)
    return Decision("changed", changed) if changed else Decision("new")


def add_entry(cur: adbc.Cursor, f: ParquetFile, table: str, target: str, schema_version: int) -> int:
    """Insert the manifest row of a load (row count filled in by :func:`set_row_count`); return its id."""
    cur.execute(
        "INSERT INTO dpdb_meta.load_manifest (path, size, sha256, table_name, target, row_count, "
        "schema_version, software_version, loaded_at) "
        "VALUES ($1, $2, $3, $4, $5, 0, $6, $7, now()) RETURNING load_id",
        parameters=(str(f.path), f.size, f.sha256, table, target, schema_version, code_version()),
    )
    return int(cur.fetchone()[0])


def set_row_count(cur: adbc.Cursor, load_id: int, rows: int) -> None:
    cur.execute(
        "UPDATE dpdb_meta.load_manifest SET row_count = $1, loaded_at = now() WHERE load_id = $2",
        parameters=(rows, load_id),
    )


def remove_entries(cur: adbc.Cursor, load_ids: tuple[int, ...]) -> None:
    """Delete manifest entries (of a file being replaced; its rows are deleted by the caller)."""
    ids = ",".join(str(int(i)) for i in load_ids)
    cur.execute(f"DELETE FROM dpdb_meta.load_manifest WHERE load_id IN ({ids})")


def rows_by_target(conn: psycopg.Connection) -> dict[str, dict[str, int]]:
    """Rows loaded, by target catalog and table (exact, from the manifest, without a scan)."""
    out: dict[str, dict[str, int]] = {}
    for target, table, rows in conn.execute(
        "SELECT target, table_name, sum(row_count) FROM dpdb_meta.load_manifest GROUP BY 1, 2"
    ):
        out.setdefault(target, {})[table] = int(rows)
    return out


def forget_target(conn: psycopg.Connection, target: str) -> None:
    """Delete the entries of catalog ``target`` (its tables are being dropped in this transaction)."""
    conn.execute("DELETE FROM dpdb_meta.load_manifest WHERE target = %s", (target,))


def entries(conn: psycopg.Connection, load_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The manifest entries of ``load_ids`` by load id (path, size, sha256, table_name, target,
    row_count, schema_version, software_version, loaded_at)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT load_id, path, size, sha256, table_name, target, row_count, schema_version, "
            "software_version, loaded_at FROM dpdb_meta.load_manifest WHERE load_id = ANY(%s)",
            (list(load_ids),),
        ).fetchall()
    return {int(r["load_id"]): r for r in rows}


def is_recorded(conn: psycopg.Connection, load_id: int) -> bool:
    """Load ``load_id`` is in the manifest (its transaction committed): a shard's prepared part of it
    is to be committed, else rolled back (dpdb/shards/commit.py)."""
    row = conn.execute("SELECT 1 FROM dpdb_meta.load_manifest WHERE load_id = %s", (load_id,)).fetchone()
    return row is not None
