"""``dpdb release list``: every release with its state, rows per table, size and lifecycle times.

Rows of a loaded release come from the load manifest (exact, without a scan),
its size from the catalog (tables, indexes and TOAST); an archived release
reports its archive's rows and bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from dpdb.config import Settings
from dpdb.db import connect
from dpdb.model.layout import RELEASE_TABLES
from dpdb.registry import manifest
from dpdb.registry.releases import all_releases

__all__ = ["ReleaseRow", "list_releases"]


@dataclass(frozen=True)
class ReleaseRow:
    name: str
    state: str
    schema_version: int | None
    origin: int | None
    rows: dict[str, int]
    bytes: int
    bytes_where: str  # "database", "archive" or ""
    created_at: datetime | None
    validated_at: datetime | None
    activated_at: datetime | None
    archived_at: datetime | None
    restored_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def rows_text(self) -> str:
        return ", ".join(f"{t} {self.rows[t]:,}" for t in RELEASE_TABLES if self.rows.get(t)) or "0"

    def size_text(self) -> str:
        if not self.bytes:
            return ""
        value, unit = float(self.bytes), "B"
        for unit in ("B", "kB", "MB", "GB", "TB"):
            if value < 1024 or unit == "TB":
                break
            value /= 1024
        return f"{value:.1f} {unit}" + (" (archive)" if self.bytes_where == "archive" else "")


def list_releases(settings: Settings) -> list[ReleaseRow]:
    out = []
    with connect(settings) as conn:
        loaded_rows = manifest.rows_by_target(conn)
        sizes: dict[str, int] = dict(
            conn.execute(
                "SELECT n.nspname, sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' GROUP BY 1"
            ).fetchall()
        )
        for rel in all_releases(conn):
            if rel.loaded:
                rows, size, where = loaded_rows.get(rel.name, {}), int(sizes.get(rel.name, 0)), "database"
            else:
                rows, size, where = rel.archive_rows or {}, rel.archive_bytes or 0, "archive"
            out.append(
                ReleaseRow(
                    rel.name,
                    rel.state,
                    rel.schema_version,
                    rel.origin,
                    rows,
                    size,
                    where,
                    rel.created_at,
                    rel.validated_at,
                    rel.activated_at,
                    rel.archived_at,
                    rel.restored_at,
                )  # fmt: skip
            )
    return out
