"""Citable queries (issue 21): identifiers, verification, retention, exports, and the hashing method.

The database tests run on a copy of the demo's database (``CREATE DATABASE ... TEMPLATE``),
so ingesting nights, relinking, activating a release and tampering with rows never
touch the session's demo database.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bibtexparser
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import DemoRun, demo_copy
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import dpdb
from dpdb.citations import CitationError, CitationUnavailableError, digest_rows, digest_table, sqltext
from dpdb.citations.digest import METHOD_V1, METHOD_V2, METHOD_V3, canonical_tag
from dpdb.citations.rowset import RowsetHasher
from dpdb.cli import cli
from dpdb.config import Settings
from dpdb.errors import ValidationError
from dpdb.registry import prompt_log
from dpdb.server import EmbeddedServer
from dpdb.timeutil import now_mjd_tai

DPDB = str(Path(sys.executable).with_name("dpdb"))
DEMO_OBJECT = 288230377200288075  # the demo's example DiaObject (README)
CONE = (
    "SELECT objectId, coord_ra, coord_dec, r_psfFlux, refExtendedness FROM current.Object "
    "WHERE q3c_radial_query(coord_ra, coord_dec, 150.2718, 1.7014, 2 / 60.0)"
)
LIGHT_CURVE = (
    f"SELECT diaSourceId, midpointMjdTai, band, psfFlux, psfFluxErr FROM prompt.DiaSource "
    f"WHERE diaObjectId = {DEMO_OBJECT} ORDER BY midpointMjdTai"
)
PROMPT_CONE = (
    "SELECT diaObjectId, ra, dec, nDiaSources, r_psfFluxMean FROM prompt.DiaObject "
    "WHERE validityEndMjdTai IS NULL AND q3c_radial_query(ra, dec, 150.2718, 1.7014, 0.2)"
)


# -- a private copy of the demo's database -------------------------------------------------------


@pytest.fixture(scope="module")
def cloned(demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with demo_copy(demo_run, "cite", tmp_path_factory.mktemp("cite-archive")) as settings:
        yield settings


def _env(s: Settings) -> dict[str, str]:
    return {"DPDB_HOME": str(s.home), "DPDB_DATABASE": s.database, "DPDB_ARCHIVE_DIR": str(s.archive_root())}


def _run(s: Settings, *args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=_env(s), input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _superuser(s: Settings) -> psycopg.Connection:
    return psycopg.connect(EmbeddedServer(s.home).conninfo(s.database), autocommit=True)


# -- identifiers -----------------------------------------------------------------------------------


def test_citing_the_same_query_at_the_same_instant_gives_one_identifier(cloned: Settings) -> None:
    archive = dpdb.Archive(settings=cloned)
    first = archive.citations.cite(CONE, title="Objects near the demo transient", creator="Doe, Jane")
    assert not first.existing
    c = first.citation
    assert c.handle == f"10.5072/dpdb.{c.citation_id}" and len(c.citation_id) == 14
    assert c.row_count > 0 and len(c.result_sha256) == 64
    # current is pinned to the release it names; the query text is normalized
    assert "current." not in c.query and "dr2.Object" in c.query and c.catalogs == ["dr2"]
    assert c.tables == ["dr2.object"]
    # the same query, spelled differently (case, spaces, a comment, a semicolon), and through dr2 directly
    again = archive.citations.cite(
        "select OBJECTID, coord_ra,coord_dec , r_psfflux, refextendedness -- same\n from dr2.object "
        "where q3c_radial_query(coord_ra, coord_dec, 150.2718, 1.7014, 2 / 60.0);"
    )
    assert again.existing and again.citation.citation_id == c.citation_id
    assert again.citation.title == "Objects near the demo transient"
    # pinned to the same instant explicitly: the same; another instant: another identifier
    # (with --as-of, current means the release current then: dr2, and none yet on the first night)
    assert archive.cite(CONE, as_of=c.as_of_mjd_tai).citation_id == c.citation_id
    with pytest.raises(CitationError, match="no release was current at MJD"):
        archive.cite(CONE, as_of=61000.5)
    in_dr2 = CONE.replace("current.", "dr2.")
    assert archive.cite(in_dr2, as_of=c.as_of_mjd_tai).citation_id == c.citation_id
    other = archive.cite(in_dr2, as_of=c.as_of_mjd_tai - 1)
    assert other.citation_id != c.citation_id and other.result_sha256 == c.result_sha256  # dr2 is frozen
    assert archive.citations.get(c.handle).citation_id == c.citation_id
    assert archive.citations.get(f"https://doi.org/{c.handle}").citation_id == c.citation_id
    with psycopg.connect(dpdb.pg.conninfo(cloned)) as conn:
        audited = conn.execute(
            "SELECT count(*) FROM dpdb_meta.audit_log WHERE action = 'cite' AND outcome = %s",
            (f"ok: {c.citation_id}",),
        ).fetchone()
    assert audited == (1,)


def test_cli_cites_resolves_and_writes_the_rows_with_the_citation(cloned: Settings, tmp_path: Path) -> None:
    code, out = _run(cloned, "cite", LIGHT_CURVE, "--title", "Light curve", "--creator", "Roe, R.")
    assert code == 0, out
    handle, line, facts = out.splitlines()[:3]
    citation_id = handle.split("dpdb.")[1]
    assert (
        line.startswith("Roe, R. (") and "Light curve" in line and line.endswith(f"https://doi.org/{handle}")
    )
    assert "reads prompt; new" in facts
    code, out = _run(cloned, "cite", "resolve", citation_id)
    assert code == 0 and "verified:" in out, out
    archive = dpdb.Archive(settings=cloned)
    c = archive.citations.get(citation_id)
    for name, fmt in (
        ("lc.parquet", "parquet"),
        ("lc.xml", "votable"),
        ("lc.csv", "csv"),
        ("lc.json", "json"),
    ):
        code, out = _run(cloned, "cite", "resolve", handle, "-o", str(tmp_path / name))
        assert code == 0 and f"{c.row_count} rows written to" in out and f"({fmt})" in out, out
    code, out = _run(cloned, "cite", "resolve")
    assert code == 2 and "give one citation ID" in out
    meta = pq.read_schema(tmp_path / "lc.parquet").metadata
    assert (
        meta[b"citation_id"].decode() == citation_id
        and meta[b"citation_result_sha256"].decode() == c.result_sha256
    )
    from astropy.io.votable import parse

    infos = {i.name: i.value for i in parse(tmp_path / "lc.xml").resources[0].infos}
    assert infos["citation_doi"] == handle and infos["citation_row_count"] == str(c.row_count)
    assert (tmp_path / "lc.csv").read_text().startswith(f"# citation_id: {citation_id}\n")
    written = json.loads((tmp_path / "lc.json").read_text())
    assert written["meta"]["citation_query"] == c.query and len(written["rows"]) == c.row_count
    # anyone can recompute the hash from the rows, with the reference implementation of the method
    rows = pq.read_table(tmp_path / "lc.parquet")
    columns = [(col["name"], col["type"]) for col in c.columns]
    assert json.loads(meta[b"citation_columns"]) == [list(col) for col in columns]
    recomputed = digest_rows(columns, list(zip(*(col.to_pylist() for col in rows.columns), strict=True)))
    assert recomputed.sha256 == c.result_sha256 and recomputed.rows == c.row_count
    # ... and without dpdb: the recipe of docs/citations.md, run as it stands on the file
    assert c.hash_method == METHOD_V3 == meta[b"citation_hash_method"].decode()
    _recipe(tmp_path / "lc.parquet")


def test_errors_are_one_line(cloned: Settings) -> None:
    cases = [
        (["cite", "resolve", "not-an-id"], "is not a citation identifier"),
        (["cite", "resolve", "0000-0000-0000"], "no citation 0000-0000-0000"),
        (["cite", "show", "zzzz-zzzz-zzzz"], "no citation zzzz-zzzz-zzzz"),
        (["cite", "SELEKT objectId FROM current.Object"], "only a query can be cited"),
        (["cite", "SELECT objectId FROM current.Object WHERE"], "query failed: syntax error"),
        (["cite", "SELECT nosuchcolumn FROM current.Object"], "nosuchcolumn"),
        (["cite", "--as-of", repr(now_mjd_tai() + 30), "SELECT 1"], "is in the future"),
        (["cite", "DELETE FROM prompt.DiaSource"], "only a query can be cited"),
        (["cite", "SELECT now()"], "calls now"),
        (["cite", "SELECT 1; SELECT 2"], "several statements"),
        (["cite", "SELECT * FROM dpdb_meta.audit_log"], "dpdb_meta.audit_log"),
        (["cite", "SELECT * FROM prompt.DiaObjectLast"], "cannot be read as of an instant"),
        (["cite", "show", "--format", "bibtex", "x"], "is not a citation identifier"),
    ]
    for args, message in cases:
        code, out = _run(cloned, *args)
        lines = [line for line in out.splitlines() if line]
        assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (
            args,
            out,
        )


def test_datacite_json_validates_and_bibtex_parses(cloned: Settings) -> None:
    from datacite import schema45

    portal = cloned.model_copy(update={"portal_url": "https://portal.example.org/"})
    archive = dpdb.Archive(settings=portal)
    c = archive.cite(PROMPT_CONE, title="DiaObjects {near} 50% of $x_1$ & more", creator="Doe, Jane")
    payload = json.loads(archive.citations.show(c.citation_id, "datacite"))
    attributes = payload["data"]["attributes"]
    assert payload["data"]["type"] == "dois" and attributes["doi"] == c.handle
    assert schema45.validator.is_valid(attributes), list(schema45.validator.iter_errors(attributes))
    assert attributes["url"] == f"https://portal.example.org/cite/{c.citation_id}"
    xml = schema45.tostring(attributes)
    assert c.handle in xml and '<resourceType resourceTypeGeneral="Dataset">' in xml
    library = bibtexparser.parse_string(archive.citations.show(c.citation_id, "bibtex"))
    assert not library.failed_blocks and len(library.entries) == 1
    entry = library.entries[0]
    assert entry.key == f"dpdb:{c.citation_id}" and entry.entry_type == "misc"
    assert entry["doi"] == c.handle and entry["url"] == attributes["url"] and entry["author"] == "Doe, Jane"
    shown = json.loads(archive.citations.show(c.handle, "json"))
    assert shown["landing_url"] == attributes["url"] and shown["result_sha256"] == c.result_sha256
    assert shown["citation"].startswith("Doe, Jane (")
    code, out = _run(cloned, "cite", "show", c.citation_id, "--format", "datacite")
    assert code == 0 and "url" not in json.loads(out)["data"]["attributes"]  # no portal configured there


# -- the lifecycle: citations outlive ingests, relinks, activations and retention ------------------


def _latest(s: Settings) -> float:
    """The latest committed change (visit, relink or release activation): every write comes after it."""
    with psycopg.connect(dpdb.pg.conninfo(s)) as conn:
        latest = prompt_log.latest_processing_time(conn)
    assert latest is not None
    return latest


def test_citations_stay_verified_through_ingest_relink_activation_and_retention(
    cloned: Settings, demo_run: DemoRun, tmp_path: Path
) -> None:
    archive = dpdb.Archive(settings=cloned)
    cone = archive.cite(CONE)  # dr2, via current
    light_curve = archive.cite(LIGHT_CURVE)
    prompt_cone = archive.cite(PROMPT_CONE)
    pinned = archive.cite(LIGHT_CURVE, as_of=61002.5)  # an explicit instant, before dr1
    sample_region = cloned.sample_region
    dr1_cone = archive.cite(  # inside the sample region every release keeps
        "SELECT objectId, coord_ra, coord_dec, g_psfFlux FROM previous.Object "
        f"WHERE q3c_radial_query(coord_ra, coord_dec, {sample_region[0] + 0.05}, {sample_region[1]}, 0.1)"
    )
    dr1_all = archive.cite("SELECT count(*) AS n, max(objectId) AS last FROM previous.Object")
    assert dr1_cone.catalogs == ["dr1"] and dr1_all.catalogs == ["dr1"] and dr1_cone.row_count > 0
    before = archive.query_arrow(LIGHT_CURVE, as_of=light_curve.as_of_mjd_tai)
    assert before.num_rows == light_curve.row_count

    # a daytime relink moves one of the light curve's DiaSources to a known SSObject
    with psycopg.connect(dpdb.pg.conninfo(cloned)) as conn:
        ss_object = conn.execute("SELECT min(ssObjectId) FROM prompt.SSObject").fetchone()[0]  # type: ignore[index]
    moved = before.column("diaSourceId")[3].as_py()
    linkage = tmp_path / "linkage"
    linkage.mkdir()
    pq.write_table(
        pa.table(
            {"diaSourceId": pa.array([moved], pa.int64()), "ssObjectId": pa.array([ss_object], pa.int64())}
        ),
        linkage / "SSSource.parquet",
    )
    # a write at an instant before one a citation is pinned to would change that citation's result
    ahead = archive.cite(LIGHT_CURVE, as_of=_latest(cloned) + 0.02)  # past, but after the last write
    with pytest.raises(ValidationError, match="an instant a citation of the prompt catalog is pinned to"):
        archive.prompt.relink(linkage, processing_time=_latest(cloned) + 0.01)
    relinked = archive.prompt.relink(linkage, processing_time=ahead.as_of_mjd_tai + 0.01)
    assert relinked.counts["diasources"] == 1
    assert archive.citations.resolve(ahead.citation_id).verified
    assert archive.citations.resolve(pinned.citation_id).verified  # 61002.5 does not see the relink
    after = archive.query_arrow(LIGHT_CURVE, as_of=_latest(cloned))
    assert after.num_rows == before.num_rows - 1  # the catalog changed since the citation's instant

    # more nights of the same survey, ingested later
    survey = tmp_path / "survey"
    survey.mkdir()
    config = demo_run.settings.home / "demo" / "survey" / "survey.json"
    (survey / "survey.json").write_text(config.read_text())
    later = _latest(cloned) + 0.5
    code, out = _run(
        cloned, "prompt", "run", "--nights", "1", "--out", str(survey), "--processing-time", str(later)
    )
    assert code == 0, out
    assert _latest(cloned) > later

    # a new release: dr3 from the prompt catalog; activating it archives dr1 (two releases stay loaded)
    out_dir = tmp_path / "dr3"
    archive.releases.produce("dr3", out_dir, from_prompt=True)
    archive.releases.create("dr3")
    archive.releases.load("dr3", out_dir)
    report = archive.releases.validate("dr3")
    activation = archive.releases.activate("dr3", force=not report.ok)
    assert "dr1" in activation.archived
    with psycopg.connect(dpdb.pg.conninfo(cloned)) as conn:
        assert conn.execute("SELECT state FROM dpdb_meta.release WHERE name = 'dr1'").fetchone() == (
            "archived",
        )

    for c in (cone, light_curve, prompt_cone, pinned):
        resolution = archive.citations.resolve(c.citation_id)
        assert resolution.verified, (c.query, resolution.differences)
        assert resolution.sha256 == c.result_sha256 and resolution.rows == c.row_count
        assert resolution.source == "database"
    # dr1 is archived: a cone inside the sample region is answered by the kept sample ...
    from_sample = archive.citations.resolve(dr1_cone.citation_id)
    assert from_sample.verified and from_sample.source == "kept sample of dr1"
    code, out = _run(cloned, "cite", "resolve", dr1_cone.citation_id)
    assert code == 0 and "(read from the kept sample of dr1)" in out
    # ... anything else names the release to restore
    with pytest.raises(CitationUnavailableError, match=r"restore it with `dpdb release restore dr1`"):
        archive.citations.resolve(dr1_all.citation_id)
    code, out = _run(cloned, "cite", "resolve", dr1_all.citation_id)
    assert code == 1 and out.startswith("error: citation") and "dpdb release restore dr1" in out

    # dropping dr1 warns about the citations that read it, and the audit log records it
    code, out = _run(cloned, "release", "drop", "dr1")
    assert code == 0 and "warning: 2 citations read release dr1" in out, out
    assert dr1_cone.citation_id in out and dr1_all.citation_id in out
    with psycopg.connect(dpdb.pg.conninfo(cloned)) as conn:
        outcome = conn.execute(
            "SELECT outcome FROM dpdb_meta.audit_log WHERE action = 'release.drop' "
            "ORDER BY audit_id DESC LIMIT 1"
        ).fetchone()[0]  # type: ignore[index]
    assert outcome.startswith("ok; warning: 2 citations read release dr1") and dr1_all.citation_id in outcome
    with pytest.raises(CitationUnavailableError, match="release dr1 was dropped"):
        archive.citations.resolve(dr1_cone.citation_id)
    code, out = _run(cloned, "cite", "list", "--release", "dr1", "--json")
    assert code == 0 and {c["id"] for c in json.loads(out)} == {dr1_cone.citation_id, dr1_all.citation_id}
    # every citation at once (after a migration or a restore): the dropped release's two fail
    code, out = _run(cloned, "cite", "resolve", "--all")
    lines = dict(line.split(" ", 1) for line in out.splitlines()[:-1])
    assert code == 1 and out.splitlines()[-1].endswith(f"of {len(lines)} citations verified"), out
    assert (
        lines[dr1_all.citation_id].startswith("unavailable: citation")
        and "dropped" in lines[dr1_cone.citation_id]
    )
    for c in (cone, light_curve, prompt_cone, pinned):
        assert lines[c.citation_id].startswith("verified: "), lines


def test_a_changed_row_is_reported_with_the_count_and_hash_found(cloned: Settings) -> None:
    archive = dpdb.Archive(settings=cloned)
    c = archive.cite(LIGHT_CURVE, as_of=61003.5, title="tamper target")
    assert archive.citations.resolve(c.citation_id).verified
    first = archive.query_arrow(LIGHT_CURVE, as_of=61003.5).column("diaSourceId")[0].as_py()
    with _superuser(cloned) as conn:  # behind dpdb's back
        conn.execute("UPDATE prompt.DiaSource SET psfFlux = psfFlux + 1 WHERE diaSourceId = %s", (first,))
    proc = subprocess.run(
        [DPDB, "cite", "resolve", c.citation_id], env={**_subprocess_env(), **_env(cloned)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    found = archive.citations.resolve(c.citation_id)
    assert not found.verified and found.rows == c.row_count and found.sha256 != c.result_sha256
    assert "differs:" in proc.stdout and "values differ in column psfFlux" in proc.stdout
    assert f"result hash: cited {c.result_sha256}, found {found.sha256}" in proc.stdout
    with _superuser(cloned) as conn:
        conn.execute("DELETE FROM prompt.DiaSource WHERE diaSourceId = %s", (first,))
    gone = archive.citations.resolve(c.citation_id)
    assert f"row count: cited {c.row_count}, found {c.row_count - 1}" in gone.differences
    code, out = _run(cloned, "cite", "resolve", c.citation_id, "-o", "/nonexistent-dir/never.parquet")
    assert code == 1 and "nothing written" in out


@pytest.mark.parametrize(("method", "as_of"), [(METHOD_V1, 61001.75), (METHOD_V2, 61001.7)])
def test_a_citation_made_with_an_older_method_still_resolves_and_verifies_with_it(
    cloned: Settings, method: str, as_of: float
) -> None:
    """Citations made before dpdb-rowset-v3 keep their method: resolving recomputes the v1 or v2 hash."""
    archive = dpdb.Archive(settings=cloned)
    c = archive.cite(LIGHT_CURVE, as_of=as_of, title=f"made with {method}")
    rows = archive.query_arrow(LIGHT_CURVE, as_of=as_of)
    old = digest_table(rows, method)
    tuples = list(zip(*(col.to_pylist() for col in rows.columns), strict=True))
    assert old == digest_rows([(col.name, col.type) for col in old.columns], tuples, method)
    assert old.sha256 != c.result_sha256 and c.hash_method == METHOD_V3
    assert c.result_sha256 == digest_table(rows, METHOD_V3).sha256
    with _superuser(cloned) as conn:  # the row as dpdb stored it with the older method
        conn.execute(
            "UPDATE dpdb_meta.citation SET hash_method = %s, result_sha256 = %s, columns = %s "
            "WHERE citation_id = %s",
            (method, old.sha256, json.dumps([col.to_json() for col in old.columns]), c.citation_id),
        )
    stored = archive.citations.get(c.citation_id)
    assert stored.hash_method == method
    found = archive.citations.resolve(c.citation_id)
    assert found.verified and found.sha256 == old.sha256 and found.rows == c.row_count, found.differences
    code, out = _run(cloned, "cite", "resolve", c.citation_id)
    assert code == 0 and f"\nverified: {c.row_count} rows, sha256 {old.sha256}" in out, out
    code, out = _run(cloned, "cite", "show", c.citation_id, "--format", "bibtex")
    assert code == 0 and f"{method} SHA-256 {old.sha256}" in out
    with _superuser(cloned) as conn:  # an old citation whose hash does not match is told apart
        conn.execute(
            "UPDATE dpdb_meta.citation SET result_sha256 = %s WHERE citation_id = %s",
            (c.result_sha256, c.citation_id),
        )
        assert not archive.citations.resolve(c.citation_id).verified
        conn.execute(
            "UPDATE dpdb_meta.citation SET hash_method = 'dpdb-rowset-v9' WHERE citation_id = %s",
            (c.citation_id,),
        )
    code, out = _run(cloned, "cite", "resolve", c.citation_id)
    assert code == 1 and out.strip().startswith("error: ") and len(out.strip().splitlines()) == 1, out
    assert "unknown hash method 'dpdb-rowset-v9'" in out


def test_an_instant_called_repeatable_keeps_its_answer_after_a_prompt_write(
    cloned: Settings, tmp_path: Path
) -> None:
    """DPDD §2.5 for plain as-of queries: an answer labelled repeatable never changes. Activations and
    prompt writes share one timeline: the demo activated dr2 after its last visit, so an instant between
    the two is repeatable, and a prompt write dated before the activation is refused, naming it."""
    archive = dpdb.Archive(settings=cloned)
    with psycopg.connect(dpdb.pg.conninfo(cloned)) as conn:
        last_write = conn.execute(
            "SELECT max(processing_time_mjd_tai) FROM dpdb_meta.prompt_visit"
        ).fetchone()[0]  # type: ignore[index]
        activated = conn.execute(
            "SELECT max(activated_mjd_tai) FROM dpdb_meta.release_activation"
        ).fetchone()[0]  # type: ignore[index]
        ss_object = conn.execute("SELECT min(ssObjectId) FROM prompt.SSObject").fetchone()[0]  # type: ignore[index]
    assert last_write < activated == _latest(cloned)
    instant = (last_write + activated) / 2
    before = archive.query_arrow(LIGHT_CURVE, as_of=instant)
    assert before.schema.metadata[b"dpdb.as_of_repeatable"] == b"true"
    linkage = tmp_path / "linkage"
    linkage.mkdir()
    moved = before.column("diaSourceId")[0].as_py()
    pq.write_table(
        pa.table(
            {"diaSourceId": pa.array([moved], pa.int64()), "ssObjectId": pa.array([ss_object], pa.int64())}
        ),
        linkage / "SSSource.parquet",
    )
    with pytest.raises(ValidationError, match=r"not later than .*the latest change already committed"):
        archive.prompt.relink(linkage, processing_time=(last_write + instant) / 2)
    assert archive.query_arrow(LIGHT_CURVE, as_of=instant).equals(before)
    code, out = _run(cloned, "prompt", "relink", str(linkage), "--processing-time", str(instant))
    assert code == 1 and out.count("\n") == 1 and "release activation" in out, out


def _until_waiting_for_a_lock(s: Settings, thread: threading.Thread) -> None:
    """Until ``thread`` waits for an advisory lock in the database of ``s`` (or ends, or 30 s pass)."""
    with _superuser(s) as watch:
        deadline = time.monotonic() + 30
        while (
            thread.is_alive()
            and time.monotonic() < deadline
            and watch.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()
            == (0,)
        ):
            time.sleep(0.02)


def test_a_prompt_write_racing_a_citation_is_waited_for_and_the_query_run_again(cloned: Settings) -> None:
    """A citation at an instant the prompt catalog's writes have not passed yet, while a write before that
    instant is in progress: the citation waits for it and runs the query again, so it holds the rows the
    instant has for ever after (it is the last test on ``cloned``: its instant stops earlier writes)."""

    archive = dpdb.Archive(settings=cloned)
    from dpdb.timeutil import now_mjd_tai

    latest = _latest(cloned)  # an earlier test may have activated a release just now
    gap = now_mjd_tai() - latest
    instant, t = latest + 0.8 * gap, latest + 0.4 * gap  # past (before now), and a write in between
    before = archive.query_arrow(LIGHT_CURVE, as_of=instant, provisional=True).num_rows
    made: list = []
    with _superuser(cloned) as writer, writer.transaction():  # a prompt write, as dpdb/prompt/order.py
        writer.execute("SELECT pg_advisory_xact_lock(hashtext('dpdb.prompt.ingest'))")
        writer.execute(
            "CREATE TEMP TABLE extra ON COMMIT DROP AS SELECT * FROM prompt.diasource "
            "WHERE diaobjectid = %s AND timewithdrawnmjdtai IS NULL ORDER BY midpointmjdtai LIMIT 1",
            (DEMO_OBJECT,),
        )
        writer.execute(
            "UPDATE extra SET diasourceid = (SELECT max(diasourceid) + 1 FROM prompt.diasource), "
            "timeprocessedmjdtai = %s, midpointmjdtai = midpointmjdtai + 0.001",
            (t,),
        )
        writer.execute("INSERT INTO prompt.diasource SELECT * FROM extra")
        writer.execute(
            "INSERT INTO dpdb_meta.prompt_relink (sha256, path, processing_time_mjd_tai, relinked_at, "
            "n_ssobjects, n_diasources, n_diaobjects_deleted, n_diaobjects_updated, seconds) "
            "VALUES ('race', 'test', %s, now(), 0, 1, 0, 0, 0)",
            (t,),
        )
        citing = threading.Thread(target=lambda: made.append(archive.cite(LIGHT_CURVE, as_of=instant)))
        citing.start()
        _until_waiting_for_a_lock(cloned, citing)  # the citation, its query run, waits for the write
    citing.join(60)  # the write is committed: the citation goes on
    assert len(made) == 1
    c = made[0]
    # the write's row, which the instant holds for ever after (a citation that did not wait holds
    # the rows before the write, and resolving it would say the row count differs)
    assert c.row_count == before + 1
    again = archive.query_arrow(LIGHT_CURVE, as_of=instant, provisional=True)
    assert again.num_rows == c.row_count
    assert archive.citations.resolve(c.citation_id).verified


def _fill_prompt_sources(conn: psycopg.Connection, first: int, last: int, processed: float) -> None:
    """DiaSources ``first``..``last`` processed at MJD ``processed``, every NOT NULL column filled by type
    (without a visit or relink row), in ``conn``'s transaction."""
    given = {"diasourceid": "g", "visit": "g", "detector": "1", "diaobjectid": "g", "ra": "150",
             "dec": "2", "midpointmjdtai": "60999 + g * 1e-6", "band": "'r'", "psfflux": "g",
             "timeprocessedmjdtai": str(processed)}  # fmt: skip
    columns = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a "
        "WHERE a.attrelid = 'prompt.diasource'::regclass AND a.attnum > 0 AND NOT a.attisdropped"
    ).fetchall()
    names, values = [], []
    for name, type_, not_null in columns:
        if name in given or not_null:
            names.append(name)
            text = "'x'" if "char" in type_ or type_ == "text" else "0"
            values.append(given.get(name, "false" if type_ == "boolean" else text))
    conn.execute(
        f"INSERT INTO prompt.diasource ({', '.join(names)}) "  # noqa: S608 - our own names
        f"SELECT {', '.join(values)} FROM generate_series({first}, {last}) g"
    )


