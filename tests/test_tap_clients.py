"""The TAP service with more clients and rules: astroquery's TAP+ client (sync, async, table list),
HTTP Basic logins mapped onto reader logins (401s, the login's own limits), URL uploads kept off
the service's own network, and citing a result on request (CITE=true, read with pyvo)."""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import psycopg
import pytest
import pyvo
import requests
from astropy.io.votable import parse_single_table
from astropy.io.votable.tree import VOTableFile
from astropy.table import Table
from conftest import DemoRun

import dpdb
from dpdb.db import conninfo
from dpdb.tap.fetch import check_url
from dpdb.tap.run import Limits, TapError


@contextlib.contextmanager
def _serve(archive: dpdb.Archive, limits: Limits, job_dir) -> Iterator[str]:  # type: ignore[no-untyped-def]
    import uvicorn

    from dpdb.service import create_app

    app = create_app(archive, limits=limits, job_dir=job_dir)
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
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/tap"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def archive(demo_run: DemoRun) -> dpdb.Archive:
    return dpdb.Archive(settings=demo_run.settings)


@pytest.fixture(scope="module")
def open_tap(archive: dpdb.Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service as `dpdb serve` runs it: anonymous requests allowed."""
    with _serve(archive, Limits(upload_max_bytes=200_000), tmp_path_factory.mktemp("jobs")) as url:
        yield url


LOGIN, PASSWORD = "tap_alice", "correct horse battery staple"


@pytest.fixture(scope="module")
def login_tap(archive: dpdb.Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dpdb serve --no-anonymous`, with one reader login made as an operator does."""
    archive.grant_reader(LOGIN, PASSWORD)
    with _serve(archive, Limits(anonymous=False), tmp_path_factory.mktemp("jobs")) as url:
        yield url


def _centre(archive: dpdb.Archive) -> tuple[float, float]:
    row = archive.query_arrow("SELECT coord_ra, coord_dec FROM current.Object ORDER BY objectId LIMIT 1")
    return float(row.column("coord_ra")[0].as_py()), float(row.column("coord_dec")[0].as_py())


def _cone(ra: float, dec: float, radius_arcsec: float = 60) -> str:
    return (
        "SELECT objectId, coord_ra, coord_dec FROM current.Object WHERE 1 = CONTAINS("
        f"POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {ra}, {dec}, {radius_arcsec / 3600}))"
    )


# -- astroquery TAP+ ---------------------------------------------------------------------------------


def test_astroquery_tapplus_sync_async_and_tables(open_tap: str, archive: dpdb.Archive) -> None:
    from astroquery.utils.tap.core import TapPlus

    tap = TapPlus(url=open_tap, verbose=False)
    names = {t.name.lower() for t in tap.load_tables(only_names=True, verbose=False)}
    assert {"current.object", "current.source", "prompt.diaobject", "tap_schema.tables"} <= names, names

    ra, dec = _centre(archive)
    expected = sorted(archive.adql(_cone(ra, dec))["objectId"].tolist())
    assert expected
    sync = tap.launch_job(_cone(ra, dec), verbose=False).get_results()
    assert sorted(int(v) for v in sync["objectId"]) == expected

    job = tap.launch_job_async(_cone(ra, dec), verbose=False)
    assert job.get_phase() == "COMPLETED"
    assert sorted(int(v) for v in job.get_results()["objectId"]) == expected

    with pytest.raises(requests.exceptions.HTTPError, match="nosuchcolumn"):  # the service's message
        tap.launch_job("SELECT nosuchcolumn FROM current.Object", verbose=False)


# -- HTTP Basic logins -------------------------------------------------------------------------------


def _basic(name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


def test_login_required_wrong_password_and_public_vosi(login_tap: str, archive: dpdb.Archive) -> None:
    ra, dec = _centre(archive)
    params = {"LANG": "ADQL", "QUERY": _cone(ra, dec)}
    anonymous = httpx.get(f"{login_tap}/sync", params=params)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic realm=")
    assert b"QUERY_STATUS" in anonymous.content and b"requires a login" in anonymous.content

    wrong = httpx.get(f"{login_tap}/sync", params=params, headers=_basic(LOGIN, "not the password"))
    assert wrong.status_code == 401 and "www-authenticate" in wrong.headers
    nobody = httpx.get(f"{login_tap}/sync", params=params, headers=_basic("nobody_here", PASSWORD))
    assert nobody.status_code == 401

    # the owner of the database may write: never a login for user queries
    owner = psycopg.conninfo.conninfo_to_dict(conninfo(archive.settings)).get("user", "postgres")
    assert httpx.get(f"{login_tap}/sync", params=params, headers=_basic(str(owner), "x")).status_code in (
        401,
        403,
    )

    for public in ("capabilities", "availability"):
        assert httpx.get(f"{login_tap}/{public}").status_code == 200

    right = httpx.get(f"{login_tap}/sync", params=params, headers=_basic(LOGIN, PASSWORD))
    assert right.status_code == 200, right.text[:500]
    rows = parse_single_table(io.BytesIO(right.content)).to_table()
    assert sorted(rows["objectId"].tolist()) == sorted(archive.adql(_cone(ra, dec))["objectId"].tolist())

    # pyvo with a session carrying the credentials; the async job belongs to the login
    session = pyvo.auth.AuthSession()
    session.credentials.set_password(LOGIN, PASSWORD)
    service = pyvo.dal.TAPService(login_tap, session=session)
    session.update_from_capabilities(service.capabilities)  # the service declares HTTP Basic (BasicAA)
    job = service.submit_job(_cone(ra, dec))
    job.run().wait(timeout=60)
    assert job.phase == "COMPLETED"
    assert job.owner == LOGIN
    job.delete()


def test_the_query_runs_as_the_login_with_its_limits(login_tap: str, archive: dpdb.Archive) -> None:
    """An operator's limit on one login (ALTER ROLE ... SET statement_timeout) applies to its queries."""
    with psycopg.connect(conninfo(archive.settings), autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {LOGIN} SET statement_timeout = '300ms'".encode())
    # a new password entry is verified anew (the service keeps a verified login for a minute)
    with psycopg.connect(conninfo(archive.settings), autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {LOGIN} PASSWORD 'second password'".encode())
    heavy = "SELECT COUNT(*) AS n FROM current.Source AS a, current.Source AS b WHERE a.psfFlux < b.psfFlux"
    start = time.monotonic()
    r = httpx.get(f"{login_tap}/sync", params={"LANG": "ADQL", "QUERY": heavy},
                  headers=_basic(LOGIN, "second password"), timeout=120)  # fmt: skip
    assert time.monotonic() - start < 30
    assert r.status_code == 400, r.text[:500]
    assert b"statement timeout" in r.content, r.content[-600:]
    top = {"LANG": "ADQL", "QUERY": "SELECT TOP 1 objectId FROM current.Object"}
    light = httpx.get(f"{login_tap}/sync", headers=_basic(LOGIN, "second password"), params=top)
    assert light.status_code == 200


# -- URL uploads: no requests into the service's own network --------------------------------------------


@pytest.fixture(scope="module")
def upload_server() -> Iterator[str]:
    """A local web server holding a small VOTable (and a large file) at 127.0.0.1."""
    table = Table({"ra": np.array([10.0, 20.0]), "dec": np.array([-5.0, 5.0]), "name": ["a", "b"]})
    buf = io.BytesIO()
    VOTableFile.from_table(table).to_xml(buf)
    files = {"/mine.xml": buf.getvalue(), "/big.xml": b"<" * 300_000}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = files.get(self.path)
            if body is None:
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-votable+xml")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_upload_to_a_private_address_is_refused(open_tap: str, upload_server: str) -> None:
    query = "SELECT name FROM TAP_UPLOAD.mine"
    for url in (f"{upload_server}/mine.xml", "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/x",
                "http://10.1.2.3/x.xml", "ftp://example.org/x", "http://user:pw@example.org/x"):  # fmt: skip
        r = httpx.post(f"{open_tap}/sync", data={"LANG": "ADQL", "QUERY": query, "UPLOAD": f"mine,{url}"})
        assert r.status_code in (400, 403), (url, r.status_code)
        assert b"QUERY_STATUS" in r.content and b"ERROR" in r.content


def test_url_upload_allowed_by_the_operator_with_size_limit(
    archive: dpdb.Archive, upload_server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    limits = Limits(upload_url_allow=("127.0.0.1",), upload_max_bytes=100_000)
    with _serve(archive, limits, tmp_path_factory.mktemp("jobs")) as url:
        ok = httpx.post(f"{url}/sync", data={"LANG": "ADQL", "QUERY": "SELECT name FROM TAP_UPLOAD.mine",
                                             "UPLOAD": f"mine,{upload_server}/mine.xml"})  # fmt: skip
        assert ok.status_code == 200, ok.text[:500]
        assert sorted(parse_single_table(io.BytesIO(ok.content)).to_table()["name"].tolist()) == ["a", "b"]
        big = httpx.post(f"{url}/sync", data={"LANG": "ADQL", "QUERY": "SELECT * FROM TAP_UPLOAD.mine",
                                              "UPLOAD": f"mine,{upload_server}/big.xml"})  # fmt: skip
        assert big.status_code == 413
        # a redirect from the allowed host to a refused address is checked like the first URL
        moved = httpx.post(f"{url}/sync", data={"LANG": "ADQL", "QUERY": "SELECT * FROM TAP_UPLOAD.mine",
                                                "UPLOAD": f"mine,{upload_server}/elsewhere"})  # fmt: skip
        assert moved.status_code == 403, moved.text[:300]


def test_check_url_classifies_addresses() -> None:
    strict = Limits()
    for url in ("http://127.0.0.1/x", "http://localhost/x", "http://192.168.1.1/", "http://[fe80::1]/",
                "http://0.0.0.0/", "http://224.0.0.1/"):  # fmt: skip
        with pytest.raises(TapError):
            check_url("t", url, strict)
    assert check_url("t", "http://8.8.8.8/x", strict) == ("8.8.8.8", "8.8.8.8")
    assert check_url("t", "http://10.1.2.3/", Limits(upload_url_allow=("10.0.0.0/8",)))[1] == "10.1.2.3"


# -- citations on request ----------------------------------------------------------------------------


def test_cite_true_returns_a_resolvable_identifier(open_tap: str, archive: dpdb.Archive) -> None:
    ra, dec = _centre(archive)
    service = pyvo.dal.TAPService(open_tap)
    result = service.run_sync(_cone(ra, dec), CITE="true")
    infos = {i.name: i.value for i in result.votable.resources[0].infos}
    handle = infos["dpdb_citation"]
    assert handle
    resolution = archive.citations.resolve(handle)
    assert resolution.verified
    assert resolution.citation.row_count == len(result)
    # the same query at the same instant: the same citation; without CITE: none
    again = service.run_sync(_cone(ra, dec), CITE="true", ASOF=infos["dpdb_as_of_mjd_tai"])
    assert {i.name: i.value for i in again.votable.resources[0].infos}["dpdb_citation"] == handle
    plain = service.run_sync(_cone(ra, dec))
    assert "dpdb_citation" not in {i.name for i in plain.votable.resources[0].infos}
    # other formats carry it in a header
    csv = httpx.get(f"{open_tap}/sync", params={"LANG": "ADQL", "QUERY": _cone(ra, dec), "CITE": "true",
                                                "RESPONSEFORMAT": "csv"})  # fmt: skip
    assert csv.headers["x-dpdb-citation"] == handle
    bad = httpx.get(f"{open_tap}/sync", params={"LANG": "ADQL", "QUERY": _cone(ra, dec), "CITE": "perhaps"})
    assert bad.status_code == 400
    # the public API does the same (dpdb.Archive.adql(..., cite=True)); MAXREC is part of the query
    # cited (its LIMIT), so the service's default is given
    local = archive.adql(_cone(ra, dec), cite=True, as_of=float(infos["dpdb_as_of_mjd_tai"]),
                         maxrec=Limits().default_maxrec)  # fmt: skip
    assert local.meta["citation"] == handle


# -- TAP_SCHEMA follows activations without felis --------------------------------------------------------


def test_tap_schema_refresh_is_incremental(archive: dpdb.Archive, caplog: pytest.LogCaptureFixture) -> None:
    """What an activation's refresh does: nothing for unchanged schemas, a renamed copy for a schema
    whose rows are missing or stale, felis only for a layout never described; same rows as a full
    rewrite. Run in a transaction that is rolled back."""
    import logging

    from dpdb.tap.tap_schema import refresh_tap_schema

    tables = ("schemas", "tables", "columns", "keys", "key_columns")

    def rows(conn: psycopg.Connection) -> list[list[tuple]]:
        return [
            conn.execute(f"SELECT * FROM tap_schema.{t} ORDER BY 1, 2".encode()).fetchall() for t in tables
        ]

    caplog.set_level(logging.INFO, logger="dpdb.tap.tap_schema")
    with psycopg.connect(conninfo(archive.settings)) as conn:
        refresh_tap_schema(conn, full=True)
        full = rows(conn)
        assert any(r[0] == "current" for r in full[0]) and len(full[2]) > 1000
        caplog.clear()
        refresh_tap_schema(conn)
        assert "none generated with felis" in caplog.text, caplog.text
        assert rows(conn) == full
        # current lost its rows: they come back as a renamed copy of previous's (same views), no felis
        conn.execute("DELETE FROM tap_schema.columns WHERE table_name LIKE 'current.%'")
        conn.execute("DELETE FROM tap_schema.tables WHERE schema_name = 'current'")
        conn.execute("DELETE FROM tap_schema.schemas WHERE schema_name = 'current'")
        caplog.clear()
        refresh_tap_schema(conn)
        assert "none generated with felis" in caplog.text, caplog.text
        assert rows(conn) == full
        # previous has a stale column: replaced by a copy of current's
        conn.execute(
            "UPDATE tap_schema.columns SET column_name = 'gone' "
            "WHERE table_name = 'previous.Object' AND column_name = 'coord_ra'"
        )
        caplog.clear()
        refresh_tap_schema(conn)
        assert "previous changed" in caplog.text and "none generated with felis" in caplog.text, caplog.text
        assert rows(conn) == full
        # both aliases gone at once: no described schema has their layout (views without _load_id),
        # so felis describes one and the other is copied from it
        for alias in ("current", "previous"):
            conn.execute(f"DELETE FROM tap_schema.columns WHERE table_name LIKE '{alias}.%'".encode())
            conn.execute(f"DELETE FROM tap_schema.tables WHERE schema_name = '{alias}'".encode())
            conn.execute(f"DELETE FROM tap_schema.schemas WHERE schema_name = '{alias}'".encode())
        caplog.clear()
        refresh_tap_schema(conn)
        assert "(current generated with felis)" in caplog.text, caplog.text
        assert rows(conn) == full
        conn.rollback()
