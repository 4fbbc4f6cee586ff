"""Alerts (DPDD §3.5.1): regenerated from the prompt catalog as of their issue time, identical to the byte.

One database ingests two nights of a simulated survey; the alerts of a few
DiaSources are made; a third night (with its daytime linkage, which moves
DiaSources to newly found SSObjects) is ingested; the tests then regenerate
those alerts and look at their content.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fastavro.validation
import numpy as np
import psycopg
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import drop_database, new_database

from dpdb.cli import cli
from dpdb.config import Settings
from dpdb.errors import AlertError
from dpdb.pg import conninfo
from dpdb.processing.survey import SurveyConfig, simulate
from dpdb.prompt import ingest
from dpdb.prompt.alert import (
    UNFILLED_FIELDS,
    alert_avro,
    alert_json,
    alert_record,
    alert_schema,
    issue_time,
    read_alert_avro,
    unfilled_fields,
)
from dpdb.timeutil import now_mjd_tai

CONFIG = SurveyConfig(seed=7, visits_per_night=4, sources_per_visit=300, area_deg2=12.0)
T0 = 61000.9  # processing time of the first visit (MJD TAI)


@dataclass
class Catalog:
    settings: Settings
    history: list[int]  # last DiaSource of each of the DiaObjects with the most DiaSources after 2 nights
    founders: list[int]  # DiaSources that founded a DiaObject (its ID) with later DiaSources
    attributed: list[int]  # DiaSources attributed to a known SSObject at ingest
    relinked: list[int]  # DiaSources the third night's linkage moves to a new SSObject
    before: dict[int, tuple[bytes, str]]  # alert (Avro, JSON) of each, made before the third night

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DPDB_HOME": str(self.settings.home), "DPDB_DATABASE": self.settings.database}


def _rows(settings: Settings, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(conninfo(settings)) as conn:
        return conn.execute(query, params).fetchall()


@pytest.fixture(scope="module")
def catalog(pg_home: Path, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    out = tmp_path_factory.mktemp("survey")
    dirs = simulate(out, 3, CONFIG)
    name = new_database(pg_home, template_db)
    settings = Settings(home=pg_home, database=name, partition_order=0)
    ingest(settings, dirs[: 2 * CONFIG.visits_per_night], processing_time=T0)
    history = [
        r[0]
        for r in _rows(
            settings,
            "SELECT (SELECT d.diasourceid FROM prompt.diasource d WHERE d.diaobjectid = l.diaobjectid "
            "        ORDER BY d.midpointmjdtai DESC LIMIT 1) "
            "FROM prompt.diaobjectlast l ORDER BY l.ndiasources DESC, l.diaobjectid LIMIT 12",
        )
    ]
    founders = [
        r[0]
        for r in _rows(
            settings,
            "SELECT diaobjectid FROM prompt.diaobjectlast WHERE ndiasources > 2 ORDER BY diaobjectid LIMIT 2",
        )
    ]
    attributed = [
        r[0]
        for r in _rows(
            settings,
            "SELECT diasourceid FROM prompt.diasource WHERE ssobjectid IS NOT NULL ORDER BY 1 LIMIT 2",
        )
    ]
    to_move = pq.read_table(out / "night_00002" / "linkage" / "SSSource.parquet").column(0).to_pylist()
    relinked = [
        r[0]
        for r in _rows(
            settings,
            "SELECT diasourceid FROM prompt.diasource WHERE diasourceid = ANY(%s) ORDER BY 1 LIMIT 3",
            (to_move,),
        )
    ]
    before = {}
    for i in [*history, *founders, *attributed, *relinked]:
        record = alert_record(settings, i)
        before[i] = (alert_avro(record), alert_json(record))
    ingest(settings, [out], processing_time=T0)  # night 2 and its linkage, at later processing times
    yield Catalog(settings, history, founders, attributed, relinked, before)
    drop_database(pg_home, name)


def test_avro_validates_and_reads_back(catalog: Catalog) -> None:
    dia_source_id = catalog.history[0]
    record = alert_record(catalog.settings, dia_source_id)
    schema = alert_schema()
    assert fastavro.validation.validate(record, schema.definition, raise_errors=True)
    packet = alert_avro(record)
    assert packet[0] == 0 and int.from_bytes(packet[1:5], "big") == schema.get_schema_id() == 1101
    assert read_alert_avro(packet) == record
    assert json.loads(alert_json(record)) == record
    assert list(record) == [f["name"] for f in schema.definition["fields"]]
    assert record["diaSourceId"] == record["diaSource"]["diaSourceId"] == dia_source_id
    assert record["cutoutDifference"] is None and record["cutoutTemplate"] is None
    ra, psf_flux, band, detector = _rows(
        catalog.settings,
        "SELECT ra, psfflux::float8, band, detector FROM prompt.diasource WHERE diasourceid = %s",
        (dia_source_id,),
    )[0]
    source = record["diaSource"]
    assert source["ra"] == ra and source["band"] == band and source["detector"] == detector
    assert source["psfFlux"] == float(np.float32(psf_flux))
    assert "ccdVisitId" not in source and "_healpix_29" not in source  # columns the schema does not have


def test_previous_sources_are_the_objects_history(catalog: Catalog) -> None:
    settings = catalog.settings
    visible = "timeprocessedmjdtai <= %s AND (timewithdrawnmjdtai IS NULL OR timewithdrawnmjdtai > %s)"
    for dia_source_id in catalog.history[:4]:
        t = issue_time(settings, dia_source_id)
        record = alert_record(settings, dia_source_id)
        obj = record["diaSource"]["diaObjectId"]
        midpoint = record["diaSource"]["midpointMjdTai"]
        expected = _rows(
            settings,
            f"SELECT diasourceid FROM prompt.diasource WHERE diaobjectid = %s AND midpointmjdtai < %s "
            f"AND {visible} ORDER BY midpointmjdtai, diasourceid",
            (obj, midpoint, t, t),
        )
        expected_forced = _rows(
            settings,
            f"SELECT diaforcedsourceid FROM prompt.diaforcedsource WHERE diaobjectid = %s "
            f"AND midpointmjdtai < %s AND {visible} ORDER BY midpointmjdtai, diaforcedsourceid",
            (obj, midpoint, t, t),
        )
        assert [s["diaSourceId"] for s in record["prvDiaSources"]] == [r[0] for r in expected]
        assert [s["diaForcedSourceId"] for s in record["prvDiaForcedSources"]] == [
            r[0] for r in expected_forced
        ]
        assert len(expected) >= 2 and expected_forced
        # The DiaObject as the visit left it: this DiaSource and all before it (the survey is < 1 year).
        assert record["diaObject"]["diaObjectId"] == obj
        assert record["diaObject"]["nDiaSources"] == len(expected) + 1
        assert record["diaObject"]["validityStartMjdTai"] <= t
        # A shorter characterization window keeps the same night only.
        short = settings.model_copy(update={"characterization_cutoff": 0.5})
        recent = alert_record(short, dia_source_id)["prvDiaSources"]
        assert [s["diaSourceId"] for s in recent] == [
            s["diaSourceId"] for s in record["prvDiaSources"] if s["midpointMjdTai"] >= midpoint - 0.5
        ]
    for founder in catalog.founders:
        record = alert_record(settings, founder)
        assert record["prvDiaSources"] == [] and record["diaObject"]["nDiaSources"] == 1


def test_ssobject_attributed_source_has_ss_fields(catalog: Catalog) -> None:
    dia_source_id = catalog.attributed[0]
    record = alert_record(catalog.settings, dia_source_id)
    ss_object_id, designation, q = _rows(
        catalog.settings,
        "SELECT s.ssobjectid, o.designation, o.q FROM prompt.diasource s "
        "JOIN prompt.ssobject o USING (ssobjectid) WHERE s.diasourceid = %s",
        (dia_source_id,),
    )[0]
    assert record["diaSource"]["ssObjectId"] == ss_object_id and record["diaSource"]["diaObjectId"] is None
    assert record["diaObject"] is None and record["prvDiaSources"] is None
    ss = record["ssSource"]
    assert ss["diaSourceId"] == dia_source_id and ss["ssObjectId"] == ss_object_id
    assert ss["ephRa"] is not None and ss["ephOffset"] is not None
    assert all(math.isfinite(ss[k]) for k in ("eclLambda", "eclBeta", "galLon", "galLat"))
    orbit = record["mpc_orbits"]
    assert orbit["designation"] == designation and orbit["q"] == q and orbit["e"] is not None
    assert orbit["unpacked_primary_provisional_designation"] == designation
    assert len(orbit["packed_primary_provisional_designation"]) == 7
    assert read_alert_avro(alert_avro(record)) == record
    # What no column fills is null, or the documented default where the schema wants a value.
    assert UNFILLED_FIELDS == tuple(unfilled_fields())
    for field in UNFILLED_FIELDS:
        part, _, name = field.rpartition(".")
        value = (record[part] if part else record)[name]
        assert value == (0 if field == "mpc_orbits.id" else None), field


def test_alert_regenerated_later_is_identical(catalog: Catalog) -> None:
    for dia_source_id, (avro, text) in catalog.before.items():
        record = alert_record(catalog.settings, dia_source_id)
        assert alert_avro(record) == avro, dia_source_id
        assert alert_json(record) == text, dia_source_id
        t = issue_time(catalog.settings, dia_source_id)
        assert alert_avro(alert_record(catalog.settings, dia_source_id, as_of=t)) == avro


def test_alert_at_present_follows_the_catalog(catalog: Catalog) -> None:
    settings, now = catalog.settings, now_mjd_tai()
    changed = 0
    for dia_source_id in catalog.history:
        issued = alert_record(settings, dia_source_id)
        obj = issued["diaObject"]["diaObjectId"]
        newer = _rows(
            settings,
            "SELECT count(*) FROM prompt.diaobject WHERE diaobjectid = %s AND validitystartmjdtai > %s",
            (obj, issue_time(settings, dia_source_id)),
        )[0][0]
        present = alert_record(settings, dia_source_id, as_of=now)
        if newer:
            changed += 1
            assert alert_avro(present) != catalog.before[dia_source_id][0]
            assert present["diaObject"]["nDiaSources"] > issued["diaObject"]["nDiaSources"]
        else:
            assert alert_avro(present) == catalog.before[dia_source_id][0]
    assert changed > 0
    # Moved to an SSObject by the daytime linkage: issued with its DiaObject, now with the SSObject.
    assert catalog.relinked
    for dia_source_id in catalog.relinked:
        issued = alert_record(settings, dia_source_id)
        present = alert_record(settings, dia_source_id, as_of=now)
        assert issued["diaObject"] is not None and issued["ssSource"] is None
        assert present["diaSource"]["ssObjectId"] is not None and present["diaObject"] is None
        assert present["ssSource"]["ssObjectId"] == present["diaSource"]["ssObjectId"]


def test_unknown_or_invisible_source_is_an_error(catalog: Catalog) -> None:
    with pytest.raises(AlertError, match="no DiaSource 12345 in the prompt catalog"):
        alert_record(catalog.settings, 12345)
    dia_source_id = catalog.history[0]
    t = issue_time(catalog.settings, dia_source_id)
    with pytest.raises(AlertError, match=f"DiaSource {dia_source_id} is not in the prompt catalog as of"):
        alert_record(catalog.settings, dia_source_id, as_of=t - 1e-6)
    with pytest.raises(AlertError, match="not an alert packet"):
        read_alert_avro(b"\x01\x00\x00\x04\x4d")


def test_json_has_null_for_nan(catalog: Catalog) -> None:
    record = alert_record(catalog.settings, catalog.history[0])
    record["diaSource"]["x"] = math.nan  # a non-nullable float the catalog could leave NULL
    assert json.loads(alert_json(record))["diaSource"]["x"] is None


def test_cli_writes_the_alert(catalog: Catalog, tmp_path: Path) -> None:
    runner = CliRunner()
    dia_source_id = catalog.history[1]
    avro, text = catalog.before[dia_source_id]
    out = tmp_path / "alert.avro"
    result = runner.invoke(cli, ["prompt", "alert", str(dia_source_id), "-o", str(out)], env=catalog.env)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == avro and f"written to {out}" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["alert.avro"]  # no temporary file left
    t = issue_time(catalog.settings, dia_source_id)
    result = runner.invoke(
        cli, ["prompt", "alert", str(dia_source_id), "--format", "json", "--as-of", repr(t)], env=catalog.env
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == text + "\n"
    result = runner.invoke(cli, ["prompt", "alert", str(dia_source_id), "--as-of", "now"], env=catalog.env)
    assert result.exit_code == 0 and result.stdout_bytes[:5] == avro[:5]


def test_cli_unknown_source_is_a_one_line_error(env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["prompt", "alert", "12345"], env=env)
    assert result.exit_code == 1
    assert result.output == "error: no DiaSource 12345 in the prompt catalog\n"
