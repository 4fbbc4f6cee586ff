"""Partition pruning for spatial predicates on every query path (dpdb/pruning.py, sql/cones.sql).

A prompt catalog at partition order 1 (48 partitions) holds DiaObjects (with versions) and DiaSources
over the whole sky and around the hard places: partition boundaries, both poles, RA = 0. Each path
(``dpdb query``/``Archive.query``, ``Archive.cone``, TAP's ADQL, the SQL functions, the session as-of
views) must return exactly the rows of the unpruned q3c query, and its plan (EXPLAIN through the same
path, as the reader role) must scan exactly the partitions the region overlaps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import healpy
import numpy as np
import psycopg
import pytest
from conftest import drop_database, new_database

import dpdb
from dpdb.config import Settings
from dpdb.db import prepare
from dpdb.healpix import PIXEL_ORDER, pixels
from dpdb.pg import conninfo
from dpdb.pruning import MARGIN_DEG, cone_ranges, polygon_ranges, prune_sql
from dpdb.query import query_text, run_query

ORDER = 1
VISIBLE = "validitystartmjdtai <= 61001.5 AND coalesce(validityendmjdtai, 'infinity') > 61001.5"
T1, T2, T3 = 61001.0, 61002.0, 61003.0
AS_OF = 61001.5
# Cones: inside one partition, across a partition boundary (where 4 base pixels meet), around both
# poles, across RA = 0, and a large one.
CONES = [
    (150.0, 2.0, 0.5),
    (45.0, 0.0, 0.4),
    (10.0, 89.8, 0.5),
    (200.0, -89.9, 0.3),
    (0.05, 20.0, 0.3),
    (359.9, -41.8, 0.6),
    (90.0, 41.8, 3.0),
]
POLYGONS = [
    [149.6, 1.6, 150.4, 1.6, 150.4, 2.4, 149.6, 2.4],
    [359.7, 19.8, 0.3, 19.8, 0.0, 20.3],  # across RA = 0
    [44.6, -0.3, 45.4, -0.3, 45.4, 0.3, 44.6, 0.3],  # across partitions
]


def _ids(n: int, start: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int64)


@pytest.fixture(scope="module")
def sky(pg_home: Path) -> Iterator[Settings]:
    """48 partitions; objects everywhere and dense around each cone; three versions each (the last
    moved by 0.5", keeping its first pixel as prompt processing does) and two DiaSources each."""
    name = new_database(pg_home)
    settings = Settings(home=pg_home, database=name, partition_order=ORDER)
    prepare(settings)
    rng = np.random.default_rng(16)
    ra = [rng.uniform(0, 360, 3000)]
    dec = [np.degrees(np.arcsin(rng.uniform(-1, 1, 3000)))]
    for cra, cdec, r in CONES:
        # points within 1.5 r of the centre: uniform on the cap
        cosr = np.cos(np.radians(1.5 * r))
        z = rng.uniform(cosr, 1, 400)
        phi = rng.uniform(0, 2 * np.pi, 400)
        local = np.column_stack([np.sqrt(1 - z**2) * np.cos(phi), np.sqrt(1 - z**2) * np.sin(phi), z])
        rot = healpy.Rotator(rot=[cra, cdec - 90, 0], deg=True, inv=True) if abs(cdec) < 90 else None
        pts = rot(local.T) if rot is not None else local.T
        lon, lat = healpy.vec2ang(np.asarray(pts).T, lonlat=True)
        ra.append(lon % 360)
        dec.append(lat)
    ra_a, dec_a = np.concatenate(ra), np.concatenate(dec)
    n = len(ra_a)
    ids = _ids(n, 1)
    pix = pixels(ra_a, dec_a)
    ndata = ", ".join(f"{b}_psfFluxNdata" for b in "ugrizy")
    with psycopg.connect(conninfo(settings)) as conn:
        with conn.cursor() as cur:
            with cur.copy(
                "COPY prompt.diaobject (diaobjectid, validitystartmjdtai, validityendmjdtai, ra, dec, "
                f"_healpix_29, ndiasources, {ndata}) FROM STDIN"
            ) as copy:
                for i in range(n):
                    moved = ra_a[i] + 0.5 / 3600 / max(np.cos(np.radians(dec_a[i])), 1e-3)
                    for start, end, r in ((T1, T2, ra_a[i]), (T2, T3, ra_a[i]), (T3, None, moved % 360)):
                        copy.write_row([int(ids[i]), start, end, float(r), float(dec_a[i]), int(pix[i]), 1,
                                        0, 0, 0, 0, 0, 0])  # fmt: skip
            with cur.copy(
                "COPY prompt.diaobjectlast (diaobjectid, validitystartmjdtai, ra, dec, ndiasources, "
                "healpix29) FROM STDIN"
            ) as copy:
                for i in range(n):
                    copy.write_row([int(ids[i]), T3, float(ra_a[i]), float(dec_a[i]), 1, int(pix[i])])
            with cur.copy(
                "COPY prompt.diasource (diasourceid, ccdvisitid, visit, detector, diaobjectid, "
                "midpointmjdtai, ra, dec, band, psfflux, psffluxerr, timeprocessedmjdtai, "
                "timewithdrawnmjdtai, _healpix_29) FROM STDIN"
            ) as copy:
                for i in range(n):
                    later = T3 if i % 5 == 0 else None  # every fifth withdrawn at T3
                    for k, (processed, withdrawn) in enumerate(((T1, None), (T2, later))):
                        copy.write_row([int(2 * ids[i] + k), 1000, 1, 0, int(ids[i]), processed - 0.5,
                                        float(ra_a[i]), float(dec_a[i]), "r", 1.0, 0.1, processed, withdrawn,
                                        int(pix[i])])  # fmt: skip
        # one processed visit: the latest committed change (TAP's fast path evaluates queries there)
        required = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'dpdb_meta' "
            "AND table_name = 'prompt_visit' AND is_nullable = 'NO' AND column_default IS NULL")]  # fmt: skip
        values = {c: 0 for c in required}
        values.update(visit=1, processing_time_mjd_tai=T3, midpoint_mjd_tai=T3 - 0.5, ingested_at="now")
        conn.execute(
            f"INSERT INTO dpdb_meta.prompt_visit ({', '.join(values)}) "
            f"VALUES ({', '.join(['%s'] * len(values))})", list(values.values())
        )
        conn.execute("ANALYZE prompt.diaobject")
        conn.execute("ANALYZE prompt.diasource")
    yield settings
    drop_database(pg_home, name)


