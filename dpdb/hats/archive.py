"""Archived releases as HATS: the bulk-download files of a retired release (DPDD §4.5).

Retiring a release writes it with :func:`dpdb.hats.export_hats` (one HATS
collection per table, with margins), so LSDB opens an archived release
straight away, and then the checksummed ``release.json`` of the release
directory layout (etl/release_dir.py): the main catalogs' partition files
are listed per table, to be loaded back by ``dpdb release restore``; every
other file (HATS metadata, margins, skymaps) is listed as ``extra``, checked
but not loaded. Archives written before, in the plain release-directory
layout, have the same manifest and restore as they did.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.parquet as pq

from dpdb._version import code_version
from dpdb.config import Settings
from dpdb.etl import release_dir
from dpdb.model.layout import RELEASE_TABLES

from .export import MANIFEST as EXPORT_MANIFEST
from .export import TMP, export_hats

__all__ = ["FORMAT", "write_archive", "is_hats_archive"]

log = logging.getLogger(__name__)

FORMAT = "hats"
"""``info['format']`` of a release manifest whose files are HATS collections."""


def is_hats_archive(manifest: release_dir.ReleaseDir) -> bool:
    return manifest.info.get("format") == FORMAT


def write_archive(
    settings: Settings,
    name: str,
    origin: int,
    version: int,
    order: int,
    out: Path,
    *,
    margin: float = 10.0,
    jobs: int = 1,
) -> release_dir.ReleaseDir:
    """Write loaded release ``name`` to ``out`` as HATS collections plus a checksummed ``release.json``.

    ``release.json`` is written last, so a directory without it is unfinished;
    a rerun keeps the collections an interrupted run completed.
    """
    (out / release_dir.MANIFEST).unlink(missing_ok=True)  # incomplete until rewritten
    result = export_hats(settings, name, out, tables=list(RELEASE_TABLES), margin=margin, jobs=jobs)
    manifest = release_dir.ReleaseDir(
        name, origin, version, order, "archive",
        info={"format": FORMAT, "margin_arcsec": margin, "dpdb_version": code_version()},
    )  # fmt: skip
    listed: set[Path] = set()
    for c in result.catalogs:
        if not c.rows:
            files = []  # nothing to load back (an empty table's file, if any, is listed as extra)
        elif c.kind == "parquet":
            files = [out / c.path]
        else:
            files = sorted((out / c.name / c.name / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))
        manifest.tables[c.name] = [release_dir.entry_for(out, p, pq.read_metadata(p).num_rows) for p in files]
        listed.update(files)
    for path in sorted(out.rglob("*")):
        skip = path in listed or path.name == release_dir.MANIFEST or TMP in path.parts
        if path.is_file() and not skip:
            rows = pq.read_metadata(path).num_rows if path.suffix == ".parquet" else 0
            manifest.extra.append(release_dir.entry_for(out, path, rows))
    assert (out / EXPORT_MANIFEST).is_file()
    manifest.write(out)
    log.info("archived %s as HATS in %s: %d rows", name, out, manifest.total_rows)
    return manifest
