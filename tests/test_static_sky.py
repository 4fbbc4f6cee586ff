"""The data-release simulator: deterministic, geometrically exact, truthful, and loadable as a release."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from dpdb.errors import ConfigError
from dpdb.etl.validate import plan_columns, prepare_batch, target_table
from dpdb.ids import ORIGIN_SHIFT, origin_of, release_origin
from dpdb.model.felis import latest_version
from dpdb.processing.static_sky import plan_visits, simulate_static_sky

ORIGIN = release_origin(2)
TABLES = ("Object", "Source", "ForcedSource", "DiaObject", "DiaSource", "DiaForcedSource")
ID_COLUMNS = {
    "Object": "objectId",
    "Source": "sourceId",
    "DiaObject": "diaObjectId",
    "DiaSource": "diaSourceId",
    "DiaForcedSource": "diaForcedSourceId",
}
SKY = {"seed": 4, "objects": 3000, "variable_fraction": 0.2}


@pytest.fixture(scope="module")
def visits() -> tuple[pa.Table, pa.Table]:
    return plan_visits(5, 2, visits_per_night=4)


@pytest.fixture(scope="module")
def release(visits: tuple[pa.Table, pa.Table]) -> dict[str, pa.Table]:
    return simulate_static_sky(*visits, ORIGIN, **SKY)  # type: ignore[arg-type]


def col(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


def lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``values`` of the ``keys`` equal to each element of ``query`` (all must be present)."""
    order = np.argsort(keys)
    where = np.searchsorted(keys[order], query)
    assert (keys[order][where] == query).all()
    return values[order][where]


def pairs(table: pa.Table, first: str, second: str = "ccdVisitId") -> set[tuple[int, int]]:
    return set(zip(col(table, first).tolist(), col(table, second).tolist(), strict=True))


def test_plan_visits_numbers_visits_like_the_survey(visits: tuple[pa.Table, pa.Table]) -> None:
    visit, ccd_visit = visits
    assert col(visit, "visit").tolist() == [1000, 1001, 1002, 1003, 2000, 2001, 2002, 2003]
    assert ccd_visit.num_rows == 9 * visit.num_rows
    assert len(np.unique(col(ccd_visit, "ccdVisitId"))) == ccd_visit.num_rows
    assert set(col(ccd_visit, "visitId").tolist()) == set(col(visit, "visit").tolist())
    empty_visits, empty_ccds = plan_visits(5, 0)
    assert empty_visits.num_rows == empty_ccds.num_rows == 0
    assert empty_ccds.schema == ccd_visit.schema


def test_same_inputs_same_tables(visits: tuple[pa.Table, pa.Table], release: dict[str, pa.Table]) -> None:
    assert tuple(release) == TABLES
    again = simulate_static_sky(*visits, ORIGIN, **SKY)  # type: ignore[arg-type]
    for name in TABLES:
        assert again[name].equals(release[name]), name
    other = simulate_static_sky(*visits, ORIGIN, **{**SKY, "seed": 5})  # type: ignore[arg-type]
    assert not other["Object"].equals(release["Object"])


def test_tables_have_the_release_schema_and_pass_validation(release: dict[str, pa.Table]) -> None:
    for name, table in release.items():
        target = target_table("release", latest_version(), "release", name)
        expected = [(c.canonical, c.arrow_type) for c in target.columns.values()]
        assert [(f.name, f.type) for f in table.schema] == expected, name
        plan = plan_columns(Path(f"{name}.parquet"), table.schema, target, ignore_extra=False)
        for batch in table.to_batches():
            prepare_batch(batch, plan, target, 0)  # no nulls or NaN where the schema forbids them
        assert table.num_rows > 0, name


