"""Archiving (retirement) and dropping of releases.

Archiving a superseded release (DPDD §4.5) runs in three steps, each safe to
repeat, so a retirement killed at any point finishes on a rerun:

1. its sample region is copied to the samples schema (if not there yet);
2. every table is exported as bulk-download files that LSDB opens: one HATS
   collection per table, with margins (dpdb/hats/archive.py), and a checksummed
   ``release.json`` in the release-directory layout (etl/release_dir.py) written
   last; a complete archive whose counts match the tables is reused;
3. one transaction drops the schema, forgets its load-manifest entries and marks
   it ``archived`` with the archive's path, rows and size.

``dpdb release restore`` (dpdb/lifecycle/load.py) loads such an archive back.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from dpdb.config import Settings
from dpdb.db import connect
from dpdb.errors import ReleaseStateError, ValidationError
from dpdb.etl import release_dir
from dpdb.etl.validate import target_table
from dpdb.model.layout import RELEASE_TABLES
from dpdb.pg import fetch_value
from dpdb.registry import manifest as load_manifest
from dpdb.registry.activations import active_release, previous_release
from dpdb.registry.catalogs import find_catalog, forget_catalog
from dpdb.registry.releases import NOW, get_release, lock_lifecycle, set_state
from dpdb.registry.states import CatalogKind, ReleaseState
from dpdb.shards.placement import drop_on_shards, shards_of
from dpdb.tap.tap_schema import refresh_tap_schema

from .samples import has_sample, make_sample

__all__ = ["ArchiveResult", "archive_release", "drop_release"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchiveResult:
    name: str
    path: Path
    rows: int
    bytes: int
    seconds: float
    reused: bool  # an earlier run's complete archive was kept


def archive_release(settings: Settings, name: str) -> ArchiveResult:
    """Export superseded release ``name`` to its archive directory, keep its sample, drop its tables."""
    start = time.monotonic()
    with connect(settings) as conn:
        rel = get_release(conn, name)
        if rel.state != ReleaseState.SUPERSEDED:
            raise ReleaseStateError(f"release {name} is {rel.state}; only superseded releases are archived")
        if name == previous_release(conn):
            raise ReleaseStateError(f"release {name} is the penultimate release; it stays loaded")
        catalog = find_catalog(conn, name)
        assert catalog is not None  # a superseded release is loaded
        version, order = catalog.schema_version, catalog.partition_order
        if not has_sample(conn, name):
            make_sample(conn, settings, name)
        counts = _row_counts(conn, name, version)
    out = settings.archive_root() / name
    manifest = _reusable(out, counts)
    reused = manifest is not None
    if manifest is None:
        from dpdb.hats.archive import write_archive

        manifest = write_archive(settings, name, rel.origin or 0, version, order, out, jobs=2)
    with connect(settings) as conn:
        lock_lifecycle(conn)
        if get_release(conn, name).state != ReleaseState.SUPERSEDED:
            raise ReleaseStateError(f"release {name} changed state while it was being archived")
        shards = _unload(conn, name)
        set_state(
            conn, name, ReleaseState.ARCHIVED, archived_at=NOW, archive_path=str(out.absolute()),
            archive_rows={t: manifest.rows(t) for t in RELEASE_TABLES}, archive_bytes=manifest.total_bytes,
            schema_version=version,
        )  # fmt: skip
    if shards:
        with connect(settings) as conn:
            drop_on_shards(conn, name, shards)
    return ArchiveResult(
        name, out, manifest.total_rows, manifest.total_bytes, time.monotonic() - start, reused
    )


def _row_counts(conn: psycopg.Connection, name: str, version: int) -> dict[str, int]:
    out = {}
    for table in RELEASE_TABLES:
        target = target_table(name, version, CatalogKind.RELEASE, table)
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name, target.db_name))
        out[table] = int(fetch_value(conn, query))
    return out


def _reusable(out: Path, counts: dict[str, int]) -> release_dir.ReleaseDir | None:
    """The archive an interrupted run finished, if it is complete, intact and matches the tables."""
    if not (out / release_dir.MANIFEST).is_file():
        return None
    try:
        manifest = release_dir.verify(out)
    except ValidationError as e:
        log.warning("re-exporting %s: %s", out, e)
        return None
    return manifest if all(manifest.rows(t) == n for t, n in counts.items()) else None


def _unload(conn: psycopg.Connection, name: str) -> list[str]:
    """Drop a release's tables and forget its loads (its registry row stays: its IDs stay reserved).

    Returns the shards that hold partitions of it: their schemas are dropped by
    :func:`dpdb.shards.placement.drop_on_shards` once this transaction committed.
    """
    shards = shards_of(conn, name)
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
    forget_catalog(conn, name)
    load_manifest.forget_target(conn, name)
    refresh_tap_schema(conn)  # same transaction: TAP_SCHEMA never describes a dropped schema
    return shards


def drop_release(settings: Settings, name: str, *, dry_run: bool = False) -> list[str]:
    """Drop release ``name`` for good (tables and samples; archive files are kept); return what it did."""
    with connect(settings) as conn:
        lock_lifecycle(conn)
        rel = get_release(conn, name)
        if name in (active_release(conn), previous_release(conn)):
            role = "active" if rel.state == ReleaseState.ACTIVE else "penultimate"
            raise ReleaseStateError(f"release {name} is the {role} release; it cannot be dropped")
        if rel.state == ReleaseState.DROPPED:
            raise ReleaseStateError(f"release {name} is already dropped")
        samples = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'samples' AND tablename LIKE %s",
                (name.replace("_", r"\_") + r"\_%",),
            )
        ]
        actions = []
        if rel.loaded:
            actions.append(f"drop schema {name} and its load-manifest entries")
        actions += [f"drop samples.{t}" for t in samples]
        actions.append(
            f"mark {name} dropped" + (f" (archive {rel.archive_path} kept)" if rel.archive_path else "")
        )
        if dry_run:
            conn.rollback()
            return actions
        shards = _unload(conn, name) if rel.loaded else []
        for t in samples:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("samples", t)))
        set_state(conn, name, ReleaseState.DROPPED, dropped_at=NOW)
    if shards:
        with connect(settings) as conn:
            drop_on_shards(conn, name, shards)
    return actions
