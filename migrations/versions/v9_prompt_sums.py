"""Schema v9: DiaObjectSums, the running per-band sums of the prompt ingest (incremental aggregation).

The table starts empty: a DiaObject without sums is aggregated from its stored
measurements the next time it gets a DiaSource, and its sums are built then
(dpdb/prompt/sums.py), so nothing is backfilled here. The key-map trigger
functions are reinstalled: an update that keeps every key (closing DiaObject
versions) no longer scans the key map nor compares the changed rows pairwise.

Revision ID: v9
Revises: v8
"""

from __future__ import annotations

from dpdb import keymap
from dpdb.migrate import revision_connection
from dpdb.registry.catalogs import create_meta, upgrade_catalogs
from dpdb.registry.versions import record_version

revision = "v9"
down_revision = "v8"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = revision_connection()
    create_meta(conn, 9, since=8)
    upgrade_catalogs(conn, 8, 9)
    keymap.install_functions(conn)  # keymap_update: the usual update no longer scans the map
    record_version(conn, 9)


def downgrade() -> None:
    raise RuntimeError("schemas are append-only; there is no downgrade")