def _owner_rows(settings: Settings, sql: str) -> list[tuple]:
    with psycopg.connect(conninfo(settings)) as conn:
        return sorted(conn.execute(sql.encode()).fetchall())


def _expected_partitions(ranges: list[tuple[int, int]]) -> set[int]:
    shift = 2 * (PIXEL_ORDER - ORDER)
    return {p for lo, hi in ranges for p in range(lo >> shift, ((hi - 1) >> shift) + 1)}


def _scanned(plan: str) -> set[int]:
    return {int(m) for m in re.findall(r"Scan(?: using \S+)? on \w+_hpx1_(\d+)", plan)}


def _plan(settings: Settings, sql: str, **kw: object) -> str:
    return "\n".join(run_query(settings, "EXPLAIN " + sql, **kw).column(0).to_pylist())  # type: ignore[arg-type]


def _cone_partitions(ra: float, dec: float, r: float) -> set[int]:
    return _expected_partitions(cone_ranges(ra, dec, r, ORDER, MARGIN_DEG))


# -- the rewrite itself -----------------------------------------------------------------------------------


def test_prune_sql_adds_ranges_only_where_they_apply() -> None:
    order_of = {("prompt", "diaobject"): 1, ("", "diaobject"): 1, ("", "diasource"): 1}.get

    def prune(sql: str) -> str:
        return prune_sql(sql, lambda s, t: order_of((s, t)))

    cone = "q3c_radial_query(ra, dec, 150, 2, 10/60.)"
    out = prune(f"SELECT * FROM prompt.DiaObject WHERE {cone} AND ndiasources > 1 -- done")
    assert out.startswith(f"SELECT * FROM prompt.DiaObject WHERE ({cone} AND _healpix_29 BETWEEN ")
    assert out.endswith(") AND ndiasources > 1 -- done")  # the rest of the text as written
    # qualified columns, joins, q3c_join with a constant centre, polygons, EXPLAIN, the as-of function
    out = prune("SELECT * FROM diaobject o JOIN diasource s ON q3c_join(o.ra, o.dec, s.ra, s.dec, 1e-3) "
                "WHERE q3c_join(150, 2, s.ra, s.dec, 0.1)")  # fmt: skip
    assert "q3c_join(o.ra, o.dec, s.ra, s.dec, 1e-3) WHERE (q3c_join(150, 2, s.ra, s.dec, 0.1) AND " in out
    assert "s._healpix_29 BETWEEN" in out and out.count("BETWEEN") == 1
    out = prune("EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM prompt.diaobject_as_of(61000) d "
                "WHERE q3c_poly_query(d.ra, d.dec, '{10, 0, 11, 0, 10.5, 1}')")  # fmt: skip
    assert out.startswith("EXPLAIN (ANALYZE, COSTS OFF) SELECT") and "d._healpix_29 BETWEEN" in out
    # nothing to prune: a column centre, a CTE of that name, no partitioned table, unparseable text
    for sql in (
        "SELECT * FROM diaobject WHERE q3c_radial_query(ra, dec, ra + 1, 2, 0.1)",
        "WITH diaobject AS (SELECT 1.0 AS ra, 2.0 AS dec) SELECT * FROM diaobject "
        "WHERE q3c_radial_query(ra, dec, 1, 2, 3)",
        "SELECT * FROM prompt.visit WHERE q3c_radial_query(ra, dec, 1, 2, 3)",
        "SELECT * FROM diaobject WHERE q3c_radial_query(ra, dec, 1, 2, 3) AND ra @@@ ## 'x'",
    ):
        assert prune(sql) == sql