def test_a_write_committed_while_a_citation_is_stored_stops_the_store_and_the_query_runs_again(
    settings: Settings,
) -> None:
    """The writers' lock, the re-read of the latest change's time and the condition that it is still the
    one read before the query go with the citation's insert (one round trip): a write that commits
    meanwhile leaves nothing stored (no row, no audit entry), the query runs again, and the citation
    holds what the instant has after the write."""

    sql_text = "SELECT diaSourceId, psfFlux FROM prompt.DiaSource WHERE diaSourceId > 5"
    with _superuser(settings) as conn:  # no change has a time yet (no visit, relink or activation)
        _fill_prompt_sources(conn, 1, 10, 61000.0)
    archive = dpdb.Archive(settings=settings)
    before = archive.query_arrow(sql_text, as_of=61000.5).num_rows
    for k, write_at in enumerate((61000.7, 61000.2)):  # after the instant, then before it
        made: list = []
        with _superuser(settings) as writer, writer.transaction():  # a prompt write, as dpdb/prompt/order.py
            writer.execute("SELECT pg_advisory_xact_lock(hashtext('dpdb.prompt.ingest'))")
            _fill_prompt_sources(writer, 100 + k, 100 + k, write_at)
            writer.execute(
                "INSERT INTO dpdb_meta.prompt_relink (sha256, path, processing_time_mjd_tai, relinked_at, "
                "n_ssobjects, n_diasources, n_diaobjects_deleted, n_diaobjects_updated, seconds) "
                "VALUES (%s, 'test', %s, now(), 0, 1, 0, 0, 0)",
                (f"race-{write_at}", write_at),
            )
            citing = threading.Thread(
                target=lambda made=made: made.append(archive.cite(sql_text, as_of=61000.5))
            )
            citing.start()
            _until_waiting_for_a_lock(settings, citing)  # the citation's store waits for the write
            assert citing.is_alive()
        citing.join(60)
        assert len(made) == 1
        c = made[0]
        expected = before + (1 if write_at <= 61000.5 else 0)  # the write's row, when before the instant
        assert (
            c.row_count == expected == archive.query_arrow(sql_text, as_of=61000.5, provisional=True).num_rows
        )
        with _superuser(settings) as conn:
            stored = conn.execute("SELECT citation_id, row_count FROM dpdb_meta.citation").fetchall()
            ok = conn.execute(
                "SELECT count(*) FROM dpdb_meta.audit_log WHERE action = 'cite' AND outcome = %s",
                (f"ok: {c.citation_id}",),
            ).fetchone()
        assert stored == [(c.citation_id, expected)] and ok == (1,)  # stored once, after the re-run
        assert archive.citations.resolve(c.citation_id).verified
        with _superuser(settings) as conn:  # back to no change with a time, and no citation
            conn.execute("DELETE FROM dpdb_meta.citation")
            conn.execute("DELETE FROM dpdb_meta.prompt_relink")
            conn.execute("DELETE FROM dpdb_meta.audit_log WHERE action = 'cite'")


