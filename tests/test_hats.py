"""HATS export (`dpdb hats export`, `Archive.export_hats`), checked with the real readers: lsdb and hats.

One export of the demo's current release (Object, Source, ObjectNested, cut into
small partitions so that margins and cross-partition searches matter) is shared
by the module; the prompt as-of export and the kill/rerun test make their own.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import healpy
import lsdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DPDB, DemoRun, demo_env
from hats import read_hats
from hats.catalog.catalog_collection import CatalogCollection
from hats.io.validation import is_valid_catalog

import dpdb
from dpdb.model.felis import latest_version

TABLES = ["Object", "Source", "ObjectNested"]


@pytest.fixture(scope="module")
def export(demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[dpdb.Archive, Path]:
    archive = dpdb.Archive(settings=demo_run.settings)
    out = tmp_path_factory.mktemp("hats") / "current"
    result = archive.export_hats("current", out, tables=TABLES, jobs=1, partition_mb=2)
    assert [c.name for c in result.catalogs] == TABLES
    assert all(not c.reused for c in result.catalogs)
    return archive, out


def _count(archive: dpdb.Archive, sql: str, **kw: object) -> int:
    return int(archive.query_arrow(sql, **kw).column(0)[0].as_py())


def _partitions(path: Path) -> list[tuple[int, int, Path]]:
    return [(int(f.parent.parent.name.split("=")[1]), int(f.stem.split("=")[1]), f)
            for f in sorted((path / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))]  # fmt: skip


def test_every_catalog_opens_with_lsdb_and_hats_with_the_database_rows(export) -> None:  # noqa: ANN001
    archive, out = export
    active = "SELECT name FROM dpdb_registry.release WHERE state = 'active'"
    release = archive.query_arrow(active)[0][0].as_py()
    expected = {
        "Object": _count(archive, "SELECT count(*) FROM current.Object"),
        "Source": _count(archive, "SELECT count(*) FROM current.Source"),
        "ObjectNested": _count(archive, "SELECT count(*) FROM current.Object"),
    }
    for name in TABLES:
        collection = read_hats(out / name)
        assert isinstance(collection, CatalogCollection)
        assert is_valid_catalog(out / name / name, strict=True)
        assert is_valid_catalog(out / name / f"{name}_10arcs", strict=True)
        info = collection.main_catalog.catalog_info
        assert info.total_rows == expected[name]
        extra = info.extra_dict()
        assert extra["dpdb_release"] == release and extra["dpdb_catalog"] == "current"
        assert extra["dpdb_schema_version"] == str(latest_version())
        assert extra["dpdb_version"] == dpdb.__version__
        catalog = lsdb.open_catalog(out / name)
        assert catalog.margin is not None and catalog.margin.hc_structure.catalog_info.margin_threshold == 10
        assert len(catalog.get_healpix_pixels()) > 1, "small partitions: more than one"
        assert len(catalog.compute()) == expected[name]
        assert (out / name / name / "partition_info.csv").is_file() and (
            out / name / name / "skymap.fits"
        ).is_file()
    manifest = json.loads((out / "dpdb_export.json").read_text())
    assert {c["name"]: c["rows"] for c in manifest["catalogs"]} == expected


def test_column_metadata_comes_from_the_felis_schema(export) -> None:  # noqa: ANN001
    _, out = export
    schema = pq.read_schema(out / "Object" / "Object" / "dataset" / "_common_metadata")
    ra = schema.field("coord_ra").metadata
    assert ra[b"unit"] == b"deg" and ra[b"ucd"] == b"pos.eq.ra;meta.main" and ra[b"description"]
    flux = schema.field("r_psfFlux").metadata
    assert flux[b"unit"] == b"nJy"
    assert schema.field("_healpix_29") is not None


def test_each_row_lies_in_the_pixel_of_its_own_position(export) -> None:  # noqa: ANN001
    _, out = export
    for name in ("Object", "Source"):  # Sources too, which the database keeps in their Object's pixel
        for order, npix, path in _partitions(out / name / name):
            t = pq.read_table(path, columns=["coord_ra", "coord_dec", "_healpix_29"])
            ra, dec = t["coord_ra"].to_numpy(), t["coord_dec"].to_numpy()
            own = healpy.ang2pix(1 << order, ra, dec, nest=True, lonlat=True)
            assert (own == npix).all(), (name, order, npix)
            assert ((t["_healpix_29"].to_numpy() >> (2 * (29 - order))) == npix).all()


def test_margins_hold_every_neighbour_within_10_arcsec(export) -> None:  # noqa: ANN001
    _, out = export
    main = out / "Object" / "Object"
    rows = pd.concat(pq.read_table(p, columns=["objectId", "coord_ra", "coord_dec"]).to_pandas()
                     for _, _, p in _partitions(main))  # fmt: skip
    margins: dict[tuple[int, int], set[int]] = {}
    for order, npix, path in _partitions(out / "Object" / "Object_10arcs"):
        margins[(order, npix)] = set(pq.read_table(path, columns=["objectId"])["objectId"].to_pylist())
    vec = healpy.ang2vec(rows["coord_ra"].to_numpy(), rows["coord_dec"].to_numpy(), lonlat=True)
    checked = 0
    for order, npix, _ in _partitions(main):
        inside = (
            healpy.ang2pix(1 << order, rows["coord_ra"], rows["coord_dec"], nest=True, lonlat=True) == npix
        )
        edge = healpy.boundaries(1 << order, npix, step=2000, nest=True).T  # points every ~1" along the edge
        near = np.zeros(len(rows), dtype=bool)
        for start in range(0, len(edge), 500):
            cos = vec @ edge[start : start + 500].T
            near |= (np.degrees(np.arccos(np.clip(cos.max(axis=1), -1, 1))) * 3600) < 9.5
        needed = set(rows["objectId"][near & ~inside])
        have = margins.get((order, npix), set())
        assert needed <= have, (order, npix, len(needed - have))
        assert not have & set(rows["objectId"][inside]), "a margin repeats rows of its own pixel"
        checked += len(needed)
    assert checked > 0, "no Object near a partition edge: the test proves nothing"


def test_cone_search_with_lsdb_matches_archive_cone(export) -> None:  # noqa: ANN001
    archive, out = export
    catalog = lsdb.open_catalog(out / "Object")
    for ra, dec, radius in ((150.0, 2.0, 0.4), (150.6, 2.3, 0.3)):
        db = set(archive.cone("Object", ra, dec, radius, release="current", columns=["objectId"])["objectId"])
        found = set(catalog.cone_search(ra, dec, radius * 3600).compute()["objectId"])
        assert found == db and len(db) > 10


def test_crossmatch_in_lsdb_finds_the_pairs_of_q3c_join(export) -> None:  # noqa: ANN001
    archive, out = export
    objects = archive.query_arrow(
        "SELECT objectId, coord_ra, coord_dec FROM current.Object ORDER BY objectId"
    )
    rng = np.random.default_rng(17)
    pick = rng.choice(objects.num_rows, 1000, replace=False)
    ra = objects["coord_ra"].to_numpy()[pick]
    dec = objects["coord_dec"].to_numpy()[pick]
    shift = rng.uniform(0, 0.9, len(pick)) / 3600  # known counterparts within 0.9"
    angle = rng.uniform(0, 2 * np.pi, len(pick))
    external = pd.DataFrame({
        "ext_id": np.arange(len(pick) + 300),
        "ra": np.concatenate([ra + shift * np.cos(angle) / np.cos(np.radians(dec)),
                              rng.uniform(ra.min(), ra.max(), 300)]),
        "dec": np.concatenate([dec + shift * np.sin(angle), rng.uniform(dec.min(), dec.max(), 300)]),
    })  # fmt: skip
    values = ", ".join(f"({i}, {r!r}, {d!r})" for i, r, d in external.itertuples(index=False))
    pairs_sql = archive.query_arrow(
        f"SELECT e.id, o.objectId FROM (VALUES {values}) AS e(id, ra, dec) JOIN current.Object o "
        "ON q3c_join(e.ra, e.dec, o.coord_ra, o.coord_dec, 1.0 / 3600)"
    )
    expected = set(zip(pairs_sql.column(0).to_pylist(), pairs_sql.column(1).to_pylist(), strict=True))
    ext = lsdb.from_dataframe(external, ra_column="ra", dec_column="dec", catalog_name="external")
    matched = ext.crossmatch(lsdb.open_catalog(out / "Object"), radius_arcsec=1.0, n_neighbors=20,
                             suffixes=("_ext", "")).compute()  # fmt: skip
    found = set(zip(matched["ext_id_ext"], matched["objectId"], strict=True))
    assert found == expected and len(expected) >= 1000


def test_margin_is_the_margin_hats_import_makes_of_the_same_catalog(export, tmp_path: Path) -> None:  # noqa: ANN001
    """The margin written with the partitions (dpdb/hats/margin.py) against hats-import's margin pipeline
    run on the same exported catalog: the same rows in every margin pixel, the same properties."""
    from dask.distributed import Client
    from hats_import.margin_cache.margin_cache_arguments import MarginCacheArguments
    from hats_import.pipeline import pipeline_with_client

    _, out = export

    def rows(path: Path, key: str) -> dict[tuple[int, int], list[tuple[int, int]]]:
        return {(k, p): sorted(zip(*pq.read_table(f, columns=["_healpix_29", key]).to_pydict().values(),
                                   strict=True))
                for k, p, f in _partitions(path)}  # fmt: skip

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        for name in ("Object", "Source"):
            main = read_hats(out / name / name)
            key = main.catalog_info.extra_dict()["hats_cols_sort"]
            args = MarginCacheArguments(
                input_catalog_path=out / name / name, output_path=tmp_path, output_artifact_name=name,
                margin_threshold=10.0, progress_bar=False, resume=False,
            )  # fmt: skip
            pipeline_with_client(args, client)
            ours, theirs = read_hats(out / name / f"{name}_10arcs"), read_hats(tmp_path / name)
            expected = rows(tmp_path / name, key)
            assert rows(out / name / f"{name}_10arcs", key) == expected
            assert sum(map(len, expected.values())) > 100 and len(expected) > 3, name
            for field in ("catalog_type", "total_rows", "margin_threshold", "hats_order", "ra_column",
                          "dec_column", "healpix_column", "healpix_order", "moc_sky_fraction"):  # fmt: skip
                assert getattr(ours.catalog_info, field) == getattr(theirs.catalog_info, field), field
            assert ours.schema == theirs.schema


def test_crossmatch_across_partition_edges_needs_and_uses_the_margin(export) -> None:  # noqa: ANN001
    """External positions 4.5" from an Object but in the neighbouring partition: LSDB finds every q3c_join
    pair through the collection's margin, and misses some without it."""
    from hats.pixel_math.spatial_index import compute_spatial_index

    archive, out = export
    ext_ra, ext_dec = [], []
    angles = np.radians(np.arange(0, 360, 22.5))
    for order, npix, path in _partitions(out / "Object" / "Object"):
        t = pq.read_table(path, columns=["coord_ra", "coord_dec"])
        ra, dec = t["coord_ra"].to_numpy()[:, None], t["coord_dec"].to_numpy()[:, None]
        cand_ra = ra + 4.5 / 3600 * np.cos(angles) / np.cos(np.radians(dec))
        cand_dec = dec + 4.5 / 3600 * np.sin(angles)
        away = (compute_spatial_index(cand_ra.ravel(), cand_dec.ravel()) >> (2 * (29 - order))) != npix
        away = away.reshape(cand_ra.shape)
        first = away.argmax(axis=1)
        some = away.any(axis=1)
        ext_ra.extend(cand_ra[some, first[some]])
        ext_dec.extend(cand_dec[some, first[some]])
    assert len(ext_ra) >= 20, "too few Objects near a partition edge"
    external = pd.DataFrame({"ext_id": np.arange(len(ext_ra)), "ra": ext_ra, "dec": ext_dec})
    values = ", ".join(f"({i}, {r!r}, {d!r})" for i, r, d in external.itertuples(index=False))
    pairs_sql = archive.query_arrow(
        f"SELECT e.id, o.objectId FROM (VALUES {values}) AS e(id, ra, dec) JOIN current.Object o "
        "ON q3c_join(e.ra, e.dec, o.coord_ra, o.coord_dec, 5.0 / 3600)"
    )
    expected = set(zip(pairs_sql.column(0).to_pylist(), pairs_sql.column(1).to_pylist(), strict=True))
    ext = lsdb.from_dataframe(external, ra_column="ra", dec_column="dec", catalog_name="external")

    def pairs(catalog: lsdb.Catalog) -> set[tuple[int, int]]:
        m = ext.crossmatch(catalog, radius_arcsec=5.0, n_neighbors=20, suffixes=("_ext", "")).compute()
        return set(zip(m["ext_id_ext"], m["objectId"], strict=True))

    with_margin = lsdb.open_catalog(out / "Object")
    assert with_margin.margin is not None
    assert pairs(with_margin) == expected and len(expected) >= len(ext_ra)
    assert len(pairs(lsdb.open_catalog(out / "Object" / "Object"))) < len(expected)


