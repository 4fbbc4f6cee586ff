"""The web portal in a real browser: Debian's Chromium driven by Playwright, against the service running
under uvicorn on the demo's database.

Every check compares what the browser shows with what the public API (``dpdb.Archive``) answers for the
same question: the catalogs, an object's row and light curve, the object as of an instant, the sky map,
an ADQL query through the TAP service with its downloads and permalink, the error pages.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import DemoRun

import dpdb

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
DEMO_DIAOBJECT = 288230377200288075  # the demo's example DiaObject (README)
DOCS = Path(__file__).resolve().parents[1] / "docs"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def archive(demo_run: DemoRun) -> dpdb.Archive:
    return dpdb.Archive(settings=demo_run.settings)


@pytest.fixture(scope="module")
def base_url(demo_run: DemoRun) -> Iterator[str]:
    """``dpdb serve`` on a free port against the demo's database, as a user starts it."""
    port = _free_port()
    env = {**os.environ, "DPDB_HOME": str(demo_run.settings.home)}
    dpdb_cli = str(Path(sys.executable).with_name("dpdb"))
    proc = subprocess.Popen(
        [dpdb_cli, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
        cwd=demo_run.settings.home.parent,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"dpdb serve exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                if httpx.get(url + "/", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError("dpdb serve did not answer within 60 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, tmp_path: Path) -> Iterator[object]:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


def _shot(pg, name: str) -> None:  # type: ignore[no-untyped-def]
    """Screenshot for the README when DPDB_PORTAL_SCREENSHOTS is set (docs/portal_*.png)."""
    if os.environ.get("DPDB_PORTAL_SCREENSHOTS"):
        pg.screenshot(path=str(DOCS / f"portal_{name}.png"), full_page=False)


# -- home ---------------------------------------------------------------------------------------------


def test_home_lists_every_catalog_with_state_and_rows(page, base_url: str, archive: dpdb.Archive) -> None:
    response = page.goto(base_url + "/")
    assert response.status == 200
    releases = archive.releases.list()
    assert releases, "the demo made releases"
    for rel in releases:
        row = page.locator(f"#catalogs tr[data-catalog='{rel.name}']")
        assert row.count() == 1
        text = row.inner_text()
        assert rel.state in text and f"v{rel.schema_version}" in text
        for table, n in rel.rows.items():
            assert f"{table} {n:,}" in text
    assert page.locator("#catalogs tr[data-catalog='prompt']").count() == 1
    last = archive.query("SELECT max(visit) AS v FROM prompt.Visit")["v"][0]
    assert page.locator("#last-visit [data-field=visit]").inner_text() == str(last)
    assert page.locator("#tap-url").inner_text() == base_url + "/tap"
    assert "pyvo.dal.TAPService" in page.locator("#pyvo-snippet").inner_text()
    current = archive.query("SELECT name FROM dpdb_registry.release WHERE state = 'active'")["name"][0]
    assert page.locator("#current-release").inner_text() == current
    _shot(page, "home")


# -- object page --------------------------------------------------------------------------------------


def _points(pg) -> list[tuple[bool, str, float, float]]:  # type: ignore[no-untyped-def]
    return sorted(
        (cls.endswith("forced"), band, float(t), float(flux))
        for cls, band, t, flux in pg.eval_on_selector_all(
            "#lightcurve circle.pt",
            "els => els.map(e => [e.getAttribute('class'), e.dataset.band, e.dataset.t, e.dataset.flux])",
        )
    )


def _expected_points(archive: dpdb.Archive, oid: int, as_of: float | None = None) -> list:
    live = "" if as_of is not None else "AND timeWithdrawnMjdTai IS NULL"
    rows = archive.query(
        f"SELECT false AS forced, band, midpointMjdTai AS t, psfFlux FROM prompt.DiaSource "
        f"WHERE diaObjectId = {oid} AND psfFlux IS NOT NULL {live} UNION ALL "
        f"SELECT true, band, midpointMjdTai, psfFlux FROM prompt.DiaForcedSource "
        f"WHERE diaObjectId = {oid} AND psfFlux IS NOT NULL {live}",
        as_of=as_of,
    )
    return sorted((bool(r["forced"]), str(r["band"]), float(r["t"]), float(r["psfFlux"])) for r in rows)


def _same_points(shown: list, expected: list) -> None:
    assert len(shown) == len(expected) > 0
    for (f1, b1, t1, x1), (f2, b2, t2, x2) in zip(shown, expected, strict=True):
        assert (
            (f1, b1) == (f2, b2)
            and math.isclose(t1, t2, rel_tol=1e-12)
            and math.isclose(x1, x2, rel_tol=1e-6)
        )


def test_object_page_row_light_curve_history_provenance(page, base_url: str, archive: dpdb.Archive) -> None:
    response = page.goto(f"{base_url}/object/{DEMO_DIAOBJECT}")
    assert response.status == 200
    page.wait_for_selector("#lightcurve circle.pt")
    # the light curve's points are the rows `dpdb query` gives, detections and forced apart
    _same_points(_points(page), _expected_points(archive, DEMO_DIAOBJECT))
    assert page.locator("#lightcurve circle.pt.forced").count() > 0
    assert page.locator("#lightcurve line.err").count() > 0  # error bars
    # interactive: a drag zooms in on a time range, a double click zooms out, the legend hides a band
    total = int(page.locator("#lightcurve").get_attribute("data-points"))
    box = page.locator("#lightcurve svg").bounding_box()
    page.mouse.move(box["x"] + 80, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 300, box["y"] + 150)
    page.mouse.up()
    assert 0 < int(page.locator("#lightcurve").get_attribute("data-points")) < total
    page.locator("#lightcurve svg").dblclick()
    assert int(page.locator("#lightcurve").get_attribute("data-points")) == total
    page.locator("#lightcurve .legend .entry[data-key=forced]").click()
    assert page.locator("#lightcurve circle.pt.forced").count() == 0
    page.locator("#lightcurve .legend .entry[data-key=forced]").click()
    # the row: the current version's values, with units and descriptions on hover
    now = archive.query(
        f"SELECT * FROM prompt.DiaObject WHERE diaObjectId = {DEMO_DIAOBJECT} AND validityEndMjdTai IS NULL"
    )
    assert len(now) == 1
    for col in ("nDiaSources", "ra", "r_psfFluxMean"):  # r_psfFluxMean is a real (float32) column
        cell = page.locator(f"#object-row tr[data-col='{col}'] td.value")
        assert math.isclose(float(cell.get_attribute("data-value")), float(now[col][0]), rel_tol=1e-6)
    ra = page.locator("#object-row tr[data-col='ra']")
    assert ra.locator("td.unit").inner_text() == "deg"
    assert ra.get_attribute("title").startswith(str(now["ra"].description)[:20])
    # the version history: one table row per version, the open one highlighted
    versions = archive.query(
        f"SELECT count(*) AS n FROM prompt.DiaObject WHERE diaObjectId = {DEMO_DIAOBJECT}"
    )
    assert page.locator("#versions tbody tr").count() == int(versions["n"][0])
    assert page.locator("#versions tbody tr.on").count() == 1
    # provenance: the visits and the load manifest entries
    prov = archive.provenance(DEMO_DIAOBJECT)
    assert f"{len(prov.contributing_visits)} visits" in page.locator("#prov-visits").inner_text()
    assert page.locator("#loads tbody tr").count() == min(len(prov.loads), 20)
    # the same object in the releases, linked
    links = page.locator("#counterparts a")
    assert links.count() == len(prov.in_releases) > 0
    _shot(page, "object")
    links.first.click()
    page.wait_for_selector("#lightcurve svg")
    assert page.url.endswith(f"/object/{next(iter(prov.in_releases.values()))}")


def test_time_slider_shows_the_object_as_of_the_instant(page, base_url: str, archive: dpdb.Archive) -> None:
    page.goto(f"{base_url}/object/{DEMO_DIAOBJECT}")
    page.wait_for_selector("#lightcurve circle.pt")
    starts = sorted(archive.query(
        f"SELECT validityStartMjdTai AS t FROM prompt.DiaObject WHERE diaObjectId = {DEMO_DIAOBJECT}"
    )["t"])  # fmt: skip
    for instant in (starts[len(starts) // 2] + 0.001, starts[2] + 0.001):
        page.eval_on_selector(
            "#as-of-slider",
            "(el, v) => { el.value = v; el.dispatchEvent(new Event('change')); }",
            str(instant),
        )
        page.wait_for_function("v => Math.abs(Number(document.body.dataset.asOf) - v) < 2e-4", arg=instant)
        shown = float(page.evaluate("document.body.dataset.asOf"))  # the slider's step rounds the instant
        row = archive.query(
            f"SELECT nDiaSources, r_psfFluxMean, validityStartMjdTai FROM prompt.DiaObject "
            f"WHERE diaObjectId = {DEMO_DIAOBJECT}",
            as_of=shown,
        )
        assert len(row) == 1
        cell = page.locator("#object-row tr[data-col='nDiaSources'] td.value")
        assert int(cell.get_attribute("data-value")) == int(row["nDiaSources"][0])
        start = page.locator("#object-row tr[data-col='validityStartMjdTai'] td.value")
        assert float(start.get_attribute("data-value")) == float(row["validityStartMjdTai"][0])
        _same_points(_points(page), _expected_points(archive, DEMO_DIAOBJECT, as_of=shown))
        assert f"as_of={shown}" in page.url or "as_of=" in page.url
    # before the object existed: no row, no points
    page.eval_on_selector(
        "#as-of-slider", "el => { el.value = el.min; el.dispatchEvent(new Event('change')); }"
    )
    page.wait_for_function("() => document.querySelector('#lightcurve').dataset.points === '0'")
    assert "did not exist yet" in page.locator("#object-state").inner_text()


def test_release_object_and_ssobject_pages(page, base_url: str, archive: dpdb.Archive) -> None:
    oid = int(archive.query("SELECT objectId FROM current.Object ORDER BY objectId LIMIT 1")["objectId"][0])
    assert page.goto(f"{base_url}/object/{oid}").status == 200
    page.wait_for_selector("#lightcurve svg")
    n = archive.query(
        f"SELECT (SELECT count(*) FROM current.Source WHERE objectId = {oid} AND psfFlux IS NOT NULL) + "
        f"(SELECT count(*) FROM current.ForcedSource WHERE objectId = {oid} AND psfFlux IS NOT NULL) AS n"
    )["n"][0]
    assert page.locator("#lightcurve circle.pt").count() == int(n)
    assert page.locator("#as-of-slider").count() == 0  # a release never changes
    ss = int(archive.query("SELECT ssObjectId FROM prompt.SSObject LIMIT 1")["ssObjectId"][0])
    assert page.goto(f"{base_url}/object/{ss}").status == 200
    assert page.locator("h1").inner_text().startswith("SSObject")


# -- sky ----------------------------------------------------------------------------------------------


def test_sky_map_counts_every_object(page, base_url: str, archive: dpdb.Archive) -> None:
    assert page.goto(f"{base_url}/sky").status == 200
    page.wait_for_selector("#skymap polygon.pixel")
    counts = page.eval_on_selector_all(
        "#skymap polygon.pixel", "els => els.map(e => Number(e.dataset.count))"
    )
    total = archive.query("SELECT count(*) AS n FROM current.Object")["n"][0]
    assert sum(counts) == int(total)
    _shot(page, "sky")
    # a click on the fullest pixel cone-searches it through the TAP service, on the query page
    fullest = max(range(len(counts)), key=counts.__getitem__)
    page.locator("#skymap polygon.pixel").nth(fullest).click()
    page.wait_for_url("**/query?**")
    page.wait_for_function(
        "() => !document.getElementById('result').hidden || !document.getElementById('query-error').hidden"
    )
    assert page.locator("#query-error").is_hidden(), page.locator("#query-error-message").inner_text()
    adql = page.locator("#adql").input_value()
    ra, dec, radius = (float(v) for v in adql.split("CIRCLE('ICRS', ")[1].rstrip(")").split(","))
    expected = archive.cone("Object", ra, dec, radius, release="current", columns=["objectId"])
    assert int(page.locator("#status").get_attribute("data-rows")) == len(expected) >= counts[fullest]


# -- query ----------------------------------------------------------------------------------------------


def _run(pg, adql: str, maxrec: int = 1000, as_of: str = "") -> None:  # type: ignore[no-untyped-def]
    pg.fill("#adql", adql)
    pg.fill("#maxrec", str(maxrec))
    pg.fill("#as-of", as_of)
    pg.click("#run")
    pg.wait_for_function(
        "() => !document.getElementById('result').hidden || !document.getElementById('query-error').hidden"
    )


def _shown_rows(pg) -> list[list[str]]:  # type: ignore[no-untyped-def]
    return pg.eval_on_selector_all(
        "#results tbody tr", "trs => trs.map(tr => [...tr.cells].map(c => c.innerText))"
    )


def test_query_runs_through_tap_pages_and_downloads(page, base_url: str, archive: dpdb.Archive) -> None:
    from astropy.io.votable import parse_single_table

    page.goto(f"{base_url}/query")
    # the editor offers the TAP service's DALI examples (/tap/examples)
    page.wait_for_function("() => document.getElementById('examples').dataset.source === 'tap'")
    assert page.locator("#examples option").count() > 2
    adql = "SELECT TOP 120 diaSourceId, band, psfFlux FROM prompt.DiaSource ORDER BY diaSourceId"
    _run(page, adql)
    assert page.locator("#query-error").is_hidden(), page.locator("#query-error-message").inner_text()
    pinned = float(page.locator("#as-of").input_value())  # the instant the portal pinned the query to
    expected = archive.query(
        "SELECT diaSourceId, band, psfFlux FROM prompt.DiaSource ORDER BY diaSourceId LIMIT 120", as_of=pinned
    )
    assert page.locator("#status").get_attribute("data-rows") == "120"
    first = _shown_rows(page)
    assert len(first) == 50 and first[0][0] == str(expected["diaSourceId"][0])
    header = page.locator("#results th").nth(2)
    assert header.get_attribute("data-unit") == "nJy" and header.get_attribute("title")
    page.click("#next")
    second = _shown_rows(page)
    assert second[0][0] == str(expected["diaSourceId"][50])
    assert "page 2 of 3" in page.locator("#page-info").inner_text()
    _shot(page, "query")
    # the VOTable download parses with astropy and holds the same rows
    with page.expect_download() as info:
        page.click("#dl-votable")
    table = parse_single_table(io.BytesIO(Path(info.value.path()).read_bytes())).to_table()
    assert list(table["diaSourceId"]) == list(expected["diaSourceId"])
    assert str(table["psfFlux"].unit) == "nJy"
    # CSV and Parquet downloads answer
    for link in ("#dl-csv", "#dl-parquet"):
        href = page.locator(link).get_attribute("href")
        assert httpx.get(base_url + href, timeout=60).status_code == 200


def test_permalink_reproduces_the_query_at_the_same_instant(
    page, base_url: str, archive: dpdb.Archive
) -> None:
    page.goto(f"{base_url}/query")
    adql = "SELECT count(*) AS n FROM prompt.DiaObject"
    _run(page, adql, as_of="2025-11-22T12:00:00")
    link = page.locator("#permalink").get_attribute("href")
    count = _shown_rows(page)[0][0]
    pinned = float(page.locator("#as-of").input_value())
    assert int(count) == int(archive.query(adql, as_of=pinned)["n"][0])
    page.goto(base_url + link)
    page.wait_for_function("() => !document.getElementById('result').hidden")
    assert _shown_rows(page)[0][0] == count
    # a query without "as of" is pinned to the instant it ran: its permalink says when
    _run(page, adql)
    assert "as_of=" in page.locator("#permalink").get_attribute("href")


def test_adql_error_shows_message_and_status(page, base_url: str) -> None:
    page.goto(f"{base_url}/query")
    _run(page, "SELEC diaObjectId FROM prompt.DiaObject")
    assert page.locator("#query-error").is_visible()
    assert page.locator("#error-status").inner_text().startswith("HTTP 4")
    assert page.locator("#query-error-message").inner_text()
    _run(page, "SELECT TOP 5 * FROM prompt.NoSuchTable")
    assert page.locator("#query-error").is_visible()


# -- errors and read-only --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/object/288230376151711745", 404),  # a prompt ID no object has
        ("/object/not-an-id", 404),
        ("/object/864691129503711563?as_of=yesterday-ish", 400),
        ("/no/such/page", 404),
        ("/sky?release=dr99", 404),
        ("/sky?table=Source", 400),
        ("/query?maxrec=-1", 400),
    ],
)
def test_error_pages_have_status_codes(page, base_url: str, path: str, status: int) -> None:
    response = page.goto(base_url + path)
    assert response.status == status
    assert page.locator("section.error").get_attribute("data-status") == str(status)
    assert page.locator("#error-message").inner_text()


def test_nothing_in_the_portal_writes(base_url: str, archive: dpdb.Archive) -> None:
    from dpdb.portal import create_router

    router = create_router(archive)
    for route in router.routes:
        assert set(route.methods) <= {"GET", "HEAD"}, (route.path, route.methods)  # type: ignore[attr-defined]
    before = archive.query("SELECT count(*) AS n FROM prompt.DiaObject")["n"][0]
    paths = ["/", "/query", "/sky", f"/object/{DEMO_DIAOBJECT}", f"/api/object/{DEMO_DIAOBJECT}", "/api/sky"]
    for path in paths:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            r = httpx.request(method, base_url + path, timeout=30)
            assert r.status_code == 405, (method, path, r.status_code)
    # a write smuggled into ADQL through the TAP service fails and changes nothing
    smuggled = {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": "DELETE FROM prompt.DiaObject"}
    r = httpx.post(base_url + "/tap/sync", data=smuggled, timeout=30)
    assert r.status_code >= 400 or "ERROR" in r.text
    assert archive.query("SELECT count(*) AS n FROM prompt.DiaObject")["n"][0] == before


def test_database_down_is_service_busy() -> None:
    """With the database unreachable every page is a 503 with Retry-After, not a traceback."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from dpdb.portal import mount_portal

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = FastAPI()
    mount_portal(app, dpdb.Archive(dsn=f"host=127.0.0.1 port={port} dbname=none user=none connect_timeout=2"))
    client = TestClient(app)
    for path in ("/", f"/object/{DEMO_DIAOBJECT}", "/api/sky"):
        r = client.get(path)
        assert r.status_code == 503, (path, r.status_code, r.text[:300])
        assert r.headers["retry-after"]


def test_object_of_a_dropped_release_is_gone(settings) -> None:  # type: ignore[no-untyped-def]
    """An ID whose release is no longer loaded is a 410 page that names the release and its state."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from dpdb.ids import make_id
    from dpdb.portal import mount_portal

    archive = dpdb.Archive(settings=settings)
    archive.releases.create("dr1")
    archive.releases.drop("dr1")
    app = FastAPI()
    mount_portal(app, archive)
    r = TestClient(app).get(f"/object/{make_id(2, 5)}")  # origin 2: dr1
    assert r.status_code == 410
    assert "release dr1, which is dropped" in r.text


def test_chromium_is_debian_s(tmp_path: Path) -> None:
    """The browser is the one scripts/setup.sh installs, not a downloaded build."""
    assert shutil.which("chromium") == CHROMIUM
