"""Migrations: v1 database with data -> v2 without loss; unknown and downward targets refused."""

from __future__ import annotations

import psycopg
import pytest

from dpdb.config import Settings
from dpdb.db import connect
from dpdb.errors import SchemaError, VersionMismatchError
from dpdb.migrate import migrate
from dpdb.model.felis import latest_version, load_felis, versions
from dpdb.pg import conninfo


def _columns(conn: psycopg.Connection, schema: str) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for table, column, dtype in conn.execute(
        """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
           ORDER BY c.relname, a.attnum""",
        (schema,),
    ):
        out.setdefault(table, []).append((column, dtype))
    return out


def _fill_v1(conn: psycopg.Connection) -> None:
    """Rows in prompt tables, through v1 columns."""
    conn.execute(
        """INSERT INTO prompt.visit (visit, band, ra, dec, expmidptmjd) VALUES (1, 'r', 10, 20, 60000.1);
           INSERT INTO prompt.diaobject (diaobjectid, validitystartmjdtai, ra, dec, ndiasources,
               u_psffluxndata, g_psffluxndata, r_psffluxndata, i_psffluxndata, z_psffluxndata,
               y_psffluxndata, r_psffluxmean, _healpix_29)
             SELECT g, 60000.5, 10 + g * 1e-3, 20, 1, 0, 0, 1, 0, 0, 0, 1234.5, 5 << 56
             FROM generate_series(1, 50) g"""
    )


def test_v1_to_v2_keeps_every_row_and_column(empty_settings: Settings) -> None:
    migrate(empty_settings, to=1)
    with psycopg.connect(conninfo(empty_settings)) as conn:
        _fill_v1(conn)
        conn.commit()
        before_cols = _columns(conn, "prompt")
        before_rows = conn.execute("SELECT * FROM prompt.diaobject ORDER BY diaobjectid").fetchall()
        with pytest.raises(VersionMismatchError, match="run `dpdb db migrate`"):
            connect(empty_settings)
    assert migrate(empty_settings) == (1, latest_version())
    with connect(empty_settings) as conn:
        after_cols = _columns(conn, "prompt")
        for table, cols in before_cols.items():
            assert after_cols[table][: len(cols)] == cols, table
        after_rows = conn.execute("SELECT * FROM prompt.diaobject ORDER BY diaobjectid").fetchall()
        assert [r[: len(before_rows[0])] for r in after_rows] == before_rows
        applied = conn.execute("SELECT version FROM dpdb_meta.schema_version ORDER BY 1").fetchall()
        assert applied == [(v,) for v in versions()]
        assert conn.execute(
            "SELECT schema_version FROM dpdb_meta.catalog WHERE name='prompt'"
        ).fetchone() == (latest_version(),)
        assert conn.execute("SELECT count(*) FROM dpdb_meta.prompt_visit").fetchone() == (0,)


def test_v2_adds_photoz_to_release_catalogs(empty_settings: Settings) -> None:
    from dpdb.registry.catalogs import create_catalog

    migrate(empty_settings, to=1)
    with psycopg.connect(conninfo(empty_settings)) as conn:
        create_catalog(conn, "dr1", "release", 1, 0)
        conn.execute(
            "INSERT INTO dr1.object (objectid, coord_ra, coord_dec, _healpix_29) VALUES (7, 1, 2, 3)"
        )
    migrate(empty_settings)
    with connect(empty_settings) as conn:
        cols = dict(_columns(conn, "dr1")["object"])
        assert cols["photoz"] == "real[]" and cols["photoz_pest"] == "real[]"
        assert conn.execute("SELECT objectId, photoZ FROM dr1.Object").fetchall() == [(7, None)]
        newest = {c.name.lower() for t in load_felis(2).tables if t.name == "Object" for c in t.columns}
        assert newest <= set(cols)


def test_migrate_refuses_unknown_and_downward(settings: Settings) -> None:
    latest = latest_version()
    with pytest.raises(SchemaError, match=f"unknown schema version {latest + 1}"):
        migrate(settings, to=latest + 1)
    with pytest.raises(SchemaError, match=f"cannot migrate down from schema version {latest} to 1"):
        migrate(settings, to=1)
    assert migrate(settings) == (latest, latest)
