"""Schema v6: release states and catalog kinds checked by the database. CHECK constraints on
dpdb_meta.release.state and dpdb_meta.catalog.kind hold the values of the enums in
dpdb.registry.states; catalog tables are unchanged.

Revision ID: v6
Revises: v5
"""

from __future__ import annotations

from dpdb.migrate import revision_connection
from dpdb.registry.catalogs import create_meta, upgrade_catalogs
from dpdb.registry.versions import record_version

revision = "v6"
down_revision = "v5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = revision_connection()
    create_meta(conn, 6, since=5)
    upgrade_catalogs(conn, 5, 6)
    record_version(conn, 6)


def downgrade() -> None:
    raise RuntimeError("schemas are append-only; there is no downgrade")
