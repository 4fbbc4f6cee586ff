"""Validation of Parquet data against a catalog table, before a row is written.

Two stages: :func:`plan_columns` checks a file's schema (every required column
present, names matched case-insensitively, types castable without loss, no
unknown columns); :func:`prepare_batch` checks and converts each record batch
(no null or NaN in non-nullable columns, integers in range, strings within
their length, principal positions on the sky) and casts it to the exact Arrow
types the binary COPY needs. Errors name the file, the column and the row
(0-based row index in the file).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dpdb.errors import ValidationError, first_line
from dpdb.model.layout import layout, tables_for
from dpdb.model.table import CatalogTable, ColumnModel, catalog_table

from .rubin_columns import CcdVisitLookup, Step, apply_steps, plan_steps

__all__ = [
    "TargetColumn",
    "TargetTable",
    "target_table",
    "ColumnPlan",
    "plan_columns",
    "prepare_batch",
    "check_unique",
]


TargetColumn = ColumnModel
"""A column of a load target (the table model's column)."""


@dataclass(frozen=True)
class TargetTable:
    """A catalog table in one catalog: what the ETL validates files against and loads into."""

    catalog: str
    """The catalog (PostgreSQL schema) the table is in."""
    model: CatalogTable
    omitted: frozenset[str] = frozenset()
    """Database names of columns files leave out (those another step assigns)."""

    def without(self, columns: Iterable[str]) -> TargetTable:
        """The same target without ``columns`` (canonical or database names)."""
        return TargetTable(self.catalog, self.model, self.omitted | {c.lower() for c in columns})

    @property
    def canonical(self) -> str:
        return self.model.name

    @property
    def db_name(self) -> str:
        return self.model.db_name

    @functools.cached_property
    def columns(self) -> dict[str, ColumnModel]:
        """The loadable columns by database name, in table order."""
        return {c.name: c for c in self.model.columns if c.name not in self.omitted}

    @property
    def primary_key(self) -> tuple[str, ...]:
        """Database names, without the pixel column."""
        return tuple(k for k in self.model.primary_key if k not in self.omitted)

    @property
    def position(self) -> tuple[str, str] | None:
        """Database names of the principal ra, dec."""
        return self.model.position

    @property
    def partitioned(self) -> bool:
        return self.model.partitioned

    @property
    def parent(self) -> str | None:
        return self.model.parent

    @property
    def parent_key(self) -> str | None:
        return self.model.parent_key


def target_table(catalog: str, version: int, kind: str, table: str) -> TargetTable:
    """The loadable description of ``table`` in catalog ``catalog`` (schema ``version``, of ``kind``)."""
    canonical = layout(table).name
    if canonical not in tables_for(kind) or version < layout(canonical).since:
        raise ValidationError(f"table {canonical} is not part of a {kind} catalog ({catalog})")
    return TargetTable(catalog, catalog_table(canonical, version))


@dataclass(frozen=True)
class ColumnPlan:
    """How a file's columns map onto the target: file (or derived) column name -> target column."""

    path: Path
    mapping: dict[str, TargetColumn]
    ignored: tuple[str, ...]
    """File columns the target lacks, skipped (``ignore_extra``)."""
    steps: tuple[Step, ...] = ()
    """Columns derived from others (Rubin's layouts, etl/rubin_columns.py)."""

    @property
    def read(self) -> list[str]:
        """The file columns to read: the mapped ones and the sources of derived ones."""
        derived = {s.output for s in self.steps if s.given is None}
        names = [n for n in self.mapping if n not in derived]
        for step in self.steps:
            names += [s for s in (*step.sources, step.given) if s is not None and s not in names]
        return names

    @property
    def derived(self) -> tuple[str, ...]:
        """Canonical names of the columns derived for this file."""
        return tuple(s.output for s in self.steps if s.given is None)


def _castable(src: pa.DataType, dst: pa.DataType) -> bool:
    """Whether values of ``src`` load into ``dst`` without loss (range is checked per value)."""
    if src == dst or pa.types.is_null(src):
        return True
    if pa.types.is_dictionary(src):
        return _castable(src.value_type, dst)
    if pa.types.is_list(dst):
        if pa.types.is_list(src) or pa.types.is_large_list(src) or pa.types.is_fixed_size_list(src):
            return _castable(src.value_type, dst.value_type)
        return False
    if pa.types.is_integer(dst):
        return pa.types.is_integer(src)
    if pa.types.is_floating(dst):
        if pa.types.is_floating(src):
            return True  # float64 -> real is allowed because the schema says real
        return pa.types.is_integer(src) and src.bit_width <= (16 if dst == pa.float32() else 32)
    if pa.types.is_boolean(dst):
        return pa.types.is_boolean(src)
    if pa.types.is_string(dst):
        return pa.types.is_string(src) or pa.types.is_large_string(src)
    return False


def plan_columns(path: Path, schema: pa.Schema, target: TargetTable, ignore_extra: bool) -> ColumnPlan:
    """Match a file's columns to the target table, or raise a one-line ValidationError.

    Columns dpdb derives from others (etl/rubin_columns.py: ``ccdVisitId`` from ``visit`` and
    ``detector``, MJDs from TAI timestamps) count as present; their sources count as held.
    """
    by_lower: dict[str, str] = {}
    for name in schema.names:
        if name.lower() in by_lower:
            raise ValidationError(f"{path}: columns {by_lower[name.lower()]} and {name} differ only in case")
        by_lower[name.lower()] = name
    steps = plan_steps(path, by_lower, target)
    derived = {s.output.lower() for s in steps if s.given is None}
    held = {src.lower() for s in steps for src in s.sources}
    missing = [
        c.canonical
        for c in target.columns.values()
        if not c.nullable and c.name not in by_lower and c.name not in derived
    ]
    if missing:
        raise ValidationError(
            f"{path}: missing required column {missing[0]} of {target.canonical}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    extra = [name for low, name in by_lower.items() if low not in target.columns and low not in held]
    if extra and not ignore_extra:
        raise ValidationError(
            f"{path}: {_name_columns(extra, 'unknown column')} for {target.canonical}, which dpdb does not "
            f"hold; use --ignore-extra to skip {'it' if len(extra) == 1 else 'them'}"
        )
    mapping = {}
    for low, name in by_lower.items():
        col = target.columns.get(low)
        if col is None:
            continue
        src = schema.field(name).type
        if not _castable(src, col.arrow_type):
            raise ValidationError(
                f"{path}: column {name} has type {src}, which cannot load into "
                f"{target.canonical}.{col.canonical} ({col.arrow_type}) without loss"
            )
        mapping[name] = col
    for step in steps:
        if step.given is None:
            mapping[step.output] = target.columns[step.output.lower()]
    return ColumnPlan(path, mapping, tuple(extra), steps)


def _name_columns(names: list[str], what: str, limit: int = 40) -> str:
    """``unknown column a`` / ``3 unknown columns a, b, c`` (the first ``limit`` named, then a count)."""
    if len(names) == 1:
        return f"{what} {names[0]}"
    shown = ", ".join(names[:limit])
    if len(names) <= limit:
        return f"{len(names)} {what}s {shown}"
    return f"{len(names)} {what}s {shown} and {len(names) - limit} more (--dry-run --ignore-extra lists all)"


def prepare_batch(
    batch: pa.RecordBatch,
    plan: ColumnPlan,
    target: TargetTable,
    row0: int,
    ccd_visits: CcdVisitLookup | None = None,
) -> pa.RecordBatch:
    """Check a batch's values and return it renamed and cast to the target's exact types.

    NaN in a nullable floating-point column becomes NULL (so SQL aggregates are
    not poisoned); NaN or NULL in a non-nullable column is an error. Derived
    columns are computed first (``ccd_visits``: where ccdVisitIds are looked up).
    """
    if plan.steps:
        batch = apply_steps(batch, plan.steps, plan.path, row0, ccd_visits)
    arrays, fields = [], []
    for name, col in plan.mapping.items():
        arr = batch.column(name)
        where = f"{plan.path}: column {name}"
        arr = _cast(arr, col, where, row0)
        if pa.types.is_floating(col.arrow_type):
            nan = pc.is_nan(arr)
            if pc.any(nan).as_py():
                if not col.nullable:
                    raise ValidationError(f"{where}, row {row0 + _first(nan)}: NaN in a non-nullable column")
                arr = pc.if_else(nan, pa.scalar(None, col.arrow_type), arr)
        if not col.nullable and arr.null_count:
            raise ValidationError(
                f"{where}, row {row0 + _first(arr.is_null())}: null in a non-nullable column"
            )
        if col.length is not None and len(arr):
            too_long = pc.greater(pc.utf8_length(arr), col.length)
            if pc.any(too_long).as_py():
                raise ValidationError(
                    f"{where}, row {row0 + _first(too_long)}: value longer than {col.length} characters"
                )
        arrays.append(arr)
        fields.append(pa.field(col.name, col.arrow_type, nullable=col.nullable))
    out = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
    if target.position:
        _check_position(out, plan, target, row0)
    return out


def _cast(arr: pa.Array, col: TargetColumn, where: str, row0: int) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if arr.type == col.arrow_type:
        return arr
    if pa.types.is_integer(col.arrow_type) and pa.types.is_integer(arr.type):
        info = np.iinfo(col.arrow_type.to_pandas_dtype())
        bad = pc.or_(pc.less(arr, info.min), pc.greater(arr, info.max))
        if pc.any(bad).as_py():
            i = _first(bad)
            span = pc.min_max(arr)
            raise ValidationError(
                f"{where}, row {row0 + i}: value {arr[i].as_py()} out of range for "
                f"{col.canonical} ({col.arrow_type}), which holds {info.min}..{info.max}; rows "
                f"{row0}..{row0 + len(arr) - 1} span {span['min'].as_py()}..{span['max'].as_py()}"
            )
    if col.arrow_type == pa.float32() and pa.types.is_floating(arr.type) and arr.type.bit_width > 32:
        # Rounding to REAL is what the schema asks for; overflowing to +-inf is not.
        finite = pc.is_finite(arr)
        big = pc.and_(finite, pc.greater(pc.abs(arr), np.finfo(np.float32).max))
        if pc.any(big).as_py():
            i = _first(big)
            raise ValidationError(
                f"{where}, row {row0 + i}: value {arr[i].as_py()!r} out of range for "
                f"{col.canonical} (REAL, at most {float(np.finfo(np.float32).max):.7g} in magnitude)"
            )
    try:
        return pc.cast(arr, col.arrow_type, safe=not pa.types.is_floating(col.arrow_type))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValidationError(
            f"{where}: cannot convert to {col.arrow_type} ({first_line(e)})"
        ) from e


def _first(mask: pa.Array) -> int:
    """Index of the first true value of a boolean array (nulls count as false)."""
    return int(np.flatnonzero(mask.fill_null(False).to_numpy(zero_copy_only=False))[0])


def _check_position(batch: pa.RecordBatch, plan: ColumnPlan, target: TargetTable, row0: int) -> None:
    if target.position is None:
        return
    ra_name, dec_name = target.position
    file_names = {col.name: name for name, col in plan.mapping.items()}
    for name, lo, hi in ((ra_name, 0.0, 360.0), (dec_name, -90.0, 90.0)):
        if name not in batch.schema.names:
            continue
        arr = batch.column(name)
        bad = pc.or_(pc.less(arr, lo), pc.greater(arr, hi))
        if pc.any(bad).as_py():
            i = _first(bad)
            raise ValidationError(
                f"{plan.path}: column {file_names[name]}, row {row0 + i}: "
                f"{arr[i].as_py()} outside [{lo:g}, {hi:g}] degrees"
            )


def check_unique(
    path: Path, target: TargetTable, keys: list[list[np.ndarray]]
) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """Refuse a file whose primary key repeats (``keys``: per batch, one array per key column).

    Returns the sort order of the file's rows by key and the sorted key columns (a release's key
    map is filled with them in key order, dpdb/lifecycle/bulk.py), or None for a file without rows.
    """
    if not keys:
        return None
    columns = [np.concatenate([batch[i] for batch in keys]) for i in range(len(target.primary_key))]
    order = np.lexsort(columns[::-1])
    sorted_cols = [c[order] for c in columns]
    same = np.ones(len(order) - 1, dtype=bool) if len(order) > 1 else np.zeros(0, dtype=bool)
    for c in sorted_cols:
        same &= c[1:] == c[:-1]
    if same.any():
        k = int(np.flatnonzero(same)[0])
        first, second = sorted((int(order[k]), int(order[k + 1])))
        key = ", ".join(
            f"{target.columns[n].canonical}={c[k]}"
            for n, c in zip(target.primary_key, sorted_cols, strict=True)
        )
        raise ValidationError(f"{path}: duplicate primary key ({key}) in rows {first} and {second}")
    return order, sorted_cols
