"""``dpdb provenance``: where an Object or DiaObject lives, its visits, files and alerts, checked against
SQL, the Parquet files and the load manifest.

One database ingests two simulated nights, applies a hand-made daytime relink
(one DiaSource taken from the DiaObject with the longest history, the only
DiaSource of another, which is thus deleted), produces a data release from
the prompt catalog and loads, validates and activates it. The last test then
activates two more releases so that the first is archived.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import drop_database, new_database, release_env

from dpdb.cli import cli
from dpdb.config import Settings
from dpdb.db import connect
from dpdb.ids import make_id, reorigin
from dpdb.lifecycle.activate import activate_release
from dpdb.lifecycle.load import load_release
from dpdb.lifecycle.validate import validate_release
from dpdb.model.felis import latest_version
from dpdb.pg import conninfo
from dpdb.processing.release import produce
from dpdb.processing.survey import SurveyConfig, simulate
from dpdb.prompt import ingest, relink
from dpdb.prompt.alert import alert_record
from dpdb.provenance import Provenance, ProvenanceError, provenance
from dpdb.registry.releases import NOW, create_release, set_state
from dpdb.timeutil import iso_utc

DPDB = str(Path(sys.executable).with_name("dpdb"))
CONFIG = SurveyConfig(seed=7, visits_per_night=4, sources_per_visit=200, area_deg2=12.0)
T0 = 61000.9


def _rows(settings: Settings, query: str, params: Any = ()) -> list[tuple]:
    with psycopg.connect(conninfo(settings)) as conn:
        return conn.execute(query, params).fetchall()


def _prompt_id(release_id: int) -> int:
    return int(reorigin(np.array([release_id]), 1)[0])


def _release_id(prompt_id: int, origin: int = 2) -> int:
    return int(reorigin(np.array([prompt_id]), origin)[0])


@pytest.fixture(scope="module")
def world(pg_home: Path, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("provenance")
    name = new_database(pg_home, template_db)
    settings = Settings(home=pg_home, database=name, partition_order=0, archive_dir=root / "archive")
    ingest(settings, simulate(root / "survey", 2, CONFIG), processing_time=T0)
    longest, source, ss = _rows(
        settings,
        "SELECT l.diaobjectid, (SELECT max(diasourceid) FROM prompt.diasource d "
        "WHERE d.diaobjectid = l.diaobjectid), (SELECT min(ssobjectid) FROM prompt.ssobject) "
        "FROM prompt.diaobjectlast l ORDER BY l.ndiasources DESC, l.diaobjectid LIMIT 1",
    )[0]  # fmt: skip
    single, single_source = _rows(
        settings,
        "SELECT l.diaobjectid, d.diasourceid FROM prompt.diaobjectlast l JOIN prompt.diasource d "
        "USING (diaobjectid) WHERE l.ndiasources = 1 ORDER BY l.diaobjectid LIMIT 1",
    )[0]
    linkage = root / "linkage"
    linkage.mkdir()
    pq.write_table(
        pa.table({"diaSourceId": pa.array([source, single_source], pa.int64()),
                  "ssObjectId": pa.array([ss, ss], pa.int64())}),
        linkage / "SSSource.parquet",
    )  # fmt: skip
    t_relink = _rows(settings, "SELECT max(processing_time_mjd_tai) FROM dpdb_meta.prompt_visit")[0][0] + 0.25
    assert relink(settings, linkage, processing_time=t_relink).status == "relinked"
    produce(root / "dr1", "dr1", objects=200, settings=settings, partition_order=0)
    with connect(settings) as conn:
        create_release(conn, "dr1", latest_version(), 0)
        conn.commit()
    load_release(settings, "dr1", root / "dr1")
    assert validate_release(settings, "dr1").ok
    activate_release(settings, "dr1")
    yield {
        "settings": settings, "root": root, "longest": longest, "moved": source, "ss": ss, "single": single,
        "linkage": linkage,
    }  # fmt: skip
    drop_database(pg_home, name)


def _sql_visits(settings: Settings, schema: str, key: str, object_id: int, tables: tuple[str, str]) -> set:
    """Distinct visits (via CcdVisit) of an object's measurements that are not withdrawn."""
    parts = " UNION ALL ".join(
        f"SELECT ccdvisitid FROM {schema}.{t} WHERE {key} = %(id)s"
        + (" AND timewithdrawnmjdtai IS NULL" if t.startswith("dia") else "")
        for t in tables
    )
    return {
        r[0]
        for r in _rows(
            settings,
            f"SELECT DISTINCT c.visitid FROM ({parts}) m JOIN {schema}.ccdvisit c USING (ccdvisitid)",
            {"id": object_id},
        )
    }


