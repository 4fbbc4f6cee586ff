"""``/tap/sync`` for kept query shapes on the event loop (dpdb/tap/fastsync.py) and the one-message
statements (dpdb/tap/engine.py): the same documents as the FastAPI route (results and errors), the
same safety (reader login, read-only repeatable-read transaction, statement timeout), concurrent
clients all answered, and only single statements ever sent inside a message."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from astropy.io.votable import parse_single_table
from conftest import DemoRun

import dpdb
from dpdb.errors import QueryError
from dpdb.tap import engine, shapes
from dpdb.tap.run import Limits, TapError, parse_params, request_params, service_sql

CONE = ("SELECT objectId, coord_ra, coord_dec, r_psfFlux FROM current.Object WHERE "
        "1 = CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {ra}, {dec}, {r}))")  # fmt: skip


def _serve(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the TAP service did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/tap/sync"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def archive(demo_run: DemoRun) -> dpdb.Archive:
    return dpdb.Archive(settings=demo_run.settings)


@pytest.fixture(scope="module")
def urls(archive: dpdb.Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The service with the event-loop path (``fast``) and without it (``route``)."""
    from dpdb.service import create_app

    jobs = tmp_path_factory.mktemp("jobs")
    fast = _serve(create_app(archive, job_dir=jobs / "fast", fast_sync=True))
    route = _serve(create_app(archive, job_dir=jobs / "route", fast_sync=False))
    yield {"fast": next(fast), "route": next(route)}
    for server in (fast, route):
        next(server, None)


def _centres(archive: dpdb.Archive, n: int) -> list[tuple[float, float]]:
    rows = archive.query_arrow(
        f"SELECT coord_ra, coord_dec FROM current.Object ORDER BY objectId LIMIT {n}"
    ).to_pylist()
    return [(r["coord_ra"], r["coord_dec"]) for r in rows]


def _answered_on_loop(caplog: pytest.LogCaptureFixture) -> int:
    return sum("answered on the event loop" in r.getMessage() for r in caplog.records)


def test_kept_shapes_get_the_routes_documents(
    urls: dict[str, str], archive: dpdb.Archive, caplog: pytest.LogCaptureFixture
) -> None:
    """GET and URL-encoded POST: the event loop answers kept shapes with the route's very bytes."""
    caplog.set_level(logging.DEBUG, logger="dpdb.tap.fastsync")
    shapes.clear()
    centres = _centres(archive, 6)
    with httpx.Client(timeout=60) as client:
        for i, (ra, dec) in enumerate(centres):
            params = {"LANG": "ADQL", "QUERY": CONE.format(ra=ra, dec=dec, r=0.05), "MAXREC": "1000"}
            got = {}
            for name, url in urls.items():
                r = client.post(url, data=params) if i % 2 else client.get(url, params=params)
                assert r.status_code == 200, r.text[:300]
                got[name] = (r.headers["content-type"], r.content)
            assert got["fast"] == got["route"]  # same rows, same instant, same INFO elements
            table = parse_single_table(_io(got["fast"][1])).to_table()
            expected = archive.query_arrow(
                "SELECT objectId FROM current.Object "
                f"WHERE q3c_radial_query(coord_ra, coord_dec, {ra}, {dec}, 0.05)"
            )
            assert sorted(table["objectId"].tolist()) == sorted(expected.column("objectId").to_pylist())
    # the first query of a shape is translated on the route's thread; the rest come from the loop
    assert _answered_on_loop(caplog) >= len(centres) - 2