def _subprocess_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("DPDB_")}


# -- the text and the hash, without a database ----------------------------------------------------


def test_normalization_keeps_literals_and_pins_only_schema_qualifiers() -> None:
    text = (
        "SELECT  o.objectId, 'current.Object -- no' AS s, \"current\".x , E'a\\'b', $$ previous.y $$\n"
        "  FROM current.Object o /* c */ JOIN previous.Source s USING (objectId)  -- trailing\n ;"
    )
    assert sqltext.normalize(text) == (
        "SELECT o.objectId, 'current.Object -- no' AS s, \"current\".x, E'a\\'b', $$ previous.y $$ "
        "FROM current.Object o JOIN previous.Source s USING(objectId)"
    )
    pinned = sqltext.replace_schemas(text, {"current": "dr2", "previous": "dr1"})
    assert "FROM dr2.Object o JOIN dr1.Source" in pinned and "'current.Object -- no'" in pinned
    assert "dr2.x" in pinned and "$$ previous.y $$" in pinned
    assert sqltext.identity_text("SELECT ObjectId FROM dr2.Object") == sqltext.identity_text(
        "select objectid\nfrom DR2.OBJECT;"
    )
    assert sqltext.identity_text("SELECT 'A'") != sqltext.identity_text("SELECT 'a'")
    assert sqltext.volatile_calls("SELECT now(), x.random, current_date, 'now()' FROM t") == [
        "current_date",
        "now",
    ]
    assert sqltext.has_unordered_limit("SELECT * FROM t LIMIT 3")
    assert not sqltext.has_unordered_limit("SELECT * FROM t ORDER BY a LIMIT 3")
    assert sqltext.radial_cones("SELECT 1 WHERE q3c_radial_query(ra, dec, 150.1, 2 - 0.5, 1 / 60.0)") == [
        (150.1, 1.5, 1 / 60.0)
    ]
    assert sqltext.radial_cones("SELECT 1 WHERE q3c_radial_query(ra, dec, a, 2, 1)") == [None]