def test_nested_sources_are_the_sources_of_each_object(export) -> None:  # noqa: ANN001
    archive, out = export
    nested = lsdb.open_catalog(out / "ObjectNested").compute()
    assert len(nested["source"].nest.to_flat()) == _count(archive, "SELECT count(*) FROM current.Source")
    some = nested[np.asarray(nested["source"].nest.len()) > 2].head(5)
    assert len(some) == 5
    for object_id, sources in zip(some["objectId"], some["source"], strict=True):
        db = archive.query(f"SELECT sourceId, psfFlux FROM current.Source WHERE objectId = {int(object_id)}")
        assert sorted(sources["sourceId"]) == sorted(db["sourceId"])
        by_id = dict(zip(sources["sourceId"], sources["psfFlux"], strict=True))
        assert all(
            np.isclose(by_id[s], f, equal_nan=True)
            for s, f in zip(db["sourceId"], db["psfFlux"], strict=True)
        )
    forced = nested["forcedSource"].nest.to_flat()
    assert len(forced) == _count(archive, "SELECT count(*) FROM current.ForcedSource")


def test_prompt_catalog_as_of_an_instant(demo_run: DemoRun, tmp_path: Path) -> None:
    archive = dpdb.Archive(settings=demo_run.settings)
    first = archive.query_arrow("SELECT min(validityStartMjdTai) FROM prompt.DiaObject")[0][0].as_py()
    instant = first + 0.5
    result = archive.export_hats(
        "prompt", tmp_path / "p", tables=["DiaObject"], as_of=instant, jobs=1, margin=0
    )
    expected = _count(archive, "SELECT count(*) FROM DiaObject", as_of=instant, release="prompt")
    assert expected < _count(archive, "SELECT count(*) FROM prompt.DiaObject WHERE validityEndMjdTai IS NULL")
    catalog = lsdb.open_catalog(tmp_path / "p" / "DiaObject")
    assert result.catalogs[0].rows == expected == len(catalog.compute())
    props = catalog.hc_structure.catalog_info.extra_dict()
    assert float(props["dpdb_as_of_mjd_tai"]) == instant and props["dpdb_kind"] == "prompt"


