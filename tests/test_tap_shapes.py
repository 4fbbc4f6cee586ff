"""The TAP service's translations kept per query shape (dpdb/tap/shapes.py): a kept shape gives
exactly the statement a full translation gives, for other numbers too; cones of one shape with
different centres each get their own rows; uploads are never kept, so one request's upload can
neither reach another request's query nor be answered by it."""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import pyvo
from astropy.io.votable import parse
from astropy.table import Table
from conftest import DemoRun
from test_tap_clients import _serve

import dpdb
from dpdb.tap import shapes
from dpdb.tap.run import Limits, TapError, _fast_statement, _full_statement, parse_params


@pytest.fixture(scope="module")
def archive(demo_run: DemoRun) -> dpdb.Archive:
    return dpdb.Archive(settings=demo_run.settings)


@pytest.fixture(scope="module")
def tap(archive: dpdb.Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _serve(archive, Limits(), tmp_path_factory.mktemp("tap-jobs")) as url:
        yield url


def _objects(archive: dpdb.Archive, n: int) -> list[tuple[int, float, float]]:
    rows = archive.query_arrow(
        f"SELECT objectId, coord_ra, coord_dec FROM current.Object ORDER BY objectId LIMIT {n}"
    ).to_pylist()
    return [(r["objectId"], r["coord_ra"], r["coord_dec"]) for r in rows]


def _params(query: str, maxrec: int | None = None, **uploads: Table) -> object:
    sent = {"LANG": "ADQL", "QUERY": query}
    if maxrec is not None:
        sent["MAXREC"] = str(maxrec)
    return parse_params(sent, Limits(), {k: _arrow(v) for k, v in uploads.items()})


def _arrow(table: Table):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.table({name: np.asarray(table[name]) for name in table.colnames})


def _same(a: shapes.Statement, b: shapes.Statement) -> None:
    assert a.text == b.text
    assert a.translation.sql == b.translation.sql
    assert a.reads_prompt == b.reads_prompt
    assert a.translation.tables == b.translation.tables
    assert a.translation.xtypes == b.translation.xtypes
    assert (a.translation.row_limit, a.translation.overflow_possible) == (
        b.translation.row_limit,
        b.translation.overflow_possible,
    )


# Each query is a format with two sets of numbers: the first teaches the shape, the second must get
# from it exactly the statement a full translation gives (ranges of its own region included).
SHAPES = [
    ("cone", "SELECT objectId, coord_ra FROM current.Object WHERE 1 = CONTAINS(POINT('ICRS', coord_ra, "
     "coord_dec), CIRCLE('ICRS', {0}, {1}, {2}))", ("{ra}", "{dec}", "0.01"), ("{ra2}", "{dec2}", "0.3")),
    ("cone, negative dec and arithmetic radius", "SELECT objectId FROM current.Object WHERE "
     "CONTAINS(POINT(coord_ra, coord_dec), CIRCLE({0}, -{1}, {2}/3600.)) = 1", ("{ra}", "1.5", "10"),
     ("{ra2}", "0.25", "7200")),
    ("not in a cone", "SELECT COUNT(*) AS n FROM current.Object WHERE 0 = CONTAINS(POINT(coord_ra, "
     "coord_dec), CIRCLE({0}, {1}, {2}))", ("{ra}", "{dec}", "0.1"), ("{ra2}", "{dec2}", "0.2")),
    ("polygon", "SELECT diaObjectId FROM prompt.DiaObject WHERE 1 = CONTAINS(POINT(ra, dec), "
     "POLYGON('ICRS', {0}, {1}, {2}, {1}, {2}, {3}))", ("{ra}", "{dec}", "{ra2}", "{dec2}"),
     ("{ra2}", "{dec2}", "{ra}", "{dec}")),
    ("box", "SELECT objectId FROM current.Object WHERE 1 = CONTAINS(POINT(coord_ra, coord_dec), "
     "BOX('ICRS', {0}, {1}, {2}, {2}))", ("{ra}", "{dec}", "0.2"), ("{ra2}", "{dec2}", "1")),
    ("distance", "SELECT objectId, DISTANCE(POINT(coord_ra, coord_dec), POINT({0}, {1})) AS d FROM "
     "current.Object WHERE DISTANCE(POINT(coord_ra, coord_dec), POINT({0}, {1})) < {2} ORDER BY d",
     ("{ra}", "{dec}", "0.1"), ("{ra2}", "{dec2}", "0.05")),
    ("light curve", "SELECT f.objectId, f.visit, f.psfFlux FROM current.Object AS o JOIN "
     "current.ForcedSource AS f ON f.objectId = o.objectId WHERE o.objectId = {0}", ("{id}",), ("{id2}",)),
    ("prompt cone, unqualified", "SELECT diaObjectId, ra, dec FROM DiaObject WHERE 1 = CONTAINS(POINT(ra, "
     "dec), CIRCLE({0}, {1}, {2}))", ("{ra}", "{dec}", "0.2"), ("{ra2}", "{dec2}", "0.4")),
    ("top and offset", "SELECT TOP {0} objectId FROM current.Object WHERE coord_dec > {1} ORDER BY objectId "
     "OFFSET {2}", ("5", "{dec}", "1"), ("500", "{dec2}", "2")),
    ("geometry values", "SELECT TOP 3 POINT('ICRS', coord_ra, coord_dec) AS pos, CIRCLE({0}, {1}, {2}) AS c, "
     "ROUND(coord_ra, {3}) AS r FROM current.Object ORDER BY objectId", ("{ra}", "{dec}", "0.5", "2"),
     ("{ra2}", "{dec2}", "1e-3", "4")),
    ("region against region", "SELECT objectId FROM current.Object WHERE 1 = INTERSECTS(CIRCLE(coord_ra, "
     "coord_dec, 0.01), POLYGON({0}, {1}, {2}, {1}, {2}, {3}))", ("{ra}", "{dec}", "{ra2}", "{dec2}"),
     ("{ra2}", "{dec2}", "{ra}", "{dec}")),
]  # fmt: skip


@pytest.mark.parametrize("maxrec", [None, 100, 0])
def test_a_kept_shape_gives_the_full_translation_for_other_numbers(
    archive: dpdb.Archive, maxrec: int | None
) -> None:
    (id1, ra, dec), (id2, ra2, dec2) = _objects(archive, 2)
    values = {"ra": ra, "dec": abs(dec), "ra2": ra2 + 0.01, "dec2": abs(dec2) + 0.02, "id": id1, "id2": id2}
    shapes.clear()
    hits = 0
    for name, fmt, first, second in SHAPES:
        q1 = fmt.format(*(v.format(**values) for v in first))
        q2 = fmt.format(*(v.format(**values) for v in second))
        assert q1 != q2
        learned = _fast_statement(archive, _params(q1, maxrec))
        _same(learned, _full_statement(archive.settings, _params(q1, maxrec)))
        kept = shapes.lookup(archive.settings, q2, _params(q2, maxrec).maxrec)  # type: ignore[attr-defined]
        hits += kept is not None
        got = _fast_statement(archive, _params(q2, maxrec))
        want = _full_statement(archive.settings, _params(q2, maxrec))
        _same(got, want)
        assert got.translation.adql == q2, name
        if name == "cone":  # each centre its own ranges: the second cone is far from the first
            assert kept is not None and got.text != learned.text
    assert hits >= 7  # the number-only shapes were kept (TOP and polygon vertices are part of a shape)


def test_top_above_maxrec_is_another_shape(archive: dpdb.Archive) -> None:
    """TOP's value decides the row limit and the overflow flag: never a slot."""
    shapes.clear()
    small = _fast_statement(archive, _params("SELECT TOP 5 objectId FROM current.Object", 100))
    large = _fast_statement(archive, _params("SELECT TOP 500 objectId FROM current.Object", 100))
    assert not small.translation.overflow_possible and small.translation.row_limit == 5
    assert large.translation.overflow_possible and large.translation.row_limit == 101
    want = _full_statement(archive.settings, _params("SELECT TOP 500 objectId FROM current.Object", 100))
    _same(large, want)


def test_cones_of_one_shape_get_their_own_rows(tap: str, archive: dpdb.Archive) -> None:
    """Through the service (pyvo): every cone after the first is answered from the kept shape, and
    each gets exactly the rows of its own centre, as the same SQL run through the archive."""
    shapes.clear()
    service = pyvo.dal.TAPService(tap)
    seen = []
    for _, ra, dec in _objects(archive, 40)[::8]:
        adql = ("SELECT objectId FROM current.Object WHERE 1 = CONTAINS(POINT('ICRS', coord_ra, coord_dec), "
                f"CIRCLE('ICRS', {ra}, {dec}, 0.02))")  # fmt: skip
        got = sorted(service.run_sync(adql).to_table()["objectId"].tolist())
        want = archive.query_arrow(
            "SELECT objectId FROM current.Object "
            f"WHERE q3c_radial_query(coord_ra, coord_dec, {ra}, {dec}, 0.02)"
        )
        assert got == sorted(want.column("objectId").to_pylist()) and got
        seen.append(tuple(got))
    assert len(set(seen)) == len(seen)  # five centres, five different answers
    assert sum(len(v) for v in shapes._cache.values()) >= 1


def test_uploads_are_never_kept_nor_reached_by_another_request(tap: str, archive: dpdb.Archive) -> None:
    shapes.clear()
    objects = _objects(archive, 6)
    query = (
        "SELECT m.tag, o.objectId FROM TAP_UPLOAD.mine AS m JOIN current.Object AS o "
        "ON 1 = CONTAINS(POINT('ICRS', o.coord_ra, o.coord_dec), CIRCLE('ICRS', m.ra, m.dec, 1/3600.))"
    )
    service = pyvo.dal.TAPService(tap)
    answers = {}
    for tag, chosen in (("first", objects[:3]), ("second", objects[3:])):
        mine = Table({"ra": [o[1] for o in chosen], "dec": [o[2] for o in chosen],
                      "tag": [tag] * len(chosen)})  # fmt: skip
        result = service.run_sync(query, uploads={"mine": mine}).to_table()
        assert set(result["tag"].tolist()) == {tag}
        assert {o[0] for o in chosen} <= set(result["objectId"].tolist())
        answers[tag] = set(result["objectId"].tolist())
    assert not answers["first"] & {o[0] for o in objects[3:]}  # nothing of the first upload's answer
    assert not any("tap_upload" in repr(key).lower() for key in shapes._cache)  # nothing kept
    # the same query without its upload: refused, not answered from anything kept
    bare = httpx.get(f"{tap}/sync", params={"LANG": "ADQL", "QUERY": query})
    assert bare.status_code == 400 and "TAP_UPLOAD.mine was not uploaded" in bare.text
    with pytest.raises(TapError, match="was not uploaded"):
        _fast_statement(archive, _params(query))


def test_the_table_is_part_of_the_shape(tap: str, archive: dpdb.Archive) -> None:
    """Two queries alike but for their table read each their own (current vs previous)."""
    shapes.clear()
    results = {}
    for schema in ("current", "previous"):
        query = f"SELECT COUNT(*) AS n FROM {schema}.Object"
        votable = parse(io.BytesIO(httpx.get(f"{tap}/sync", params={"LANG": "ADQL", "QUERY": query}).content))
        releases = next(i.value for i in votable.resources[0].infos if i.name == "dpdb_releases")
        results[schema] = (int(votable.get_first_table().array["n"][0]), releases)
    assert results["current"][1].startswith("current=") and results["previous"][1].startswith("previous=")
    for schema in ("current", "previous"):
        name = results[schema][1].split("=")[1]
        n = archive.query_arrow(f"SELECT count(*) AS n FROM {schema}.Object").column("n")[0].as_py()
        assert results[schema][0] == n, name


def test_a_shape_with_the_slot_marker_in_it_is_not_kept(archive: dpdb.Archive) -> None:
    shapes.clear()
    q = "SELECT objectId AS dpdbslot0x FROM current.Object WHERE objectId > 5"
    got = _fast_statement(archive, _params(q))
    _same(got, _full_statement(archive.settings, _params(q)))
    assert not shapes._cache


def test_statement_cost(archive: dpdb.Archive) -> None:
    """A kept shape is filled without sqlglot parsing: far cheaper than a full translation."""
    shapes.clear()
    _, ra, dec = _objects(archive, 1)[0]
    queries = [
        "SELECT objectId FROM current.Object WHERE 1 = CONTAINS(POINT('ICRS', coord_ra, coord_dec), "
        f"CIRCLE('ICRS', {ra + i * 1e-3}, {abs(dec)}, 0.01))"
        for i in range(30)
    ]
    _fast_statement(archive, _params(queries[0]))
    start = time.perf_counter()
    for q in queries[1:]:
        _fast_statement(archive, _params(q))
    kept = time.perf_counter() - start
    start = time.perf_counter()
    for q in queries[1:]:
        _full_statement(archive.settings, _params(q))
    full = time.perf_counter() - start
    assert kept < full / 3, (kept, full)


def test_full_statement_is_used_for_uploads(archive: dpdb.Archive) -> None:
    shapes.clear()
    _, ra, dec = _objects(archive, 1)[0]
    mine = Table({"ra": [ra], "dec": [dec]})
    q = ("SELECT o.objectId FROM TAP_UPLOAD.t AS m JOIN current.Object AS o "
         "ON 1 = CONTAINS(POINT(o.coord_ra, o.coord_dec), CIRCLE(m.ra, m.dec, 0.001))")  # fmt: skip
    params = _params(q, t=mine)
    got = _fast_statement(archive, params)
    assert "VALUES" in got.translation.sql and not shapes._cache
    _same(got, _full_statement(archive.settings, dataclasses.replace(params)))  # type: ignore[type-var]


def test_a_large_top_runs_through_adbc_with_the_same_rows(tap: str) -> None:
    """TOP above 10,000 goes straight to ADBC (no psycopg try first): the same rows and records, for a
    release and for the prompt catalog (read as of the recorded instant: its setting holds for the
    query, in the same transaction)."""
    for table, key, column in (("current.Object", "objectId", "r_psfFlux"),
                               ("prompt.DiaObject", "diaObjectId", "nDiaSources")):  # fmt: skip
        answers = []
        for top in (9_000, 20_000):
            query = f"SELECT TOP {top} {key}, {column} FROM {table} ORDER BY {key}"
            r = httpx.get(f"{tap}/sync", params={"LANG": "ADQL", "QUERY": query})
            assert r.status_code == 200, r.text[:500]
            votable = parse(io.BytesIO(r.content))
            infos = {i.name: i.value for i in votable.resources[0].infos}
            rows = votable.get_first_table().array
            answers.append((rows[key].tolist(), rows[column].tolist(), infos["dpdb_releases"],
                            infos["QUERY_STATUS"], infos["dpdb_as_of_mjd_tai"]))  # fmt: skip
        small, large = answers  # the table may hold more than 9,000 rows (another test's release)
        n = len(small[0])
        assert n > 1000 and len(large[0]) >= n, table
        assert (large[0][:n], large[1][:n], *large[2:]) == small, table


def test_numbers_in_strings_names_and_comments_are_part_of_the_shape(archive: dpdb.Archive) -> None:
    """Only numbers standing alone are slots: one in a string, a quoted name, a comment or a name
    makes another shape, and a number run into other text keeps the query out of the cache."""
    shapes.clear()
    _, ra, dec = _objects(archive, 1)[0]
    base = ("SELECT objectId, 'tag 1' AS t FROM current.Object /* note 1 */ WHERE objectId > {0} "
            "-- and 2\n AND 1 = CONTAINS(POINT(coord_ra, coord_dec), CIRCLE({1}, {2}, 0.5))")  # fmt: skip
    first = base.format(10, ra, abs(dec))
    _fast_statement(archive, _params(first))
    assert shapes.lookup(archive.settings, base.format(11, ra + 0.01, abs(dec)), 100_000) is not None
    for other in (
        first.replace("'tag 1'", "'tag 2'"),
        first.replace("note 1", "note 2"),
        first.replace("and 2", "and 3"),
        first.replace("'tag 1' AS t", '\'tag 1\' AS "t 1"'),
    ):
        assert shapes.lookup(archive.settings, other, 100_000) is None, other
        _same(_fast_statement(archive, _params(other)), _full_statement(archive.settings, _params(other)))
    assert shapes._numbers("SELECT TOP 1 r_psfFlux2 FROM current.Object WHERE objectId > 1e5")[1] == [
        (11, 12), (61, 64)
    ]  # fmt: skip
    assert shapes._numbers("SELECT 1e5x FROM current.Object") is None


def test_ranges_text_is_what_sqlglot_writes() -> None:
    from sqlglot.dialects.postgres import Postgres

    from dpdb.pruning import ranges_sql, ranges_text

    for qualifier in (None, "o", "obj1", "User", "order", '"a b"'):
        for ranges in ([(1, 5)], [(1, 5), (9, 12), (20, 30)], []):
            assert ranges_text(ranges, qualifier) == ranges_sql(ranges, qualifier).sql(dialect=Postgres())
