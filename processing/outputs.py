"""How the simulators write their files: Arrow tables typed by the table model, Parquet and text files
that appear complete or not at all, one directory per night."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dpdb.atomic import atomic_file
from dpdb.etl.validate import TargetTable, target_table
from dpdb.model.felis import latest_version
from dpdb.prompt.staging import ASSIGNED_COLUMNS

__all__ = ["arrow_table", "night_dir", "write_parquet", "write_text"]


def night_dir(out: Path, night: int) -> Path:
    """Directory of night ``night``'s visits (and of its daytime linkage)."""
    return out / f"night_{night:05d}"


@cache
def _target(table: str, kind: str) -> TargetTable:
    if kind == "release":
        return target_table("release", latest_version(), "release", table)
    return target_table("prompt", latest_version(), "prompt", table)


def arrow_table(table: str, values: dict[str, Any], rows: int, kind: str = "prompt") -> pa.Table:
    """Every column of ``table`` in a ``kind`` catalog, in table order and with the schema's types.

    Scalars are repeated over the rows; missing columns are null. Prompt input files leave out
    the columns the prompt ingest assigns; a release table has every column.
    """
    target = _target(table, kind)
    skip = ASSIGNED_COLUMNS.get(table, ()) if kind == "prompt" else ()
    unknown = set(values) - {c.canonical for c in target.columns.values()}
    if unknown:
        raise KeyError(f"no columns {sorted(unknown)} in {table}")
    arrays, schema = [], []
    for col in target.columns.values():
        if col.canonical in skip:
            continue
        value = values.get(col.canonical)
        if value is None:
            if not col.nullable:
                raise ValueError(f"{table}.{col.canonical} is required")
            arrays.append(pa.nulls(rows, col.arrow_type))
        else:
            array = np.broadcast_to(np.asarray(value), (rows,))
            if not pa.types.is_string(col.arrow_type):
                array = array.astype(col.arrow_type.to_pandas_dtype())
            arrays.append(pa.array(array, col.arrow_type))
        schema.append(pa.field(col.canonical, col.arrow_type, nullable=col.nullable))
    return pa.Table.from_arrays(arrays, schema=pa.schema(schema))


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` atomically (a rerun rewrites identical files)."""
    with atomic_file(path) as f:
        pq.write_table(table, f)


def write_text(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path, binary=False) as f:
        f.write(text)
