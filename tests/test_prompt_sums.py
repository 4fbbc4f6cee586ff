"""Incremental aggregation (prompt.DiaObjectSums) against the full recomputation from stored rows.

The same simulated survey is ingested twice, once from the running sums and
once recomputing every version from its window's rows (``incremental=False``);
every DiaObject version must agree (rtol 1e-6). The survey's daytime linkages
relink DiaSources to SSObjects (DiaObjects re-aggregated or deleted), a short
characterization window makes rows leave the window every night (subtracted
from the sums, extremes recomputed), and a night ingested after a later one
gives visits older than the sums.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import drop_database, new_database

from dpdb.config import Settings
from dpdb.pg import conninfo
from dpdb.processing.survey import SurveyConfig, simulate
from dpdb.prompt import ingest
from dpdb.prompt.statements import VERSION_COLUMNS

CONFIG = SurveyConfig(seed=17, visits_per_night=4, sources_per_visit=200, area_deg2=8.0)
T0 = 61000.9
NUMERIC = [c for c in VERSION_COLUMNS if c not in ("diaobjectid", "validitystartmjdtai", "_healpix_29")
           and not c.startswith("nearbyobj")]  # fmt: skip


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("survey")
    simulate(out, 3, CONFIG)
    return sorted(p for p in out.iterdir() if p.is_dir() and p.name.startswith("night"))


@pytest.fixture
def second(pg_home: Path, template_db: str) -> Iterator[Settings]:
    name = new_database(pg_home, template_db)
    yield Settings(home=pg_home, database=name, partition_order=0)
    drop_database(pg_home, name)


def _rows(settings: Settings, query: str) -> list[tuple]:
    with psycopg.connect(conninfo(settings)) as conn:
        return conn.execute(query).fetchall()


def _versions(settings: Settings) -> dict[tuple[int, float], tuple]:
    rows = _rows(
        settings,
        f"SELECT diaobjectid, validitystartmjdtai, validityendmjdtai, {', '.join(NUMERIC)} "
        "FROM prompt.diaobject",
    )
    return {(r[0], r[1]): r[2:] for r in rows}


def _assert_same(incremental: Settings, full: Settings) -> int:
    a, b = _versions(incremental), _versions(full)
    assert a.keys() == b.keys()
    assert len(a) > 500
    for key, got in a.items():
        want = b[key]
        assert got[0] == want[0], key  # validity end
        for name, x, y in zip(NUMERIC, got[1:], want[1:], strict=True):
            if y is None or x is None:
                assert x is None and y is None, (key, name, x, y)
            elif name in ("ra", "dec"):
                assert abs(x - y) < 1e-9, (key, name, x, y)
            else:
                atol = 1e-6 if "chi2" in name or "sigma" in name else 0
                np.testing.assert_allclose(x, y, rtol=1e-6, atol=atol, err_msg=f"{key} {name}")
    return len(a)


def _ingest_both(incremental: Settings, full: Settings, order: list[list[Path]], t: float = T0) -> None:
    for paths in order:
        for settings, inc in ((incremental, True), (full, False)):
            ingest(settings, paths, processing_time=t, incremental=inc)
        t += 5


def test_sums_equal_full_recomputation_with_expiry_and_relink(
    settings: Settings, second: Settings, nights: list[Path]
) -> None:
    """A half-day window: each night's visits see the previous nights' rows leave the window."""
    short = settings.model_copy(update={"characterization_cutoff": 0.5})
    full = second.model_copy(update={"characterization_cutoff": 0.5})
    _ingest_both(short, full, [nights])
    _assert_same(short, full)
    # the sums were used (they exist) and brought forward past expired rows
    (n, moved), = _rows(
        settings,
        "SELECT count(*), count(*) FILTER (WHERE windowstartmjdtai > (SELECT min(midpointmjdtai) "
        "FROM prompt.diasource)) FROM prompt.diaobjectsums",
    )  # fmt: skip
    assert n > 300 and moved > 50
    assert _rows(full, "SELECT count(*) FROM prompt.diaobjectsums") == [(0,)]
    relinks = _rows(
        settings, "SELECT sum(n_diasources), sum(n_diaobjects_deleted) FROM dpdb_meta.prompt_relink"
    )
    assert relinks[0][0] and relinks[0][1]


def test_sums_equal_full_recomputation_out_of_order(
    settings: Settings, second: Settings, nights: list[Path], tmp_path: Path
) -> None:
    """Night 2, then night 1: its visits are older than the sums of the objects they touch.

    (The visits without their linkages, which name DiaSources of the other night.)
    """
    copies = []
    for night in nights[:2]:
        for visit in sorted(night.glob("visit_*")):
            shutil.copytree(visit, tmp_path / night.name / visit.name)
        copies.append(tmp_path / night.name)
    _ingest_both(settings, second, [[copies[1]], [copies[0]]])
    _assert_same(settings, second)


def test_sums_rebuilt_for_objects_without_them(
    settings: Settings, second: Settings, nights: list[Path]
) -> None:
    """Sums lost (a catalog migrated from before v9) are rebuilt from the rows at the next version."""
    _ingest_both(settings, second, [[nights[0]]])
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute("DELETE FROM prompt.diaobjectsums WHERE diaobjectid % 2 = 0")
    _ingest_both(settings, second, [nights[1:]], T0 + 10)
    _assert_same(settings, second)


def test_sums_pivot_over_bands_and_expiry(
    settings: Settings, second: Settings, nights: list[Path], tmp_path: Path
) -> None:
    """Objects measured in several bands on several nights, a band leaving the window while another
    is measured, and measurements without a band or in a band outside ugrizy (in the position only):
    the version built per band from the sums equals the full recomputation."""
    copies = []
    for night in nights:
        for visit in sorted(night.glob("visit_*")):
            shutil.copytree(visit, tmp_path / night.name / visit.name)
        copies.append(tmp_path / night.name)
    odd = sorted(copies[1].glob("visit_*"))[1] / "DiaSource.parquet"
    table = pq.read_table(odd)
    bands = table["band"].to_pylist()
    band = pa.array([[None, "w", b][i % 3] for i, b in enumerate(bands)], pa.string())
    pq.write_table(table.set_column(table.column_names.index("band"), "band", band), odd)
    short = settings.model_copy(update={"characterization_cutoff": 0.5})
    full = second.model_copy(update={"characterization_cutoff": 0.5})
    _ingest_both(short, full, [[c] for c in copies])
    _assert_same(short, full)
    (multi,), = _rows(
        settings, "SELECT count(*) FROM (SELECT diaobjectid FROM prompt.diaobjectsums "
        "WHERE band IN ('u', 'g', 'r', 'i', 'z', 'y') GROUP BY 1 HAVING count(*) >= 2) m",
    )  # fmt: skip
    assert multi > 20
    assert {b for (b,) in _rows(settings, "SELECT DISTINCT band FROM prompt.diaobjectsums")} >= {"", "w"}
