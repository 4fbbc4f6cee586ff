"""Time travel (DPDD §2.5): queries as of an instant give the same rows forever after.

One database ingests the first nights of a simulated survey (with their daytime
linkages), the results of a fixed set of queries are recorded as of several
instants, then more nights, more linkages and a hand-made relink change the
catalog; the same queries as of the same instants must return the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import drop_database, new_database

from dpdb.cli import cli
from dpdb.config import Settings
from dpdb.errors import ValidationError
from dpdb.pg import conninfo
from dpdb.processing.survey import SurveyConfig, simulate
from dpdb.prompt import RelinkResult, ingest, relink
from dpdb.query import run_query
from dpdb.timeutil import iso_utc

CONFIG = SurveyConfig(seed=7, visits_per_night=4, sources_per_visit=300, area_deg2=12.0)
T0 = 61000.9
FIRST_NIGHTS = 3
NIGHTS = 5

# Each query takes the instant (MJD TAI) as %(t)s; %(obj)s is a DiaObject chosen below.
QUERIES = {
    "cone": "SELECT * FROM prompt.diaobject_as_of(%(t)s) "
    "WHERE q3c_radial_query(ra, dec, 150.0, 2.0, 0.8) ORDER BY diaobjectid",
    "light_curve": "SELECT diasourceid, midpointmjdtai, band, psfflux, psffluxerr "
    "FROM prompt.diasource_as_of(%(t)s) WHERE diaobjectid = %(obj)s ORDER BY midpointmjdtai, diasourceid",
    "forced_light_curve": "SELECT diaforcedsourceid, midpointmjdtai, band, psfflux "
    "FROM prompt.diaforcedsource_as_of(%(t)s) WHERE diaobjectid = %(obj)s ORDER BY midpointmjdtai",
    "per_band": "SELECT "
    + ", ".join(f"count(*) FILTER (WHERE {b}_psffluxndata > 0)" for b in "ugrizy")
    + " FROM prompt.diaobject_as_of(%(t)s)",
    "join": "SELECT s.diasourceid, o.diaobjectid, o.ra, o.dec, o.ndiasources "
    "FROM prompt.diasource_as_of(%(t)s) s JOIN prompt.diaobject_as_of(%(t)s) o USING (diaobjectid) "
    "ORDER BY s.diasourceid",
    "solar_system": "SELECT x.diasourceid, x.ssobjectid, o.designation FROM prompt.sssource_as_of(%(t)s) x "
    "JOIN prompt.ssobject_as_of(%(t)s) o USING (ssobjectid) ORDER BY x.diasourceid",
    "visits": "SELECT count(*) FROM prompt.visit_as_of(%(t)s) v JOIN prompt.ccdvisit_as_of(%(t)s) c "
    "ON c.visitid = v.visit",
}


def _rows(settings: Settings, query: str, params: dict | tuple = ()) -> list[tuple]:
    with psycopg.connect(conninfo(settings)) as conn:
        return conn.execute(query, params).fetchall()


def _results(settings: Settings, t: float, obj: int) -> dict[str, list[tuple]]:
    return {name: _rows(settings, q, {"t": t, "obj": obj}) for name, q in QUERIES.items()}


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("survey")
    return out, simulate(out, NIGHTS, CONFIG)


@pytest.fixture(scope="module")
def history(pg_home: Path, template_db: str, survey: tuple[Path, list[Path]]) -> Iterator[dict]:
    """The survey ingested in two parts, with query results recorded as of instants of the first."""
    out, dirs = survey
    name = new_database(pg_home, template_db)
    settings = Settings(home=pg_home, database=name, partition_order=0)
    first = [d for d in dirs if int(d.parent.name.split("_")[1]) < FIRST_NIGHTS]
    relinks: list[RelinkResult] = []
    ingest(settings, first, processing_time=T0, on_relink=relinks.append)
    times = [r[0] for r in _rows(settings, "SELECT processing_time_mjd_tai FROM dpdb_meta.prompt_visit")]
    times += [r.processing_time for r in relinks]
    times.sort()
    # Instants between processing times (mid-night, after a linkage) and one after everything.
    instants = [(times[i] + times[i + 1]) / 2 for i in (3, 6, len(times) - 2)] + [times[-1] + 0.01]
    # The DiaObject with the longest history at the end of the first part.
    obj = _rows(
        settings,
        "SELECT diaobjectid FROM prompt.diaobjectlast ORDER BY ndiasources DESC, diaobjectid LIMIT 1",
    )[0][0]
    before = {t: _results(settings, t, obj) for t in instants}
    # Everything after: the remaining nights (with their linkages), then a hand-made relink
    # that takes a DiaSource away from the object with the longest history.
    later = [d for d in dirs if d not in first]
    t_next = times[-1] + 0.5
    ingest(settings, later, processing_time=t_next, on_relink=relinks.append)
    yield {"settings": settings, "instants": instants, "obj": obj, "before": before, "relinks": relinks}
    drop_database(pg_home, name)


def _latest(settings: Settings) -> float:
    return _rows(
        settings,
        "SELECT greatest((SELECT max(processing_time_mjd_tai) FROM dpdb_meta.prompt_visit), "
        "(SELECT max(processing_time_mjd_tai) FROM dpdb_meta.prompt_relink))",
    )[0][0]


def _write_linkage(path: Path, links: list[tuple[int, int]]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "diaSourceId": pa.array([a for a, _ in links], pa.int64()),
                "ssObjectId": pa.array([b for _, b in links], pa.int64()),
            }
        ),
        path / "SSSource.parquet",
    )
    return path


def _hand_relink(settings: Settings, tmp_path: Path, obj: int) -> RelinkResult:
    """Move the latest DiaSource of DiaObject ``obj`` to a known SSObject."""
    source = _rows(
        settings,
        "SELECT diasourceid FROM prompt.diasource WHERE diaobjectid = %s AND timewithdrawnmjdtai IS NULL "
        "ORDER BY midpointmjdtai DESC LIMIT 1",
        (obj,),
    )[0][0]
    ss = _rows(settings, "SELECT min(ssobjectid) FROM prompt.ssobject")[0][0]
    path = _write_linkage(tmp_path / "hand", [(source, ss)])
    return relink(settings, path, processing_time=_latest(settings) + 0.1)


def test_linkages_moved_sources_and_deleted_objects(history: dict) -> None:
    settings = history["settings"]
    done = [r for r in history["relinks"] if r.status == "relinked"]
    assert len(done) >= 2
    assert sum(r.counts["diasources"] for r in done) > 0
    assert sum(r.counts["diaobjects_deleted"] for r in done) > 0
    # Every moved DiaSource: old row withdrawn at the linkage time, new row with the SSObject from then.
    rows = _rows(
        settings,
        "SELECT old.timewithdrawnmjdtai = new.timeprocessedmjdtai, new.ssobjectreassoctimemjdtai "
        "= new.timeprocessedmjdtai, new.diaobjectid IS NULL, x.ssobjectid = new.ssobjectid "
        "FROM prompt.diasource old JOIN prompt.diasource new ON new.diasourceid = old.diasourceid "
        "AND new.timeprocessedmjdtai > old.timeprocessedmjdtai "
        "JOIN prompt.sssource x ON x.diasourceid = new.diasourceid",
    )
    assert len(rows) == sum(r.counts["diasources"] for r in done)
    assert all(all(r) for r in rows)
    # A deleted DiaObject has no current version and no DiaObjectLast row; the table stays the current set.
    assert _rows(
        settings,
        "SELECT count(*) FROM (SELECT diaobjectid, validitystartmjdtai FROM prompt.diaobject "
        "WHERE validityendmjdtai IS NULL EXCEPT SELECT diaobjectid, validitystartmjdtai "
        "FROM prompt.diaobjectlast) d",
    ) == [(0,)]
    assert _rows(
        settings,
        "SELECT count(*) FROM (SELECT diaobjectid, validitystartmjdtai FROM prompt.diaobjectlast EXCEPT "
        "SELECT diaobjectid, validitystartmjdtai FROM prompt.diaobject WHERE validityendmjdtai IS NULL) d",
    ) == [(0,)]
    # No current DiaObject is left without a current DiaSource.
    assert _rows(
        settings,
        "SELECT count(*) FROM prompt.diaobjectlast l WHERE NOT EXISTS (SELECT 1 FROM prompt.diasource d "
        "WHERE d.diaobjectid = l.diaobjectid AND d.timewithdrawnmjdtai IS NULL)",
    ) == [(0,)]


def test_queries_as_of_past_instants_do_not_change(history: dict, tmp_path: Path) -> None:
    settings, obj = history["settings"], history["obj"]
    result = _hand_relink(settings, tmp_path, obj)
    assert result.counts["diaobjects_updated"] == 1  # the object kept its other DiaSources
    for t, expected in history["before"].items():
        again = _results(settings, t, obj)
        for name in QUERIES:
            assert again[name] == expected[name], f"{name} as of {t} changed"
    # The later nights did change the present: the guarantee is not vacuous.
    now = _results(settings, _latest(settings) + 1, obj)
    last = history["before"][history["instants"][-1]]
    changed = {name for name in QUERIES if now[name] != last[name]}
    assert {"cone", "light_curve", "join", "solar_system", "visits"} <= changed


def test_reaggregated_object_loses_the_moved_source(history: dict, tmp_path: Path) -> None:
    settings = history["settings"]
    obj = _rows(
        settings,
        "SELECT diaobjectid FROM prompt.diaobjectlast WHERE ndiasources >= 3 ORDER BY diaobjectid LIMIT 1",
    )[0][0]
    n_before = _rows(settings, "SELECT ndiasources FROM prompt.diaobjectlast WHERE diaobjectid = %s", (obj,))
    result = _hand_relink(settings, tmp_path, obj)
    assert result.counts == {
        "ssobjects": 0,
        "diasources": 1,
        "diaobjects_deleted": 0,
        "diaobjects_updated": 1,
    }
    versions = _rows(
        settings,
        "SELECT validitystartmjdtai, validityendmjdtai, ndiasources FROM prompt.diaobject "
        "WHERE diaobjectid = %s ORDER BY validitystartmjdtai DESC LIMIT 2",
        (obj,),
    )
    (start, end, n), (_, prev_end, prev_n) = versions
    assert end is None and prev_end == start == result.processing_time
    assert n == prev_n - 1 == n_before[0][0] - 1


def test_function_forms_and_session_views_agree(history: dict) -> None:
    settings = history["settings"]
    t = history["instants"][1]
    by_mjd = _rows(settings, "SELECT count(*), sum(diaobjectid) FROM prompt.diaobject_as_of(%s)", (t,))
    by_text = _rows(
        settings, "SELECT count(*), sum(diaobjectid) FROM prompt.diaobject_as_of(%s::text)", (iso_utc(t),)
    )
    by_ts = _rows(
        settings,
        "SELECT count(*), sum(diaobjectid) FROM prompt.diaobject_as_of(%s::timestamptz)",
        (iso_utc(t),),
    )
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute("SELECT set_config('dpdb.as_of', %s, false)", (iso_utc(t),))
        conn.execute("SET search_path = prompt_as_of, public")
        session = conn.execute("SELECT count(*), sum(diaobjectid) FROM DiaObject").fetchall()
        conn.execute("SELECT set_config('dpdb.as_of', %s, false)", (repr(t),))
        session_mjd = conn.execute("SELECT count(*), sum(diaobjectid) FROM DiaObject").fetchall()
    assert by_mjd == by_text == by_ts == session == session_mjd
    assert by_mjd[0][0] > 0


def test_mjd_tai_of_a_timestamp_follows_the_leap_seconds(history: dict) -> None:
    from astropy.time import Time

    settings = history["settings"]
    for iso in ("2016-12-31T23:59:59", "2017-01-01T00:00:01", "2026-03-01T12:00:00", "1999-06-01T00:00:00"):
        expected = Time(iso, scale="utc").tai.mjd
        got = _rows(settings, "SELECT dpdb_mjd_tai(%s::timestamptz)", (iso + "Z",))[0][0]
        assert abs(got - expected) * 86400 < 1e-3, iso


def test_relink_is_applied_once_and_bad_linkages_change_nothing(history: dict, tmp_path: Path) -> None:
    settings = history["settings"]
    done = [r for r in history["relinks"] if r.status == "relinked"]
    assert relink(settings, done[0].path, processing_time=_latest(settings) + 1).status == "skipped"
    count = _rows(settings, "SELECT count(*) FROM prompt.diasource")
    unknown = _write_linkage(tmp_path / "unknown", [(123, 456)])
    ss = _rows(settings, "SELECT min(ssobjectid) FROM prompt.ssobject")[0][0]
    with pytest.raises(ValidationError, match="diaSourceId 123 is not in the prompt catalog"):
        relink(
            settings, _write_linkage(tmp_path / "missing", [(123, ss)]), processing_time=_latest(settings) + 1
        )
    with pytest.raises(ValidationError, match="ssObjectId 456 is not in the prompt catalog"):
        relink(settings, unknown, processing_time=_latest(settings) + 1)
    source = _rows(settings, "SELECT min(diasourceid) FROM prompt.diasource WHERE diaobjectid IS NOT NULL")[
        0
    ][0]
    with pytest.raises(ValidationError, match="not later than"):
        relink(settings, _write_linkage(tmp_path / "early", [(source, ss)]), processing_time=T0)
    assert _rows(settings, "SELECT count(*) FROM prompt.diasource") == count


def test_cli_relink(history: dict, tmp_path: Path) -> None:
    settings = history["settings"]
    env = {"DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database}
    source = _rows(
        settings,
        "SELECT min(diasourceid) FROM prompt.diasource "
        "WHERE diaobjectid IS NOT NULL AND timewithdrawnmjdtai IS NULL",
    )[0][0]
    ss = _rows(settings, "SELECT min(ssobjectid) FROM prompt.ssobject")[0][0]
    path = _write_linkage(tmp_path / "cli", [(source, ss)])
    when = iso_utc(_latest(settings) + 0.5)
    result = CliRunner().invoke(cli, ["prompt", "relink", str(path), "--processing-time", when], env=env)
    assert result.exit_code == 0, result.output
    assert "1 DiaSources moved" in result.output
    again = CliRunner().invoke(cli, ["prompt", "relink", str(path)], env=env)
    assert again.exit_code == 0 and "already applied" in again.output
    bad = CliRunner().invoke(cli, ["prompt", "relink", str(tmp_path)], env=env)
    assert bad.exit_code == 1 and "not a linkage directory" in bad.output


def test_dpdb_query_as_of_reads_the_same_rows(history: dict) -> None:
    """Existing SQL over prompt.* run with --as-of gives the function form's rows, after the later changes."""
    settings = history["settings"]
    for t, expected in history["before"].items():
        table = run_query(
            settings,
            "SELECT diaObjectId, validityStartMjdTai, validityEndMjdTai FROM prompt.DiaObject "
            "WHERE q3c_radial_query(ra, dec, 150.0, 2.0, 0.8) ORDER BY diaObjectId",
            as_of=t,
        )
        assert table.column_names == ["diaObjectId", "validityStartMjdTai", "validityEndMjdTai"]
        assert list(zip(*table.to_pydict().values(), strict=True)) == [r[:3] for r in expected["cone"]]