def test_ranges_cover_every_point_of_the_region() -> None:
    rng = np.random.default_rng(3)
    for ra, dec, r in [*CONES, (0.0, 90.0, 1.0), (0.0, -90.0, 5.0), (180.0, 0.0, 30.0)]:
        for order in (0, 1, 2, 3):
            ranges = np.array(cone_ranges(ra, dec, r, order))
            z = rng.uniform(np.cos(np.radians(r * 0.999)), 1, 3000)
            phi = rng.uniform(0, 2 * np.pi, 3000)
            local = np.array([np.sqrt(1 - z**2) * np.cos(phi), np.sqrt(1 - z**2) * np.sin(phi), z])
            pts = healpy.Rotator(rot=[ra, dec - 90, 0], deg=True, inv=True)(local)
            lon, lat = healpy.vec2ang(np.asarray(pts).T, lonlat=True)
            assert np.all(healpy.rotator.angdist([lon, lat], [ra, dec], lonlat=True) <= np.radians(r))
            pix = pixels(lon % 360, lat)
            i = np.searchsorted(ranges[:, 0], pix, side="right") - 1
            assert np.all((i >= 0) & (pix < ranges[np.maximum(i, 0), 1])), (ra, dec, r, order)
    square = [149.6, 1.6, 150.4, 1.6, 150.4, 2.4, 149.6, 2.4]
    inside = pixels(rng.uniform(149.6, 150.4, 500), rng.uniform(1.6, 2.4, 500))
    ranges = np.array(polygon_ranges(square, 3))
    i = np.searchsorted(ranges[:, 0], inside, side="right") - 1
    assert np.all((i >= 0) & (inside < ranges[np.maximum(i, 0), 1]))


def _points_in_cone(rng: np.random.Generator, ra: float, dec: float, r: float, n: int) -> tuple:
    """``n`` random points of the cone and ``n`` on its rim (just inside), degrees."""
    z = np.concatenate([rng.uniform(np.cos(np.radians(r)), 1, n), np.full(n, np.cos(np.radians(r * 0.9999)))])
    phi = rng.uniform(0, 2 * np.pi, 2 * n)
    local = np.array([np.sqrt(1 - z**2) * np.cos(phi), np.sqrt(1 - z**2) * np.sin(phi), z])
    pts = healpy.Rotator(rot=[ra, dec - 90, 0], deg=True, inv=True)(local)
    lon, lat = healpy.vec2ang(np.asarray(pts).T, lonlat=True)
    return lon % 360, lat