def test_ids_carry_the_origin_and_are_unique(release: dict[str, pa.Table]) -> None:
    every = []
    for name, column in ID_COLUMNS.items():
        ids = col(release[name], column)
        assert (ids >> ORIGIN_SHIFT == ORIGIN).all(), name
        assert origin_of(ids[0]) == ORIGIN
        assert len(np.unique(ids)) == len(ids), name
        every.append(ids)
    assert len(np.unique(np.concatenate(every))) == sum(map(len, every))  # unique across the release
    object_ids = set(col(release["Object"], "objectId").tolist())
    dia_ids = set(col(release["DiaObject"], "diaObjectId").tolist())
    assert set(col(release["Source"], "objectId").tolist()) <= object_ids
    assert set(col(release["ForcedSource"], "objectId").tolist()) <= object_ids
    assert set(col(release["DiaSource"], "diaObjectId").tolist()) <= dia_ids
    assert set(col(release["DiaForcedSource"], "diaObjectId").tolist()) == dia_ids


def test_forced_sources_are_exactly_the_covered_pairs(
    visits: tuple[pa.Table, pa.Table], release: dict[str, pa.Table]
) -> None:
    ccd = visits[1]
    ras = np.stack([col(ccd, f"{c}ra") for c in ("llc", "ulc", "urc", "lrc")])
    decs = np.stack([col(ccd, f"{c}dec") for c in ("llc", "ulc", "urc", "lrc")])
    obj, forced = release["Object"], release["ForcedSource"]
    ra, dec = col(obj, "coord_ra")[:, None], col(obj, "coord_dec")[:, None]
    inside = (ras.min(0) <= ra) & (ra <= ras.max(0)) & (decs.min(0) <= dec) & (dec <= decs.max(0))
    o, c = np.nonzero(inside)  # brute force over every (Object, CcdVisit)
    expected = set(zip(col(obj, "objectId")[o].tolist(), col(ccd, "ccdVisitId")[c].tolist(), strict=True))
    assert pairs(forced, "objectId") == expected
    assert forced.num_rows == len(expected)
    # each row carries its CcdVisit's visit, detector and band, and its Object's position
    for mine, theirs in (("visit", "visitId"), ("detector", "detector"), ("band", "band")):
        expected_values = lookup(col(ccd, "ccdVisitId"), col(ccd, theirs), col(forced, "ccdVisitId"))
        assert (col(forced, mine) == expected_values).all(), mine
    for name in ("coord_ra", "coord_dec"):
        assert (
            col(forced, name) == lookup(col(obj, "objectId"), col(obj, name), col(forced, "objectId"))
        ).all()


def test_sources_are_the_detections_among_forced_pairs(release: dict[str, pa.Table]) -> None:
    forced, source = release["ForcedSource"], release["Source"]
    detected = col(forced, "psfFlux") / col(forced, "psfFluxErr") > 5
    assert pairs(source, "objectId") == pairs(forced.filter(pa.array(detected)), "objectId")
    assert source.num_rows == detected.sum()
    assert (col(source, "psfFlux") / col(source, "psfFluxErr") > 5).all()
    assert np.allclose(col(source, "ra"), col(source, "coord_ra"))
    # measured positions scatter around the Object's by about their errors
    obj = release["Object"]
    dec = lookup(col(obj, "objectId"), col(obj, "coord_dec"), col(source, "objectId"))
    offset = (col(source, "coord_dec") - dec) * 3600
    assert np.abs(offset).max() < 0.5  # arcsec


def test_stars_are_point_sources_and_galaxies_extended(release: dict[str, pa.Table]) -> None:
    obj, source = release["Object"], release["Source"]
    ext = col(obj, "refExtendedness")
    assert set(ext.tolist()) == {0.0, 1.0}
    assert 0.55 < (ext == 0).mean() < 0.65
    assert (col(obj, "r_extendedness") == ext).all()
    assert set(col(obj, "refBand").tolist()) == {"r"}
    assert (col(source, "extendedness") == lookup(col(obj, "objectId"), ext, col(source, "objectId"))).all()
    assert (col(release["DiaSource"], "extendedness") == 0).all()  # only stars vary


