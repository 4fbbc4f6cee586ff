"""Citations in the web portal (issue 21 with issue 18), in Debian's Chromium driven by Playwright.

``dpdb serve`` runs on a copy of the demo's database (citing writes the citation store, and one
test changes a cited row behind dpdb's back). A query page and an object page cite what they show
through the TAP service (``CITE=true``); the landing page ``/cite/ID`` shows the DataCite metadata,
re-runs the query as of its instant and says ``verified`` or what differs; ``dpdb cite show`` names
the landing page while the portal runs. Every check compares the browser with the public API.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import DemoRun, demo_copy
from test_portal import CHROMIUM, CHROMIUM_ARGS, DEMO_DIAOBJECT, _free_port, _run, _shot

import dpdb
from dpdb.config import Settings
from dpdb.server import EmbeddedServer

DPDB = str(Path(sys.executable).with_name("dpdb"))

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")


@pytest.fixture(scope="module")
def cloned(demo_run: DemoRun) -> Iterator[Settings]:
    """A copy of the demo's database (``CREATE DATABASE ... TEMPLATE``)."""
    with demo_copy(demo_run, "pcite") as settings:
        yield settings


def _env(s: Settings) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DPDB_")}
    return {**clean, "DPDB_HOME": str(s.home), "DPDB_DATABASE": s.database}


