"""Schema v1: dpdb_meta bookkeeping and the prompt catalog.

Revision ID: v1
Revises:
"""

from __future__ import annotations

from alembic import context

from dpdb.migrate import revision_connection
from dpdb.registry.catalogs import create_catalog, create_meta
from dpdb.registry.versions import record_version

revision = "v1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = revision_connection()
    create_meta(conn, 1)
    create_catalog(conn, "prompt", "prompt", 1, context.config.attributes["partition_order"])
    record_version(conn, 1)


def downgrade() -> None:
    raise RuntimeError("schemas are append-only; there is no downgrade")
