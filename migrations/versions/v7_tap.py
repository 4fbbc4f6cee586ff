"""Schema v7: the TAP service. New bookkeeping (dpdb_meta.tap_job, the UWS async jobs) and the
TAP_SCHEMA tables (generated from felis' TAP_SCHEMA definition), filled from the catalogs'
felis schema; catalog tables are unchanged.

Revision ID: v7
Revises: v6
"""

from __future__ import annotations

from dpdb.migrate import revision_connection
from dpdb.registry.catalogs import create_meta, upgrade_catalogs
from dpdb.registry.versions import record_version
from dpdb.tap.tap_schema import create_tap_schema, refresh_tap_schema

revision = "v7"
down_revision = "v6"
branch_labels = None
depends_on = None

_PREVIOUS = 6


def upgrade() -> None:
    conn = revision_connection()
    create_meta(conn, 7, since=_PREVIOUS)
    upgrade_catalogs(conn, _PREVIOUS, 7)
    create_tap_schema(conn)
    refresh_tap_schema(conn)
    record_version(conn, 7)


def downgrade() -> None:
    raise RuntimeError("schemas are append-only; there is no downgrade")