def test_sql_cover_matches_healpy(sky: Settings) -> None:
    """dpdb_cone_partitions (sql/cones.sql) holds every partition that a point of the cone lies in, and
    hardly more than healpy's inclusive query_disc."""
    rng = np.random.default_rng(9)
    cones = [*CONES, *zip(rng.uniform(0, 360, 100), np.degrees(np.arcsin(rng.uniform(-1, 1, 100))),
                          10 ** rng.uniform(-3, 1, 100), strict=True)]  # fmt: skip
    extra = 0
    with psycopg.connect(conninfo(sky)) as conn:
        for order in (0, 1, 2, 3):
            for ra, dec, r in cones:
                got = {g[0] for g in conn.execute("SELECT unnest(dpdb_cone_partitions(%s, %s, %s, %s))",
                                                  (order, float(ra), float(dec), float(r)))}  # fmt: skip
                lon, lat = _points_in_cone(rng, ra, dec, r, 1000)
                needed = set(healpy.ang2pix(1 << order, lon, lat, nest=True, lonlat=True).tolist())
                assert needed <= got, (order, ra, dec, r)
                vec = healpy.ang2vec(ra, dec, lonlat=True)
                inclusive = healpy.query_disc(1 << order, vec, np.radians(r), inclusive=True, nest=True)
                healpy_inclusive = set(inclusive.tolist())
                extra += len(got - healpy_inclusive)
    assert extra <= 0.1 * 4 * len(cones)


# -- every path: same rows, only the overlapped partitions ------------------------------------------------


@pytest.mark.parametrize("cone", CONES)
def test_query_path_prunes_cones(sky: Settings, cone: tuple[float, float, float]) -> None:
    ra, dec, r = cone
    want_parts = _cone_partitions(ra, dec, r)
    for as_of, where, table in (
        (None, "validityendmjdtai IS NULL AND ", "prompt.diaobject"),
        (AS_OF, "", "prompt.diaobject"),
    ):
        sql = f"SELECT diaobjectid, ra FROM {table} WHERE {where}q3c_radial_query(ra, dec, {ra}, {dec}, {r})"
        truth = _owner_rows(
            sky,
            "SELECT diaobjectid, ra FROM prompt.diaobject WHERE "
            + (where or f"{VISIBLE} AND ")
            + f"q3c_dist(ra, dec, {ra}, {dec}) <= {r}",
        )  # fmt: skip
        assert len(truth) > 10
        got = run_query(sky, sql, as_of=as_of, provisional=True)
        assert sorted(zip(*got.to_pydict().values(), strict=True)) == truth
        plan = _plan(sky, sql, as_of=as_of, provisional=True)
        assert _scanned(plan) == want_parts, plan
        assert "_healpix_29" in query_text(sky, sql, as_of=as_of)
    # The measurements, which take their object's pixel: the same partitions (and the same rows).
    sql = f"SELECT diasourceid FROM prompt.diasource WHERE q3c_radial_query(ra, dec, {ra}, {dec}, {r})"
    truth = _owner_rows(sky, f"SELECT diasourceid FROM prompt.diasource WHERE q3c_dist(ra, dec, {ra}, {dec}) <= {r}")  # noqa: E501
    assert sorted((v,) for v in run_query(sky, sql).column(0).to_pylist()) == truth
    assert _scanned(_plan(sky, sql)) == want_parts


@pytest.mark.parametrize("poly", POLYGONS)
def test_query_path_prunes_polygons(sky: Settings, poly: list[float]) -> None:
    array = ", ".join(repr(v) for v in poly)
    sql = f"SELECT diaobjectid FROM prompt.diaobject WHERE q3c_poly_query(ra, dec, ARRAY[{array}])"
    truth = _owner_rows(sky, sql)
    assert truth
    assert sorted((v,) for v in run_query(sky, sql).column(0).to_pylist()) == truth
    want = _expected_partitions(polygon_ranges(poly, ORDER, MARGIN_DEG))
    scanned = _scanned(_plan(sky, sql))
    assert scanned == want and len(scanned) < 48


