"""Prompt processing: simulated nights ingested with association and aggregation, checked against truth."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import drop_database, new_database

from dpdb.cli import cli
from dpdb.config import Settings
from dpdb.errors import ValidationError
from dpdb.pg import conninfo
from dpdb.processing.quality import association_quality
from dpdb.processing.survey import SurveyConfig, simulate
from dpdb.prompt import ingest
from dpdb.prompt.statements import BANDS
from dpdb.registry.catalogs import create_catalog

ingest_module = importlib.import_module("dpdb.prompt.ingest")

CONFIG = SurveyConfig(seed=7, visits_per_night=4, sources_per_visit=300, area_deg2=12.0)
T0 = 61000.9  # processing time of the first visit (MJD TAI)


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("survey")
    return out, simulate(out, 3, CONFIG)


@pytest.fixture(scope="module")
def ingested(pg_home: Path, template_db: str, survey: tuple[Path, list[Path]]) -> Iterator[Settings]:
    """One database holding the whole simulated survey (read-only for the tests that use it)."""
    name = new_database(pg_home, template_db)
    settings = Settings(home=pg_home, database=name, partition_order=0)
    ingest(settings, [survey[0]], processing_time=T0)
    yield settings
    drop_database(pg_home, name)


def _rows(settings: Settings, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(conninfo(settings)) as conn:
        return conn.execute(query, params).fetchall()


def _table_digest(settings: Settings) -> dict[str, object]:
    """Row counts and content hashes of every prompt table (load ids and wall-clock times left out)."""
    out: dict[str, object] = {}
    for table, key in (
        ("diaobject", "diaobjectid, validitystartmjdtai"),
        ("diaobjectlast", "diaobjectid"),
        ("diasource", "diasourceid"),
        ("diaforcedsource", "diaforcedsourceid"),
        ("sssource", "diasourceid"),
        ("visit", "visit"),
    ):
        out[table] = _rows(
            settings,
            # the row's text breaks ties: a relink gives a source a second version (same id), and
            # rows tied on the id alone come in physical order, which a crashed visit changes
            f"SELECT count(*), md5(string_agg((to_jsonb(t) - '_load_id')::text, '|' "
            f"ORDER BY {key}, (to_jsonb(t) - '_load_id')::text)) FROM prompt.{table} t",
        )[0]
    return out


def test_associations_match_truth(ingested: Settings, survey: tuple[Path, list[Path]]) -> None:
    quality = association_quality(ingested, survey[1])
    assert quality.detections > 2500
    assert quality.linked > 1500
    assert quality.completeness >= 0.99 and quality.purity >= 0.99
    assert quality.known_asteroid_detections > 50
    assert quality.known_asteroids_in_diaobjects == 0
    assert quality.known_asteroids_attributed == quality.known_asteroid_detections


def test_association_guarantees_hold(ingested: Settings) -> None:
    # No two DiaSources of one visit in one DiaObject; a DiaSource goes to a DiaObject or an SSObject.
    assert not _rows(
        ingested,
        "SELECT visit, diaobjectid FROM prompt.diasource WHERE diaobjectid IS NOT NULL "
        "GROUP BY 1, 2 HAVING count(*) > 1",
    )
    assert _rows(
        ingested,
        "SELECT count(*) FROM prompt.diasource WHERE (diaobjectid IS NULL) = (ssobjectid IS NULL)",
    ) == [(0,)]
    # Every attributed DiaSource has its SSSource row, within the SSObject radius of the prediction.
    assert _rows(
        ingested,
        "SELECT count(*), max(ss.ephoffset) <= 2 FROM prompt.diasource d "
        "JOIN prompt.sssource ss USING (diasourceid, ssobjectid)",
    )[0] == (
        _rows(ingested, "SELECT count(*) FROM prompt.diasource WHERE ssobjectid IS NOT NULL")[0][0],
        True,
    )
    # Every forced measurement is linked, once per DiaObject and visit, in its object's partition.
    assert not _rows(
        ingested,
        "SELECT visit, diaobjectid FROM prompt.diaforcedsource GROUP BY 1, 2 HAVING count(*) > 1",
    )
    assert _rows(
        ingested,
        "SELECT count(*) FROM prompt.diaforcedsource f JOIN prompt.diaobjectlast l USING (diaobjectid) "
        "WHERE f._healpix_29 <> l.healpix29",
    ) == [(0,)]


def _separation_deg(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray) -> np.ndarray:
    ra1, dec1, ra2, dec2 = (np.radians(x) for x in (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h)))


def test_forced_linking_is_maximal_over_existing_and_new_diaobjects(
    ingested: Settings, survey: tuple[Path, list[Path]]
) -> None:
    # The near DiaObjects come from one q3c probe per measurement, and forced measurements are
    # matched to them and to the DiaObjects founded in the same visit: a forced measurement left
    # unlinked may have no free DiaObject (current before the visit, or founded in it) within
    # the association radius; every link is within it.
    radius = ingested.association_radius / 3600
    linked_to_new = 0
    for visit_dir in survey[1]:
        forced = pq.read_table(
            visit_dir / "DiaForcedSource.parquet", columns=["diaForcedSourceId", "ra", "dec"]
        )
        visit = int(pq.read_table(visit_dir / "Visit.parquet", columns=["visit"])["visit"][0].as_py())
        (t,) = _rows(ingested, "SELECT processing_time_mjd_tai FROM dpdb_meta.prompt_visit WHERE visit = %s",
                     (visit,))[0]  # fmt: skip
        before = _rows(
            ingested,
            "SELECT diaobjectid, ra, dec FROM prompt.diaobject WHERE validitystartmjdtai < %s "
            "AND (validityendmjdtai IS NULL OR validityendmjdtai >= %s)",
            (t, t),
        )
        founded = _rows(
            ingested,
            "SELECT diasourceid, ra, dec FROM prompt.diasource "
            "WHERE visit = %s AND diaobjectid = diasourceid",
            (visit,),
        )
        ids = [r[0] for r in before + founded]
        objects = np.array([r[1:] for r in before + founded], dtype=np.float64).reshape(-1, 2)
        new_ids = {r[0] for r in founded}
        links = dict(_rows(ingested, "SELECT diaforcedsourceid, diaobjectid FROM prompt.diaforcedsource "
                           "WHERE visit = %s", (visit,)))  # fmt: skip
        taken = set(links.values())
        for fid, ra, dec in zip(
            *(forced[c].to_numpy() for c in ("diaForcedSourceId", "ra", "dec")), strict=True
        ):
            sep = _separation_deg(
                np.full(len(objects), ra), np.full(len(objects), dec), objects[:, 0], objects[:, 1]
            )
            if int(fid) in links:
                obj = links[int(fid)]
                assert sep[ids.index(obj)] <= radius * (1 + 1e-6), (visit, fid, obj)
                linked_to_new += obj in new_ids
            else:
                free = [ids[i] for i in np.flatnonzero(sep < radius * (1 - 1e-6)) if ids[i] not in taken]
                assert not free, (visit, fid, free)
    assert linked_to_new > 0  # forced measurements of objects founded in their own visit were exercised


def _versions_by_object(settings: Settings, more: str = "") -> dict[int, list[tuple]]:
    """Each DiaObject's versions in order: (diaobjectid, validity start, validity end[, ``more``...])."""
    columns = "diaobjectid, validitystartmjdtai, validityendmjdtai" + (f", {more}" if more else "")
    by_object: dict[int, list[tuple]] = {}
    query = f"SELECT {columns} FROM prompt.diaobject ORDER BY diaobjectid, validitystartmjdtai"
    for r in _rows(settings, query):
        by_object.setdefault(r[0], []).append(r)
    return by_object


