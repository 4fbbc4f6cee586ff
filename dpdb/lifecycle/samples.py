"""The samples schema: a fixed sky region of every activated release, kept after it is archived.

DPDD §4.5: small overlapping samples of older releases stay loaded so that the
characterization of the same sky can be compared from release to release. The
region (setting ``sample_region``) is the same cone for every release; each
release's rows there are copied to ``samples.<release>_<table>``.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from dpdb.config import Settings
from dpdb.etl.validate import target_table
from dpdb.pg import fetch_value
from dpdb.registry.catalogs import find_catalog

__all__ = ["SAMPLE_TABLES", "make_sample", "has_sample"]

SAMPLE_TABLES = ("Object", "Source", "ForcedSource", "DiaObject", "DiaSource", "DiaForcedSource")


def has_sample(conn: psycopg.Connection, release: str) -> bool:
    table = f"samples.{release}_object"
    return bool(fetch_value(conn, "SELECT to_regclass(%s) IS NOT NULL", (table,)))


def make_sample(conn: psycopg.Connection, settings: Settings, release: str) -> dict[str, int]:
    """Copy the fixed sample region of ``release`` into ``samples.<release>_<table>``; idempotent.

    The region (``sample_region``) is the same cone for every release, so
    releases can be compared there after they are archived (DPDD §4.5).
    """
    ra, dec, radius = settings.sample_region
    catalog = find_catalog(conn, release)
    assert catalog is not None  # sampled before the release is archived
    rows = {}
    for table in SAMPLE_TABLES:
        target = target_table(release, catalog.schema_version, catalog.kind, table)
        sample = sql.Identifier("samples", f"{release}_{target.db_name}")
        source = sql.Identifier(release, target.db_name)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sample))
        if target.parent is None or target.parent_key is None:
            if target.position is None:
                raise ValueError(f"sample table {table} has no position")
            ra_col, dec_col = map(sql.Identifier, target.position)
            where = sql.SQL("q3c_radial_query({}, {}, {}, {}, {})").format(
                ra_col, dec_col, sql.Literal(ra), sql.Literal(dec), sql.Literal(radius)
            )
        else:
            key = sql.Identifier(target.parent_key)
            parent = sql.Identifier("samples", f"{release}_{target.parent.lower()}")
            where = sql.SQL("{} IN (SELECT {} FROM {})").format(key, key, parent)
        conn.execute(sql.SQL("CREATE TABLE {} AS SELECT * FROM {} WHERE {}").format(sample, source, where))
        conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN _load_id").format(sample))
        conn.execute(sql.SQL("GRANT SELECT ON {} TO dpdb_reader").format(sample))
        rows[table] = int(fetch_value(conn, sql.SQL("SELECT count(*) FROM {}").format(sample)))
    return rows