def test_errors_are_the_routes_documents(urls: dict[str, str], archive: dpdb.Archive) -> None:
    """A bad parameter and a statement failing in PostgreSQL give the route's error document."""
    shapes.clear()
    teach = "SELECT TOP 3 objectId FROM current.Object WHERE coord_ra / {x} > 1"
    with httpx.Client(timeout=60) as client:
        for url in urls.values():  # the shape is kept (one per process: the cache is shared)
            assert client.get(url, params={"LANG": "ADQL", "QUERY": teach.format(x=2)}).status_code == 200
        cases = [
            {"LANG": "ADQL", "QUERY": teach.format(x=0)},  # division by zero in PostgreSQL
            {"LANG": "ADQL", "QUERY": teach.format(x=3), "MAXREC": "-1"},
            {"LANG": "SQL", "QUERY": teach.format(x=3)},
            {"LANG": "ADQL", "QUERY": teach.format(x=3), "RESPONSEFORMAT": "fits"},
        ]
        for params in cases:
            fast, route = (client.get(u, params=params) for u in (urls["fast"], urls["route"]))
            assert fast.status_code == route.status_code == 400
            assert fast.content == route.content
            assert b'name="QUERY_STATUS" value="ERROR"' in fast.content
        division = client.get(urls["fast"], params=cases[0]).content
        assert b"division by zero" in division


def test_a_repeated_parameter_is_refused_alike(urls: dict[str, str], archive: dpdb.Archive) -> None:
    """DALI: a single-valued parameter sent twice with different values is an error, on the event loop
    (a kept shape) as on the route, whichever spelling or part of the request repeats it; the same value
    twice is one value."""
    shapes.clear()
    ((ra, dec),) = _centres(archive, 1)
    query = CONE.format(ra=ra, dec=dec, r=0.05)
    other = CONE.format(ra=ra, dec=dec, r=0.5)
    with httpx.Client(timeout=60) as client:
        for url in urls.values():  # the shape is kept: the fast path would answer the query
            assert client.get(url, params={"LANG": "ADQL", "QUERY": query}).status_code == 200
        repeated = [
            ([("LANG", "ADQL"), ("QUERY", query), ("QUERY", other)], None),
            ([("LANG", "ADQL"), ("QUERY", query), ("query", other)], None),
            ([("LANG", "ADQL"), ("QUERY", query), ("MAXREC", "10"), ("maxrec", "1")], None),
            ([("LANG", "ADQL"), ("QUERY", query)], [("QUERY", other)]),  # query string and form
        ]
        for params, form in repeated:
            answers = [
                client.post(u, params=params, data=dict(form)) if form else client.get(u, params=params)
                for u in (urls["fast"], urls["route"])
            ]
            fast, route = answers
            assert fast.status_code == route.status_code == 400
            assert fast.content == route.content
            assert b'value="ERROR">' in fast.content and b"more than once" in fast.content
        same = [("LANG", "ADQL"), ("QUERY", query), ("lang", "ADQL")]
        fast, route = (client.get(u, params=same) for u in (urls["fast"], urls["route"]))
        assert fast.status_code == route.status_code == 200
        assert fast.content == route.content


def test_request_params_follow_dali() -> None:
    """Names case-insensitive and kept as first sent; UPLOAD repeats (joined); others take one value."""
    pairs = [("lang", "ADQL"), ("UPLOAD", "a,param:x"), ("Query", "q"), ("upload", "b,param:y"),
             ("LANG", "ADQL")]
    assert request_params(pairs) == {"lang": "ADQL", "UPLOAD": "a,param:x;b,param:y", "Query": "q"}
    with pytest.raises(TapError, match="MAXREC is given more than once"):
        request_params([("MAXREC", "10"), ("QUERY", "q"), ("maxRec", "11")])


def test_time_travel_uploads_and_citations_go_to_the_route(
    urls: dict[str, str], archive: dpdb.Archive, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="dpdb.tap.fastsync")
    shapes.clear()
    ((ra, dec),) = _centres(archive, 1)
    query = CONE.format(ra=ra, dec=dec, r=0.05)
    with httpx.Client(timeout=60) as client:
        first = client.get(urls["fast"], params={"LANG": "ADQL", "QUERY": query})
        as_of = first.text.split('name="dpdb_as_of_mjd_tai" value="')[1].split('"')[0]
        before = _answered_on_loop(caplog)
        again = client.get(urls["fast"], params={"LANG": "ADQL", "QUERY": query, "ASOF": as_of})
        assert again.status_code == 200
        assert _answered_on_loop(caplog) == before  # ASOF: the route ran it
        assert _rows(again.content) == _rows(first.content)