def test_api_cone_and_session_form_prune(sky: Settings) -> None:
    archive = dpdb.Archive(settings=sky)
    ra, dec, r = CONES[1]  # across four partitions
    want = _cone_partitions(ra, dec, r)
    truth = _owner_rows(sky, f"SELECT diaobjectid FROM prompt.diaobject WHERE validitystartmjdtai <= {AS_OF} "
                             f"AND coalesce(validityendmjdtai, 'infinity') > {AS_OF} "
                             f"AND q3c_dist(ra, dec, {ra}, {dec}) <= {r}")  # fmt: skip
    got = archive.cone("DiaObject", ra, dec, r, as_of=AS_OF, columns=["diaObjectId"])
    assert sorted((int(v),) for v in got["diaObjectId"]) == truth
    # The session form (prompt_as_of views, what --as-of reads): the instant is an InitPlan, evaluated
    # once per query and used as an index condition; the cone's partitions only.
    sql = f"SELECT diaobjectid FROM prompt_as_of.diaobject WHERE q3c_radial_query(ra, dec, {ra}, {dec}, {r})"
    with psycopg.connect(conninfo(sky)) as conn:
        conn.execute(f"SET dpdb.as_of = '{AS_OF}'")
        conn.execute("SET enable_seqscan = off")
        assert sorted(conn.execute(sql.encode()).fetchall()) == truth
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {query_text(sky, sql)}".encode()))
    assert "InitPlan" in plan and re.search(r"Index Cond: .*validitystartmjdtai <= \$0", plan), plan
    assert _scanned(plan) == want


def test_tap_adql_prunes(sky: Settings) -> None:
    from dpdb.as_of_rewrite import AS_OF_SCHEMA
    from dpdb.query import cached_partition_orders
    from dpdb.tap.adql import translate
    from dpdb.tap.engine import run_fast

    ra, dec, r = CONES[4]  # across RA = 0
    for adql, truth_sql in (
        (f"SELECT diaObjectId FROM prompt.DiaObject WHERE 1 = CONTAINS(POINT(ra, dec), CIRCLE({ra}, {dec}, {r}))",  # noqa: E501
         f"SELECT diaobjectid FROM prompt.diaobject WHERE q3c_dist(ra, dec, {ra}, {dec}) <= {r}"),
        (f"SELECT diaObjectId FROM prompt.DiaObject WHERE DISTANCE(POINT(ra, dec), POINT({ra}, {dec})) < {r}",  # noqa: E501
         f"SELECT diaobjectid FROM prompt.diaobject WHERE q3c_dist(ra, dec, {ra}, {dec}) < {r}"),
        ("SELECT diaObjectId FROM prompt.DiaObject WHERE 1 = CONTAINS(POINT(ra, dec), "
         "POLYGON(359.7, 19.8, 0.3, 19.8, 0.0, 20.3))",
         "SELECT diaobjectid FROM prompt.diaobject WHERE q3c_poly_query(ra, dec, "
         "ARRAY[359.7, 19.8, 0.3, 19.8, 0.0, 20.3])"),
    ):  # fmt: skip
        sql = translate(adql).sql
        assert "_healpix_29" not in sql  # the query path adds the ranges, as for any SQL
        got = run_query(sky, sql, provisional=True)
        assert sorted((v,) for v in got.column(0).to_pylist()) == _owner_rows(sky, truth_sql)
        scanned = _scanned(_plan(sky, sql))
        assert 0 < len(scanned) <= 4, scanned
        # The service's fast path (kept reader connections) prunes the same way, and gets the same rows.
        fast = run_fast(sky, sql, reads_prompt=False)
        assert sorted((v,) for v in fast.table.column(0).to_pylist()) == _owner_rows(sky, truth_sql)
    orders = cached_partition_orders(sky, [AS_OF_SCHEMA])
    assert orders("prompt", "diaobject") == orders("", "diaobject") == ORDER
    assert orders("", "visit") is None and orders("samples", "diaobject") is None


