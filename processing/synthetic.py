"""Synthetic rows for any catalog table: every column filled with plausible values of the right type.

Used by tests and benchmarks to make Parquet files shaped like a pipeline's
output (canonical column names, schema types) without a survey simulation.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from dpdb.etl.validate import TargetColumn, target_table
from dpdb.model.felis import latest_version

__all__ = ["synthetic_table"]

BANDS = "ugrizy"


def synthetic_table(
    table: str,
    rows: int,
    *,
    seed: int = 0,
    first_id: int = 1,
    ra_range: tuple[float, float] = (10.0, 20.0),
    dec_range: tuple[float, float] = (-5.0, 5.0),
    parent_ids: np.ndarray | None = None,
    version: int | None = None,
) -> pa.Table:
    """A table of ``rows`` rows with every column of ``table`` (canonical names, schema types).

    Primary-key IDs count up from ``first_id``; positions are uniform in the
    given box; the parent key (diaObjectId, objectId) draws from ``parent_ids``
    when given.
    """
    rng = np.random.default_rng(seed)
    version = version or latest_version()
    target = target_table("synthetic", version, "release", table)  # a release holds every table
    ra_col, dec_col = target.position or ("", "")
    arrays, fields = [], []
    for col in target.columns.values():
        if col.name == target.primary_key[0]:
            values: pa.Array = pa.array(np.arange(first_id, first_id + rows, dtype=np.int64))
        elif col.name == ra_col:
            values = pa.array(rng.uniform(*ra_range, rows))
        elif col.name == dec_col:
            low, high = (float(np.sin(np.radians(d))) for d in dec_range)
            values = pa.array(np.degrees(np.arcsin(rng.uniform(low, high, rows))))
        elif col.name == target.parent_key and parent_ids is not None:
            values = pa.array(rng.choice(parent_ids, rows).astype(np.int64))
        else:
            values = _values(col, rows, rng)
        arrays.append(values.cast(col.arrow_type))
        fields.append(pa.field(col.canonical, col.arrow_type, nullable=col.nullable))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _values(col: TargetColumn, rows: int, rng: np.random.Generator) -> pa.Array:
    t = col.arrow_type
    name = col.canonical.lower()
    if pa.types.is_list(t):
        flat = rng.normal(size=rows * 6).astype(np.float32 if t.value_type == pa.float32() else np.float64)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat), 6).cast(t)
    if pa.types.is_floating(t):
        if name.endswith(("mjdtai", "mjd")):
            return pa.array(60000.0 + rng.uniform(0, 365, rows))
        if "flux" in name:
            return pa.array(rng.normal(1000.0, 300.0, rows))
        return pa.array(rng.normal(size=rows))
    if pa.types.is_integer(t):
        return pa.array(rng.integers(0, 100, rows))
    if pa.types.is_boolean(t):
        return pa.array(rng.random(rows) < 0.1)
    if pa.types.is_string(t):
        return pa.array(np.array(list(BANDS))[rng.integers(0, len(BANDS), rows)])
    raise TypeError(f"no synthetic values for {t}")