def _io(data: bytes):  # type: ignore[no-untyped-def]
    import io

    return io.BytesIO(data)


def _rows(document: bytes) -> list[tuple]:
    table = parse_single_table(_io(document)).to_table()
    return sorted(tuple(row) for row in table.iterrows())


def test_concurrent_clients_all_get_their_own_cones(urls: dict[str, str], archive: dpdb.Archive) -> None:
    shapes.clear()
    centres = _centres(archive, 12)

    def expected(ra: float, dec: float) -> list[int]:
        rows = archive.query_arrow(
            "SELECT objectId FROM current.Object "
            f"WHERE q3c_radial_query(coord_ra, coord_dec, {ra}, {dec}, 0.05)"
        )
        return sorted(rows.column("objectId").to_pylist())

    wanted = {c: expected(*c) for c in centres}

    def client_run(k: int) -> list[str]:
        problems = []
        with httpx.Client(timeout=60) as client:
            for i in range(len(centres)):
                ra, dec = centres[(i + k) % len(centres)]
                r = client.get(
                    urls["fast"], params={"LANG": "ADQL", "QUERY": CONE.format(ra=ra, dec=dec, r=0.05)}
                )
                if r.status_code != 200:
                    problems.append(f"HTTP {r.status_code}: {r.text[:300]}")
                elif (
                    sorted(parse_single_table(_io(r.content)).to_table()["objectId"].tolist())
                    != wanted[(ra, dec)]
                ):
                    problems.append(f"wrong rows for {ra}, {dec}")
        return problems

    with ThreadPoolExecutor(6) as pool:
        problems = [p for ps in pool.map(client_run, range(6)) for p in ps]
    assert problems == []


SAFETY = ("SELECT current_setting('transaction_read_only') AS ro, "
          "current_setting('transaction_isolation') AS iso, current_user AS who, "
          "current_setting('statement_timeout') AS timeout")  # fmt: skip


def test_one_message_keeps_the_reader_limits(archive: dpdb.Archive) -> None:
    """The one-message path (sync and asyncio): the reader login, a read-only repeatable-read
    transaction, the statement timeout; a statement running longer is cancelled."""
    import psycopg

    from dpdb.readers import reader_conninfo

    settings = archive.settings.model_copy(update={"reader_statement_timeout": 0.5})
    login = psycopg.conninfo.conninfo_to_dict(reader_conninfo(settings))["user"]
    assert engine.one_statement(SAFETY)
    results = [engine.run_final(settings, SAFETY, reads_prompt=False, single=True)]
    results.append(
        asyncio.run(_on_loop(engine.run_final_async(settings, SAFETY, reads_prompt=False, single=True)))
    )
    for result in results:
        row = result.table.to_pylist()[0]
        assert (row["ro"], row["iso"], row["timeout"]) == ("on", "repeatable read", "500ms")
        assert row["who"] == login
        assert result.instant > 0
    with pytest.raises(QueryError, match="statement timeout"):
        engine.run_final(settings, "SELECT pg_sleep(3)", reads_prompt=False, single=True)
    with pytest.raises(QueryError, match="statement timeout"):
        asyncio.run(
            _on_loop(engine.run_final_async(settings, "SELECT pg_sleep(3)", reads_prompt=False, single=True))
        )


async def _on_loop(run):  # type: ignore[no-untyped-def]
    """Await ``run`` and close the kept connections of this event loop (as the service's shutdown)."""
    try:
        return await run
    finally:
        await engine.close_async_pools()