@pytest.mark.parametrize("cone", CONES[:5])
def test_sql_functions_prune_for_readers(sky: Settings, cone: tuple[float, float, float]) -> None:
    """prompt.DiaObject_cone / DiaSource_cone (present and as of), run as the reader role."""
    ra, dec, r = cone
    for t, where in (
        (None, "validityendmjdtai IS NULL"),
        (AS_OF, f"validitystartmjdtai <= {AS_OF} AND coalesce(validityendmjdtai, 'infinity') > {AS_OF}"),
    ):
        arg = "" if t is None else f", {t}"
        got = run_query(sky, f"SELECT diaobjectid FROM prompt.DiaObject_cone({ra}, {dec}, {r}{arg})")
        truth = _owner_rows(sky, f"SELECT diaobjectid FROM prompt.diaobject WHERE {where} "
                                 f"AND q3c_radial_query(ra, dec, {ra}, {dec}, {r})")  # fmt: skip
        assert sorted((v,) for v in got.column(0).to_pylist()) == truth and truth
    got = run_query(sky, f"SELECT diasourceid FROM prompt.DiaSource_cone({ra}, {dec}, {r}, '{AS_OF}')")
    truth = _owner_rows(sky, f"SELECT diasourceid FROM prompt.diasource_as_of({AS_OF}::float8) "
                             f"WHERE q3c_radial_query(ra, dec, {ra}, {dec}, {r})")  # fmt: skip
    assert sorted((v,) for v in got.column(0).to_pylist()) == truth
    # The statement the function runs names only the cone's partitions (auto_explain shows its plan).
    with psycopg.connect(conninfo(sky)) as conn:
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SET auto_explain.log_min_duration = 0")
        conn.execute("SET auto_explain.log_nested_statements = on")
        conn.execute("SET client_min_messages = log")
        conn.execute("SET auto_explain.log_level = notice")
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute(f"SELECT count(*) FROM prompt.diaobject_cone({ra}, {dec}, {r})").fetchall()
    inner = next(n for n in notices if "q3c_radial_query_it" in n and "_cone" not in n.split("\n")[0])
    assert _scanned(inner) == _cone_partitions(ra, dec, r), inner


def test_lightcurve_functions(sky: Settings) -> None:
    """prompt.DiaSource_lightcurve: the object's DiaSources (present, as of), its partition only."""
    for obj in (1, 1234, 3100, 5000):
        for t, where in ((None, "timewithdrawnmjdtai IS NULL"),
                         (T2 + 0.5, f"timeprocessedmjdtai <= {T2 + 0.5} AND coalesce(timewithdrawnmjdtai, "
                                    f"'infinity') > {T2 + 0.5}"),
                         (T3 + 0.5, f"timeprocessedmjdtai <= {T3 + 0.5} AND coalesce(timewithdrawnmjdtai, "
                                    f"'infinity') > {T3 + 0.5}")):  # fmt: skip
            arg = "" if t is None else f", {t}"
            got = run_query(sky, f"SELECT diasourceid FROM prompt.DiaSource_lightcurve({obj}{arg})")
            truth = _owner_rows(sky, f"SELECT diasourceid FROM prompt.diasource WHERE diaobjectid = {obj} "
                                     f"AND {where}")  # fmt: skip
            assert sorted((v,) for v in got.column(0).to_pylist()) == truth and truth
    assert run_query(sky, "SELECT * FROM prompt.DiaSource_lightcurve(-5)").num_rows == 0


def _object_partitions(settings: Settings, obj: int) -> set[int]:
    ra, dec = _owner_rows(settings, f"SELECT ra, dec FROM prompt.diaobject WHERE diaobjectid = {obj} "
                                    "AND validityendmjdtai IS NULL")[0]  # fmt: skip
    return _cone_partitions(ra, dec, 0.0)


