"""Versioned table definitions: felis YAML under ``schema/vN/`` and the DDL made from it.

The felis files are the only source of table definitions. This module reads
them, adds the implementation-only columns (pixel index, load id) in one
function, and turns a catalog (prompt or a release) into PostgreSQL DDL:
lower-case identifiers, HEALPix range partitions, q3c indexes, comments that
carry the descriptions and units.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml
from felis.datamodel import Column as FelisColumn
from felis.datamodel import Schema as FelisSchema
from felis.metadata import get_datatype_with_variants
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import BigInteger, Column, MetaData, PrimaryKeyConstraint, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable
from sqlalchemy.types import TypeEngine

from .errors import SchemaError
from .healpix import partition_bounds
from .tables import LOAD_ID_COLUMN, PIXEL_COLUMN, layout, tables_for

__all__ = [
    "CATALOG_SCHEMA",
    "META_SCHEMA",
    "versions",
    "latest_version",
    "load_schema",
    "check_version",
    "canonical_names",
    "TableSpec",
    "table_specs",
    "catalog_ddl",
    "partition_name",
    "meta_ddl",
    "added_columns_ddl",
    "position_columns",
    "q3c_index_ddl",
    "VALIDITY_END",
]

log = logging.getLogger(__name__)

CATALOG_SCHEMA = "dpdb"
"""felis file (``dpdb.yaml``) with the catalog tables."""
META_SCHEMA = "meta"
"""felis file (``meta.yaml``) with the ``dpdb_meta`` bookkeeping tables."""

_DIALECT = postgresql.dialect()
_ARRAY_TYPES = {
    "REAL[]": postgresql.REAL,
    "DOUBLE PRECISION[]": postgresql.DOUBLE_PRECISION,
    "BIGINT[]": postgresql.BIGINT,
    "INTEGER[]": postgresql.INTEGER,
}


def _schema_root() -> Path:
    return Path(str(resources.files("dpdb.schemas")))


def versions() -> list[int]:
    """Schema versions shipped with this code, ascending."""
    found = []
    for path in _schema_root().glob("v*"):
        if path.is_dir() and path.name[1:].isdigit():
            found.append(int(path.name[1:]))
    return sorted(found)


def latest_version() -> int:
    return versions()[-1]


def check_version(version: int) -> int:
    """Return ``version`` if this code ships it, else raise a SchemaError naming the known ones."""
    known = versions()
    if version not in known:
        raise SchemaError(f"unknown schema version {version} (known: {', '.join(map(str, known))})")
    return version


@functools.cache
def load_schema(version: int, which: str = CATALOG_SCHEMA) -> FelisSchema:
    """The validated felis schema ``schema/v<version>/<which>.yaml``."""
    check_version(version)
    path = _schema_root() / f"v{version}" / f"{which}.yaml"
    return load_felis_file(path)


def load_felis_file(path: Path) -> FelisSchema:
    """Parse and validate one felis file; any problem is a one-line SchemaError naming it."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SchemaError(f"{path}: cannot read ({e.strerror})") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SchemaError(f"{path}:{where} not valid YAML ({getattr(e, 'problem', e)})") from e
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: not a felis schema (top level is not a mapping)")
    try:
        return FelisSchema.model_validate(data)
    except PydanticValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        raise SchemaError(f"{path}: invalid felis schema at {loc or 'top level'}: {err['msg']}") from e
    except (ValueError, TypeError, KeyError) as e:  # felis validators raise these directly
        raise SchemaError(f"{path}: invalid felis schema: {str(e).splitlines()[0]}") from e


def canonical_names(version: int) -> dict[str, dict[str, str]]:
    """Map lower-case table name -> {lower-case column -> canonical camelCase column}."""
    schema = load_schema(version)
    return {t.name.lower(): {c.name.lower(): c.name for c in t.columns} for t in schema.tables}


def column_type(col: FelisColumn) -> TypeEngine:
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
    return get_datatype_with_variants(col)


def position_columns(table: FelisSchema | object) -> tuple[str, str] | None:
    """Canonical names of the principal (ra, dec) columns, marked by the ``;meta.main`` UCDs."""
    ra = dec = None
    for col in table.columns:  # type: ignore[attr-defined]
        ucd = (col.ivoa_ucd or "").lower().replace(" ", "")
        if ucd == "pos.eq.ra;meta.main":
            ra = col.name
        elif ucd == "pos.eq.dec;meta.main":
            dec = col.name
    return (ra, dec) if ra and dec else None


@dataclass(frozen=True)
class TableSpec:
    """A catalog table as built in PostgreSQL."""

    name: str  # canonical
    table: Table  # SQLAlchemy table (lower-case identifiers, implementation columns added)
    position: tuple[str, str] | None  # canonical ra/dec
    partitioned: bool
    versioned: bool  # has validityEndMjdTai: rows are versions, a current one per ID


