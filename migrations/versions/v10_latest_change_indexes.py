"""Schema v10: indexes on the times of the catalog's changes (visit ingests, relinks, release
activations). Every as-of query, TAP request and citation reads their maximum (the latest change,
docs/architecture.md decision 14); without an index that was a scan of every visit ever ingested
(16–24 ms after a year of visits, benchmarks/README.md). Catalog tables are unchanged.

Revision ID: v10
Revises: v9
"""

from __future__ import annotations

from dpdb.migrate import revision_connection
from dpdb.registry.catalogs import create_meta, upgrade_catalogs
from dpdb.registry.versions import record_version

revision = "v10"
down_revision = "v9"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = revision_connection()
    create_meta(conn, 10, since=9)
    upgrade_catalogs(conn, 9, 10)
    record_version(conn, 10)


def downgrade() -> None:
    raise RuntimeError("schemas are append-only; there is no downgrade")