def test_versions_chain_and_last_table_is_current(ingested: Settings) -> None:
    by_object = _versions_by_object(ingested, "_healpix_29, ndiasources")
    assert any(len(v) >= 3 for v in by_object.values())
    relinks = {r[0] for r in _rows(ingested, "SELECT processing_time_mjd_tai FROM dpdb_meta.prompt_relink")}
    deleted = 0
    for versions in by_object.values():
        for before, after in zip(versions, versions[1:], strict=False):
            assert before[2] == after[1]  # closed exactly when the next one starts
            assert before[3] == after[3]  # the partition never changes
            assert after[4] == before[4] + 1
        if versions[-1][2] is not None:  # deleted by a daytime relink (its DiaSources went to an SSObject)
            assert versions[-1][2] in relinks
            deleted += 1
    assert relinks and deleted
    current = _rows(
        ingested,
        "SELECT diaobjectid, validitystartmjdtai, ra, dec, ndiasources, _healpix_29 FROM prompt.diaobject "
        "WHERE validityendmjdtai IS NULL ORDER BY 1",
    )
    last = _rows(
        ingested,
        "SELECT diaobjectid, validitystartmjdtai, ra, dec, ndiasources, healpix29 FROM prompt.diaobjectlast "
        "ORDER BY 1",
    )
    assert current == last and len(current) == len(by_object) - deleted
    counts = dict(
        _rows(
            ingested,
            "SELECT diaobjectid, count(*) FROM prompt.diasource WHERE timewithdrawnmjdtai IS NULL GROUP BY 1",
        )
    )
    assert all(counts[r[0]] == r[4] for r in current)


