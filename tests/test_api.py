"""The public Python API, ``dpdb.Archive``, on the demo's database: what a Python user gets back.

Results are compared with what the database gives through a plain psycopg
connection, so a wrong conversion or a wrong predicate fails here.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import numpy as np
import psycopg
import pytest
from astropy.table import Table
from astropy.time import Time
from conftest import DemoRun

import dpdb
from dpdb.pg import conninfo

DIA_OBJECT = 288230377200288075  # the README's DiaObject (30 DiaSources now, 18 as of MJD 61002.5)


@pytest.fixture(scope="module")
def archive(demo_run: DemoRun) -> dpdb.Archive:
    return dpdb.Archive(settings=demo_run.settings)


def _sql(demo_run: DemoRun, text: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(conninfo(demo_run.settings)) as conn:
        return conn.execute(text, params).fetchall()  # type: ignore[arg-type]


def test_package_exports_the_api() -> None:
    for name in ("Archive", "Settings", "DpdbError", "QueryError", "ReleaseStateError", "ValidationError"):
        assert name in dpdb.__all__ and hasattr(dpdb, name)
    assert issubclass(dpdb.QueryError, dpdb.DpdbError)
    assert "+g" in dpdb.__version__ or dpdb.__version__[0].isdigit()


def test_query_returns_an_astropy_table_with_schema_metadata(
    archive: dpdb.Archive, demo_run: DemoRun
) -> None:
    t = archive.query(
        "SELECT diaObjectId, ra, dec, nDiaSources, r_psfFluxMean FROM prompt.DiaObject "
        "WHERE validityEndMjdTai IS NULL ORDER BY diaObjectId LIMIT 20"
    )
    assert isinstance(t, Table)
    assert t.colnames == ["diaObjectId", "ra", "dec", "nDiaSources", "r_psfFluxMean"]
    assert str(t["ra"].unit) == "deg" and t["ra"].meta["ucd"] == "pos.eq.ra;meta.main"
    assert str(t["r_psfFluxMean"].unit) == "nJy"
    assert t["ra"].description
    expected = _sql(
        demo_run,
        "SELECT diaobjectid, ra FROM prompt.diaobject WHERE validityendmjdtai IS NULL ORDER BY 1 LIMIT 20",
    )
    assert [int(v) for v in t["diaObjectId"]] == [r[0] for r in expected]
    assert np.allclose(np.asarray(t["ra"]), [r[1] for r in expected])
    df = t.to_pandas()
    assert list(df.columns) == t.colnames and len(df) == 20
    assert archive.query_arrow("SELECT 1 AS one").column("one").to_pylist() == [1]


def test_nulls_are_masked(archive: dpdb.Archive) -> None:
    t = archive.query("SELECT NULL::float8 AS f, 2.5::float8 AS g, NULL::text AS s")
    assert t["f"].mask[0] and not hasattr(t["g"], "mask")
    assert t["s"].mask[0]


def test_cone_is_the_q3c_cone(archive: dpdb.Archive, demo_run: DemoRun) -> None:
    t = archive.cone("Object", 150.0, 2.0, 0.1)
    expected = _sql(
        demo_run,
        "SELECT objectid FROM current.object WHERE q3c_radial_query(coord_ra, coord_dec, 150.0, 2.0, 0.1)",
    )
    assert len(expected) > 0
    assert sorted(int(v) for v in t["objectId"]) == sorted(r[0] for r in expected)
    assert str(t["coord_ra"].unit) == "deg"
    some = archive.cone("DiaSource", 150.0, 2.0, 0.1, columns=["diaSourceId", "ra"])
    assert some.colnames == ["diaSourceId", "ra"] and len(some) > 0
    with pytest.raises(dpdb.QueryError, match="unknown table"):
        archive.cone("NoSuchTable", 150.0, 2.0, 0.1)
    with pytest.raises(dpdb.QueryError, match="dec"):
        archive.cone("Object", 150.0, 95.0, 0.1)
    with pytest.raises(dpdb.QueryError, match="no column"):
        archive.cone("Object", 150.0, 2.0, 0.1, columns=["nope"])


def test_as_of_in_every_form_gives_the_same_answer(archive: dpdb.Archive) -> None:
    text = f"SELECT nDiaSources FROM DiaObject WHERE diaObjectId = {DIA_OBJECT}"
    mjd = 61002.5
    as_time = Time(mjd, format="mjd", scale="tai")
    as_datetime = as_time.utc.to_datetime(timezone=dt.UTC)
    answers = {
        int(archive.query(text, release="prompt", as_of=instant)["nDiaSources"][0])
        for instant in (mjd, str(mjd), as_time, as_datetime, as_time.utc.isot)
    }
    assert answers == {18}
    now = archive.query(f"SELECT nDiaSources FROM prompt.DiaObject WHERE diaObjectId = {DIA_OBJECT} "
                        "AND validityEndMjdTai IS NULL")  # fmt: skip
    assert int(now["nDiaSources"][0]) == 30
    with pytest.raises(dpdb.ValidationError, match="time zone"):
        archive.query(text, as_of=dt.datetime(2026, 1, 1))
    with pytest.raises(dpdb.ValidationError):
        archive.query(text, as_of="yesterday-ish")


def test_bad_sql_and_writes_are_query_errors(archive: dpdb.Archive) -> None:
    with pytest.raises(dpdb.QueryError):
        archive.query("SELEC 1")
    with pytest.raises(dpdb.QueryError):
        archive.query("DELETE FROM prompt.Visit")
    with pytest.raises(dpdb.ReleaseStateError):
        archive.query("SELECT 1", release="dr99")


def test_facades_reach_releases_prompt_provenance_and_plots(archive: dpdb.Archive, tmp_path) -> None:
    releases = {r.name: r.state for r in archive.releases.list()}
    assert releases == {"dr1": "superseded", "dr2": "active"}
    assert archive.prompt.last_visit() is not None and archive.prompt.next_night() == 5
    prov = archive.provenance(DIA_OBJECT)
    assert prov.place is not None and prov.place.name == "prompt"
    curve = archive.plot.lightcurve_data(DIA_OBJECT)
    assert "30 DiaSource" in curve.summary
    png = archive.plot.lightcurve(DIA_OBJECT, tmp_path / "lc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    facts = archive.status()
    assert facts["schema version"].split()[0].isdigit() and "q3c" in facts["extensions"]


def test_documented_one_liner_works(demo_run: DemoRun) -> None:
    folder = demo_run.settings.home.parent
    code = "import dpdb; a = dpdb.Archive(); print(a.query('SELECT count(*) FROM current.Object'))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPDB_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    count = _sql(demo_run, "SELECT count(*) FROM current.object")[0][0]
    assert out.stdout.split()[-1] == str(count)
