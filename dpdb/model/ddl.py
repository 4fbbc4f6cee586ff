"""DDL generated from the felis files: catalogs (prompt, releases) and the ``dpdb_meta`` bookkeeping.

The felis files are the only source of table definitions. This module adds the
implementation-only columns (pixel index, load id) in one function and turns a
catalog (prompt or a release) into PostgreSQL DDL: lower-case identifiers,
HEALPix range partitions, q3c indexes, comments that carry the descriptions and
units. Every function takes the schema version explicitly, so a migration
revision that names its version gets the same DDL forever
(``tests/test_ddl_frozen.py`` holds it to that).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from felis.datamodel import CheckConstraint as FelisCheck
from felis.datamodel import Column as FelisColumn
from sqlalchemy import BigInteger, CheckConstraint, Column, MetaData, PrimaryKeyConstraint, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from dpdb.errors import SchemaError
from dpdb.healpix import partition_bounds

from .felis import META_FELIS, FelisTable, load_felis
from .layout import LOAD_ID_COLUMN, PIXEL_COLUMN, layout
from .table import CatalogTable, catalog_tables, column_type, primary_key

__all__ = [
    "column_type",
    "TableSpec",
    "table_specs",
    "catalog_ddl",
    "partition_name",
    "table_ddl",
    "meta_ddl",
    "added_columns_ddl",
    "q3c_index_ddl",
    "VALIDITY_END",
]

log = logging.getLogger(__name__)

# SQLAlchemy's dialect classes carry no annotations, so strict mypy calls their constructor untyped.
_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it unannotated


@dataclass(frozen=True)
class TableSpec:
    """A catalog table as built in PostgreSQL: its model, in catalog ``catalog``, as a SQLAlchemy table
    (lower-case identifiers, implementation columns added)."""

    model: CatalogTable
    catalog: str
    table: Table

    @property
    def name(self) -> str:
        """Canonical table name."""
        return self.model.name

    @property
    def position(self) -> tuple[str, str] | None:
        """Canonical names of the principal ra, dec."""
        return self.model.canonical_position

    @property
    def partitioned(self) -> bool:
        return self.model.partitioned

    @property
    def versioned(self) -> bool:
        return self.model.versioned

    @property
    def full_name(self) -> str:
        """``"catalog"."table"``, quoted."""
        return f"{_q(self.catalog)}.{_q(self.table.name)}"


def _implementation_columns(partitioned: bool) -> list[Column[Any]]:
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


def table_specs(catalog: str, version: int, kind: str) -> list[TableSpec]:
    """SQLAlchemy tables of catalog ``catalog`` of ``kind`` at schema ``version``."""
    metadata = MetaData(schema=catalog)
    specs = []
    for model in catalog_tables(kind, version):
        columns = [
            Column(c.name, c.sql_type, nullable=c.nullable, comment=_comment(c.felis)) for c in model.columns
        ]
        columns += _implementation_columns(model.partitioned)
        pk_cols = list(model.primary_key)
        if model.partitioned:
            pk_cols.append(PIXEL_COLUMN)
        kwargs: dict[str, Any] = {}
        if model.partitioned:
            kwargs["postgresql_partition_by"] = f"RANGE ({PIXEL_COLUMN})"
        table = Table(
            model.db_name,
            metadata,
            *columns,
            PrimaryKeyConstraint(*pk_cols, name=f"{model.db_name}_pkey"),
            comment=model.description,
            **kwargs,
        )
        specs.append(TableSpec(model, catalog, table))
    return specs


def _q(ident: str) -> str:
    """Quote an identifier for generated DDL (names come from the schema, not from users)."""
    return _DIALECT.identifier_preparer.quote(ident)


def catalog_ddl(
    catalog: str,
    version: int,
    kind: str,
    partition_order: int,
    *,
    partitions: Collection[int] | None = None,
    only_partitioned: bool = False,
) -> list[str]:
    """Every statement that creates catalog ``catalog`` (tables, partitions, indexes, comments).

    ``partitions`` limits the HEALPix partitions created (None: all of them) and
    ``only_partitioned`` the tables to the partitioned ones: what a shard holds
    of a sharded release (dpdb/shards/placement.py).
    """
    statements = [f"CREATE SCHEMA {_q(catalog)}"]
    for spec in table_specs(catalog, version, kind):
        if only_partitioned and not spec.partitioned:
            continue
        statements += _table_ddl(spec, partition_order, partitions)
    return statements


def partition_name(table: str, partition_order: int, number: int) -> str:
    """Name of partition ``number`` of ``table`` (lower-case) at ``partition_order``: object_hpx1_07."""
    width = len(str(12 * 4**partition_order - 1))
    return f"{table}_hpx{partition_order}_{number:0{width}d}"


def table_ddl(spec: TableSpec, partition_order: int, partitions: Collection[int] | None = None) -> list[str]:
    """The statements that create one table (its partitions limited to ``partitions``), indexes, comments."""
    return _table_ddl(spec, partition_order, partitions)


def _table_ddl(spec: TableSpec, partition_order: int, partitions: Collection[int] | None = None) -> list[str]:
    table = spec.table
    full = spec.full_name
    out = [str(CreateTable(table).compile(dialect=_DIALECT)).strip()]
    if spec.partitioned:
        for n, lo, hi in partition_bounds(partition_order):
            if partitions is not None and n not in partitions:
                continue
            part = partition_name(table.name, partition_order, n)
            out.append(
                f"CREATE TABLE {_q(spec.catalog)}.{_q(part)} PARTITION OF {full} "
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
    full = spec.full_name
    if spec.model.position is None:
        raise SchemaError(f"table {spec.name} has no position to index")
    ra, dec = (_q(c) for c in spec.model.position)
    keys = f"q3c_ang2ipix({ra}, {dec})"
    if spec.versioned:
        keys += f", validitystartmjdtai, ({VALIDITY_END})"
    return f"CREATE INDEX {_q(table.name + '_q3c')} ON {full} ({keys})"


def _comment_ddl(table: Table) -> list[str]:
    full = f"{_q(table.schema or 'public')}.{_q(table.name)}"
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
    new nullable columns of existing ones (append-only, as for catalogs) and new
    CHECK constraints (felis ``Check`` constraints).
    """
    metadata = MetaData(schema="dpdb_meta")
    out = ["CREATE SCHEMA IF NOT EXISTS dpdb_meta"]
    before = {t.name: t for t in load_felis(since, META_FELIS).tables} if since else {}
    for ftable in load_felis(version, META_FELIS).tables:
        old = before.get(ftable.name)
        if old is not None:
            out += _added_meta_columns(ftable, {c.name for c in old.columns}, version)
            out += _added_checks(ftable, {c.name for c in old.constraints})
            out += _meta_indexes(ftable, {i.name for i in old.indexes})
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
        pk = [c.name.lower() for c in primary_key(ftable)]
        checks = [
            CheckConstraint(_check_expression(c), name=c.name) for c in ftable.constraints if _is_check(c)
        ]
        table = Table(
            ftable.name.lower(), metadata, *cols, PrimaryKeyConstraint(*pk), *checks,
            comment=ftable.description,
        )  # fmt: skip
        out.append(str(CreateTable(table).compile(dialect=_DIALECT)).strip())
        out += _comment_ddl(table)
        out += _meta_indexes(ftable, set())
    return out


