"""Schema v8: the TAP service. New bookkeeping (dpdb_meta.tap_job, the UWS async jobs) and the
TAP_SCHEMA tables (generated from felis' TAP_SCHEMA definition), filled from the catalogs'
felis schema; catalog tables are unchanged.

Revision ID: v8
Revises: v6 (issue 15 is pre-assigned v8; v7 is the safety issue's, not merged yet)
"""

from __future__ import annotations

from dpdb.migrate import revision_connection
from dpdb.registry.catalogs import create_meta, upgrade_catalogs
from dpdb.registry.versions import record_version
from dpdb.tap.tap_schema import create_tap_schema, refresh_tap_schema

revision = "v8"
down_revision = "v6"  # integrator: v7 once the safety branch (v7) is merged
branch_labels = None
depends_on = None

_PREVIOUS = 6


def upgrade() -> None:
    conn = revision_connection()
    create_meta(conn, 8, since=_PREVIOUS)
    upgrade_catalogs(conn, _PREVIOUS, 8)
    create_tap_schema(conn)
    refresh_tap_schema(conn)
    record_version(conn, 8)


def downgrade() -> None:
    raise RuntimeError("schemas are append-only; there is no downgrade")