def _check_loads(settings: Settings, prov: Provenance, rows_by_table: dict[str, int]) -> None:
    """Every listed manifest entry is the load_manifest row, and the file at its path has its SHA-256."""
    manifest = {
        r[0]: r[1:]
        for r in _rows(
            settings,
            "SELECT load_id, path, sha256, size, table_name, row_count, software_version "
            "FROM dpdb_meta.load_manifest",
        )
    }  # fmt: skip
    counted: dict[str, int] = {}
    for e in prov.loads:
        assert (e.path, e.sha256, e.size, e.table_name, e.row_count, e.software_version) == manifest[
            e.load_id
        ]
        assert hashlib.sha256(Path(e.path).read_bytes()).hexdigest() == e.sha256
        for table, n in e.rows.items():
            counted[table] = counted.get(table, 0) + n
    assert {**counted, **prov.computed_rows} == rows_by_table


def test_prompt_diaobject(world: dict) -> None:
    settings, oid = world["settings"], world["longest"]
    prov = provenance(settings, oid)
    assert (prov.kind, prov.place.name, prov.place.kind, prov.found) == (
        "DiaObject",
        "prompt",
        "prompt",
        True,
    )
    assert prov.database_schema_version == latest_version()
    # Visits: those of its DiaSources and DiaForcedSources not withdrawn; the relinked one apart.
    visits = _sql_visits(settings, "prompt", "diaobjectid", oid, ("diasource", "diaforcedsource"))
    assert set(prov.contributing_visits) == visits and len(visits) >= 4
    moved_visit = _rows(
        settings, "SELECT visit FROM prompt.diasource WHERE diasourceid = %s", (world["moved"],)
    )
    withdrawn = {v.visit: v.withdrawn["DiaSource"] for v in prov.visits if v.withdrawn["DiaSource"]}
    assert withdrawn == {moved_visit[0][0]: 1}
    ccds = _rows(
        settings,
        "SELECT count(DISTINCT ccdvisitid) FROM (SELECT ccdvisitid FROM prompt.diasource "
        "WHERE diaobjectid = %(id)s AND timewithdrawnmjdtai IS NULL "
        "UNION ALL SELECT ccdvisitid FROM prompt.diaforcedsource "
        "WHERE diaobjectid = %(id)s AND timewithdrawnmjdtai IS NULL) m",
        {"id": oid},
    )  # fmt: skip
    assert prov.ccd_visit_count == ccds[0][0]
    # Load manifest: the visit files its DiaSource and DiaForcedSource rows came from; versions computed.
    counts = dict(_rows(
        settings,
        "SELECT 'DiaSource', count(*) FROM prompt.diasource WHERE diaobjectid = %(id)s UNION ALL "
        "SELECT 'DiaForcedSource', count(*) FROM prompt.diaforcedsource WHERE diaobjectid = %(id)s UNION ALL "
        "SELECT 'DiaObject', count(*) FROM prompt.diaobject WHERE diaobjectid = %(id)s",
        {"id": oid},
    ))  # fmt: skip
    _check_loads(settings, prov, counts)
    assert {Path(e.path).parent.name for e in prov.loads} == {
        f"visit_{v:08d}" for v in visits | withdrawn.keys()
    }
    # Versions: one per visit with a DiaSource, the last made by the relink, which took one DiaSource.
    versions = _rows(
        settings,
        "SELECT validitystartmjdtai, validityendmjdtai, ndiasources FROM prompt.diaobject "
        "WHERE diaobjectid = %s ORDER BY 1",
        (oid,),
    )
    assert [(v.valid_from_mjd_tai, v.valid_to_mjd_tai, v.n_dia_sources) for v in prov.versions] == versions
    assert prov.versions[-1].made_by == f"relink {world['linkage']}"
    assert prov.versions[-1].n_dia_sources == prov.versions[-2].n_dia_sources - 1
    assert prov.versions[0].made_by is not None and prov.versions[0].made_by.startswith("visit ")
    # Alerts: one per DiaSource ever associated, issued at its first processing time.
    alerts = _rows(
        settings,
        "SELECT diasourceid, min(timeprocessedmjdtai) FROM prompt.diasource WHERE diasourceid IN "
        "(SELECT diasourceid FROM prompt.diasource WHERE diaobjectid = %s) GROUP BY 1 ORDER BY 2, 1",
        (oid,),
    )
    assert [(a.alert_id, a.issued_mjd_tai) for a in prov.alerts] == alerts
    assert [a.issued_utc for a in prov.alerts] == [iso_utc(t) for _, t in alerts]
    gone = [a for a in prov.alerts if a.withdrawn_mjd_tai is not None]
    assert [(a.alert_id, a.moved_to_ssobject) for a in gone] == [(world["moved"], world["ss"])]
    assert all(a.command.startswith(f"dpdb prompt alert {a.alert_id}") for a in prov.alerts)
    record = alert_record(settings, prov.alerts[0].alert_id)  # the command's library call
    assert record["diaSourceId"] == prov.alerts[0].alert_id and record["diaObject"]["diaObjectId"] == oid
    # The release carries it under its origin.
    assert prov.in_releases == {"dr1": _release_id(oid)}
    assert prov.status.startswith("current version")