def test_aggregates_match_numpy(ingested: Settings) -> None:
    sources = _rows(
        ingested,
        # float8 casts: REAL values exactly (their text form is only the shortest round-trip decimal)
        "SELECT d.diaobjectid, d.band, d.psfflux::float8, d.psffluxerr::float8, d.ra, d.dec, "
        "d.raerr::float8, "
        "d.midpointmjdtai "
        "FROM prompt.diasource d JOIN prompt.diaobjectlast l USING (diaobjectid) "
        "WHERE d.midpointmjdtai > l.lastdiasourcemjdtai - 365.25",
    )
    stats = ("psffluxmean", "psffluxmeanerr", "psffluxsigma", "psffluxchi2", "psffluxndata", "psffluxmin")
    columns = [f"{b}_{s}" for b in BANDS for s in stats]
    stored = {
        r[0]: r[1:]
        for r in _rows(
            ingested,
            f"SELECT diaobjectid, ra, dec, {', '.join(columns)} FROM prompt.diaobject "
            "WHERE validityendmjdtai IS NULL",
        )
    }
    groups: dict[int, list[tuple]] = {}
    for r in sources:
        groups.setdefault(r[0], []).append(r)
    checked = 0
    for obj, rows in groups.items():
        got = stored[obj]
        ra = np.array([r[4] for r in rows])
        w = 1 / np.array([r[6] for r in rows], dtype=np.float64) ** 2
        np.testing.assert_allclose(got[0], np.sum(w * ra) / np.sum(w), rtol=0, atol=1e-9)
        for i, band in enumerate(BANDS):
            sel = [r for r in rows if r[1] == band]
            mean, meanerr, sigma, chi2, ndata, fmin = got[2 + 6 * i : 8 + 6 * i]
            assert ndata == len(sel)
            if not sel:
                assert mean is None
                continue
            f = np.array([r[2] for r in sel], dtype=np.float64)
            e = np.array([r[3] for r in sel], dtype=np.float64)
            wf = 1 / e**2
            m = np.sum(wf * f) / np.sum(wf)
            np.testing.assert_allclose(mean, m, rtol=1e-6)
            np.testing.assert_allclose(meanerr, np.sqrt(1 / np.sum(wf)), rtol=1e-6)
            np.testing.assert_allclose(chi2, np.sum(wf * (f - m) ** 2), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(fmin, f.min(), rtol=1e-6)
            if len(sel) > 1:
                np.testing.assert_allclose(sigma, np.std(f, ddof=1), rtol=1e-5)
            checked += 1
    assert checked > 1000


def test_versions_close_even_where_the_last_table_names_another_start(
    settings: Settings, survey: tuple[Path, list[Path]]
) -> None:
    """A visit closes each previous version by its whole key, the start DiaObjectLast names; should
    that ever not be the open version, the DiaObjects left open are closed by ID: never two open."""
    dirs = survey[1]
    ingest(settings, dirs[:4], processing_time=T0)  # night 0 and its daytime linkage
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        moved = conn.execute("UPDATE prompt.diaobjectlast SET validitystartmjdtai = validitystartmjdtai - 1")
        assert moved.rowcount > 0
    results = ingest(settings, dirs[4:7])  # night 1 before its linkage
    assert sum(r.counts["associated"] for r in results) > 0
    by_object = _versions_by_object(settings)
    assert any(len(v) >= 2 for v in by_object.values())
    for versions in by_object.values():
        assert sum(v[2] is None for v in versions) <= 1, versions  # (0: deleted by the linkage)
        for before, after in zip(versions, versions[1:], strict=False):
            assert before[2] == after[1], versions  # closed exactly when the next one starts


def test_characterization_window_drops_old_sources(settings: Settings, tmp_path: Path) -> None:
    """With a 0.5-day cutoff, a version made on night 2 averages night 2's DiaSources only."""
    dirs = simulate(tmp_path, 3, CONFIG)
    short = settings.model_copy(update={"characterization_cutoff": 0.5})
    ingest(short, dirs, processing_time=T0)
    rows = _rows(
        settings,
        "SELECT l.diaobjectid, o.r_psffluxndata + o.g_psffluxndata + o.u_psffluxndata + o.i_psffluxndata "
        "+ o.z_psffluxndata + o.y_psffluxndata, l.ndiasources "
        "FROM prompt.diaobjectlast l JOIN prompt.diaobject o USING (diaobjectid, validitystartmjdtai) "
        "WHERE l.firstdiasourcemjdtai < l.lastdiasourcemjdtai - 1",
    )
    assert rows and all(ndata < n for _, ndata, n in rows)


def test_rerun_changes_nothing(ingested: Settings, survey: tuple[Path, list[Path]]) -> None:
    before = _table_digest(ingested)
    results = ingest(ingested, [survey[0]], processing_time=T0 + 100)
    assert {r.status for r in results} == {"skipped"}
    assert _table_digest(ingested) == before


def test_crash_mid_visit_leaves_it_absent_and_rerun_completes(
    settings: Settings, ingested: Settings, survey: tuple[Path, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs = survey[1]
    crash_visit = int(pq.read_table(dirs[5] / "Visit.parquet")["visit"][0].as_py())
    original = ingest_module._VisitTransaction._run

    def crashing(self, name, parameters=None):  # noqa: ANN001, ANN202
        if name == "update_last" and self.visit.visit == crash_visit:
            raise RuntimeError("simulated crash")
        return original(self, name, parameters)

    monkeypatch.setattr(ingest_module._VisitTransaction, "_run", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest(settings, [survey[0]], processing_time=T0)
    assert _rows(settings, "SELECT count(*) FROM dpdb_meta.prompt_visit") == [(5,)]
    for table in ("visit", "diasource", "diaforcedsource"):
        assert _rows(settings, f"SELECT count(*) FROM prompt.{table} WHERE visit = %s", (crash_visit,)) == [
            (0,)
        ]
    assert _rows(settings, "SELECT count(*) FROM dpdb_meta.load_manifest WHERE path LIKE %s",
                 (f"%{dirs[5].name}%",)) == [(0,)]  # fmt: skip
    monkeypatch.setattr(ingest_module._VisitTransaction, "_run", original)
    ingest(settings, [survey[0]], processing_time=T0)
    assert _table_digest(settings) == _table_digest(ingested)


def test_processing_time_must_move_forward(settings: Settings, survey: tuple[Path, list[Path]]) -> None:
    dirs = survey[1]
    ingest(settings, dirs[:2], processing_time=T0)
    with pytest.raises(ValidationError, match="is not later than"):
        ingest(settings, dirs[2:3], processing_time=T0)
    assert _rows(settings, "SELECT count(*) FROM dpdb_meta.prompt_visit") == [(2,)]
    ingest(settings, dirs[2:3])  # the wall clock is later than the simulated times
    assert _rows(settings, "SELECT count(*) FROM dpdb_meta.prompt_visit") == [(3,)]


def test_bad_input_is_refused_whole(
    settings: Settings, survey: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    visit = tmp_path / "visit"
    visit.mkdir()
    for f in survey[1][0].glob("*.parquet"):
        (visit / f.name).write_bytes(f.read_bytes())
    src = pq.read_table(visit / "DiaSource.parquet")
    pq.write_table(src.append_column("diaObjectId", pa.array([1] * src.num_rows, pa.int64())),
                   visit / "DiaSource.parquet")  # fmt: skip
    with pytest.raises(
        ValidationError, match="DiaSource.parquet: column diaObjectId is assigned by the prompt"
    ):
        ingest(settings, [visit])
    pq.write_table(src.drop_columns(["midpointMjdTai"]), visit / "DiaSource.parquet")
    with pytest.raises(ValidationError, match="missing required column midpointMjdTai"):
        ingest(settings, [visit])
    (visit / "DiaSource.parquet").unlink()
    with pytest.raises(ValidationError, match="missing DiaSource.parquet"):
        ingest(settings, [visit])
    assert _rows(settings, "SELECT count(*) FROM prompt.visit") == [(0,)]
    assert _rows(settings, "SELECT count(*) FROM dpdb_meta.load_manifest") == [(0,)]


def test_nearby_objects_from_the_active_release(settings: Settings, survey: tuple[Path, list[Path]]) -> None:
    truth = pq.read_table(survey[0] / "truth_objects.parquet")
    stars = truth.filter(pa.compute.equal(truth["kind"], "star")).slice(0, 400)
    ra, dec = stars["ra0"].to_numpy(), stars["dec0"].to_numpy()
    rng = np.random.default_rng(3)
    n = len(ra)
    with psycopg.connect(conninfo(settings)) as conn:
        create_catalog(conn, "dr1", "release", 3, 0)
        conn.execute(
            "INSERT INTO dpdb_meta.release (name, state, created_at) VALUES ('dr1', 'active', now())"
        )
        with conn.cursor().copy(
            "COPY dr1.object (objectid, coord_ra, coord_dec, refextendedness, _healpix_29) FROM STDIN"
        ) as copy:
            for i in range(2 * n):  # a star and a galaxy a few arcsec from each true star
                offset = rng.normal(0, 3 / 3600, 2)
                copy.write_row((i + 1, ra[i % n] + offset[0], dec[i % n] + offset[1], float(i >= n), 0))
    ingest(settings, survey[1][:2], processing_time=T0)
    rows = _rows(
        settings,
        "SELECT nearbyobj1, nearbyobj1dist, nearbyobj2dist, nearbyobj4, nearbyobj4dist, "
        "s.refextendedness, g.refextendedness "
        "FROM prompt.diaobject d LEFT JOIN dr1.object s ON s.objectid = d.nearbyobj1 "
        "LEFT JOIN dr1.object g ON g.objectid = d.nearbyobj4 WHERE nearbyobj1 IS NOT NULL",
    )
    assert len(rows) > 100
    for _, d1, d2, g, dg, ext_star, ext_galaxy in rows:
        assert ext_star == 0 and d1 <= 60 and (d2 is None or d1 <= d2)
        assert g is None or (ext_galaxy == 1 and dg <= 60)


def test_cli_run_continues_the_survey(env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["prompt", "run", "--nights", "1", "--out", str(tmp_path / "s"), "--visits-per-night", "2",
            "--sources-per-visit", "200", "--area", "10", "--processing-time", "61000.9"]  # fmt: skip
    first = runner.invoke(cli, args, env=env)
    assert first.exit_code == 0, first.output
    assert "simulated nights 0..0" in first.output and "completeness" in first.output
    second = runner.invoke(cli, args[:-2], env=env)
    assert second.exit_code == 0, second.output
    assert "simulated nights 1..1: 2 visits" in second.output and "2 visits ingested" in second.output
    bad = runner.invoke(cli, ["prompt", "ingest", str(tmp_path / "nothing")], env=env)
    assert bad.exit_code == 1 and bad.output.startswith("error: ") and "nothing" in bad.output