@pytest.mark.parametrize("text", [
    "SELECT 1; SELECT 2", "SELECT 1 -- ; COMMIT", "SELECT 1 /* ; */", "SELECT $$;$$", "SELECT E'\\';'",
    "SELECT 1;", "",
])  # fmt: skip
def test_only_single_statements_go_in_a_message(text: str) -> None:
    assert not engine.one_statement(text)


def test_a_cone_shape_is_a_single_statement(archive: dpdb.Archive) -> None:
    shapes.clear()
    centres = _centres(archive, 2)
    for ra, dec in centres:  # the first teaches the shape, the second comes from it
        params = parse_params({"LANG": "ADQL", "QUERY": CONE.format(ra=ra, dec=dec, r=0.05)}, Limits())
        service_sql(archive, params)
    found = shapes.lookup(archive.settings, CONE.format(ra=centres[1][0], dec=centres[1][1], r=0.05), 100_000)
    assert found is not None and found.single
    with_semicolon = "SELECT TOP 2 objectId FROM current.Object WHERE 'a;b' = 'a;b' AND coord_ra > {x}"
    for x in (1, 2):
        service_sql(archive, parse_params({"LANG": "ADQL", "QUERY": with_semicolon.format(x=x)}, Limits()))
    kept = shapes.lookup(archive.settings, with_semicolon.format(x=3), 100_000)
    assert kept is not None and kept.single  # the ; is inside a string: one statement


def test_overflow_is_flagged_as_on_the_route(urls: dict[str, str], archive: dpdb.Archive) -> None:
    """MAXREC below the cone's rows: QUERY_STATUS=OVERFLOW and MAXREC rows, the route's very bytes."""
    shapes.clear()
    centres = _centres(archive, 3)
    with httpx.Client(timeout=60) as client:
        for ra, dec in centres:  # the first teaches the shape (MAXREC is part of it)
            params = {"LANG": "ADQL", "QUERY": CONE.format(ra=ra, dec=dec, r=1.0), "MAXREC": "2"}
            fast, route = (client.get(u, params=params) for u in (urls["fast"], urls["route"]))
            assert fast.status_code == route.status_code == 200
            assert fast.content == route.content
            assert b'name="QUERY_STATUS" value="OVERFLOW"' in fast.content
            assert len(parse_single_table(_io(fast.content)).to_table()) == 2


TYPES = ("SELECT objectId, coord_ra, CAST(r_psfFlux AS real) AS r_psfFlux, CAST(1 AS smallint) AS s, "
         "CAST(objectId % 7 AS integer) AS i, objectId % 2 = 0 AS even, "
         "CASE WHEN objectId % 3 = 0 THEN NULL ELSE coord_dec END AS maybe, "
         "CASE WHEN objectId % 2 = 0 THEN NULL ELSE CAST(2 AS smallint) END AS s_null, "
         "CASE WHEN objectId % 2 = 0 THEN NULL ELSE true END AS b_null, "
         "CASE WHEN objectId % 3 = 0 THEN NULL ELSE CAST(0.5 AS real) END AS f_null, "
         "CASE WHEN objectId % 2 = 0 THEN NULL ELSE objectId END AS l_null, "
         "CAST('NaN' AS float8) AS nan, CAST('-0' AS float8) AS negzero, CAST('-Infinity' AS real) AS inf "
         "FROM current.Object ORDER BY objectId LIMIT 7")  # fmt: skip