def test_deleted_diaobject(world: dict) -> None:
    prov = provenance(world["settings"], world["single"])
    assert prov.status.startswith("deleted") and str(world["linkage"]) in prov.status
    assert prov.versions[-1].ended_by == f"relink {world['linkage']}"
    assert prov.contributing_visits == [] and sum(v.withdrawn["DiaSource"] for v in prov.visits) == 1
    assert [(a.alert_id, a.moved_to_ssobject) for a in prov.alerts] == [(world["single"], world["ss"])]
    assert prov.in_releases == {}  # deleted before the release was produced
    assert any("withdrawn" in n for n in prov.notes)


def test_release_object(world: dict) -> None:
    settings, root = world["settings"], world["root"]
    oid = _rows(
        settings,
        "SELECT objectid FROM dr1.source GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
    )[0][0]
    prov = provenance(settings, oid)
    assert (prov.kind, prov.place.name, prov.place.state, prov.place.roles) == (
        "Object",
        "dr1",
        "active",
        ("current",),
    )
    assert {"created", "loaded", "validated", "activated"} <= prov.place.times.keys()
    assert prov.place.source == str(root / "dr1") and prov.place.schema_version == latest_version()
    assert [(a["made"], a["other"], a["forced"]) for a in prov.place.activations] == [
        ("current", None, False)
    ]
    # Visits: from SQL, and from the release's Parquet files (objectId -> ccdVisitId -> CcdVisit.visitId).
    visits = _sql_visits(settings, "dr1", "objectid", oid, ("source", "forcedsource"))
    assert set(prov.contributing_visits) == visits and visits
    ccd = pq.read_table(root / "dr1" / "CcdVisit", columns=["ccdVisitId", "visitId"])
    ccd_visit = dict(zip(ccd["ccdVisitId"].to_pylist(), ccd["visitId"].to_pylist(), strict=True))
    from_files: set[int] = set()
    rows = {"Object": 1}
    for table in ("Source", "ForcedSource"):
        data = pq.read_table(root / "dr1" / table, columns=["objectId", "ccdVisitId"])
        mine = data.filter(pc.equal(data["objectId"], oid))
        from_files |= {ccd_visit[c] for c in mine["ccdVisitId"].to_pylist()}
        rows[table] = mine.num_rows
        assert sum(v.rows[table] for v in prov.visits) == mine.num_rows
    assert from_files == visits
    assert prov.ccd_visit_count == len({c for v in prov.visits for c in v.ccd_visits}) >= len(visits)
    # Load manifest: the release's files, with their SHA-256, and how many of its rows each holds.
    _check_loads(settings, prov, rows)
    assert {e.table_name for e in prov.loads} == {"Object", "Source", "ForcedSource"}
    assert all(e.target == "dr1" and Path(e.path).is_relative_to(root / "dr1") for e in prov.loads)
    assert prov.alerts == [] and prov.versions == [] and prov.counterpart is None


def test_release_diaobject_and_prompt_counterpart(world: dict) -> None:
    settings, oid = world["settings"], _release_id(world["longest"])
    prov = provenance(settings, oid)
    assert (prov.kind, prov.place.name) == ("DiaObject", "dr1")
    assert len(prov.versions) == 1 and prov.versions[0].made_by is None
    # Its DiaSources are the prompt's not withdrawn: the relinked DiaSource is not in the release.
    assert prov.versions[0].n_dia_sources == provenance(settings, world["longest"]).versions[-1].n_dia_sources
    visits = _sql_visits(settings, "dr1", "diaobjectid", oid, ("diasource", "diaforcedsource"))
    assert set(prov.contributing_visits) == visits
    assert {e.table_name for e in prov.loads} == {"DiaObject", "DiaSource", "DiaForcedSource"}
    # The prompt counterpart: same local number, origin 1, with its alerts.
    assert prov.counterpart_id == world["longest"] == _prompt_id(oid)
    assert prov.counterpart is not None and prov.counterpart.place.name == "prompt"
    prompt_alerts = [a.alert_id for a in provenance(settings, world["longest"]).alerts]
    assert [a.alert_id for a in prov.alerts] == [a.alert_id for a in prov.counterpart.alerts] == prompt_alerts
    doc = prov.to_json()
    assert doc["counterpart"]["object_id"] == world["longest"] and doc["counterpart"]["in_releases"] == {
        "dr1": oid
    }