def test_fluxes_scatter_around_the_truth(visits: tuple[pa.Table, pa.Table]) -> None:
    """Without variables the difference flux is measured minus true flux: within 5 sigma, unit scatter."""
    constant = simulate_static_sky(*visits, ORIGIN, **{**SKY, "variable_fraction": 0.0})  # type: ignore[arg-type]
    for name in ("DiaObject", "DiaSource", "DiaForcedSource"):
        assert constant[name].num_rows == 0, name
    forced = constant["ForcedSource"]
    pull = col(forced, "psfDiffFlux") / col(forced, "psfDiffFluxErr")
    assert np.abs(pull).max() < 5
    assert abs(pull.mean()) < 0.1 and 0.9 < pull.std() < 1.1
    obj = constant["Object"]
    r = 31.4 - 2.5 * np.log10(col(obj, "r_psfFlux").clip(1))
    bright = col(obj, "r_psfFlux") / col(obj, "r_psfFluxErr") > 50
    assert 16.5 < r[bright].min() and r[bright].max() < 25
    assert (col(obj, "g_psfFlux")[bright] > 0).all()


def test_dia_objects_summarise_their_dia_sources(
    visits: tuple[pa.Table, pa.Table], release: dict[str, pa.Table]
) -> None:
    dia, src, forced = release["DiaObject"], release["DiaSource"], release["DiaForcedSource"]
    ids = col(dia, "diaObjectId")
    owner = np.searchsorted(ids, col(src, "diaObjectId"))
    assert (col(dia, "nDiaSources") == np.bincount(owner, minlength=len(ids))).all()
    assert (col(dia, "nDiaSources") >= 1).all()
    ndata = sum(col(dia, f"{b}_psfFluxNdata") for b in "ugrizy")
    assert (ndata == col(dia, "nDiaSources")).all()
    mjd = col(src, "midpointMjdTai")
    first = np.full(len(ids), np.inf)
    np.minimum.at(first, owner, mjd)
    assert np.allclose(col(dia, "firstDiaSourceMjdTai"), first)
    # weighted mean of the r-band difference fluxes, over all DiaSources
    r = col(src, "band") == "r"
    w = col(src, "psfFluxErr")[r].astype(float) ** -2
    n = np.bincount(owner[r], minlength=len(ids))
    sw = np.bincount(owner[r], w, len(ids))
    mean = np.bincount(owner[r], w * col(src, "psfFlux")[r], len(ids))[n > 0] / sw[n > 0]
    got = dia.column("r_psfFluxMean").to_numpy(zero_copy_only=False)
    assert np.allclose(got[n > 0], mean, rtol=1e-5)
    assert dia.column("r_psfFluxMean").null_count == (n == 0).sum()
    # detections in the difference image, every one also forced-measured
    assert (np.abs(col(src, "psfFlux")) / col(src, "psfFluxErr") > 5).all()
    assert (col(src, "isNegative") == (col(src, "psfFlux") < 0)).all()
    assert pairs(src, "diaObjectId") <= pairs(forced, "diaObjectId")
    # the variable stars' forced difference fluxes scatter far beyond their errors
    pull = col(forced, "psfFlux") / col(forced, "psfFluxErr")
    assert np.median(np.abs(pull)) > 3
    # one processing time for the whole release
    processed = col(visits[1], "expMidptMJD").max() + 1
    assert (col(dia, "validityStartMjdTai") == processed).all()
    assert dia.column("validityEndMjdTai").null_count == dia.num_rows
    for table in (src, forced):
        assert (col(table, "timeProcessedMjdTai") == processed).all()
        assert table.column("timeWithdrawnMjdTai").null_count == table.num_rows


def test_bad_arguments_are_refused(visits: tuple[pa.Table, pa.Table]) -> None:
    with pytest.raises(ConfigError, match="variable_fraction"):
        simulate_static_sky(*visits, ORIGIN, variable_fraction=1.5)
    with pytest.raises(ConfigError, match="not in Visit"):
        simulate_static_sky(visits[0].slice(0, 1), visits[1], ORIGIN, objects=10)
    with pytest.raises(ConfigError, match="no CcdVisits"):
        simulate_static_sky(visits[0], visits[1].slice(0, 0), ORIGIN, objects=10)
    with pytest.raises(ValueError, match="origin"):
        simulate_static_sky(*visits, 0, objects=10)
