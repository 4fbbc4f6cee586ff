"""One object per catalog table: its felis definition, dpdb's layout of it, its names, position and
Arrow schema (docs/architecture.md, decisions 3 and 6).

Everything that needs to know a table asks :func:`catalog_table`: the DDL
generator (:mod:`dpdb.model.ddl`), the ETL (``etl/validate.py``), exports,
provenance, plots and the simulators. Nothing re-derives positions (they come
from the ``;meta.main`` UCDs) or canonical names by hand.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from felis.datamodel import Column as FelisColumn
from felis.metadata import get_datatype_with_variants
from sqlalchemy import types as satypes
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

from dpdb.errors import SchemaError

from .felis import FelisTable, latest_version, load_felis, position_columns
from .layout import TableLayout, layout, tables_for

__all__ = [
    "ColumnModel",
    "CatalogTable",
    "catalog_table",
    "catalog_tables",
    "all_tables",
    "canonical_names",
    "column_type",
    "arrow_type",
]

_ARRAY_TYPES = {
    "REAL[]": postgresql.REAL,
    "DOUBLE PRECISION[]": postgresql.DOUBLE_PRECISION,
    "BIGINT[]": postgresql.BIGINT,
    "INTEGER[]": postgresql.INTEGER,
}


def column_type(col: FelisColumn) -> TypeEngine[Any]:
    """PostgreSQL type of a felis column (arrays and timestamptz via ``postgresql:datatype``)."""
    override = (col.postgresql_datatype or "").strip().upper()
    if override in _ARRAY_TYPES:
        return postgresql.ARRAY(_ARRAY_TYPES[override])
    if override == "TIMESTAMPTZ":
        return postgresql.TIMESTAMP(timezone=True)
    if col.datatype.value == "float":  # felis' float renders as FLOAT (8 bytes); the DPDD means 32-bit
        return postgresql.REAL()
    if col.datatype.value == "char":  # CHAR(n) pads with blanks; values must round-trip unchanged
        return postgresql.VARCHAR(col.length)
    result: TypeEngine[Any] = get_datatype_with_variants(col)
    return result


def arrow_type(sa_type: TypeEngine[Any]) -> pa.DataType:
    """Arrow type whose binary COPY encoding matches the PostgreSQL column type."""
    if isinstance(sa_type, postgresql.ARRAY):
        return pa.list_(arrow_type(sa_type.item_type))
    if isinstance(sa_type, satypes.Boolean):
        return pa.bool_()
    if isinstance(sa_type, satypes.SmallInteger):
        return pa.int16()
    if isinstance(sa_type, satypes.BigInteger):
        return pa.int64()
    if isinstance(sa_type, satypes.Integer):
        return pa.int32()
    if isinstance(sa_type, postgresql.REAL):
        return pa.float32()
    if isinstance(sa_type, satypes.Float | satypes.Double | satypes.Numeric):
        return pa.float64()
    if isinstance(sa_type, satypes.String):
        return pa.string()
    if isinstance(sa_type, satypes.DateTime):
        return pa.timestamp("us", tz="UTC")
    raise TypeError(f"no Arrow type for {sa_type!r}")


@dataclass(frozen=True)
class ColumnModel:
    """A column as dpdb builds, loads and reads it."""

    canonical: str
    """The felis (camelCase) name users see."""
    name: str
    """The database (lower-case) name."""
    sql_type: TypeEngine[Any]
    arrow_type: pa.DataType
    nullable: bool
    length: int | None
    """Maximum string length, if any."""
    unit: str | None
    ucd: str | None
    description: str | None
    felis: FelisColumn


@dataclass(frozen=True)
class CatalogTable:
    """A catalog table at one schema version: the felis table, its layout and what follows from them.

    Column and key names are database (lower-case) names unless they say ``canonical``.
    """

    name: str
    """Canonical (felis) table name."""
    version: int
    felis: FelisTable
    layout: TableLayout
    columns: tuple[ColumnModel, ...]
    """The felis columns, in table order (without the implementation columns the DDL adds)."""
    primary_key: tuple[str, ...]
    canonical_position: tuple[str, str] | None
    """Canonical names of the principal ra, dec (``pos.eq.ra;meta.main`` / ``pos.eq.dec;meta.main``)."""

    @property
    def db_name(self) -> str:
        return self.name.lower()

    @property
    def position(self) -> tuple[str, str] | None:
        """Database names of the principal ra, dec columns."""
        pos = self.canonical_position
        return (pos[0].lower(), pos[1].lower()) if pos else None

    @property
    def partitioned(self) -> bool:
        return self.layout.partitioned

    @property
    def parent(self) -> str | None:
        """Canonical name of the table whose pixel the rows take (None: their own position)."""
        return self.layout.parent

    @property
    def parent_key(self) -> str | None:
        """Database name of the column holding the parent's ID."""
        return self.layout.parent_key.lower() if self.layout.parent_key else None

    @property
    def versioned(self) -> bool:
        """Rows are versions with a validity interval (a current one per ID)."""
        return any(c.canonical == "validityEndMjdTai" for c in self.columns)

    @property
    def description(self) -> str | None:
        return " ".join((self.felis.description or "").split()) or None

    def column(self, name: str) -> ColumnModel:
        """A column by database or canonical name, matched case-insensitively."""
        low = name.lower()
        for c in self.columns:
            if c.name == low:
                return c
        raise KeyError(f"{self.name} has no column {name}")

    @functools.cached_property
    def canonical_names(self) -> dict[str, str]:
        """Database name -> canonical name of every column."""
        return {c.name: c.canonical for c in self.columns}

    def arrow_schema(self) -> pa.Schema:
        """The table's Arrow schema with canonical names (as exports and queries return it)."""
        return pa.schema(pa.field(c.canonical, c.arrow_type, nullable=c.nullable) for c in self.columns)


