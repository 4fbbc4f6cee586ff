"""The TAP service as users reach it: the real app under uvicorn on the demo's database, queried with
pyvo (sync, async, tables, capabilities, examples, uploads, overflow, errors, time travel), EXPLAIN
for the q3c index and partition pruning, and the IVOA validator (stilts taplint)."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import pyvo
from astropy.io.votable import parse_single_table
from astropy.table import Table
from conftest import DemoRun, demo_copy

import dpdb


@dataclass
class Service:
    url: str
    archive: dpdb.Archive


@contextmanager
def _serving(archive: dpdb.Archive, job_dir: Path) -> Iterator[Service]:
    """The real app under uvicorn on a free port, in a thread, for the block."""
    import uvicorn

    from dpdb.service import create_app

    app = create_app(archive, job_dir=job_dir)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the TAP service did not start"
        time.sleep(0.05)
    try:
        yield Service(f"http://127.0.0.1:{port}/tap", archive)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def tap(demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with _serving(dpdb.Archive(settings=demo_run.settings), tmp_path_factory.mktemp("tap-jobs")) as service:
        yield service


def _centre(archive: dpdb.Archive) -> tuple[float, float]:
    row = archive.query_arrow(
        "SELECT avg(coord_ra) AS ra, avg(coord_dec) AS dec FROM current.Object"
    ).to_pylist()
    return float(row[0]["ra"]), float(row[0]["dec"])


def test_sync_cone_matches_dpdb_query(tap: Service) -> None:
    ra, dec = _centre(tap.archive)
    service = pyvo.dal.TAPService(tap.url)
    adql = (
        "SELECT objectId, coord_ra, coord_dec, r_psfFlux FROM current.Object "
        f"WHERE 1 = CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {ra}, {dec}, 0.1))"
    )
    result = service.run_sync(adql, maxrec=100_000)
    table = result.to_table()
    expected = tap.archive.query(
        f"SELECT objectId FROM current.Object WHERE q3c_radial_query(coord_ra, coord_dec, {ra}, {dec}, 0.1)"
    )
    assert len(table) > 0
    assert sorted(table["objectId"].tolist()) == sorted(expected["objectId"].tolist())
    # FIELD metadata from the felis schema, result provenance in INFO elements
    field = result.votable.get_first_table().get_field_by_id("coord_ra")
    assert field.ucd == "pos.eq.ra;meta.main" and str(field.unit) == "deg"
    assert field.description
    infos = {i.name: i.value for i in result.votable.resources[0].infos}
    assert infos["QUERY_STATUS"] == "OK"
    assert infos["dpdb_releases"].startswith("current=dr")
    assert float(infos["dpdb_as_of_mjd_tai"]) > 60000
    assert "dpdb_version" in infos
    # BINARY2 is the default serialization
    raw = httpx.get(f"{tap.url}/sync", params={"LANG": "ADQL", "QUERY": adql}).text
    assert "<BINARY2>" in raw


def test_formats(tap: Service) -> None:
    q = {"LANG": "ADQL", "QUERY": "SELECT TOP 5 objectId, coord_ra FROM current.Object ORDER BY objectId"}
    td = httpx.get(f"{tap.url}/sync", params={**q, "RESPONSEFORMAT": "votable/td"})
    assert "<TABLEDATA>" in td.text
    csv = httpx.get(f"{tap.url}/sync", params={**q, "RESPONSEFORMAT": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert len(Table.read(csv.text, format="ascii.csv")) == 5
    tsv = httpx.get(f"{tap.url}/sync", params={**q, "FORMAT": "tsv"})
    assert tsv.text.splitlines()[0].split("\t") == ['"objectId"', '"coord_ra"'] or tsv.text.startswith(
        "objectId"
    )
    import pyarrow.parquet as pq

    parquet = pq.read_table(
        io.BytesIO(httpx.get(f"{tap.url}/sync", params={**q, "FORMAT": "parquet"}).content)
    )
    assert parquet.num_rows == 5 and b"dpdb:dpdb_as_of_mjd_tai" in parquet.schema.metadata
    bad = httpx.get(f"{tap.url}/sync", params={**q, "RESPONSEFORMAT": "fits"})
    assert bad.status_code == 400 and 'value="ERROR"' in bad.text and "RESPONSEFORMAT" in bad.text


def test_maxrec_overflow(tap: Service) -> None:
    service = pyvo.dal.TAPService(tap.url)
    result = service.run_sync("SELECT objectId FROM current.Object", maxrec=7)
    assert len(result) == 7 and result.status[0] == "OVERFLOW"  # pyvo warns only when it did not ask for 7
    with pytest.warns(pyvo.dal.exceptions.DALOverflowWarning):  # a cut the client did not ask for
        pyvo.dal.TAPResults(result.votable, url=tap.url).check_overflow_warning()
    zero = {"LANG": "ADQL", "QUERY": "SELECT objectId, coord_ra FROM current.Object", "MAXREC": "0"}
    metadata = parse_single_table(io.BytesIO(httpx.get(f"{tap.url}/sync", params=zero).content))
    assert len(metadata.array) == 0 and [f.name for f in metadata.fields] == ["objectId", "coord_ra"]
    seven = {"LANG": "ADQL", "QUERY": "SELECT objectId FROM current.Object", "MAXREC": "7"}
    table = parse_single_table(io.BytesIO(httpx.get(f"{tap.url}/sync", params=seven).content))
    assert len(table.array) == 7
    top = {**seven, "QUERY": "SELECT TOP 3 objectId FROM current.Object"}
    assert "OVERFLOW" not in httpx.get(f"{tap.url}/sync", params=top).text
    huge = httpx.get(f"{tap.url}/sync", params={"LANG": "ADQL", "QUERY": "SELECT 1 AS x", "MAXREC": "10" * 9})
    assert huge.status_code == 400 and "hard limit" in huge.text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"LANG": "ADQL", "QUERY": "SELECT objectId FROM current.Object WHERE"},
            "syntax error at line 1, column",
        ),
        ({"LANG": "ADQL", "QUERY": "SELEC objectId FROM current.Object"}, "line 1, column 19 near 'FROM'"),
        ({"LANG": "ADQL", "QUERY": "SELEC x"}, "near 'SELEC': a query starts with SELECT"),
        ({"LANG": "SQL", "QUERY": "SELECT 1"}, "LANG=SQL is not supported"),
        ({"LANG": "ADQL"}, "QUERY is missing"),
        ({"LANG": "ADQL", "QUERY": "DELETE FROM current.Object"}, "never writes"),
        ({"LANG": "ADQL", "QUERY": "SELECT 1 AS a; DROP TABLE prompt.Visit"}, "exactly one"),
        (
            {"LANG": "ADQL", "QUERY": "SELECT pg_read_file('/etc/passwd') AS x"},
            "PG_READ_FILE is not available",
        ),
        ({"LANG": "ADQL", "QUERY": "SELECT * FROM current.NoSuchTable"}, "does not exist"),
        ({"LANG": "ADQL", "QUERY": "SELECT 1 AS x", "MAXREC": "many"}, "MAXREC"),
        ({"LANG": "ADQL", "QUERY": "SELECT 1 AS x", "ASOF": "yesterday-ish"}, "ASOF"),
    ],
)
def test_errors_are_votables_with_a_message(tap: Service, params: dict[str, str], message: str) -> None:
    response = httpx.post(f"{tap.url}/sync", data=params)
    assert response.status_code == 400
    table = io.BytesIO(response.content)
    from astropy.io.votable import parse

    infos = {i.name: i for i in parse(table).resources[0].infos}
    assert infos["QUERY_STATUS"].value == "ERROR"
    assert message in infos["QUERY_STATUS"].content


def test_pyvo_raises_on_error(tap: Service) -> None:
    service = pyvo.dal.TAPService(tap.url)
    with pytest.raises(pyvo.dal.DALQueryError, match="syntax error"):
        service.run_sync("SELECT FROM WHERE")


def test_async_job(tap: Service) -> None:
    service = pyvo.dal.TAPService(tap.url)
    job = service.submit_job("SELECT TOP 20 objectId, coord_ra FROM current.Object ORDER BY objectId")
    assert job.phase == "PENDING"
    job.run()
    job.wait(phases=["COMPLETED", "ERROR"], timeout=60)
    assert job.phase == "COMPLETED"
    table = job.fetch_result().to_table()
    assert len(table) == 20
    # WAIT blocks until the phase changes; the list filters by phase
    listing = httpx.get(f"{tap.url}/async", params={"PHASE": "COMPLETED"}).text
    assert job.job_id in listing
    assert job.job_id not in httpx.get(f"{tap.url}/async", params={"PHASE": "EXECUTING"}).text
    url = str(job.url)
    assert httpx.get(f"{url}/executionduration").text.isdigit()
    assert "T" in httpx.get(f"{url}/destruction").text
    assert "<uws:phase>COMPLETED</uws:phase>" in httpx.get(url, params={"WAIT": "1"}).text
    job.delete()
    assert httpx.get(url).status_code == 404
    # run_async: create, run, wait, fetch
    assert len(service.run_async("SELECT TOP 3 objectId FROM current.Object")) == 3
    # an error ends in phase ERROR with the message at /error
    bad = service.submit_job("SELECT nosuchcolumn FROM current.Object")
    bad.run()
    bad.wait(phases=["COMPLETED", "ERROR"], timeout=60)
    assert bad.phase == "ERROR"
    assert "nosuchcolumn" in httpx.get(f"{bad.url!s}/error").text
    # job state lives in dpdb_meta, so it is there for a restarted service
    from dpdb.db import connect

    with connect(tap.archive.settings) as conn:
        assert conn.execute(
            "SELECT phase FROM dpdb_meta.tap_job WHERE job_id = %s", (bad.job_id,)
        ).fetchone() == ("ERROR",)


def test_tables_capabilities_availability_examples(tap: Service) -> None:
    service = pyvo.dal.TAPService(tap.url)
    names = {t.name for t in service.tables}
    assert {"current.Object", "previous.Object", "prompt.DiaObject", "tap_schema.columns"} <= names
    columns = {c.name: c for c in service.tables["current.Object"].columns}
    assert columns["coord_ra"].ucd == "pos.eq.ra;meta.main" and columns["coord_ra"].unit == "deg"
    caps = service.capabilities
    assert any(c.standardid.startswith("ivo://ivoa.net/std/TAP") for c in caps)
    assert "<vosi:available>true</vosi:available>" in httpx.get(f"{tap.url}/availability").text
    assert service.maxrec and service.hardlimit
    examples = service.examples
    assert len(examples) >= 5
    for example in examples:  # every example runs
        query = example["QUERY"] if hasattr(example, "__getitem__") else example.query
        if "TAP_UPLOAD" in query:
            continue
        assert service.run_sync(query, maxrec=10).to_table() is not None
    # TAP_SCHEMA is queryable with ADQL
    assert len(service.run_sync("SELECT * FROM TAP_SCHEMA.schemas")) >= 4


def test_upload_crossmatch(tap: Service) -> None:
    rows = tap.archive.query_arrow(
        "SELECT coord_ra, coord_dec, objectId FROM current.Object ORDER BY objectId LIMIT 5"
    )
    mine = Table(
        {
            "ra": np.array(rows["coord_ra"]),
            "dec": np.array(rows["coord_dec"]),
            "tag": ["a", "b", "c", "d", "e"],
        }
    )
    service = pyvo.dal.TAPService(tap.url)
    result = service.run_sync(
        "SELECT m.tag, o.objectId FROM TAP_UPLOAD.mine AS m JOIN current.Object AS o "
        "ON 1 = CONTAINS(POINT('ICRS', o.coord_ra, o.coord_dec), CIRCLE('ICRS', m.ra, m.dec, 1/3600.))",
        uploads={"mine": mine},
    ).to_table()
    assert set(rows["objectId"].to_pylist()) <= set(result["objectId"].tolist())
    assert set(result["tag"].tolist()) == {"a", "b", "c", "d", "e"}


def test_as_of_repeats_across_ingest_and_release_swap(tap: Service) -> None:
    """The instant a result records gives the same rows later, after more nights and a swap."""
    service = pyvo.dal.TAPService(tap.url)
    releases = tap.archive.query_arrow(
        "SELECT name, activated_mjd_tai FROM dpdb_meta.release_activation ORDER BY activation_id"
    ).to_pylist()
    assert len(releases) >= 2  # dr1 then dr2 were activated
    between = (releases[0]["activated_mjd_tai"] + releases[1]["activated_mjd_tai"]) / 2
    query = "SELECT COUNT(*) AS n FROM current.Object"
    then = service.search(query, ASOF=repr(between))
    infos = {i.name: i.value for i in then.votable.resources[0].infos}
    assert infos["dpdb_releases"] == f"current={releases[0]['name']}"
    now = service.run_sync(query)
    dr1 = (
        tap.archive.query_arrow(f"SELECT count(*) AS n FROM {releases[0]['name']}.Object")
        .column("n")[0]
        .as_py()
    )
    assert then.to_table()["n"][0] == dr1
    assert now.to_table()["n"][0] != dr1 or releases[0]["name"] == releases[-1]["name"]
    # the prompt catalog, as of an instant between the nights: the same rows from the instant in the INFO
    visits = (
        tap.archive.query_arrow(
            "SELECT processing_time_mjd_tai AS t FROM dpdb_registry.prompt_visit ORDER BY 1"
        )
        .column("t")
        .to_pylist()
    )
    middle = visits[len(visits) // 2]
    q = "SELECT diaObjectId, nDiaSources, validityStartMjdTai FROM prompt.DiaObject ORDER BY diaObjectId"
    first = service.search(q, ASOF=repr(middle), maxrec=1_000_000).to_table()
    again = service.search(q, ASOF=repr(middle), maxrec=1_000_000).to_table()
    present = service.search(q, maxrec=1_000_000)
    assert len(first) > 0 and first.as_array().tolist() == again.as_array().tolist()
    assert len(present.to_table()) > len(first)
    recorded = {i.name: i.value for i in present.votable.resources[0].infos}["dpdb_as_of_mjd_tai"]
    replay = service.search(q, ASOF=recorded, maxrec=1_000_000).to_table()
    assert replay.as_array().tolist() == present.to_table().as_array().tolist()


def test_select_geometry_and_functions(tap: Service) -> None:
    service = pyvo.dal.TAPService(tap.url)
    result = service.run_sync(
        "SELECT TOP 2 POINT('ICRS', coord_ra, coord_dec) AS pos, DISTANCE(POINT(coord_ra, coord_dec), "
        "POINT(coord_ra, coord_dec + 1)) AS d, LOG10(100) AS l, LOWER('AbC') AS s, ROUND(coord_ra, 2) AS r "
        "FROM current.Object ORDER BY objectId OFFSET 1"
    )
    table = result.to_table()
    field = result.votable.get_first_table().get_field_by_id("pos")
    assert field.xtype == "point" and field.arraysize == "2"
    assert table["d"][0] == pytest.approx(1.0, abs=1e-9)
    assert table["l"][0] == pytest.approx(2.0) and table["s"][0] == "abc"


def _plan(archive: dpdb.Archive, adql: str) -> str:
    """EXPLAIN of the SQL the service runs for ``adql``; sequential scans off, as on a catalog whose
    partitions are large enough for the planner to prefer the index (the demo's are a few pages)."""
    import psycopg

    from dpdb.pg import conninfo
    from dpdb.query import query_text
    from dpdb.tap.run import Limits, parse_params, prepare

    translation, *_ = prepare(archive, parse_params({"LANG": "ADQL", "QUERY": adql}, Limits()))
    with psycopg.connect(conninfo(archive.settings)) as conn:
        conn.execute("SET enable_seqscan = off")
        sql = query_text(archive.settings, translation.sql)  # with the partitions' ranges, as run
        return "\n".join(r[0] for r in conn.execute(f"EXPLAIN {sql}".encode()))


def test_explain_cone_and_polygon_use_q3c_and_prune_partitions(tap: Service) -> None:
    ra, dec = _centre(tap.archive)
    count = (
        "SELECT count(*) AS n FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent "
        "JOIN pg_namespace s ON s.oid = c.relnamespace WHERE c.relname = 'diaobject' AND s.nspname = 'prompt'"
    )
    partitions = tap.archive.query_arrow(count).column("n")[0].as_py()
    circle = f"CIRCLE('ICRS', {ra}, {dec}, 0.05)"
    polygon = f"POLYGON({ra - 0.05}, {dec - 0.05}, {ra + 0.05}, {dec - 0.05}, {ra}, {dec + 0.05})"
    plans = [
        _plan(
            tap.archive,
            f"SELECT diaObjectId FROM prompt.DiaObject WHERE 1 = CONTAINS(POINT(ra, dec), {circle})",
        ),
        _plan(
            tap.archive,
            f"SELECT diaObjectId FROM prompt.DiaObject WHERE 1 = CONTAINS(POINT(ra, dec), {polygon})",
        ),
        _plan(
            tap.archive,
            f"SELECT objectId FROM current.Object WHERE 1 = CONTAINS(POINT(coord_ra, coord_dec), {circle})",
        ),  # fmt: skip
    ]
    for plan in plans:
        # q3c: the index of each partition scanned, or, on these few-page partitions where the
        # partition's own _healpix_29 range makes the primary key as cheap, its test on the rows
        assert "q3c_ang2ipix" in plan, plan
        scanned = {line.split(" on ")[1].split()[0] for line in plan.splitlines() if " Scan " in line}
        assert 0 < len(scanned) <= 4 < partitions, plan  # only the HEALPix partitions the region touches


@pytest.mark.skipif(shutil.which("stilts") is None, reason="stilts (Debian package) is not installed")
def test_taplint_reports_no_errors(tap: Service) -> None:
    stages = "stages=TMV TME TMS TMC CPV CAP AVV QGE QPO QAS UWS MDQ OBS UPL EXA"
    proc = subprocess.run(
        ["stilts", "taplint", f"tapurl={tap.url}", stages, "maxtable=4", "report=EW", "format=text"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E-")]
    assert not errors, "\n".join(errors[:40]) + "\n" + proc.stdout[-3000:]
    assert "Totals:" in proc.stdout


def test_archive_adql_facade(tap: Service) -> None:
    """The same ADQL through the public API (dpdb.Archive.adql) as through the service."""
    ra, dec = _centre(tap.archive)
    adql = (
        "SELECT objectId FROM current.Object "
        f"WHERE 1 = CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {ra}, {dec}, 0.1))"
    )
    local = tap.archive.adql(adql)
    remote = pyvo.dal.TAPService(tap.url).run_sync(adql, maxrec=100_000).to_table()
    assert sorted(local["objectId"].tolist()) == sorted(remote["objectId"].tolist()) and len(local) > 0


def test_async_jobs_survive_a_restart(tap: Service, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A job left QUEUED by a stopped service runs when the next one starts; jobs past their
    destruction time are destroyed with their files."""
    import datetime as dt

    from dpdb.tap.run import Limits
    from dpdb.tap.uws import JobStore

    before = JobStore(tap.archive, tmp_path, Limits())
    job = before.create({"LANG": "ADQL", "QUERY": "SELECT TOP 4 objectId FROM current.Object"}, None, {})
    before.update(job.job_id, phase="QUEUED")  # queued, and the service stops before running it
    after = JobStore(tap.archive, tmp_path, Limits())
    after.start()
    try:
        done = after.wait(job.job_id, 30, "QUEUED")
        done = after.wait(job.job_id, 30, "EXECUTING") if done.phase == "EXECUTING" else done
        assert done.phase == "COMPLETED" and done.result_rows == 4
        assert after.result_file(done).is_file()
        after.update(job.job_id, destruction_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        assert job.job_id in after.reap()
        assert not (tmp_path / job.job_id).exists()
    finally:
        after.stop()


def test_dpdb_serve_prints_the_url_and_stops_on_sigterm(demo_run: DemoRun) -> None:
    import os
    import signal
    import sys
    from pathlib import Path

    dpdb_cli = str(Path(sys.executable).with_name("dpdb"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPDB_")}
    proc = subprocess.Popen(
        [dpdb_cli, "--home", str(demo_run.settings.home), "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split()[line.split().index("at") + 1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/tap")
        for _ in range(100):
            try:
                if "true" in httpx.get(f"{url}/availability", timeout=5).text:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert "<vosi:available>true" in httpx.get(f"{url}/availability").text
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()


def _comparisons(archive: dpdb.Archive) -> list[tuple[str, str, str]]:
    ra, dec = _centre(archive)
    first = archive.query_arrow("SELECT min(objectId) AS id FROM current.Object").column("id")[0].as_py()
    box = (ra - 0.1, dec - 0.1, ra + 0.1, dec - 0.1, ra + 0.1, dec + 0.1, ra - 0.1, dec + 0.1)
    return [
        ("cone",
         f"SELECT objectId FROM current.Object WHERE 1 = CONTAINS(POINT('ICRS', coord_ra, coord_dec), "
         f"CIRCLE('ICRS', {ra}, {dec}, 0.08))",
         "SELECT objectId FROM current.Object "
         f"WHERE q3c_radial_query(coord_ra, coord_dec, {ra}, {dec}, 0.08)"),
        ("light curve",
         "SELECT f.objectId, f.visit, f.psfFlux FROM current.Object AS o JOIN current.ForcedSource AS f "
         f"ON f.objectId = o.objectId WHERE o.objectId = {first}",
         f"SELECT f.objectId, f.visit, f.psfFlux FROM current.ForcedSource f WHERE f.objectId = {first}"),
        ("aggregate",
         "SELECT COUNT(*) AS n, AVG(r_psfFlux) AS mean_r FROM current.Object "
         f"WHERE 1 = CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {ra}, {dec}, 0.5))",
         "SELECT count(*) AS n, avg(r_psfFlux) AS mean_r FROM current.Object "
         f"WHERE q3c_radial_query(coord_ra, coord_dec, {ra}, {dec}, 0.5)"),
        ("polygon",
         "SELECT diaObjectId, validityStartMjdTai FROM prompt.DiaObject WHERE 1 = CONTAINS(POINT(ra, dec), "
         f"POLYGON('ICRS', {', '.join(map(str, box))}))",
         "SELECT diaObjectId, validityStartMjdTai FROM prompt.DiaObject "
         f"WHERE q3c_poly_query(ra, dec, ARRAY[{', '.join(map(str, box))}])"),
    ]  # fmt: skip


def test_queries_agree_with_dpdb_query(tap: Service) -> None:
    """Cone, light curve join, aggregate over a region, polygon: the service's rows are those of the
    same query in SQL through the archive (what `dpdb query` runs) at the instant the result records
    (the prompt catalog is read as of it: the DiaObject versions valid then)."""
    service = pyvo.dal.TAPService(tap.url)
    for name, adql, sql in _comparisons(tap.archive):
        result = service.run_sync(adql, maxrec=1_000_000)
        got = result.to_table()
        instant = {i.name: i.value for i in result.votable.resources[0].infos}["dpdb_as_of_mjd_tai"]
        # `dpdb query --as-of <the INFO's instant> --provisional`: the service evaluated it at its own now
        expected = tap.archive.query(sql, as_of=float(instant), provisional=True)
        assert len(expected) > 0, name
        assert got.colnames == expected.colnames, name
        assert _rows(got) == _rows(expected), name


def _rows(table: Table) -> list[tuple[float | None, ...]]:
    rows = [tuple(None if np.ma.is_masked(v) else round(float(v), 6) for v in r) for r in table.iterrows()]
    return sorted(rows, key=repr)


def test_recorded_instants_repeat_after_more_nights_and_a_release_swap(
    demo_run: DemoRun, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15's time travel: results saved before more nights are ingested and a new release is
    activated give the identical rows when their recorded instant is sent back as ASOF (on a copy of
    the demo's database, which this test changes). A kept cone, run as a prepared statement
    (dpdb/tap/engine.py), reads the new release after the swap."""
    import logging

    from dpdb.tap import shapes

    caplog.set_level(logging.DEBUG, logger="dpdb.tap.engine")
    cone = ("SELECT objectId, coord_ra, r_psfFlux FROM current.Object WHERE "
            "1 = CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {ra}, {dec}, {r}))")  # fmt: skip
    queries = (
        "SELECT diaObjectId, nDiaSources, ra, dec, r_psfFluxMean FROM prompt.DiaObject ORDER BY diaObjectId",
        "SELECT diaSourceId, diaObjectId, psfFlux FROM prompt.DiaSource ORDER BY diaSourceId",
        "SELECT COUNT(*) AS n, MAX(objectId) AS last FROM current.Object",
    )
    with demo_copy(demo_run, "taptime", tmp_path / "archive") as settings:
        archive = dpdb.Archive(settings=settings)
        with _serving(archive, tmp_path / "jobs") as service:
            tap = pyvo.dal.TAPService(service.url)
            saved = {}
            for query in queries:
                result = tap.search(query, maxrec=1_000_000)
                infos = {i.name: i.value for i in result.votable.resources[0].infos}
                saved[query] = (infos["dpdb_as_of_mjd_tai"], infos["dpdb_releases"], result.to_table())
            shapes.clear()
            first = "SELECT coord_ra, coord_dec FROM current.Object ORDER BY objectId LIMIT 1"
            centre = archive.query_arrow(first).to_pylist()[0]
            for r in (1.0, 1.01, 1.0):  # the first teaches the shape; the others run prepared
                before = tap.search(cone.format(ra=centre["coord_ra"], dec=centre["coord_dec"], r=r))
            assert sum("executed as dpdb_shape_" in m for m in caplog.messages) >= 1
            # another night, processed after every change so far, then a release made from it and activated
            survey = tmp_path / "survey"
            survey.mkdir()
            shutil.copy(demo_run.settings.home / "demo" / "survey" / "survey.json", survey)
            archive.prompt.ingest(archive.prompt.simulate(survey, 1))  # processed now
            name, number = "tapswap", 21  # earlier tests may have made dr3 (and others) in the demo
            archive.releases.produce(name, tmp_path / name, number=number, from_prompt=True)
            archive.releases.create(name, number=number)
            archive.releases.load(name, tmp_path / name)
            archive.releases.activate(name, force=not archive.releases.validate(name).ok)
            caplog.clear()
            after = tap.search(cone.format(ra=centre["coord_ra"], dec=centre["coord_dec"], r=1.0))
            # the statement prepared before the swap, replanned by PostgreSQL on the new views
            assert sum("executed as dpdb_shape_" in m for m in caplog.messages) == 1
            infos = {i.name: i.value for i in after.votable.resources[0].infos}
            assert name in infos["dpdb_releases"] and name not in {
                i.name: i.value for i in before.votable.resources[0].infos}["dpdb_releases"]  # fmt: skip
            expected = archive.query_arrow(
                "SELECT objectId, coord_ra, r_psfFlux FROM current.Object WHERE "
                f"q3c_radial_query(coord_ra, coord_dec, {centre['coord_ra']}, {centre['coord_dec']}, 1.0)"
            )
            got = sorted(after.to_table()["objectId"].tolist())
            assert got and got == sorted(expected.column("objectId").to_pylist())
            for query, (instant, releases, rows) in saved.items():
                now = tap.search(query, maxrec=1_000_000).to_table()
                assert now.as_array().tolist() != rows.as_array().tolist(), query  # the catalogs changed
                again = tap.search(query, ASOF=instant, maxrec=1_000_000)
                infos = {i.name: i.value for i in again.votable.resources[0].infos}
                assert infos["dpdb_as_of_mjd_tai"] == instant and infos["dpdb_releases"] == releases
                assert again.to_table().as_array().tolist() == rows.as_array().tolist(), query