def _serve(s: Settings) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [DPDB, "serve", "--host", "127.0.0.1", "--port", str(port)], env=_env(s),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dpdb serve exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(url + "/", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.terminate()
    raise AssertionError("dpdb serve did not answer within 60 s")


@pytest.fixture(scope="module")
def served(cloned: Settings) -> Iterator[str]:
    proc, url = _serve(cloned)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def archive(cloned: Settings) -> dpdb.Archive:
    return dpdb.Archive(settings=cloned)


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


def _audit_entries(s: Settings) -> int:
    with psycopg.connect(EmbeddedServer(s.home).conninfo(s.database)) as conn:
        return int(conn.execute("SELECT count(*) FROM dpdb_meta.audit_log").fetchone()[0])  # type: ignore[index]


def _cited(page) -> str:  # type: ignore[no-untyped-def]
    """Click "cite" and wait for the identifier (the link to its landing page)."""
    page.click("#cite")
    page.wait_for_selector("#citation-link", timeout=60_000)
    return str(page.locator("#citation-link").get_attribute("data-id"))


def _table_rows(page, selector: str) -> list[list[str]]:  # type: ignore[no-untyped-def]
    return page.eval_on_selector_all(
        f"{selector} tbody tr", "trs => trs.map(tr => [...tr.cells].map(c => c.innerText))"
    )


def _verdict(page) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    page.wait_for_function("() => !!document.getElementById('verdict').dataset.outcome", timeout=60_000)
    v = page.locator("#verdict")
    return str(v.get_attribute("data-outcome")), v.inner_text()


# -- cite from the query page, land on the citation ------------------------------------------------------


def test_query_page_cites_and_the_landing_page_verifies(
    page, served: str, archive: dpdb.Archive, cloned: Settings
) -> None:
    from astropy.io.votable import parse_single_table

    page.goto(f"{served}/query")
    adql = "SELECT TOP 80 diaSourceId, band, psfFlux, psfFluxErr FROM prompt.DiaSource ORDER BY diaSourceId"
    _run(page, adql)
    assert page.locator("#query-error").is_hidden(), page.locator("#query-error-message").inner_text()
    pinned = float(page.locator("#as-of").input_value())
    shown = int(str(page.locator("#status").get_attribute("data-rows")))
    citation_id = _cited(page)
    c = archive.citations.get(citation_id)
    assert c.row_count == shown == 80
    assert c.as_of_mjd_tai == pinned  # the instant the page pinned the query to
    assert c.catalogs == ["prompt"]
    expected = archive.query_arrow(
        "SELECT diaSourceId, band, psfFlux, psfFluxErr FROM prompt.DiaSource ORDER BY diaSourceId LIMIT 80",
        as_of=pinned,
    )
    from dpdb.citations import digest_table

    assert digest_table(expected).sha256 == c.result_sha256  # the rows the page showed
    # citing the same thing again gives the same identifier
    page.click("#cite")
    link = "(document.getElementById('citation-link') || {dataset: {}})"
    page.wait_for_function(f"() => {link}.dataset.id === '{citation_id}'")

    audit = _audit_entries(cloned)
    page.click("#citation-link")
    page.wait_for_url(f"**/cite/{citation_id}")
    # the landing page: DataCite metadata of the citation
    dc = json.loads(archive.citations.show(citation_id, "datacite"))["data"]["attributes"]
    field = lambda name: page.locator(f"#datacite [data-field='{name}']").inner_text()  # noqa: E731
    assert field("doi").startswith(dc["doi"]) and dc["doi"] == c.handle
    assert field("creators") == dc["creators"][0]["name"]
    assert field("titles") == c.title
    assert field("publisher") == dc["publisher"]["name"]
    assert field("publicationYear") == dc["publicationYear"]
    assert field("types").startswith("Dataset")
    assert field("sizes") == "80 rows"
    assert c.query in field("description-Methods")
    assert field("url") == f"{served}/cite/{citation_id}"
    assert page.locator("#doi").get_attribute("href") == f"https://doi.org/{c.handle}"
    assert c.handle in page.locator("#bibtex").inner_text()
    # it re-runs on opening (a small result) and says verified, with the rows
    outcome, text = _verdict(page)
    assert outcome == "verified", text
    assert page.locator("#verdict").get_attribute("data-sha256") == c.result_sha256
    assert text.startswith("verified: 80 rows")
    rows = _table_rows(page, "#rows")
    assert len(rows) == 80 and rows[0][0] == str(expected.column("diaSourceId")[0].as_py())
    _shot(page, "cite")
    # the verified rows as a VOTable, with the citation in its metadata
    with page.expect_download() as info:
        page.click("#dl-votable")
    raw = Path(info.value.path()).read_bytes()
    votable = parse_single_table(io.BytesIO(raw)).to_table()
    assert list(votable["diaSourceId"]) == expected.column("diaSourceId").to_pylist()
    assert citation_id.encode() in raw and c.result_sha256.encode() in raw  # INFO elements
    # the re-run button runs it again; the portal wrote nothing (no audit entry)
    page.click("#rerun")
    outcome, _ = _verdict(page)
    assert outcome == "verified"
    assert _audit_entries(cloned) == audit


def test_object_page_cites_its_light_curve(page, served: str, archive: dpdb.Archive) -> None:
    page.goto(f"{served}/object/{DEMO_DIAOBJECT}")
    points = page.locator("#lightcurve circle.pt").count()
    assert points > 0
    citation_id = _cited(page)
    c = archive.citations.get(citation_id)
    assert c.row_count == points  # the measurements drawn
    assert sorted(c.tables) == ["prompt.diaforcedsource", "prompt.diasource"]
    resolution = archive.citations.resolve(citation_id, record=False)
    assert resolution.verified
    times = sorted(float(t) for t in page.eval_on_selector_all(
        "#lightcurve circle.pt", "els => els.map(e => e.dataset.t)"))  # fmt: skip
    assert sorted(resolution.result.column("midpointMjdTai").to_pylist()) == pytest.approx(times)
    # the page's ADQL opens in the query page
    href = page.locator("#lightcurve-query").get_attribute("href")
    assert href.startswith("/query?q=")


def test_landing_page_reports_what_differs(
    page, served: str, archive: dpdb.Archive, cloned: Settings
) -> None:
    sql_text = (f"SELECT diaSourceId, midpointMjdTai, band, psfFlux FROM prompt.DiaSource "
                f"WHERE diaObjectId = {DEMO_DIAOBJECT} ORDER BY midpointMjdTai")  # fmt: skip
    c = archive.cite(sql_text, title="portal tamper target")
    first = archive.query_arrow(sql_text, as_of=c.as_of_mjd_tai).column("diaSourceId")[0].as_py()
    with psycopg.connect(EmbeddedServer(cloned.home).conninfo(cloned.database), autocommit=True) as conn:
        conn.execute("UPDATE prompt.DiaSource SET psfFlux = psfFlux + 1 WHERE diaSourceId = %s", (first,))
    page.goto(f"{served}/cite/{c.citation_id}?verify=false")
    assert page.locator("#outcome").is_hidden()  # ?verify=false: only on request
    page.click("#rerun")
    outcome, text = _verdict(page)
    found = archive.citations.resolve(c.citation_id, record=False)
    assert outcome == "differs" and not found.verified
    assert page.locator("#verdict").get_attribute("data-sha256") == found.sha256 != c.result_sha256
    differences = page.locator("#differences li").all_inner_texts()
    assert differences == found.differences
    assert "values differ in column psfFlux" in differences
    assert f"result hash: cited {c.result_sha256}, found {found.sha256}" in differences
    assert page.locator("#row-downloads").is_hidden()
    r = httpx.get(f"{served}/cite/{c.citation_id}/rows?format=csv", timeout=60)
    assert r.status_code == 409 and "does not verify" in r.text


def test_cite_show_names_the_landing_page_of_the_running_portal(
    served: str, archive: dpdb.Archive, cloned: Settings
) -> None:
    c = archive.cite("SELECT count(*) AS n FROM prompt.DiaObject", title="landing url")
    env = _env(cloned)

    def show(fmt: str, extra: dict[str, str] | None = None) -> str:
        proc = subprocess.run(
            [DPDB, "cite", "show", c.citation_id, "--format", fmt], env={**env, **(extra or {})},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    landing = f"{served}/cite/{c.citation_id}"
    assert json.loads(show("datacite"))["data"]["attributes"]["url"] == landing
    assert json.loads(show("json"))["landing_url"] == landing
    assert f"url = {{{landing}}}" in show("bibtex")
    # the landing URL answers
    assert httpx.get(landing, timeout=60).status_code == 200
    # a configured public URL wins over the running server's address
    public = "https://archive.example.org/portal"
    assert json.loads(show("datacite", {"DPDB_PORTAL_URL": public}))["data"]["attributes"]["url"] == (
        f"{public}/cite/{c.citation_id}"
    )


def test_no_landing_url_without_a_portal(tmp_path: Path, settings: Settings) -> None:
    """Without DPDB_PORTAL_URL and with no `dpdb serve` running, exports carry the DOI only."""
    archive = dpdb.Archive(settings=settings)
    c = archive.cite("SELECT 1 AS one", title="no portal")
    attributes = json.loads(archive.citations.show(c.citation_id, "datacite"))["data"]["attributes"]
    assert "url" not in attributes
    assert f"url = {{https://doi.org/{c.handle}}}" in archive.citations.show(c.citation_id, "bibtex")
    # a server that is gone (its record left behind) is not named either
    from dpdb.serving import serving_file

    serving_file(settings).write_text(json.dumps({"pid": 2**22 + 12345, "url": "http://gone:1"}))
    assert "url" not in json.loads(archive.citations.show(c.citation_id, "datacite"))["data"]["attributes"]


def test_citation_pages_errors_and_list(page, served: str, archive: dpdb.Archive) -> None:
    for path, status in (
        ("/cite/zzzz-zzzz-zzzz", 404), ("/cite/not-an-id", 404), ("/api/cite/zzzz-zzzz-zzzz/verify", 404),
        ("/api/cite/zzzz-zzzz-zzzz?format=x", 400),
    ):  # fmt: skip
        r = httpx.get(served + path, timeout=60)
        assert r.status_code == status, (path, r.status_code, r.text[:200])
    response = page.goto(f"{served}/cite/zzzz-zzzz-zzzz")
    assert response.status == 404
    assert "no citation zzzz-zzzz-zzzz" in page.locator("#error-message").inner_text()
    page.goto(f"{served}/cite")
    listed = page.eval_on_selector_all("#citations tbody tr", "els => els.map(e => e.dataset.id)")
    assert sorted(listed) == sorted(c.citation_id for c in archive.citations.list())
    # every citation route only reads
    from dpdb.portal.cite import create_cite_router

    for route in create_cite_router(archive).routes:
        assert set(route.methods) <= {"GET", "HEAD"}, (route.path, route.methods)  # type: ignore[attr-defined]
    r = httpx.post(f"{served}/cite/{listed[0]}", timeout=30)
    assert r.status_code == 405