def _implementation_columns(partitioned: bool) -> list[Column]:
    """Columns that exist only in the implementation (like dax_apdb's pixelId)."""
    cols = [
        Column(LOAD_ID_COLUMN, BigInteger, nullable=True, comment="load_manifest.load_id of the source file")
    ]
    if partitioned:
        cols.insert(
            0,
            Column(
                PIXEL_COLUMN,
                BigInteger,
                nullable=False,
                comment="HEALPix nested order-29 pixel of the row (of its parent object for measurements)",
            ),
        )
    return cols


def _comment(col: FelisColumn) -> str | None:
    text = " ".join((col.description or "").split())
    unit = col.fits_tunit or col.ivoa_unit
    if unit:
        text = f"{text} [{unit}]" if text else f"[{unit}]"
    return text or None


def table_specs(db_schema: str, version: int, kind: str) -> list[TableSpec]:
    """SQLAlchemy tables of a catalog schema ``db_schema`` of ``kind`` at schema ``version``."""
    felis = {t.name: t for t in load_schema(version).tables}
    metadata = MetaData(schema=db_schema)
    specs = []
    for name in tables_for(kind):
        ftable = felis.get(name)
        lay = layout(name)
        if ftable is None:
            if version < lay.since:
                continue
            raise SchemaError(f"schema v{version} has no table {name}")
        columns = [
            Column(c.name.lower(), column_type(c), nullable=c.nullable, comment=_comment(c))
            for c in ftable.columns
        ]
        columns += _implementation_columns(lay.partitioned)
        pk_cols = [c.name.lower() for c in _primary_key(ftable)]
        if lay.partitioned:
            pk_cols.append(PIXEL_COLUMN)
        kwargs: dict[str, object] = {}
        if lay.partitioned:
            kwargs["postgresql_partition_by"] = f"RANGE ({PIXEL_COLUMN})"
        table = Table(
            name.lower(),
            metadata,
            *columns,
            PrimaryKeyConstraint(*pk_cols, name=f"{name.lower()}_pkey"),
            comment=" ".join((ftable.description or "").split()) or None,
            **kwargs,
        )
        names = {c.name for c in ftable.columns}
        specs.append(
            TableSpec(name, table, position_columns(ftable), lay.partitioned, "validityEndMjdTai" in names)
        )
    return specs


def _primary_key(ftable: object) -> list[FelisColumn]:
    by_id = {c.id: c for c in ftable.columns}  # type: ignore[attr-defined]
    pk = ftable.primary_key  # type: ignore[attr-defined]
    ids = [pk] if isinstance(pk, str) else list(pk or [])
    if not ids:
        raise SchemaError(f"table {ftable.name} has no primaryKey")  # type: ignore[attr-defined]
    return [by_id[i] for i in ids]


def _q(ident: str) -> str:
    """Quote an identifier for generated DDL (names come from the schema, not from users)."""
    return _DIALECT.identifier_preparer.quote(ident)


def catalog_ddl(
    db_schema: str,
    version: int,
    kind: str,
    partition_order: int,
    *,
    partitions: Collection[int] | None = None,
    only_partitioned: bool = False,
) -> list[str]:
    """Every statement that creates catalog ``db_schema`` (tables, partitions, indexes, comments).

    ``partitions`` limits the HEALPix partitions created (None: all of them) and
    ``only_partitioned`` the tables to the partitioned ones: what a shard holds
    of a sharded release (dpdb/shards/placement.py).
    """
    statements = [f"CREATE SCHEMA {_q(db_schema)}"]
    for spec in table_specs(db_schema, version, kind):
        if only_partitioned and not spec.partitioned:
            continue
        statements += _table_ddl(spec, partition_order, partitions)
    return statements


def partition_name(table: str, partition_order: int, number: int) -> str:
    """Name of partition ``number`` of ``table`` (lower-case) at ``partition_order``: object_hpx1_07."""
    width = len(str(12 * 4**partition_order - 1))
    return f"{table}_hpx{partition_order}_{number:0{width}d}"


def _table_ddl(spec: TableSpec, partition_order: int, partitions: Collection[int] | None = None) -> list[str]:
    table = spec.table
    full = f"{_q(table.schema)}.{_q(table.name)}"  # type: ignore[arg-type]
    out = [str(CreateTable(table).compile(dialect=_DIALECT)).strip()]
    if spec.partitioned:
        for n, lo, hi in partition_bounds(partition_order):
            if partitions is not None and n not in partitions:
                continue
            part = partition_name(table.name, partition_order, n)
            out.append(
                f"CREATE TABLE {_q(table.schema)}.{_q(part)} PARTITION OF {full} "  # type: ignore[arg-type]
                f"FOR VALUES FROM ({lo}) TO ({hi})"
            )
    if spec.position:
        ra, dec = (c.lower() for c in spec.position)
        out.append(q3c_index_ddl(spec))
        if spec.versioned:
            out.append(
                f"CREATE INDEX {_q(table.name + '_current_q3c')} ON {full} "
                f"(q3c_ang2ipix({_q(ra)}, {_q(dec)})) WHERE validityendmjdtai IS NULL"
            )
    if spec.versioned:
        id_col = table.primary_key.columns.values()[0].name
        out.append(
            f"CREATE INDEX {_q(table.name + '_current_id')} ON {full} ({_q(id_col)}) "
            "WHERE validityendmjdtai IS NULL"
        )
    lay = layout(spec.name)
    if lay.parent_key:
        out.append(
            f"CREATE INDEX {_q(table.name + '_' + lay.parent_key.lower())} ON {full} "
            f"({_q(lay.parent_key.lower())})"
        )
    out += _comment_ddl(table)
    return out


