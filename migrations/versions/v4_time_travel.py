"""Schema v4: time travel. Visibility times on Visit, CcdVisit and SSSource; the relink register;
leap seconds; positional indexes of versioned tables that carry the validity interval.

Revision ID: v4
Revises: v3
"""

from __future__ import annotations

import psycopg

from dpdb.migrate import revision_connection
from dpdb.model.ddl import q3c_index_ddl, table_specs
from dpdb.registry.catalogs import create_meta, upgrade_catalogs
from dpdb.registry.versions import record_version

revision = "v4"
down_revision = "v3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = revision_connection()
    create_meta(conn, 4, since=3)
    upgrade_catalogs(conn, 3, 4)
    for name, kind in conn.execute("SELECT name, kind FROM dpdb_meta.catalog").fetchall():
        for spec in table_specs(name, 4, kind):
            if spec.versioned and spec.position:
                conn.execute(f'DROP INDEX "{name}"."{spec.table.name}_q3c"')
                conn.execute(q3c_index_ddl(spec))
        if kind == "prompt":
            _backfill_prompt(conn, name)
    record_version(conn, 4)


def _backfill_prompt(conn: psycopg.Connection, name: str) -> None:
    """Rows ingested before v4 became visible when their visit (or DiaSource) was processed."""
    s = f'"{name}"'
    conn.execute(
        f"UPDATE {s}.visit v SET timeprocessedmjdtai = p.processing_time_mjd_tai "
        "FROM dpdb_meta.prompt_visit p WHERE p.visit = v.visit"
    )
    conn.execute(
        f"UPDATE {s}.ccdvisit c SET timeprocessedmjdtai = p.processing_time_mjd_tai "
        "FROM dpdb_meta.prompt_visit p WHERE p.visit = c.visitid"
    )
    conn.execute(
        f"UPDATE {s}.sssource x SET timeprocessedmjdtai = d.timeprocessedmjdtai "
        f"FROM {s}.diasource d WHERE d.diasourceid = x.diasourceid AND d.ssobjectid = x.ssobjectid"
    )


def downgrade() -> None:
    raise RuntimeError("schemas are append-only; there is no downgrade")
