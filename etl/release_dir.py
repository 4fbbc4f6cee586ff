"""The on-disk layout of a release directory: produced releases and archives alike.

One module owns it. A release directory holds one folder per table; a
partitioned table (docs/architecture.md, decision 6) is split by HEALPix pixel at the
release's partition order, in HATS' ``Norder=/Dir=/Npix=`` file naming (real HATS
catalogs, with properties and margins, are what ``dpdb hats export`` and the
retirement of a release write: dpdb/hats/), and the other tables are one file each::

    release.json                                   the manifest, written last
    Object/Norder=1/Dir=0/Npix=17.parquet          rows whose (parent's) pixel is 17
    Source/Norder=1/Dir=0/Npix=17.parquet          ... the same pixel as their Object
    Visit/Visit.parquet

The manifest names the release, its ID origin, schema version and partition
order, and lists every file with its row count, size and SHA-256, so a load
can check counts and an archive can be verified before it is restored. A
directory without ``release.json`` is unfinished: writers write it last.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dpdb.atomic import atomic_file
from dpdb.errors import ValidationError
from dpdb.healpix import PIXEL_ORDER

from .files import fingerprint

__all__ = [
    "MANIFEST",
    "FileEntry",
    "ReleaseDir",
    "part_path",
    "write_table",
    "entry_for",
    "read",
    "verify",
    "remove_temporaries",
]

MANIFEST = "release.json"
ROW_GROUP = 131_072


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the release directory
    rows: int
    bytes: int
    sha256: str


@dataclass
class ReleaseDir:
    """What ``release.json`` says."""

    name: str
    origin: int
    schema_version: int
    partition_order: int
    purpose: str  # "production" or "archive"
    tables: dict[str, list[FileEntry]] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)  # free-form: seed, source, produced_at...
    extra: list[FileEntry] = field(default_factory=list)  # checked, not loaded (HATS metadata, margins)

    def rows(self, table: str) -> int:
        return sum(f.rows for f in self.tables.get(table, []))

    @property
    def total_rows(self) -> int:
        return sum(self.rows(t) for t in self.tables)

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for files in [*self.tables.values(), self.extra] for f in files)

    def write(self, root: Path) -> None:
        """Write ``release.json`` atomically (the directory is complete once it exists)."""
        with atomic_file(root / MANIFEST, binary=False, durable=True) as f:
            f.write(json.dumps(asdict(self), indent=1, sort_keys=True) + "\n")


def part_path(root: Path, table: str, order: int | None, npix: int | None = None) -> Path:
    """Path of a table's file: per pixel ``npix`` at ``order`` if partitioned, else one file."""
    if order is None or npix is None:
        return root / table / f"{table}.parquet"
    return root / table / f"Norder={order}" / f"Dir={npix // 10_000 * 10_000}" / f"Npix={npix}.parquet"


def entry_for(root: Path, path: Path, rows: int) -> FileEntry:
    fp = fingerprint(path)
    return FileEntry(str(path.relative_to(root)), rows, fp.size, fp.sha256)


def _write_file(table: pa.Table, path: Path) -> None:
    with atomic_file(path) as f:
        pq.write_table(table, f, row_group_size=ROW_GROUP)


def write_table(
    root: Path, table: str, data: pa.Table, pixel: np.ndarray | None = None, order: int | None = None
) -> list[FileEntry]:
    """Write ``data`` under ``root``; split by partition when ``pixel`` (order-29 pixels) is given.

    Rows keep their order within a file. An empty table writes no file.
    """
    if data.num_rows == 0:
        return []
    if pixel is None or order is None:
        path = part_path(root, table, None)
        _write_file(data, path)
        return [entry_for(root, path, data.num_rows)]
    partition = np.asarray(pixel, dtype=np.int64) >> (2 * (PIXEL_ORDER - order))
    entries = []
    for npix in np.unique(partition):
        rows = np.flatnonzero(partition == npix)
        path = part_path(root, table, order, int(npix))
        _write_file(data.take(pa.array(rows)), path)
        entries.append(entry_for(root, path, len(rows)))
    return entries


def read(root: Path) -> ReleaseDir:
    """The manifest of release directory ``root``, or a one-line error naming what is wrong."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ValidationError(f"{root}: no {MANIFEST} (not a release directory, or one not finished)")
    try:
        data = json.loads(path.read_text())
        tables = {t: [FileEntry(**f) for f in files] for t, files in data.pop("tables").items()}
        extra = [FileEntry(**f) for f in data.pop("extra", [])]
        return ReleaseDir(tables=tables, extra=extra, **data)
    except (ValueError, TypeError, KeyError) as e:
        raise ValidationError(f"{path}: not a valid release manifest ({e})") from None


def verify(root: Path, manifest: ReleaseDir | None = None) -> ReleaseDir:
    """Check every file of the manifest is there with its size and SHA-256; name the first that is not."""
    manifest = manifest or read(root)
    for files in [*manifest.tables.values(), manifest.extra]:
        for entry in files:
            path = Path(root) / entry.path
            if not path.is_file():
                raise ValidationError(f"{path}: missing (listed in {Path(root) / MANIFEST})")
            fp = fingerprint(path)
            if fp.size != entry.bytes or fp.sha256 != entry.sha256:
                raise ValidationError(
                    f"{path}: checksum mismatch (sha256 {fp.sha256[:12]}…, manifest says "
                    f"{entry.sha256[:12]}…); the file was changed or damaged"
                )
    return manifest


def remove_temporaries(root: Path) -> int:
    """Delete the temporary files a killed writer left under ``root`` (call with the folder locked)."""
    n = 0
    for tmp in Path(root).rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n