@pytest.mark.parametrize("obj", [1, 3100, 5000])
def test_light_curve_by_id_alone_is_pruned(sky: Settings, obj: int) -> None:
    """A hand-written light curve (``WHERE diaObjectId = X``) on the query path reads only the partitions
    around its DiaObject (from DiaObjectLast), at the present and as of, with the rows of the unpruned
    query; so does a DiaObject's history."""
    want = _object_partitions(sky, obj)
    assert len(want) < 48
    present = (f"SELECT diasourceid FROM prompt.diasource WHERE diaobjectid = {obj} "
               "AND timewithdrawnmjdtai IS NULL")  # fmt: skip
    past = f"SELECT diasourceid FROM prompt.diasource_as_of({T2 + 0.5}::float8) WHERE diaobjectid = {obj}"
    history = f"SELECT validitystartmjdtai FROM prompt.diaobject WHERE diaobjectid = {obj}"
    for sql, as_of, truth_sql in (
        (present, None, present),
        (f"SELECT s.diasourceid FROM prompt.diasource_as_of({T2 + 0.5}) s WHERE {obj} = s.diaobjectid",
         None, past),
        (f"SELECT diasourceid FROM diasource WHERE diaobjectid = {obj}", T2 + 0.5, past),
        (history, None, history),
    ):
        truth = _owner_rows(sky, truth_sql)
        assert truth
        got = run_query(sky, sql, as_of=as_of, provisional=True)
        assert sorted((v,) for v in got.column(0).to_pylist()) == truth
        assert _scanned(_plan(sky, sql, as_of=as_of, provisional=True)) == want
        with psycopg.connect(conninfo(sky)) as conn:
            unpruned = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {truth_sql}".encode()))
        assert len(_scanned(unpruned)) == 48  # what the planner does without the ranges
    # Not an equality on a constant, or an unknown identifier: left as written.
    for sql in (f"SELECT * FROM prompt.diasource WHERE diaobjectid = {obj} OR diaobjectid = 2",
                "SELECT * FROM prompt.diasource WHERE diaobjectid = -5",
                f"SELECT * FROM prompt.diasource WHERE diaobjectid + 0 = {obj}",
                f"SELECT * FROM prompt.visit WHERE visit = {obj}"):  # fmt: skip
        assert query_text(sky, sql) == sql


def test_light_curve_of_a_diaobject_closed_without_successor(sky: Settings) -> None:
    """A DiaObject no longer in DiaObjectLast (relink deleted it) keeps its past light curve, through the
    function and the query path, from the partitions around its last version."""
    obj = 2222
    truth = _owner_rows(sky, f"SELECT diasourceid FROM prompt.diasource_as_of({T2 + 0.5}::float8) "
                             f"WHERE diaobjectid = {obj}")  # fmt: skip
    assert truth
    with psycopg.connect(conninfo(sky)) as conn:
        conn.execute(f"DELETE FROM prompt.diaobjectlast WHERE diaobjectid = {obj}")
    got = run_query(sky, f"SELECT diasourceid FROM prompt.DiaSource_lightcurve({obj}, {T2 + 0.5})")
    assert sorted((v,) for v in got.column(0).to_pylist()) == truth
    sql = f"SELECT diasourceid FROM prompt.diasource WHERE diaobjectid = {obj}"
    assert _scanned(_plan(sky, sql)) == _object_partitions(sky, obj)


def test_cone_function_equals_q3c_radial_query(sky: Settings) -> None:
    """The cone functions' join over q3c's ranges gives exactly q3c_radial_query's rows, each once, for
    random cones from arcseconds to 10 degrees (and the test cones), at the present and as of."""
    rng = np.random.default_rng(5)
    cones = [*CONES, *zip(rng.uniform(0, 360, 40), np.degrees(np.arcsin(rng.uniform(-1, 1, 40))),
                          10 ** rng.uniform(-3, 1, 40), strict=True)]  # fmt: skip
    with psycopg.connect(conninfo(sky)) as conn:
        for ra, dec, r in cones:
            for arg, where in (("", "validityendmjdtai IS NULL"), (f", {AS_OF}", VISIBLE)):
                got = [v[0] for v in conn.execute(
                    f"SELECT diaobjectid FROM prompt.diaobject_cone({ra}, {dec}, {r}{arg})".encode())]
                want = [v[0] for v in conn.execute(
                    f"SELECT diaobjectid FROM prompt.diaobject WHERE {where} "
                    f"AND q3c_radial_query(ra, dec, {ra}, {dec}, {r})".encode())]  # fmt: skip
                assert sorted(got) == sorted(want), (ra, dec, r, arg)