def _meta_indexes(ftable: FelisTable, before: set[str]) -> list[str]:
    """CREATE INDEX of the felis indexes of a bookkeeping table that are not in ``before`` (names)."""
    names = {c.id: c.name.lower() for c in ftable.columns}
    full = f"dpdb_meta.{_q(ftable.name.lower())}"
    return [
        f"CREATE INDEX {_q(i.name)} ON {full} ({', '.join(_q(names[ref]) for ref in i.columns or [])})"
        for i in ftable.indexes
        if i.name not in before
    ]


def _is_check(constraint: object) -> bool:
    return isinstance(constraint, FelisCheck)


def _check_expression(constraint: object) -> str:
    assert isinstance(constraint, FelisCheck)
    return " ".join(constraint.expression.split())


def _added_checks(ftable: FelisTable, before: set[str]) -> list[str]:
    """ALTER TABLE ... ADD CONSTRAINT of the CHECK constraints new to ``ftable``."""
    full = f"dpdb_meta.{_q(ftable.name.lower())}"
    return [
        f"ALTER TABLE {full} ADD CONSTRAINT {_q(c.name)} CHECK ({_check_expression(c)})"
        for c in ftable.constraints
        if _is_check(c) and c.name not in before
    ]


def _added_meta_columns(ftable: FelisTable, before: set[str], version: int) -> list[str]:
    full = f"dpdb_meta.{_q(ftable.name.lower())}"
    out = []
    for c in ftable.columns:
        if c.name in before:
            continue
        if not c.nullable:
            raise SchemaError(f"schema v{version} adds non-nullable column dpdb_meta.{ftable.name}.{c.name}")
        out.append(
            f"ALTER TABLE {full} ADD COLUMN {_q(c.name.lower())} {column_type(c).compile(dialect=_DIALECT)}"
        )
        comment = _comment(c)
        if comment:
            out.append(f"COMMENT ON COLUMN {full}.{_q(c.name.lower())} IS {_literal(comment)}")
    return out


def added_columns_ddl(catalog: str, kind: str, old: int, new: int, partition_order: int) -> list[str]:
    """ALTER statements that bring catalog ``catalog`` from schema ``old`` to ``new``.

    Schemas are append-only, so the difference is new nullable columns (and new
    tables, which are created whole).
    """
    old_specs = {s.name: s for s in table_specs(catalog, old, kind)}
    out = []
    for spec in table_specs(catalog, new, kind):
        before = old_specs.get(spec.name)
        if before is None:
            out += _table_ddl(spec, partition_order)
            continue
        full = f"{_q(catalog)}.{_q(spec.table.name)}"
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
