"""The load manifest (``dpdb_meta.load_manifest``): what was loaded, from which file, when, by what.

Loads are idempotent by content: a file whose SHA-256 was already loaded into
the same table and target is skipped; a different content under an already
loaded path is refused unless replaced explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from .files import ParquetFile

__all__ = ["Decision", "decide"]


@dataclass(frozen=True)
class Decision:
    """What to do with a file: 'new', 'same' (already loaded: skip) or 'changed' (same path, new content)."""

    action: str
    load_ids: tuple[int, ...] = ()  # manifest entries involved (the loaded one, or the ones to replace)


def decide(conn: psycopg.Connection, f: ParquetFile, table: str, target: str) -> Decision:
    """Compare a file with the manifest of ``target``.``table``."""
    same = conn.execute(
        "SELECT load_id FROM dpdb_meta.load_manifest WHERE sha256 = %s AND table_name = %s AND target = %s",
        (f.sha256, table, target),
    ).fetchall()
    if same:
        return Decision("same", tuple(r[0] for r in same))
    changed = conn.execute(
        "SELECT load_id FROM dpdb_meta.load_manifest WHERE path = %s AND table_name = %s AND target = %s",
        (str(f.path), table, target),
    ).fetchall()
    if changed:
        return Decision("changed", tuple(r[0] for r in changed))
    return Decision("new")
