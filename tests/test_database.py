"""The database as built from the schema: partitions, q3c indexes, names, functions, versions."""

from __future__ import annotations

import psycopg
import pytest

from dpdb.config import Settings
from dpdb.db import connect, describe
from dpdb.errors import VersionMismatchError
from dpdb.model.felis import latest_version


def test_status_shows_versions_extensions_catalogs(conn: psycopg.Connection) -> None:
    info = describe(conn)
    assert info.server_version.startswith(("15", "16", "17"))
    assert set(info.extensions) == {"q3c", "pg_sphere"}
    assert info.schema_version == latest_version()
    assert ("prompt", "prompt", latest_version()) in info.catalogs


def test_large_tables_are_healpix_partitioned(conn: psycopg.Connection) -> None:
    rows = dict(
        conn.execute(
            """SELECT c.relname, count(i.inhrelid)
               FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_inherits i ON i.inhparent = c.oid
               WHERE n.nspname = 'prompt' GROUP BY c.relname"""
        ).fetchall()
    )
    assert rows == {"diaobject": 12, "diasource": 12, "diaforcedsource": 12}  # partition order 0
    key = conn.execute("SELECT pg_get_partkeydef('prompt.diasource'::regclass)").fetchone()[0]
    assert key == "RANGE (_healpix_29)"


def test_every_positional_table_has_a_q3c_index(conn: psycopg.Connection) -> None:
    indexed = {
        r[0]
        for r in conn.execute(
            "SELECT tablename FROM pg_indexes WHERE schemaname = 'prompt' AND indexdef LIKE '%q3c_ang2ipix%'"
        )
    }
    assert {"diaobject", "diasource", "diaforcedsource", "visit", "ccdvisit"} <= indexed


def test_canonical_names_work_unquoted(conn: psycopg.Connection) -> None:
    conn.execute(
        """INSERT INTO prompt.DiaObject (diaObjectId, validityStartMjdTai, ra, dec, nDiaSources,
                                         u_psfFluxNdata, g_psfFluxNdata, r_psfFluxNdata,
                                         i_psfFluxNdata, z_psfFluxNdata, y_psfFluxNdata, _healpix_29)
           VALUES (42, 60000.5, 10.0, -5.0, 1, 0, 0, 0, 0, 0, 0, 1 << 50)"""
    )
    row = conn.execute(
        "SELECT diaObjectId, validityStartMjdTai FROM prompt.DiaObject "
        "WHERE q3c_radial_query(ra, dec, 10.0, -5.0, 1.0/3600)"
    ).fetchone()
    assert row == (42, 60000.5)


def test_a_row_outside_every_partition_is_refused(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO prompt.diaobject (diaobjectid, validitystartmjdtai, ra, dec, ndiasources,"
            " u_psffluxndata, g_psffluxndata, r_psffluxndata, i_psffluxndata, z_psffluxndata,"
            " y_psffluxndata, _healpix_29) VALUES (1, 1, 1, 1, 1, 0,0,0,0,0,0, -1)"
        )


@pytest.mark.parametrize(
    ("flux", "expected"),
    [(3.631e12, 0.0), (1.0, 31.40006), (3.631e12 / 100, 5.0), (0.0, None), (-5.0, None), (None, None)],
)
def test_flux_to_ab_magnitude(conn: psycopg.Connection, flux: float | None, expected: float | None) -> None:
    mag = conn.execute("SELECT nanojanskyToAbMag(%s::float8)", (flux,)).fetchone()[0]
    assert mag == pytest.approx(expected, abs=1e-5) if expected is not None else mag is None


def test_flux_error_to_magnitude_error(conn: psycopg.Connection) -> None:
    err, neg = conn.execute(
        "SELECT nanojanskyToAbMagSigma(1000, 10), nanojanskyToAbMagSigma(-1000, 10)"
    ).fetchone()
    assert err == pytest.approx(2.5 / 2.302585092994046 * 0.01)
    assert neg is None


def test_newer_database_refuses_older_code(settings: Settings, conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO dpdb_meta.schema_version VALUES (99, 'future', now())")
    conn.commit()
    with pytest.raises(VersionMismatchError, match="schema version 99 is newer than this dpdb"):
        connect(settings)