def test_unknown_ids(world: dict) -> None:
    settings = world["settings"]
    runner = CliRunner()
    env = release_env(settings)
    missing = make_id(1, 12345)
    cases = {
        missing: f"error: no DiaObject {missing} in the prompt catalog",
        make_id(2, 12345): f"error: no Object or DiaObject {make_id(2, 12345)} in release dr1 (active)",
        make_id(6, 1): "and no release has that origin (releases: dr1)",
        world["moved"]: f"is a DiaSource ID, of SSObject {world['ss']}",
        7: "error: 7 is not a dpdb ID (its origin bits are 0",
        -7: "error: -7 is not a dpdb ID (IDs are non-negative",
    }
    for ident, message in cases.items():
        result = runner.invoke(cli, ["provenance", "--", str(ident)], env=env)
        assert result.exit_code == 1, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
        assert str(ident) in result.output
    with pytest.raises(ProvenanceError, match="prompt catalog"):
        provenance(settings, missing)


def test_cli_table_and_json(world: dict) -> None:
    settings, oid = world["settings"], world["longest"]
    env = release_env(settings)
    runner = CliRunner()
    result = runner.invoke(cli, ["provenance", str(oid), "--json"], env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc == json.loads(json.dumps(provenance(settings, oid).to_json()))
    assert doc["kind"] == "DiaObject" and doc["place"]["name"] == "prompt"
    assert set(doc["contributing_visits"]) == set(provenance(settings, oid).contributing_visits)
    shown = runner.invoke(cli, ["provenance", str(oid)], env=env)
    assert shown.exit_code == 0, shown.output
    for text in ("in the prompt catalog", "versions", "visits:", "load manifest:", "alerts:", "in release",
                 *(f"dpdb prompt alert {a['alert_id']}" for a in doc["alerts"]),
                 f"withdrawn: moved to SSObject {world['ss']}"):  # fmt: skip
        assert text in shown.output, text
    short = runner.invoke(cli, ["provenance", str(oid), "--limit", "2"], env=env)
    assert f"and {len(doc['alerts']) - 2} more (--limit 0 shows all)" in short.output
    assert f"dpdb prompt alert {doc['alerts'][2]['alert_id']}" not in short.output


def test_subprocess(world: dict) -> None:
    """The real executable: an unknown ID is one line on stderr and exit code 1."""
    missing = make_id(2, 99)
    run = subprocess.run(
        [DPDB, "provenance", str(missing), "--json"],
        capture_output=True,
        text=True,
        env=release_env(world["settings"]),
    )
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        f"error: no Object or DiaObject {missing} in release dr1 (active)"
    ]


def test_archived_release(world: dict) -> None:
    """Runs last: two more (empty) releases are activated, so dr1 is archived (retention keeps two)."""
    settings = world["settings"]
    ra, dec, radius = settings.sample_region
    oid = _rows(
        settings,
        "SELECT objectid FROM dr1.object WHERE q3c_radial_query(coord_ra, coord_dec, %s, %s, %s) LIMIT 1",
        (ra, dec, radius),
    )[0][0]
    for name in ("dr2", "dr3"):
        with connect(settings) as conn:
            create_release(conn, name, latest_version(), 0)
            set_state(conn, name, "loaded", loaded_at=NOW)  # an empty release, as if loaded
            conn.commit()
        activate_release(settings, name, force=True)
    prov = provenance(settings, oid)
    archive = settings.archive_root() / "dr1"
    assert (prov.found, prov.place.state, prov.place.loaded) == (False, "archived", False)
    assert prov.place.archive_path == str(archive.absolute()) and (archive / "release.json").exists()
    assert str(archive.absolute()) in prov.status and "dpdb release restore dr1" in prov.status
    assert prov.kind == "Object" and prov.sample_tables == ["samples.dr1_object"]
    assert prov.visits == [] and prov.loads == []
    assert [(a["made"], a["other"]) for a in prov.place.activations] == [
        ("current", None),
        ("previous", "dr2"),
    ]
    assert prov.place.roles == ()
    assert provenance(settings, world["longest"]).in_releases == {}
    # The penultimate release is loaded and 'previous'; an ID it does not hold is named as such.
    result = CliRunner().invoke(cli, ["provenance", str(make_id(3, 5))], env=release_env(settings))
    assert result.exit_code == 1 and "in release dr2 (superseded)" in result.output
    with connect(settings) as conn:
        forced = conn.execute("SELECT forced FROM dpdb_meta.release_activation WHERE name = 'dr3'").fetchone()
    assert forced == (True,)
