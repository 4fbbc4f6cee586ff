"""Schema v9: citable queries. New bookkeeping only: the table dpdb_meta.citation; catalog tables are
unchanged.

Revision ID: v9
Revises: v8 (or the newest earlier version shipped, while v7 and v8 are not merged)
"""

from __future__ import annotations

from dpdb.migrate import revision_connection
from dpdb.model.felis import versions
from dpdb.registry.catalogs import create_meta, upgrade_catalogs
from dpdb.registry.versions import record_version

revision = "v9"
# The chain is v8 -> v9. Until the versions numbered before 9 are all merged, follow the newest shipped.
_previous = max(v for v in versions() if v < 9)
down_revision = f"v{_previous}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = revision_connection()
    create_meta(conn, 9, since=_previous)
    upgrade_catalogs(conn, _previous, 9)
    record_version(conn, 9)


def downgrade() -> None:
    raise RuntimeError("schemas are append-only; there is no downgrade")
