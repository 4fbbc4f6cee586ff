"""``dpdb release load`` and ``dpdb release restore``: a release directory into a release schema.

Both read a release directory (etl/release_dir.py), verify every file against
its manifest first, and load the tables parents first through the ETL, one
transaction per file. The ETL's load manifest skips files already loaded, so a
load or restore killed mid-way finishes on a rerun with no duplicate and no
lost row. A restore re-creates the archived release's schema (at its archived
schema version) before loading, and leaves the release ``loaded``, not active.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg

from dpdb.access import grant_loader
from dpdb.config import Settings
from dpdb.db import connect, prepare
from dpdb.errors import ReleaseStateError, ValidationError
from dpdb.etl import release_dir
from dpdb.etl.heldkeys import HeldKeys
from dpdb.etl.load import LoadSummary, load
from dpdb.etl.pixelmap import PixelMap
from dpdb.etl.release_dir import FileEntry
from dpdb.etl.validate import target_table
from dpdb.model.layout import RELEASE_TABLES, layout
from dpdb.pg import warm_adbc
from dpdb.registry.catalogs import create_catalog, find_catalog
from dpdb.registry.releases import NOW, Release, get_release, set_state
from dpdb.registry.states import WRITABLE, CatalogKind, ReleaseState, names
from dpdb.shards.placement import weights_from

from . import bulk

__all__ = ["LoadResult", "load_release", "restore_release"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadResult:
    name: str
    rows: dict[str, int]  # loaded by this run, per table
    skipped_files: int  # already loaded by an earlier run
    seconds: float
    index_seconds: float = 0.0  # building the deferred indexes and key maps (0: indexes kept)
    keymap_seconds: float = 0.0  # of which filling and keying the key maps (summed over connections)
    keymap_load_seconds: float = 0.0  # files that COPYed their keys into the maps (no room to hold them)


def load_release(
    settings: Settings,
    name: str,
    directory: Path,
    *,
    jobs: int = 2,
    progress: Callable[[int], None] | None = None,
    legacy: bool = False,
    keymaps: bool = True,
) -> LoadResult:
    """Load the production directory ``directory`` into release ``name``; state ``loaded``.

    A fresh release of at least ``settings.release_bulk_rows`` rows (below, the fixed cost of
    re-creating every partition's indexes outweighs what it saves) loads with its indexes deferred
    (dpdb/lifecycle/bulk.py); ``legacy`` keeps them during the load (the older path, to compare).
    ``keymaps=False`` leaves the deferred key maps unbuilt: only to measure what the check of keys
    across the whole release costs (benchmarks/bench_release.py).
    """
    prepare(settings)  # the server is up: the driver's type catalog is read while the checksums are verified
    warm_adbc(settings)
    manifest = release_dir.verify(directory)
    with connect(settings) as conn:
        rel = get_release(conn, name)
        if rel.state not in WRITABLE:
            raise ReleaseStateError(
                f"release {name} is {rel.state}; only {names(WRITABLE)} releases can be loaded"
            )
        _check_fits(conn, rel, manifest, directory)
    result = _load_tables(settings, name, directory, manifest, jobs, progress, legacy, keymaps)
    with connect(settings) as conn:
        set_state(
            conn, name, ReleaseState.LOADED, loaded_at=NOW, source=str(Path(directory).absolute()),
            expected_rows={t: manifest.rows(t) for t in manifest.tables},
        )  # fmt: skip
    return result


def restore_release(settings: Settings, name: str, *, jobs: int = 2, legacy: bool = False) -> LoadResult:
    """Re-load archived release ``name`` from its archive after verifying every checksum; state ``loaded``."""
    with connect(settings) as conn:
        rel = get_release(conn, name)
        if rel.state not in (ReleaseState.ARCHIVED, ReleaseState.RESTORING) or not rel.archive_path:
            raise ReleaseStateError(f"release {name} is {rel.state}; only archived releases can be restored")
    directory = Path(rel.archive_path)
    warm_adbc(settings)  # the driver's type catalog is read while the checksums are verified
    manifest = release_dir.verify(directory)
    with connect(settings) as conn:
        if find_catalog(conn, name) is None:  # not re-created yet by an interrupted restore
            entries = ((f.path, f.rows) for files in manifest.tables.values() for f in files)
            weights = weights_from(entries, manifest.partition_order)
            create_catalog(
                conn, name, CatalogKind.RELEASE, manifest.schema_version, manifest.partition_order, weights
            )
            grant_loader(conn, name, published=rel.activated_at is not None)
            set_state(conn, name, ReleaseState.RESTORING)
        _check_fits(conn, get_release(conn, name), manifest, directory)
    result = _load_tables(settings, name, directory, manifest, jobs, None, legacy)
    with connect(settings) as conn:
        set_state(
            conn, name, ReleaseState.LOADED, loaded_at=NOW, restored_at=NOW, source=str(directory),
            expected_rows={t: manifest.rows(t) for t in manifest.tables},
        )  # fmt: skip
    return result


def _check_fits(
    conn: psycopg.Connection, rel: Release, manifest: release_dir.ReleaseDir, directory: Path
) -> None:
    """Refuse a directory made for another release (its IDs) or a newer schema."""
    if manifest.origin != rel.origin:
        raise ValidationError(
            f"{directory}: holds release {manifest.name}'s IDs (origin {manifest.origin}), "
            f"but {rel.name} has origin {rel.origin}"
        )
    catalog = find_catalog(conn, rel.name)
    version = catalog.schema_version if catalog else None
    if version is not None and manifest.schema_version > version:
        raise ValidationError(
            f"{directory}: written for schema v{manifest.schema_version}, {rel.name} is at v{version}"
        )
    unknown = sorted(set(manifest.tables) - set(RELEASE_TABLES))
    if unknown:
        raise ValidationError(f"{directory}: tables {', '.join(unknown)} are not release tables")


def _load_tables(
    settings: Settings,
    name: str,
    directory: Path,
    manifest: release_dir.ReleaseDir,
    jobs: int,
    progress: Callable[[int], None] | None,
    legacy: bool = False,
    keymaps: bool = True,
) -> LoadResult:
    start = time.monotonic()
    hats = manifest.info.get("format") == "hats"  # HATS files add _healpix_29 (dpdb/hats/archive.py)
    root = Path(directory).absolute()
    # Verified by release_dir.verify just before: the ETL does not hash the files again.
    checksums = {root / f.path: f.sha256 for files in manifest.tables.values() for f in files}
    # Also with ``legacy``: a load deferred by an earlier, interrupted run must build its indexes.
    least = sys.maxsize if legacy else settings.release_bulk_rows
    deferred = bulk.prepare(settings, name, total_rows=manifest.total_rows, min_rows=least)
    # Sharded releases load parents first, one table after the other (each file committed on the
    # coordinator and its shards by two-phase commit, parents' pixels looked up on the shards).
    if deferred is None and (legacy or bulk.is_sharded(settings, name)):
        summaries = []
        for table in RELEASE_TABLES:  # parents before their children
            files = manifest.tables.get(table)
            if files:
                summaries.append(
                    load(
                        settings, table, [root / f.path for f in files], into=name, jobs=jobs,
                        progress=progress, ignore_extra=hats, direct=False,
                    )  # fmt: skip
                )
    else:
        summaries = _load_parallel(
            settings, name, root, manifest, jobs, progress, hats, checksums, spatial_order=deferred is None,
            held_keys=deferred.held if deferred is not None and keymaps and not deferred.resumed else None,
        )  # fmt: skip
    if deferred is not None:
        deferred.build(settings, jobs, keymaps=keymaps)
        log.info(
            "%s: indexes built in %.1f s (key maps %.1f s of connection time)",
            name, deferred.build_seconds, deferred.keymap_seconds,
        )  # fmt: skip
    rows: dict[str, int] = {}
    skipped = 0
    for summary in summaries:
        rows[summary.table] = rows.get(summary.table, 0) + summary.rows
        skipped += sum(f.status == "skipped" for f in summary.files)
        log.info("%s", summary.line())
    built = (deferred.build_seconds, deferred.keymap_seconds) if deferred else (0.0, 0.0)
    return LoadResult(
        name, rows, skipped, time.monotonic() - start, *built,
        keymap_load_seconds=sum(s.keymap_seconds for s in summaries),
    )  # fmt: skip


def _load_parallel(
    settings: Settings,
    name: str,
    root: Path,
    manifest: release_dir.ReleaseDir,
    jobs: int,
    progress: Callable[[int], None] | None,
    hats: bool,
    checksums: dict[Path, str],
    spatial_order: bool = True,
    held_keys: HeldKeys | None = None,
) -> list[LoadSummary]:
    """Every table's files at once, ``jobs`` streams, largest groups first.

    Measurements take their parents' pixels from the parents' files (etl/pixelmap.py),
    so no table waits for another; each table's files are split into up to ``jobs``
    groups (a HEALPix tree is one file per partition: one stream per partition group).
    """
    with connect(settings) as conn:
        catalog = find_catalog(conn, name)
    assert catalog is not None
    version, kind = catalog.schema_version, str(catalog.kind)
    maps: dict[str, PixelMap] = {}
    for table in manifest.tables:
        lay = layout(table)
        if lay.parent and manifest.tables.get(lay.parent):
            child = target_table(name, version, kind, table)
            parent = target_table(name, version, kind, lay.parent)
            paths = [root / f.path for f in manifest.tables[lay.parent]]
            maps[table] = PixelMap.from_files(child, parent, paths)
    units: list[tuple[int, str, list[Path]]] = []
    for table, files in manifest.tables.items():
        if not files:
            continue
        groups: list[list[FileEntry]] = [[] for _ in range(max(1, min(jobs, len(files))))]
        for f in sorted(files, key=lambda f: -f.bytes):  # balanced: the next file to the lightest group
            min(groups, key=lambda g: sum(x.bytes for x in g)).append(f)
        for group in groups:
            units.append((sum(f.bytes for f in group), table, [root / f.path for f in group]))
    units.sort(key=lambda u: -u[0])

    def run(unit: tuple[int, str, list[Path]]) -> LoadSummary:
        _, table, paths = unit
        return load(
            settings, table, paths, into=name, progress=progress, ignore_extra=hats,
            checksums=checksums, parents=maps.get(table), spatial_order=spatial_order,
            held_keys=held_keys,
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(run, units))