@pytest.mark.parametrize(("maxrec", "overflow_possible"), [(100, False), (4, True), (0, True)])
def test_binary2_from_the_rows_bytes_is_the_arrow_writers_document(
    archive: dpdb.Archive, maxrec: int, overflow_possible: bool
) -> None:
    """dpdb/tap/direct.py writes, from PostgreSQL's binary rows, the very document the Arrow writer
    makes of the same rows: every type it takes, NULLs of each (past 8 columns: a 2-byte null mask),
    NaN, -0 and infinity, the MAXREC cut and OVERFLOW; a type it does not take is left to the Arrow
    writer."""
    from dpdb.tap.adql import Translation
    from dpdb.tap.direct import binary2_body
    from dpdb.tap.run import fast_read, outcome

    settings = archive.settings
    tap = parse_params({"LANG": "ADQL", "QUERY": "SELECT TOP 7 objectId FROM current.Object",
                        "MAXREC": str(maxrec)}, Limits())  # fmt: skip
    translation = Translation(adql=tap.query, sql=TYPES, tables=[("current", "object")],
                              row_limit=7, overflow_possible=overflow_possible)  # fmt: skip
    written: list[bytes | None] = []

    def direct(instant, current, previous, pgresult):  # type: ignore[no-untyped-def]
        _, _, _, read = fast_read(translation, FastLike(current, previous))
        made = binary2_body(pgresult, translation, instant, read, tap)
        written.append(None if made is None else made[0])
        return None  # and the Arrow way too, in the same snapshot

    other = TYPES.replace("CAST(1 AS smallint) AS s", "CAST('x' AS text) AS s")  # not a binary2_body type

    async def both():  # type: ignore[no-untyped-def]  # one event loop: one kept connection
        return [await engine.run_final_async(settings, text, reads_prompt=False, single=True, direct=direct)
                for text in (TYPES, other)]  # fmt: skip

    result, _ = asyncio.run(_on_loop(both()))
    assert len(result.table) == 7 and len(written) == 2 and written[0] is not None
    assert written[1] is None
    table, _, instant, read = fast_read(translation, result)
    expected = outcome(table, translation, instant, read, tap, archive).body
    assert written[0] == expected
    assert (b'value="OVERFLOW"' in expected) == overflow_possible
    rows = parse_single_table(_io(expected)).to_table()
    assert len(rows) == min(7, maxrec)



class FastLike:
    """What fast_read reads of a result: the releases current and previous name."""

    def __init__(self, current: str | None, previous: str | None) -> None:
        self.current, self.previous, self.table, self.instant = current, previous, None, 0.0


def _kept(archive: dpdb.Archive, query: str, values: list[dict]) -> shapes.Statement:
    """The kept statement of ``query`` for the last of ``values`` (the first teaches the shape)."""
    for v in values:
        service_sql(archive, parse_params({"LANG": "ADQL", "QUERY": query.format(**v)}, Limits()))
    found = shapes.lookup(archive.settings, query.format(**values[-1]), 100_000)
    assert found is not None
    return found


async def _prepared_names(settings) -> list[tuple[str, int, int]]:  # type: ignore[no-untyped-def]
    async with engine.async_pool_for(settings).connection() as conn:
        cur = await conn.execute(
            "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE name LIKE 'dpdb_shape_%' ORDER BY name"
        )
        return await cur.fetchall()


def test_a_kept_cone_runs_prepared_with_one_generic_plan(archive: dpdb.Archive) -> None:
    """A kept cone runs as a statement prepared once per connection and executed with a generic plan:
    the same rows, instant and releases as its text planned per query; a statement deallocated behind
    the service's back is prepared again, the query still answered."""
    shapes.clear()
    engine._generic_ok.clear()
    settings = archive.settings
    centres = _centres(archive, 4)
    values = [{"ra": ra, "dec": dec, "r": 0.05} for ra, dec in centres]
    statements = [_kept(archive, CONE, values[: i + 1]) for i in range(1, len(values))]
    for statement in statements:
        assert statement.prepared is not None
        assert statement.prepared.types == ("numeric", "numeric", "numeric")
        assert "$1" in statement.prepared.text and "_healpix_29" in statement.prepared.text

    async def run() -> None:
        for statement in statements * 2:
            planned = await engine.run_final_async(settings, statement.text, reads_prompt=False, single=True)
            prepared = await engine.run_final_async(settings, statement.text, reads_prompt=False, single=True,
                                                    prepared=statement.prepared)  # fmt: skip
            assert prepared.table.equals(planned.table)
            assert prepared.table.schema == planned.table.schema
            assert (prepared.current, prepared.previous) == (planned.current, planned.previous)
            assert len(prepared.table) > 0
        names = await _prepared_names(settings)
        # each run on the generic plan; the one custom plan is the check's (EXPLAIN) when first prepared
        assert names and all(g >= 2 and c <= 1 for _, g, c in names)
        async with engine.async_pool_for(settings).connection() as conn:
            await conn.execute(f"DEALLOCATE {names[0][0]}".encode())
        again = [
            await engine.run_final_async(settings, s.text, reads_prompt=False, single=True,
                                         prepared=s.prepared)  # fmt: skip
            for s in statements * 2
        ]
        for statement, result in zip(statements * 2, again, strict=True):
            planned = await engine.run_final_async(settings, statement.text, reads_prompt=False, single=True)
            assert result.table.equals(planned.table)
        assert {n for n, _, _ in await _prepared_names(settings)} - {n for n, _, _ in names}  # prepared again

    asyncio.run(_on_loop(run()))
    assert engine._generic_ok and all(engine._generic_ok.values())


