"""The survey simulator: deterministic, continuable, and its files pass the ETL's validation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dpdb.errors import ConfigError
from dpdb.etl.validate import TargetTable, plan_columns, prepare_batch, target_table
from dpdb.model.felis import latest_version
from dpdb.processing.survey import SurveyConfig, simulate
from dpdb.prompt.staging import ASSIGNED_COLUMNS, find_visits

CONFIG = SurveyConfig(seed=3, visits_per_night=4, sources_per_visit=300, area_deg2=12.0, field_area_deg2=4.0)
NIGHTS = 3


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("survey")
    simulate(out, NIGHTS, CONFIG)
    return out


def files(root: Path) -> dict[Path, Path]:
    return {p.relative_to(root): p for p in sorted(root.rglob("*.parquet"))}


def reduced_target(table: str) -> TargetTable:
    target = target_table("prompt", latest_version(), "prompt", table)
    return target.without(ASSIGNED_COLUMNS[table])


def test_same_seed_same_files_and_nights_can_continue(survey: Path, tmp_path: Path) -> None:
    again, split = tmp_path / "again", tmp_path / "split"
    simulate(again, NIGHTS, CONFIG)
    first = simulate(split, 2, CONFIG)
    second = simulate(split, 1, CONFIG, first_night=2)
    assert first + second == find_visits([split])
    expected = files(survey)
    for other in (again, split):
        got = files(other)
        assert got.keys() == expected.keys()
        for rel, path in expected.items():
            assert pq.read_table(got[rel]).equals(pq.read_table(path)), rel
    assert json.loads((split / "survey.json").read_text())["nights"] == [0, 1, 2]
    # a rerun over existing output rewrites identical files and leaves no temporary ones
    before = {rel: p.read_bytes() for rel, p in files(split).items()}
    simulate(split, 1, CONFIG, first_night=1)
    assert {rel: p.read_bytes() for rel, p in files(split).items()} == before
    assert not list(split.rglob(".*.tmp"))
    with pytest.raises(ConfigError, match="another configuration"):
        simulate(split, 1, dataclasses.replace(CONFIG, seed=4))


def test_a_different_seed_makes_a_different_sky(survey: Path, tmp_path: Path) -> None:
    simulate(tmp_path, 1, dataclasses.replace(CONFIG, seed=4))
    assert not pq.read_table(tmp_path / "truth_objects.parquet").equals(
        pq.read_table(survey / "truth_objects.parquet")
    )


def test_visits_bands_and_detections(survey: Path) -> None:
    dirs = find_visits([survey])
    assert len(dirs) == NIGHTS * CONFIG.visits_per_night
    assert find_visits([dirs[0]]) == [dirs[0]]
    counts, kinds, times = [], set(), []
    for i, path in enumerate(dirs):
        night, j = divmod(i, CONFIG.visits_per_night)
        band = "ugrizy"[(night + j) % 6]
        visit = pq.read_table(path / "Visit.parquet").to_pylist()
        assert [(v["visit"], v["band"]) for v in visit] == [((night + 1) * 1000 + j, band)]
        times.append(visit[0]["expMidptMJD"])
        ccd = pq.read_table(path / "CcdVisit.parquet")
        assert ccd["ccdVisitId"].to_pylist() == [visit[0]["visit"] * 100 + d for d in range(9)]
        src = pq.read_table(path / "DiaSource.parquet")
        assert set(src["band"].to_pylist()) == {band}
        ccd_ids = np.asarray(src["ccdVisitId"]) - np.asarray(src["visit"]) * 100
        assert np.array_equal(ccd_ids, np.asarray(src["detector"]))
        assert np.array_equal(np.asarray(src["isNegative"]), np.asarray(src["psfFlux"]) < 0)
        assert (np.asarray(src["snr"]) >= 5).all()
        counts.append(src.num_rows)
        truth = pq.read_table(path / "truth.parquet")
        kinds |= set(truth["kind"].to_pylist())
    assert times == sorted(times)
    assert abs(np.mean(counts) / CONFIG.sources_per_visit - 1) < 0.3
    assert all(0.5 < c / CONFIG.sources_per_visit < 1.5 for c in counts)
    assert kinds == {"star", "transient", "asteroid", "noise"}


def test_truth_matches_the_sources(survey: Path) -> None:
    known = set(pq.read_table(survey / "SSObject.parquet")["ssObjectId"].to_pylist())
    objects = pq.read_table(survey / "truth_objects.parquet").to_pylist()
    kind_of = {o["truthId"]: o["kind"] for o in objects}
    ss_of = {o["truthId"]: o["ssObjectId"] for o in objects}
    assert {s for s in ss_of.values() if s is not None} == known
    for path in find_visits([survey]):
        truth = pq.read_table(path / "truth.parquet")
        src = pq.read_table(path / "DiaSource.parquet")
        forced = pq.read_table(path / "DiaForcedSource.parquet")
        ids = src["diaSourceId"].to_pylist() + forced["diaForcedSourceId"].to_pylist()
        assert truth["id"].to_pylist() == ids
        for row in truth.to_pylist():
            assert row["kind"] == ("noise" if row["truthId"] == -1 else kind_of[row["truthId"]])
            from_source = row["table"] == "DiaSource" and row["truthId"] >= 0
            assert row["ssObjectId"] == (ss_of[row["truthId"]] if from_source else None)
        forced_kinds = set(truth.filter(pc.equal(truth["table"], "DiaForcedSource"))["kind"].to_pylist())
        assert forced_kinds <= {"star", "transient"}
        assert set(pq.read_table(path / "SSEphemeris.parquet")["ssObjectId"].to_pylist()) <= known


@pytest.mark.parametrize("table", ["DiaSource", "DiaForcedSource", "SSObject"])
def test_files_pass_validation(survey: Path, table: str) -> None:
    target = reduced_target(table)
    paths = (
        [survey / "SSObject.parquet"]
        if table == "SSObject"
        else [d / f"{table}.parquet" for d in find_visits([survey])]
    )
    for path in paths:
        schema = pq.read_schema(path)
        assert schema.names == [c.canonical for c in target.columns.values()]
        plan = plan_columns(path, schema, target, ignore_extra=False)
        row0 = 0
        for batch in pq.ParquetFile(path).iter_batches():
            prepare_batch(batch, plan, target, row0)
            row0 += batch.num_rows
        assert row0 > 0
