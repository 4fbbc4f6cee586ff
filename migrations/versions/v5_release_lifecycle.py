"""Schema v5: the data-release lifecycle. New bookkeeping only: release columns (ID origin, expected
rows, validation report, archive), the activation history; catalog tables are unchanged.

Revision ID: v5
Revises: v4
"""

from __future__ import annotations

from dpdb.migrate import revision_connection
from dpdb.registry.catalogs import create_meta, upgrade_catalogs
from dpdb.registry.versions import record_version

revision = "v5"
down_revision = "v4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = revision_connection()
    create_meta(conn, 5, since=4)
    upgrade_catalogs(conn, 4, 5)
    record_version(conn, 5)


def downgrade() -> None:
    raise RuntimeError("schemas are append-only; there is no downgrade")
