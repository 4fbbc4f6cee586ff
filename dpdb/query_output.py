"""Writing query results: an aligned text table, CSV, JSON, Parquet or VOTable, to a file or stdout."""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa

from dpdb.model.felis import latest_version
from dpdb.model.table import all_tables

from .atomic import atomic_file
from .errors import QueryError

__all__ = ["FORMATS", "FILE_FORMATS", "write_result"]

FORMATS = ("table", "csv", "json", "parquet", "votable")
"""Output formats of :func:`write_result`; the last two are binary/XML files and need an output path."""

FILE_FORMATS = ("parquet", "votable")


@functools.cache
def _column_descriptions() -> dict[str, tuple[str | None, str | None, str | None]]:
    """Canonical column name -> (unit, UCD, description), each only where every table agrees."""
    seen: dict[str, set[tuple[str | None, str | None, str | None]]] = {}
    for table in all_tables(latest_version()):
        for c in table.columns:
            desc = " ".join((c.description or "").split()) or None
            seen.setdefault(c.canonical, set()).add((c.unit or None, c.ucd or None, desc))
    def agreed(values: set[str | None]) -> str | None:
        return next(iter(values)) if len(values) == 1 else None

    return {
        name: (agreed({v[0] for v in found}), agreed({v[1] for v in found}), agreed({v[2] for v in found}))
        for name, found in seen.items()
    }


def write_result(
    table: pa.Table, fmt: str, out: Path | None = None, *, meta: Mapping[str, str] | None = None
) -> None:
    """Write a query result in format ``fmt`` to the file ``out`` (atomically) or to standard output.

    Parameters
    ----------
    table
        The result, e.g. from :func:`run_query`.
    fmt
        ``table`` (an aligned text table with the row count, for reading),
        ``csv`` (header line; NULL is an empty field, NaN ``nan``), ``json`` (one
        JSON array of objects, one row per line; NaN and infinities become
        ``null``, times ISO 8601 strings), ``parquet`` or ``votable`` (with units,
        UCDs and descriptions of schema columns).
    out
        File to write: written under a temporary name in the same directory and
        renamed when complete, so it is never half-written. ``None`` writes text
        formats to standard output; ``parquet`` and ``votable`` need a file.
    meta
        Key/value metadata carried by the file (e.g. a citation): Parquet
        key-value metadata, VOTable ``INFO`` elements, ``# key: value`` lines
        before the CSV header or after the text table, and for JSON an object
        ``{"meta": {...}, "rows": [...]}`` instead of the bare array.
    """
    if fmt not in FORMATS:
        raise QueryError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
    if out is None and fmt in FILE_FORMATS:
        raise QueryError(f"format {fmt} needs an output file (-o FILE)")
    if fmt in ("json", "votable"):
        duplicates = sorted({n for n in table.column_names if table.column_names.count(n) > 1})
        if duplicates:
            raise QueryError(
                f"column name(s) {', '.join(duplicates)} repeated in the result; "
                f"{fmt} needs distinct names (give aliases with AS)"
            )
    writer = _WRITERS[fmt]
    if meta:
        writer = functools.partial(_with_meta, writer, fmt, dict(meta))
    if out is None:
        writer(table, sys.stdout)
        return
    binary = fmt in ("parquet", "votable")
    if not Path(out).absolute().parent.is_dir():
        raise QueryError(f"cannot write {out}: directory {Path(out).absolute().parent} does not exist")
    try:
        with atomic_file(out, binary) as f:
            writer(table, f)
    except OSError as e:
        raise QueryError(f"cannot write {out}: {e.strerror or e}") from e


def _write_table(table: pa.Table, f: IO[str]) -> None:
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if table.num_columns == 0:
        f.write("(the statement returns no rows)\n")
        return
    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) for t in table.schema.types]
    cells = [
        [_cell(v, t) for v in col.to_pylist()]
        for col, t in zip(table.columns, table.schema.types, strict=True)
    ]
    out = Table(show_header=True, header_style="bold", show_edge=True)
    for name, right in zip(table.column_names, numeric, strict=True):
        out.add_column(Text(name), justify="right" if right else "left", overflow="fold")
    null = Text("NULL", style="dim")
    for row in zip(*cells, strict=True):
        out.add_row(*(null if v is None else Text(v) for v in row))
    # As wide as the table needs: nothing is cut or folded (a terminal wraps long lines, as psql's do).
    natural = sum(
        max([cell_len(n), *(cell_len(v) for v in c if v is not None), 4]) + 3
        for n, c in zip(table.column_names, cells, strict=True)
    )
    console = Console(file=f, width=max(80, natural + 1), soft_wrap=True)
    console.print(out)
    n = table.num_rows
    console.print(f"({n} row{'' if n == 1 else 's'})")