_values = {
    "int64": st.integers(-(2**63), 2**63 - 1),
    "float64": st.floats(allow_nan=True, allow_infinity=True),
    "utf8": st.text(max_size=8),
    "bool": st.booleans(),
    "binary": st.binary(max_size=6),
    "timestamp_us": st.datetimes(
        min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
    ),
}
_arrow = {
    "int64": pa.int64(), "float64": pa.float64(), "utf8": pa.string(), "bool": pa.bool_(),
    "binary": pa.binary(), "timestamp_us": pa.timestamp("us", tz="UTC"),
}  # fmt: skip


@st.composite
def _tables(draw: st.DrawFn) -> tuple[list[tuple[str, str]], list[tuple]]:
    tags = draw(st.lists(st.sampled_from(sorted(_values)), min_size=1, max_size=4))
    n = draw(st.integers(0, 12))
    pool = [tuple(draw(st.none() | _values[t]) for t in tags) for _ in range(max(1, n // 2))]
    rows = [draw(st.sampled_from(pool)) for _ in range(n)]  # repeated values and whole rows
    return [(f"c{k}", t) for k, t in enumerate(tags)], rows


def _recipe(parquet: Path | None = None) -> dict:
    """The v3/v2 recipe of docs/citations.md, run as it stands (on ``parquet`` when given; without it
    only its definitions): it needs pyarrow, numpy, hashlib and blake3, not dpdb."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "citations.md").read_text()
    block = text.split("**Recomputing a v3 (or v2) hash**", 1)[1]
    block = block.split("```python\n", 1)[1].split("```", 1)[0]
    if parquet is None:
        block = block.split("\nrows = pq.read_table", 1)[0]
    namespace: dict = {}
    block = block.replace('"cited.parquet"', repr(str(parquet)))
    exec(compile(block, "docs/citations.md", "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


_RECIPE = _recipe()


def _hash_streamed(arrow: pa.Table, sizes: list[int], threaded: bool) -> tuple[str, bool]:
    """The v3 hash fed as batches of the given sizes (the rest in one), and whether it streamed."""
    hasher = RowsetHasher(threaded=threaded)
    start = 0
    for size in [*sizes, arrow.num_rows]:
        for batch in arrow.slice(start, size).to_batches():
            hasher.add(batch)
        start += size
        if start >= arrow.num_rows:
            break
    return hasher.finish(arrow.column_names, arrow.schema).sha256, hasher.streaming


@hsettings(max_examples=150, deadline=None)
@given(_tables(), st.randoms(), st.lists(st.integers(0, 5), max_size=4), st.booleans())
def test_fast_hash_matches_the_reference_and_ignores_row_order(
    table: tuple[list[tuple[str, str]], list[tuple]], rnd: random.Random, sizes: list[int], threaded: bool
) -> None:
    columns, rows = table
    arrow = pa.table(
        {name: pa.array([r[k] for r in rows], _arrow[tag]) for k, (name, tag) in enumerate(columns)}
    )
    for method in (METHOD_V1, METHOD_V2, METHOD_V3):
        fast = digest_table(arrow, method)
        assert [(c.name, c.type) for c in fast.columns] == columns and fast.method == method
        assert fast == digest_rows(columns, rows, method)
        shuffled = rows[:]
        rnd.shuffle(shuffled)
        assert digest_rows(columns, shuffled, method).sha256 == fast.sha256
        if len(rows) > 1:  # chunking does not matter
            assert digest_table(pa.concat_tables([arrow.slice(0, 1), arrow.slice(1)]), method) == fast
    v3 = digest_table(arrow, METHOD_V3).sha256
    assert _RECIPE["rowset"](arrow, columns) == v3  # the documented recipe, without dpdb
    assert _RECIPE["rowset"](arrow, columns, METHOD_V2) == digest_table(arrow, METHOD_V2).sha256
    # streamed in batches of any size, in the query's order or in the canonical one
    assert _hash_streamed(arrow, sizes, threaded)[0] == v3
    ordered = pa.Table.from_pylist(
        [dict(zip(arrow.column_names, r, strict=True)) for r in _canonical_rows(columns, rows)], arrow.schema
    )
    hashed, streamed = _hash_streamed(ordered, sizes, threaded)
    assert hashed == v3
    key = next((k for k, (_, tag) in enumerate(columns) if tag != "null"), None)
    if key is not None and ordered.num_rows and columns[key][1] != "float64":
        values = ordered.column(key).to_pylist()
        unique = None not in values and len(set(values)) == len(values)
        if unique and columns[key][1] in ("int64", "utf8", "binary", "timestamp_us"):
            assert streamed  # a strictly increasing first column: hashed batch by batch, nothing kept


def _canonical_rows(columns: list[tuple[str, str]], rows: list[tuple]) -> list[tuple]:
    """``rows`` in the canonical order (the reference's sort)."""
    from dpdb.citations.digest import _canonical_value, _sort_key

    tags = [tag for _, tag in columns]
    keyed = [(tuple(_canonical_value(v, t) for v, t in zip(r, tags, strict=True)), r) for r in rows]
    keyed.sort(key=lambda pair: tuple(_sort_key(v, t) for v, t in zip(pair[0], tags, strict=True)))
    return [r for _, r in keyed]


def test_a_long_result_in_canonical_order_is_hashed_while_it_streams() -> None:
    n = 200_000
    arrow = pa.table({"id": pa.array(range(n), pa.int64()), "f": pa.array([i * 0.5 for i in range(n)])})
    hasher = RowsetHasher()
    for batch in arrow.to_batches(max_chunksize=10_000):
        hasher.add(batch)
        assert hasher.streaming  # hashed as it came: nothing left to sort at the end
    assert hasher.finish().sha256 == digest_table(arrow).sha256
    unordered = pa.concat_tables([arrow.slice(n // 2), arrow.slice(0, n // 2)])
    hasher = RowsetHasher(threaded=True)
    for batch in unordered.to_batches(max_chunksize=10_000):
        hasher.add(batch)
    assert hasher.finish().sha256 == digest_table(arrow).sha256 and not hasher.streaming


def test_hash_sees_every_change_and_widens_types() -> None:
    base = pa.table({"id": pa.array([1, 2, 3], pa.int32()), "f": pa.array([1.5, -0.0, None], pa.float32())})
    wide = pa.table({"id": pa.array([3, 2, 1], pa.int64()), "f": pa.array([None, 0.0, 1.5], pa.float64())})
    assert digest_table(base).sha256 == digest_table(wide).sha256  # int32/int64, float32/float64, order, -0.0
    changed = pa.table({"id": pa.array([1, 2, 3], pa.int32()), "f": pa.array([1.5, 0.0, 2.0], pa.float32())})
    assert digest_table(changed).sha256 != digest_table(base).sha256
    renamed = base.rename_columns(["id", "g"])
    assert digest_table(renamed).sha256 != digest_table(base).sha256
    assert [
        canonical_tag(t) for t in (pa.int16(), pa.float32(), pa.large_string(), pa.list_(pa.int64()))
    ] == [
        "int64",
        "float64",
        "utf8",
        "json",
    ]
    from dpdb.registry.citations import _parse_reference

    assert _parse_reference("10.5072/dpdb.0000-0000-000u") is None  # u is not in the alphabet
    assert _parse_reference("https://doi.org/10.5072/dpdb.AB12-cd34-ef56") == "ab12-cd34-ef56"
