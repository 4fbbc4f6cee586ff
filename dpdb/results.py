"""Query results as astropy tables: each column with the unit, UCD and description of the schema
column it comes from (the newest felis table models).

Kept apart from :mod:`dpdb.archive` so the services below the API (object pages, TAP) build the
same tables without importing the API module. astropy and pyarrow are imported when first used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa
    from astropy.table import Table

__all__ = ["ColumnMeta", "column_meta", "to_astropy", "tables_named"]

ColumnMeta = dict[str, dict[str, tuple[str | None, str | None, str | None]]]
"""table (lower case) -> column (canonical name) -> (unit, UCD, description)."""


def _read_column_meta() -> ColumnMeta:
    """table (lower) -> column (canonical) -> (unit, ucd, description) from the newest table models."""
    from dpdb.model.felis import latest_version
    from dpdb.model.table import all_tables

    return {
        t.db_name: {c.canonical: (c.unit, c.ucd, c.description) for c in t.columns}
        for t in all_tables(latest_version())
    }


_META: ColumnMeta | None = None


def column_meta() -> ColumnMeta:
    """The column metadata of every schema table (read once per process)."""
    global _META
    if _META is None:
        _META = _read_column_meta()
    return _META


def to_astropy(result: pa.Table, tables: Sequence[str] = ()) -> Table:
    """An astropy Table of an Arrow result, with unit, UCD and description from the schema.

    ``tables`` names the schema tables the columns may come from, in order of
    preference (for a query: the tables its text names); a column gets the
    metadata of the first of them that has a column of its name.
    """
    import astropy.units as u
    import numpy as np
    import pyarrow as pa
    from astropy.table import Column, MaskedColumn, Table

    meta = column_meta()
    out = Table()
    for name, column in zip(result.column_names, result.columns, strict=True):
        unit, ucd, description = next(
            (meta[t.lower()][name] for t in tables if name in meta.get(t.lower(), {})), (None, None, None)
        )
        col: Column
        if column.null_count:
            mask = column.is_null().to_numpy(zero_copy_only=False)
            if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
                data = column.fill_null(0).to_numpy(zero_copy_only=False)
            else:
                data = np.array(column.to_pylist(), dtype=object)
            col = MaskedColumn(data, mask=mask, name=name, description=description)
        else:
            col = Column(column.to_numpy(zero_copy_only=False), name=name, description=description)
        if unit:
            col.unit = u.Unit(unit, parse_strict="silent")
        if ucd:
            col.meta["ucd"] = ucd
        out.add_column(col)
    return out


def tables_named(sql: str) -> list[str]:
    """Schema tables whose names appear as words in ``sql``, in order of first appearance."""
    found = []
    for t in column_meta():
        m = re.search(rf"\b{t}\b", sql, re.IGNORECASE)
        if m:
            found.append((m.start(), t))
    return [t for _, t in sorted(found)]