VALIDITY_END = "coalesce(validityendmjdtai, 'Infinity'::double precision)"
"""The end of a version's validity as indexed (open = infinity); as-of reads use this exact expression."""


def q3c_index_ddl(spec: TableSpec) -> str:
    """The positional index of a table with a position.

    On versioned tables it also carries the validity interval, so a cone search
    as of an instant skips the versions not valid then inside the index,
    without visiting their rows.
    """
    table = spec.table
    full = f"{_q(table.schema)}.{_q(table.name)}"  # type: ignore[arg-type]
    ra, dec = (_q(c.lower()) for c in spec.position)  # type: ignore[union-attr]
    keys = f"q3c_ang2ipix({ra}, {dec})"
    if spec.versioned:
        keys += f", validitystartmjdtai, ({VALIDITY_END})"
    return f"CREATE INDEX {_q(table.name + '_q3c')} ON {full} ({keys})"


def _comment_ddl(table: Table) -> list[str]:
    full = f"{_q(table.schema)}.{_q(table.name)}"  # type: ignore[arg-type]
    out = []
    if table.comment:
        out.append(f"COMMENT ON TABLE {full} IS {_literal(table.comment)}")
    for col in table.columns:
        if col.comment:
            out.append(f"COMMENT ON COLUMN {full}.{_q(col.name)} IS {_literal(col.comment)}")
    return out


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def meta_ddl(version: int, since: int | None = None) -> list[str]:
    """Statements that create the ``dpdb_meta`` bookkeeping schema at ``version``.

    With ``since``, only what ``version`` adds to schema ``since``: new tables,
    and new nullable columns of existing ones (append-only, as for catalogs).
    """
    metadata = MetaData(schema="dpdb_meta")
    out = ["CREATE SCHEMA IF NOT EXISTS dpdb_meta"]
    existing = (
        {t.name: {c.name for c in t.columns} for t in load_schema(since, META_SCHEMA).tables} if since else {}
    )
    for ftable in load_schema(version, META_SCHEMA).tables:
        if ftable.name in existing:
            out += _added_meta_columns(ftable, existing[ftable.name], version)
            continue
        cols = [
            Column(
                c.name.lower(),
                column_type(c),
                nullable=c.nullable,
                autoincrement=bool(c.autoincrement),
                comment=_comment(c),
            )
            for c in ftable.columns
        ]
        pk = [c.name.lower() for c in _primary_key(ftable)]
        table = Table(
            ftable.name.lower(), metadata, *cols, PrimaryKeyConstraint(*pk), comment=ftable.description
        )
        out.append(str(CreateTable(table).compile(dialect=_DIALECT)).strip())
        out += _comment_ddl(table)
    return out


def _added_meta_columns(ftable: object, before: set[str], version: int) -> list[str]:
    full = f"dpdb_meta.{_q(ftable.name.lower())}"  # type: ignore[attr-defined]
    out = []
    for c in ftable.columns:  # type: ignore[attr-defined]
        if c.name in before:
            continue
        if not c.nullable:
            raise SchemaError(f"schema v{version} adds non-nullable column dpdb_meta.{ftable.name}.{c.name}")  # type: ignore[attr-defined]
        out.append(
            f"ALTER TABLE {full} ADD COLUMN {_q(c.name.lower())} {column_type(c).compile(dialect=_DIALECT)}"
        )
        if _comment(c):
            out.append(f"COMMENT ON COLUMN {full}.{_q(c.name.lower())} IS {_literal(_comment(c))}")  # type: ignore[arg-type]
    return out


def added_columns_ddl(db_schema: str, kind: str, old: int, new: int, partition_order: int) -> list[str]:
    """ALTER statements that bring catalog ``db_schema`` from schema ``old`` to ``new``.

    Schemas are append-only, so the difference is new nullable columns (and new
    tables, which are created whole).
    """
    old_specs = {s.name: s for s in table_specs(db_schema, old, kind)}
    out = []
    for spec in table_specs(db_schema, new, kind):
        before = old_specs.get(spec.name)
        if before is None:
            out += _table_ddl(spec, partition_order)
            continue
        full = f"{_q(db_schema)}.{_q(spec.table.name)}"
        for col in spec.table.columns:
            if col.name not in before.table.columns:
                if not col.nullable:
                    raise SchemaError(f"schema v{new} adds non-nullable column {spec.name}.{col.name}")
                out.append(
                    f"ALTER TABLE {full} ADD COLUMN {_q(col.name)} {col.type.compile(dialect=_DIALECT)}"
                )
                if col.comment:
                    out.append(f"COMMENT ON COLUMN {full}.{_q(col.name)} IS {_literal(col.comment)}")
    return out
