"""The Parquet files a load reads: discovery (plain and HEALPix/HATS layouts), fingerprints, opening.

This module owns the on-disk layout knowledge: a PATH is a file or a directory
searched recursively for ``*.parquet`` (so ``Norder=K/Dir=D/Npix=N.parquet``
HATS trees load as they are), in a stable sorted order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dpdb.errors import ValidationError, first_line

__all__ = ["ParquetFile", "discover", "open_parquet", "fingerprint", "total_rows"]

_CHUNK = 8 << 20


@dataclass(frozen=True)
class ParquetFile:
    """A file to load, identified by its content."""

    path: Path  # absolute
    size: int
    sha256: str


def discover(paths: list[Path]) -> list[Path]:
    """Absolute paths of the Parquet files named by ``paths`` (files, or directories searched recursively)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).absolute()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.parquet") if p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise ValidationError(f"{path}: no such file or directory")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise ValidationError(f"no Parquet files under {', '.join(str(p) for p in paths)}")
    return unique


def total_rows(paths: list[Path]) -> int:
    """Rows in the Parquet files named by ``paths``, from their footers (for progress bars)."""
    return sum(open_parquet(p).metadata.num_rows for p in discover(paths))


def fingerprint(path: Path) -> ParquetFile:
    """Size and SHA-256 of a file's content."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return ParquetFile(path, size, digest.hexdigest())


def open_parquet(path: Path) -> pq.ParquetFile:
    """Open a Parquet file, turning unreadable, truncated and empty files into one-line errors."""
    if path.stat().st_size == 0:
        raise ValidationError(f"{path}: empty file (0 bytes), not Parquet")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise ValidationError(f"{path}: not a readable Parquet file ({first_line(e)})") from e
    if pf.metadata.num_rows == 0:
        raise ValidationError(f"{path}: Parquet file has no rows")
    return pf