def _column(col: FelisColumn) -> ColumnModel:
    sql_type = column_type(col)
    return ColumnModel(
        canonical=col.name,
        name=col.name.lower(),
        sql_type=sql_type,
        arrow_type=arrow_type(sql_type),
        nullable=bool(col.nullable),
        length=getattr(sql_type, "length", None),
        unit=col.fits_tunit or col.ivoa_unit,
        ucd=col.ivoa_ucd,
        description=col.description,
        felis=col,
    )


def primary_key(ftable: FelisTable) -> list[FelisColumn]:
    """The felis columns of a table's primary key, in key order."""
    by_id = {c.id: c for c in ftable.columns}
    pk = ftable.primary_key
    ids = [pk] if isinstance(pk, str) else list(pk or [])
    if not ids:
        raise SchemaError(f"table {ftable.name} has no primaryKey")
    return [by_id[i] for i in ids]


@functools.cache
def _tables(version: int) -> dict[str, CatalogTable]:
    out = {}
    for ftable in load_felis(version).tables:
        out[ftable.name.lower()] = CatalogTable(
            name=ftable.name,
            version=version,
            felis=ftable,
            layout=layout(ftable.name),
            columns=tuple(_column(c) for c in ftable.columns),
            primary_key=tuple(c.name.lower() for c in primary_key(ftable)),
            canonical_position=position_columns(ftable),
        )
    return out


def catalog_table(name: str, version: int | None = None) -> CatalogTable:
    """The model of table ``name`` (matched case-insensitively) at schema ``version`` (default: newest).

    Raises
    ------
    SchemaError
        No table of that name exists at that version.
    """
    v = latest_version() if version is None else version
    found = _tables(v).get(name.lower())
    if found is None:
        raise SchemaError(f"schema v{v} has no table {name}")
    return found


def canonical_names(version: int) -> dict[str, dict[str, str]]:
    """Lower-case table name -> {lower-case column -> canonical camelCase column}, every table."""
    return {name: dict(table.canonical_names) for name, table in _tables(version).items()}


def all_tables(version: int) -> list[CatalogTable]:
    """Every catalog table at schema ``version``, in felis order."""
    return list(_tables(version).values())


def catalog_tables(kind: str, version: int) -> list[CatalogTable]:
    """The tables of a catalog of ``kind`` ('prompt' or 'release') at schema ``version``, in layout order
    (parents before their children); tables added after ``version`` are left out."""
    out = []
    for name in tables_for(kind):
        if version < layout(name).since:
            continue
        out.append(catalog_table(name, version))
    return out