def test_current_as_of_an_instant_is_the_release_current_then(demo_run: DemoRun, tmp_path: Path) -> None:
    archive = dpdb.Archive(settings=demo_run.settings)
    activations = archive.query_arrow(
        "SELECT name, activated_mjd_tai FROM dpdb_meta.release_activation ORDER BY activation_id"
    ).to_pylist()
    first, second = activations[0], activations[-1]
    assert first["name"] != second["name"]
    before = (first["activated_mjd_tai"] + second["activated_mjd_tai"]) / 2
    result = archive.export_hats("current", tmp_path / "c", tables=["SSObject"], as_of=before, jobs=1)
    assert result.snapshot["schema"] == first["name"] and result.snapshot["dpdb_release"] == first["name"]
    rows = _count(archive, f"SELECT count(*) FROM {first['name']}.SSObject")
    assert result.catalogs[0].kind == "parquet" and result.catalogs[0].rows == rows
    assert pq.read_metadata(tmp_path / "c" / "SSObject.parquet").num_rows == rows


def test_cli_errors_are_one_line(demo_run: DemoRun, tmp_path: Path) -> None:
    env = {**demo_env(), "DPDB_HOME": str(demo_run.settings.home)}
    bad = subprocess.run([DPDB, "hats", "export", "dr9", "--out", str(tmp_path / "x")], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: unknown catalog 'dr9'")
    assert "Traceback" not in bad.stderr
    frozen = subprocess.run([DPDB, "hats", "export", "dr1", "--out", str(tmp_path / "y"), "--as-of", "61000"],
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert (
        frozen.returncode == 1 and "frozen" in frozen.stderr and len(frozen.stderr.strip().splitlines()) == 1
    )


def test_a_killed_export_resumes_without_rewriting_finished_parts(demo_run: DemoRun, tmp_path: Path) -> None:
    """SIGKILL while the second catalog's partitions are being written, then rerun: the first catalog and
    every partition already written and readable are kept (same files), the rest is finished."""
    env = {**demo_env(), "DPDB_HOME": str(demo_run.settings.home)}
    out = tmp_path / "k"
    cmd = [DPDB, "hats", "export", "dr2", "--out", str(out), "--tables", "ForcedSource,DiaForcedSource",
           "--jobs", "1", "--partition-mb", "0.25", "--margin", "10", "--no-progress"]  # fmt: skip
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert first.stdout is not None
    for line in first.stdout:
        if line.startswith("ForcedSource:"):
            break
    second = out / "DiaForcedSource" / "DiaForcedSource" / "dataset"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(second.glob("Norder=*/Dir=*/Npix=*.parquet")):
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert not (out / "dpdb_export.json").exists(), "the export finished before it could be killed"
    assert not (out / "DiaForcedSource" / "collection.properties").exists()
    finished = {p: p.stat().st_mtime_ns for p in (out / "ForcedSource").rglob("*") if p.is_file()}
    # what a kill in the middle of a partition's write leaves, whatever the timing above
    cut = next(second.glob("Norder=*/Dir=*/Npix=*.parquet"))
    (cut.parent / f".{cut.name}.0badf00d.tmp").write_bytes(b"")
    written = {}
    for p in second.glob("Norder=*/Dir=*/Npix=*.parquet"):
        try:
            pq.read_metadata(p)
        except Exception:  # noqa: BLE001 - cut short by the kill: it is rewritten
            continue
        written[p] = p.stat().st_mtime_ns
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "ForcedSource: " in again.stdout and "(kept" in again.stdout
    assert "1 written, 1 already complete" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in finished} == finished, "a complete collection was rewritten"
    assert {p: p.stat().st_mtime_ns for p in written} == written, "a verified partition was rewritten"
    archive = dpdb.Archive(settings=demo_run.settings)
    for table in ("ForcedSource", "DiaForcedSource"):
        rows = _count(archive, f"SELECT count(*) FROM dr2.{table}")
        assert read_hats(out / table).main_catalog.catalog_info.total_rows == rows
        assert len(lsdb.open_catalog(out / table).compute()) == rows
    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and "0 written, 2 already complete" in third.stdout, third.stdout


def test_retired_releases_are_hats_archives_and_both_layouts_restore(rsettings, tmp_path: Path) -> None:  # noqa: ANN001
    """dr1 is retired as HATS collections; dr2's archive is in the layout archives had before (a
    produced release directory, which retirement reuses): both open or restore, with the same rows."""
    from test_release import ready, table_checksums

    from dpdb.etl import release_dir
    from dpdb.lifecycle.activate import activate_release
    from dpdb.lifecycle.load import restore_release
    from dpdb.processing.release import produce

    before = {}
    for name in ("dr1", "dr2", "dr3", "dr4"):
        produce(tmp_path / name, name, objects=300, nights=2)
        ready(rsettings, name, tmp_path / name)
        before[name] = table_checksums(rsettings, name)
        if name == "dr4":
            shutil.copytree(tmp_path / "dr2", rsettings.archive_root() / "dr2")  # the earlier plain layout
        activate_release(rsettings, name)
    hats_archive = rsettings.archive_root() / "dr1"
    manifest = release_dir.verify(hats_archive)
    assert manifest.info["format"] == "hats" and manifest.rows("Object") == before["dr1"]["Object"][0] == 300
    assert any("_10arcs" in e.path for e in manifest.extra) and any(
        e.path.endswith("_metadata") for e in manifest.extra
    )
    exported = json.loads((hats_archive / "dpdb_export.json").read_text())["catalogs"]
    assert {c["name"] for c in exported} == set(before["dr1"])
    for c in exported:  # every table with a position is a collection LSDB opens, the rest plain Parquet
        rows = before["dr1"][c["name"]][0]
        assert c["rows"] == manifest.rows(c["name"]) == rows
        if c["kind"] == "hats" and rows:
            assert is_valid_catalog(hats_archive / c["name"] / c["name"], strict=True)
            assert len(lsdb.open_catalog(hats_archive / c["path"]).compute()) == rows, c["name"]
        elif rows:
            assert pq.read_metadata(hats_archive / c["path"]).num_rows == rows
    assert "format" not in release_dir.verify(rsettings.archive_root() / "dr2").info
    for name in ("dr1", "dr2"):
        restore_release(rsettings, name)
        assert table_checksums(rsettings, name) == before[name]


def test_measurements_stored_across_a_partition_edge_arrive_in_their_own_partition() -> None:
    """Partitions of mixed orders (as hats aligns a dense sky): a row is fetched into the partition of
    its own position from wherever it is stored, whatever the order of the partitions' ranges."""
    from dpdb.hats.direct import _arrivals

    destinations = [(4, 100, 3), (5, 10, 2), (5, 500, 1)]  # sorted by (order, pixel): ranges out of order

    def at(order: int, pixel: int, offset: int) -> int:
        return (pixel << 2 * (29 - order)) + offset

    moved = {
        "own": np.array([at(5, 10, 5), at(4, 100, 9), at(5, 500, 1), at(5, 10, 7)], dtype=np.int64),
        "stored": np.array([at(4, 100, 7), at(5, 10, 3), at(4, 100, 2), at(3, 1, 0)], dtype=np.int64),
        "sourceId": np.array([1, 2, 3, 4], dtype=np.int64),
    }
    got = {k: sorted(v["sourceId"].tolist()) for k, v in _arrivals(moved, destinations).items()}
    assert got == {(5, 10): [1, 4], (4, 100): [2], (5, 500): [3]}


def test_rows_are_fetched_by_keys_that_include_a_float(demo_run: DemoRun) -> None:
    """A DiaSource's key includes its processing time (MJD, a double): a measurement fetched by key into
    another partition is found with its exact time, not a truncated one."""
    from dpdb.db import connect
    from dpdb.hats.direct import _read_keys
    from dpdb.hats.reader import PostgresReader
    from dpdb.hats.source import plan_tables, resolve_snapshot
    from dpdb.pg import adbc_uri

    settings = demo_run.settings
    with connect(settings) as conn:
        snapshot = resolve_snapshot(conn, "dr2", None, 0)
        plan = plan_tables(conn, snapshot, ["DiaSource"], 250_000)[0]
        some = conn.execute(
            f"SELECT diasourceid, timeprocessedmjdtai FROM {plan.source} ORDER BY diasourceid LIMIT 5"
        ).fetchall()
    assert plan.target.primary_key == ("diasourceid", "timeprocessedmjdtai") and len(some) == 5
    assert any(t != int(t) for _, t in some), "whole-day times prove nothing"
    keys = {
        "diasourceid": np.array([k for k, _ in some]),
        "timeprocessedmjdtai": np.array([t for _, t in some]),
    }
    found = pa.concat_tables(_read_keys(PostgresReader(adbc_uri(settings), plan), plan, keys))
    assert sorted(found["diaSourceId"].to_pylist()) == [k for k, _ in some]
