"""Schema v8: citable queries. New bookkeeping only: the table dpdb_meta.citation; catalog tables are
unchanged.

Revision ID: v8
Revises: v7
"""

from __future__ import annotations

from dpdb.migrate import revision_connection
from dpdb.registry.catalogs import create_meta, upgrade_catalogs
from dpdb.registry.versions import record_version

revision = "v8"
down_revision = "v7"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = revision_connection()
    create_meta(conn, 8, since=7)
    upgrade_catalogs(conn, 7, 8)
    record_version(conn, 8)


def downgrade() -> None:
    raise RuntimeError("schemas are append-only; there is no downgrade")