def _cell(value: Any, type_: pa.DataType) -> str | None:
    if value is None:
        return None
    if pa.types.is_float32(type_):
        return str(np.float32(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, (list, dict)):
        return json.dumps(_json_safe(value))
    return str(value)


def _write_csv(table: pa.Table, f: IO[str]) -> None:
    import pyarrow.csv as pcsv

    columns = []
    for column in table.columns:
        t = column.type
        if (
            pa.types.is_nested(t)
            or pa.types.is_binary(t)
            or pa.types.is_large_binary(t)
            or pa.types.is_interval(t)
            or pa.types.is_duration(t)
            or pa.types.is_time(t)
        ):
            column = pa.array([_cell(v, t) for v in column.to_pylist()], pa.string())
        columns.append(column)
    buffer = pa.BufferOutputStream()
    pcsv.write_csv(pa.Table.from_arrays(columns, names=table.column_names), buffer)
    f.write(buffer.getvalue().to_pybytes().decode())


def _json_safe(value: Any) -> Any:
    """A value that json.dumps writes as valid JSON: NaN and infinities null, times ISO 8601."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _write_json(table: pa.Table, f: IO[str]) -> None:
    f.write("[")
    first = True
    for batch in table.to_batches():
        for row in batch.to_pylist():
            f.write(("\n" if first else ",\n") + json.dumps(_json_safe(row), allow_nan=False))
            first = False
    f.write("\n]\n" if not first else "]\n")


def _write_parquet(table: pa.Table, f: IO[bytes]) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, f)


def _write_votable(table: pa.Table, f: IO[bytes], meta: Mapping[str, str] | None = None) -> None:
    from astropy import units as u
    from astropy.io.votable import from_table
    from astropy.table import MaskedColumn
    from astropy.table import Table as AstropyTable

    descriptions = _column_descriptions()
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        t = column.type
        mask = column.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            fill = False if pa.types.is_boolean(t) else 0
            data = column.fill_null(fill).to_numpy(zero_copy_only=False)
        elif pa.types.is_list(t) and (
            pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)
        ):
            data = np.empty(len(column), dtype=object)
            for k, v in enumerate(column.to_pylist()):
                data[k] = np.array(
                    [np.nan if x is None else x for x in (v or [])], dtype=t.value_type.to_pandas_dtype()
                )
        else:
            data = np.array(["" if v is None else _cell(v, t) for v in column.to_pylist()], dtype=str)
        unit, ucd, description = descriptions.get(name, (None, None, None))
        col = MaskedColumn(data, name=name, mask=mask, description=description)
        if unit:
            col.unit = u.Unit(unit, parse_strict="silent")
        if ucd:
            col.meta["ucd"] = ucd
        columns.append(col)
    votable = from_table(AstropyTable(columns))
    from astropy.io.votable.tree import Info

    for key, value in (meta or {}).items():  # e.g. a citation
        votable.resources[0].infos.append(Info(name=key, value=value))
    for key, value in (table.schema.metadata or {}).items():  # e.g. the resolved as-of instant
        if key.startswith(b"dpdb."):
            votable.resources[0].infos.append(Info(name=key.decode(), value=value.decode()))
    votable.to_xml(f)


def _with_meta(writer: Any, fmt: str, meta: dict[str, str], table: pa.Table, f: IO[Any]) -> None:
    """Write ``table`` with ``writer``, carrying ``meta`` as the format allows."""
    if fmt == "parquet":
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        writer(table, f)
    elif fmt == "votable":
        _write_votable(table, f, meta)
    elif fmt == "csv":
        f.write("".join(f"# {k}: {' '.join(v.split())}\n" for k, v in meta.items()))
        writer(table, f)
    elif fmt == "json":
        f.write('{"meta": ' + json.dumps(meta) + ',\n"rows": ')
        writer(table, f)
        f.write("}\n")
    else:
        writer(table, f)
        f.write("".join(f"{k}: {v}\n" for k, v in meta.items()))


_WRITERS: dict[str, Callable[[pa.Table, Any], None]] = {
    "table": _write_table,
    "csv": _write_csv,
    "json": _write_json,
    "parquet": _write_parquet,
    "votable": _write_votable,
}
