"""Parent pixels read from the parents' files instead of the database.

A measurement takes its parent object's ``_healpix_29`` (docs/architecture.md,
decision 6). When a release loads with its indexes deferred
(dpdb/lifecycle/bulk.py) the parent table has no index to look keys up in, and
its rows may still be streaming in another connection, so the parents' pixels
are computed once from their own files (key and position columns only) and
kept sorted in memory: 16 bytes per parent.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa

from dpdb.errors import ValidationError
from dpdb.healpix import pixels

from .files import open_parquet
from .validate import TargetTable, plan_columns

__all__ = ["PixelMap"]


class PixelMap:
    """Pixel of each row of ``child`` batches: its parent's (from the map) or its own position's."""

    def __init__(self, child: TargetTable, keys: np.ndarray, pix: np.ndarray) -> None:
        if child.position is None or child.parent_key is None:
            raise ValidationError(f"table {child.canonical} has no parent to take its pixel from")
        order = np.argsort(keys, kind="stable")
        self.child = child
        self.keys = keys[order]
        self.pix = pix[order]

    @classmethod
    def from_files(cls, child: TargetTable, parent: TargetTable, paths: Iterable[Path]) -> PixelMap:
        """Read the parent key and position of every row of ``parent``'s files (as the ETL maps them)."""
        if parent.position is None or child.parent_key is None:
            raise ValidationError(f"table {parent.canonical} has no position to compute its pixel from")
        key = child.parent_key.lower()
        wanted = (key, *parent.position)
        keys, pix = [], []
        for path in paths:
            pf = open_parquet(path)
            plan = plan_columns(path, pf.schema_arrow, parent, ignore_extra=True)
            present = set(pf.schema_arrow.names)  # not the columns derived from others
            names = {col.name: name for name, col in plan.mapping.items() if name in present}
            if any(w not in names for w in wanted):
                raise ValidationError(f"{path}: no {' / '.join(wanted)} columns to place {child.canonical}")
            for batch in pf.iter_batches(batch_size=1 << 20, columns=[names[w] for w in wanted]):
                k, ra, dec = (batch.column(i).to_numpy(zero_copy_only=False) for i in range(3))
                keys.append(k.astype(np.int64))
                pix.append(pixels(ra, dec))
        if not keys:
            return cls(child, np.empty(0, np.int64), np.empty(0, np.int64))
        return cls(child, np.concatenate(keys), np.concatenate(pix))

    def __call__(self, batch: pa.RecordBatch) -> np.ndarray:
        ra_name, dec_name = self.child.position  # type: ignore[misc]
        own = pixels(
            batch.column(ra_name).to_numpy(zero_copy_only=False),
            batch.column(dec_name).to_numpy(zero_copy_only=False),
        )
        key = (self.child.parent_key or "").lower()
        if not len(self.keys) or key not in batch.schema.names:
            return own
        ids = batch.column(key)
        valid = ids.is_valid().to_numpy(zero_copy_only=False)
        values = ids.fill_null(0).to_numpy(zero_copy_only=False)
        pos = np.clip(np.searchsorted(self.keys, values), 0, len(self.keys) - 1)
        hit = valid & (self.keys[pos] == values)
        return np.where(hit, self.pix[pos], own)
