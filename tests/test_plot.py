"""``dpdb plot``: light curves, sky maps and DiaObject histories drawn from a small ingested survey.

One database ingests two simulated nights, a hand-made relink deletes the
DiaObject with the most versions, and release dr1 is produced from the prompt
catalog, loaded and activated; dr2 is created and dropped (not loaded). The
numbers each plot reports are checked against SQL, the files are read back as
images, and every refusal leaves no file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import healpy
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import drop_database, new_database

from dpdb.cli import cli
from dpdb.config import Settings
from dpdb.errors import ReleaseStateError
from dpdb.ids import make_id
from dpdb.lifecycle.activate import activate_release
from dpdb.lifecycle.archive import drop_release
from dpdb.lifecycle.load import load_release
from dpdb.model.felis import latest_version
from dpdb.pg import conninfo
from dpdb.plots import (
    PlotError,
    history_data,
    lightcurve_data,
    plot_history,
    plot_lightcurve,
    plot_sky,
    sky_data,
)
from dpdb.processing.release import produce
from dpdb.processing.survey import SurveyConfig, simulate
from dpdb.prompt import ingest, relink
from dpdb.registry.releases import create_release

CONFIG = SurveyConfig(seed=7, visits_per_night=4, sources_per_visit=200, area_deg2=12.0)
T0 = 61000.9
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DPDB = str(Path(sys.executable).with_name("dpdb"))


def _rows(settings: Settings, query: str, params: tuple | dict = ()) -> list[tuple]:
    with psycopg.connect(conninfo(settings)) as conn:
        return conn.execute(query, params).fetchall()


def _one(settings: Settings, query: str, params: tuple | dict = ()) -> Any:
    return _rows(settings, query, params)[0][0]


@pytest.fixture(scope="module")
def catalog(pg_home: Path, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("plot")
    name = new_database(pg_home, template_db)
    settings = Settings(home=pg_home, database=name, partition_order=0, archive_dir=root / "archive")
    ingest(settings, simulate(root / "survey", 2, CONFIG), processing_time=T0)
    versions = "SELECT diaobjectid FROM prompt.diaobject GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT %s"
    deleted, kept = (r[0] for r in _rows(settings, versions, (2,)))
    # Daytime relink of every DiaSource of `deleted` to a known SSObject: closed without successor.
    live = "SELECT diasourceid FROM prompt.diasource WHERE diaobjectid = %s AND timewithdrawnmjdtai IS NULL"
    sources = [r[0] for r in _rows(settings, live, (deleted,))]
    ss = _one(settings, "SELECT min(ssobjectid) FROM prompt.ssobject")
    (root / "link").mkdir()
    pq.write_table(
        pa.table({"diaSourceId": pa.array(sources, pa.int64()), "ssObjectId": [ss] * len(sources)}),
        root / "link" / "SSSource.parquet",
    )
    before = _one(settings, "SELECT max(processing_time_mjd_tai) FROM dpdb_meta.prompt_visit")
    relinked_at = before + 0.25
    relink(settings, root / "link", processing_time=relinked_at)
    # dr1 from the prompt catalog, loaded and active; dr2 created and dropped.
    produce(root / "dr1", "dr1", objects=200, settings=settings, partition_order=0)
    with psycopg.connect(conninfo(settings)) as conn:
        create_release(conn, "dr1", latest_version(), 0)
        create_release(conn, "dr2", latest_version(), 0)
    load_release(settings, "dr1", root / "dr1")
    activate_release(settings, "dr1", force=True)
    drop_release(settings, "dr2")
    yield {
        "settings": settings,
        "deleted": deleted,
        "kept": kept,
        "relinked_at": relinked_at,
        "before": before,
    }
    drop_database(pg_home, name)


def _id(origin: int, local: int) -> int:
    return int(make_id(origin, local))


def assert_png(path: Path) -> None:
    """A complete PNG image with content, and no temporary file beside it."""
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert float(image[..., :3].std()) > 0.01  # not blank
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def _dia_points(settings: Settings, obj: int) -> tuple[int, int]:
    live = "diaobjectid = %s AND timewithdrawnmjdtai IS NULL AND psfflux IS NOT NULL"
    det = _one(settings, f"SELECT count(*) FROM prompt.diasource WHERE {live}", (obj,))
    forced = _one(settings, f"SELECT count(*) FROM prompt.diaforcedsource WHERE {live}", (obj,))
    return int(det), int(forced)


def test_lightcurve_prompt(catalog: dict, tmp_path: Path) -> None:
    settings, obj = catalog["settings"], catalog["kept"]
    curve = lightcurve_data(settings, obj)
    det, forced = _dia_points(settings, obj)
    assert det >= 5 and forced >= 1
    assert (curve.points, curve.detections, curve.table, curve.catalog) == (
        det + forced,
        det,
        "DiaObject",
        "prompt",
    )
    mean_r = _one(settings, "SELECT avg(psfflux) FROM prompt.diasource WHERE diaobjectid = %s AND band = 'r' "
                  "AND timewithdrawnmjdtai IS NULL", (obj,))  # fmt: skip
    detected_r = (curve.band == "r") & ~curve.forced
    if mean_r is not None:
        assert curve.flux[detected_r].mean() == pytest.approx(mean_r, rel=1e-5)
    assert np.all(np.diff(curve.time) >= 0)
    out = plot_lightcurve(settings, obj, tmp_path / "lc.png")
    assert out == tmp_path / "lc.png"
    assert_png(out)


def test_lightcurve_as_of_a_deleted_object(catalog: dict, tmp_path: Path) -> None:
    settings, obj, t = catalog["settings"], catalog["deleted"], catalog["before"] + 0.01
    with pytest.raises(PlotError, match=f"DiaObject {obj} was deleted at MJD"):
        plot_lightcurve(settings, obj, tmp_path / "now.png")
    curve = lightcurve_data(settings, obj, as_of=t)
    det = _one(settings, "SELECT count(*) FROM prompt.diasource_as_of(%s::float8) WHERE diaobjectid = %s "
               "AND psfflux IS NOT NULL", (t, obj))  # fmt: skip
    forced = _one(settings, "SELECT count(*) FROM prompt.diaforcedsource_as_of(%s::float8) "
                  "WHERE diaobjectid = %s AND psfflux IS NOT NULL", (t, obj))  # fmt: skip
    assert det == len(_rows(settings, "SELECT 1 FROM prompt.diasource WHERE diaobjectid = %s", (obj,))) > 0
    assert (curve.points, curve.detections) == (det + forced, det)
    assert "as of" in curve.catalog_label
    with pytest.raises(PlotError, match="not found in the prompt catalog as of"):
        lightcurve_data(settings, obj, as_of=T0 - 1)
    assert_png(plot_lightcurve(settings, obj, tmp_path / "then.png", as_of=t))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["then.png"]


def test_lightcurve_release_object_and_dia_object(catalog: dict, tmp_path: Path) -> None:
    settings = catalog["settings"]
    obj, n_src, n_forced = _rows(settings, """
        SELECT o.objectid, (SELECT count(*) FROM dr1.source s WHERE s.objectid = o.objectid),
               (SELECT count(*) FROM dr1.forcedsource f WHERE f.objectid = o.objectid)
        FROM dr1.object o ORDER BY 2 DESC, 1 LIMIT 1""")[0]  # fmt: skip
    curve = lightcurve_data(settings, obj)
    assert (curve.table, curve.catalog, curve.points, curve.detections) == (
        "Object",
        "dr1",
        n_src + n_forced,
        n_src,
    )
    times = {r[0] for r in _rows(settings, "SELECT c.expmidptmjd FROM dr1.source s JOIN dr1.ccdvisit c "
                                 "USING (ccdvisitid) WHERE s.objectid = %s", (obj,))}  # fmt: skip
    assert set(curve.time[~curve.forced]) == times
    assert_png(plot_lightcurve(settings, obj, tmp_path / "object.png"))
    # The release's DiaObject of the kept prompt DiaObject: same local number, origin 2.
    dia = _id(2, catalog["kept"] & ((1 << 58) - 1))
    n = _one(settings, "SELECT count(*) FROM dr1.diasource WHERE diaobjectid = %s", (dia,))
    rel = lightcurve_data(settings, dia)
    assert (rel.table, rel.catalog, rel.detections) == ("DiaObject", "dr1", n)
    with pytest.raises(PlotError, match="reads the prompt catalog"):
        lightcurve_data(settings, obj, as_of=T0 + 1)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda s, o: plot_lightcurve(s, _id(1, 123), o), PlotError, "not found in the prompt catalog"),
        (lambda s, o: plot_lightcurve(s, _id(3, 5), o), ReleaseStateError, "release dr2 is dropped"),
        (lambda s, o: plot_lightcurve(s, _id(9, 5), o), PlotError, "no release has ID origin 9"),
        (lambda s, o: plot_lightcurve(s, _id(2, 1), o), PlotError, "not found in release dr1"),
        (lambda s, o: plot_lightcurve(s, 42, o), PlotError, "not a dpdb ID"),
        (lambda s, o: plot_history(s, _id(1, 123), o), PlotError, "not found in the prompt catalog"),
        (lambda s, o: plot_history(s, _id(2, 1), o), PlotError, "from release dr1, not a prompt"),
        (lambda s, o: plot_sky(s, o, table="Source"), PlotError, "unknown table Source"),
        (lambda s, o: plot_sky(s, o, release="dr2"), ReleaseStateError, "release dr2 is dropped"),
        (lambda s, o: plot_sky(s, o, release="dr7"), ReleaseStateError, "unknown release dr7"),
        (lambda s, o: plot_sky(s, o, release="previous"), ReleaseStateError, "no release is previous"),
        (lambda s, o: plot_sky(s, o, release="prompt", table="Object"), PlotError, "no Object table"),
    ],
)
def test_refusals_leave_no_file(
    catalog: dict,
    tmp_path: Path,
    call: Callable[[Settings, Path], Path],
    error: type[Exception],
    message: str,
) -> None:
    out = tmp_path / "plot.png"
    with pytest.raises(error, match=message) as info:
        call(catalog["settings"], out)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file(catalog: dict, tmp_path: Path) -> None:
    out = tmp_path / "sky.png"
    out.write_bytes(b"old")
    with pytest.raises(PlotError):
        plot_sky(catalog["settings"], out, table="nothing")
    assert out.read_bytes() == b"old"
    (tmp_path / "file").write_text("x")
    with pytest.raises(PlotError, match="cannot write"):
        plot_sky(catalog["settings"], tmp_path / "file" / "sky.png")


def test_sky_counts_in_the_database(catalog: dict, tmp_path: Path) -> None:
    settings = catalog["settings"]
    sky = sky_data(settings)
    assert (sky.catalog, sky.table) == ("dr1", "Object")
    ra, dec = np.array(_rows(settings, "SELECT coord_ra, coord_dec FROM dr1.object"), dtype=float).T
    assert sky.total == len(ra) > 100
    pixels, counts = np.unique(
        healpy.ang2pix(1 << sky.order, ra, dec, nest=True, lonlat=True), return_counts=True
    )
    assert np.array_equal(sky.pixels, pixels) and np.array_equal(sky.counts, counts)
    assert len(pixels) <= 3000 and sky.total / len(pixels) >= 3
    finer = np.unique(healpy.ang2pix(2 << sky.order, ra, dec, nest=True, lonlat=True))
    assert sky.total / len(finer) < 3  # the finest order that keeps 3 objects per pixel
    assert sky.density.sum() * sky.pixel_area == pytest.approx(len(ra))
    assert_png(plot_sky(settings, tmp_path / "sky.png"))

    prompt = sky_data(settings, release="prompt", table="diaobject")
    current = _one(settings, "SELECT count(*) FROM prompt.diaobject WHERE validityendmjdtai IS NULL")
    assert (prompt.table, prompt.total) == ("DiaObject", current)
    assert _one(settings, "SELECT count(*) FROM prompt.diaobject") > current  # history is not counted
    assert sky_data(settings, release="dr1", table="DiaObject").total == _one(
        settings, "SELECT count(*) FROM dr1.diaobject"
    )
    coarse = sky_data(settings, release="prompt", order=3)
    assert coarse.order == 3 and coarse.total == current and len(coarse.pixels) <= 4


def test_history_of_a_deleted_and_a_living_object(catalog: dict, tmp_path: Path) -> None:
    settings = catalog["settings"]
    for key, deleted in (("deleted", True), ("kept", False)):
        obj = catalog[key]
        rows = _rows(settings, "SELECT validitystartmjdtai, validityendmjdtai, ndiasources, r_psffluxmean "
                     "FROM prompt.diaobject WHERE diaobjectid = %s ORDER BY 1", (obj,))  # fmt: skip
        history = history_data(settings, obj)
        assert history.versions == len(rows) >= 3
        assert history.deleted is deleted
        assert history.n_dia_sources.tolist() == [r[2] for r in rows]
        assert np.allclose(history.start, [r[0] for r in rows])
        assert np.allclose(
            history.flux_mean["r"], [np.nan if r[3] is None else r[3] for r in rows], equal_nan=True
        )
        if deleted:
            assert history.end[-1] == pytest.approx(catalog["relinked_at"])
        assert_png(plot_history(settings, obj, tmp_path / f"{key}.png"))


def test_cli(catalog: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, obj = catalog["settings"], catalog["kept"]
    env = {"DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database}
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["plot", "lightcurve", str(obj)], env=env)
    assert result.exit_code == 0, result.output
    det, forced = _dia_points(settings, obj)
    assert result.output.startswith(f"wrote lightcurve_{obj}.png ({det + forced} points ({det} DiaSource, ")
    assert_png(tmp_path / f"lightcurve_{obj}.png")
    result = runner.invoke(cli, ["plot", "sky", "--release", "prompt"], env=env)
    assert result.exit_code == 0, result.output
    assert_png(tmp_path / "sky_prompt_DiaObject.png")
    result = runner.invoke(cli, ["plot", "history", str(catalog["deleted"]), "-o", "sub/h.png"], env=env)
    assert result.exit_code == 0 and "deleted" in result.output, result.output
    assert_png(tmp_path / "sub" / "h.png")
    before = sorted(tmp_path.rglob("*"))
    result = runner.invoke(cli, ["plot", "lightcurve", str(_id(3, 5)), "-o", "x.png"], env=env)
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: ID ") and "release dr2 is dropped" in result.output
    assert sorted(tmp_path.rglob("*")) == before


def test_cli_subprocess(catalog: dict, tmp_path: Path) -> None:
    settings = catalog["settings"]
    env = {**os.environ, "DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database}
    cmd = [DPDB, "plot", "sky", "--release", "current", "--table", "object"]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    n = _one(settings, "SELECT count(*) FROM current.object")
    assert done.stdout.startswith(f"wrote sky_current_Object.png ({n} Object rows of dr1 in "), done.stdout
    assert_png(tmp_path / "sky_current_Object.png")
