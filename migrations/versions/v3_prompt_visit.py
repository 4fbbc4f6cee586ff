"""Schema v3: ``dpdb_meta.prompt_visit`` (visits ingested) and DiaObjectLast (current DiaObjects).

Revision ID: v3
Revises: v2
"""

from __future__ import annotations

from dpdb.migrate import revision_connection
from dpdb.registry.catalogs import create_meta, upgrade_catalogs
from dpdb.registry.versions import record_version

revision = "v3"
down_revision = "v2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = revision_connection()
    create_meta(conn, 3, since=2)
    upgrade_catalogs(conn, 2, 3)
    for (name,) in conn.execute("SELECT name FROM dpdb_meta.catalog WHERE kind = 'prompt'").fetchall():
        schema = f'"{name}"'
        conn.execute(
            f"INSERT INTO {schema}.diaobjectlast (diaobjectid, validitystartmjdtai, ra, dec, ndiasources, "
            "firstdiasourcemjdtai, lastdiasourcemjdtai, healpix29) "
            "SELECT diaobjectid, validitystartmjdtai, ra, dec, ndiasources, firstdiasourcemjdtai, "
            f"lastdiasourcemjdtai, _healpix_29 FROM {schema}.diaobject WHERE validityendmjdtai IS NULL"
        )
    record_version(conn, 3)


def downgrade() -> None:
    raise RuntimeError("schemas are append-only; there is no downgrade")