def test_a_generic_plan_unlike_the_planners_is_not_used(archive: dpdb.Archive) -> None:
    """A shape whose generic plan differs from what PostgreSQL plans for its values (here: a condition
    its values make false, known when planned with them, not without) is planned per query."""
    shapes.clear()
    engine._generic_ok.clear()
    query = "SELECT TOP 5 objectId FROM current.Object WHERE objectId > {n} AND {m} < 0"
    statement = _kept(archive, query, [{"n": 10**17, "m": 5}, {"n": 10**17 + 1, "m": 6}])
    assert statement.prepared is not None and statement.prepared.types == ("bigint", "integer", "integer")

    async def run() -> tuple:
        prepared = await engine.run_final_async(archive.settings, statement.text, reads_prompt=False,
                                                single=True, prepared=statement.prepared)  # fmt: skip
        return prepared, await _prepared_names(archive.settings)

    result, names = asyncio.run(_on_loop(run()))
    assert list(engine._generic_ok.values()) == [False]
    assert names == []  # deallocated once judged
    assert result.table.num_rows == 0


def test_a_prepared_shape_keeps_the_reader_limits(archive: dpdb.Archive) -> None:
    """Prepared and executed as the reader login, in the read-only repeatable-read transaction, under the
    statement timeout; a position in ORDER BY is never a parameter."""
    import psycopg

    from dpdb.readers import reader_conninfo

    settings = archive.settings.model_copy(update={"reader_statement_timeout": 0.5})
    login = psycopg.conninfo.conninfo_to_dict(reader_conninfo(settings))["user"]
    safety = shapes.Prepared(SAFETY + ", $1 AS n", ("integer",), ("7",))
    sleep = shapes.Prepared("SELECT pg_sleep($1)", ("integer",), ("3",))

    async def run() -> Any:
        result = await engine.run_final_async(settings, SAFETY + ", 7 AS n", reads_prompt=False, single=True,
                                              prepared=safety)  # fmt: skip
        with pytest.raises(QueryError, match="statement timeout"):
            await engine.run_final_async(settings, "SELECT pg_sleep(3)", reads_prompt=False, single=True,
                                         prepared=sleep)  # fmt: skip
        names = await _prepared_names(settings)
        return result, names

    result, names = asyncio.run(_on_loop(run()))
    row = result.table.to_pylist()[0]
    assert (row["ro"], row["iso"], row["timeout"], row["who"], row["n"]) == (
        "on", "repeatable read", "500ms", login, 7)  # fmt: skip
    assert len(names) == 2
    shapes.clear()
    ordered = "SELECT TOP 3 objectId, coord_ra FROM current.Object WHERE coord_ra > {x} ORDER BY {k}"
    statement = _kept(archive, ordered, [{"x": 1, "k": 2}, {"x": 2, "k": 2}])
    assert statement.prepared is None
