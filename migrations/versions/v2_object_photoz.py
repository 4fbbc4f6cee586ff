"""Schema v2: Object photometric redshifts (DPDD photoZ, photoZ_pest), deferred by v1.

Revision ID: v2
Revises: v1
"""

from __future__ import annotations

from dpdb.migrate import revision_connection
from dpdb.registry.catalogs import upgrade_catalogs
from dpdb.registry.versions import record_version

revision = "v2"
down_revision = "v1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = revision_connection()
    upgrade_catalogs(conn, 1, 2)
    record_version(conn, 2)


def downgrade() -> None:
    raise RuntimeError("schemas are append-only; there is no downgrade")
