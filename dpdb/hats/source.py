"""What a HATS export reads: the catalog snapshot, its tables, and a reader hats-import can stream.

A snapshot is a release (by name, or ``current`` / ``previous``, optionally as
they were at an instant) or the prompt catalog as of an instant (DPDD §2.5; the
present is pinned to the instant the export started, so a rerun reads the same
rows). Each exported table is cut into *chunks*: ranges of the partition key
``_healpix_29`` holding at most a bounded number of rows, found from a
histogram computed in the database. A chunk is what hats-import calls an input
file: :class:`PostgresReader` streams it from PostgreSQL with ADBC in record
batches, so no step ever holds more than one chunk (nested) or one batch
(flat) of a table in memory.

Measurement tables are stored in their parent object's pixel
(docs/architecture.md, decision 6), so a chunk of Objects and the same pixel
range of Sources hold each Object with all its Sources (a DiaObject keeps the
pixel it was created with, and its DiaSources take it): that is how the nested
catalogs are built, one chunk at a time, without a join across the sky.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import psycopg
import pyarrow as pa
from psycopg import sql

from dpdb.errors import ReleaseStateError, ValidationError
from dpdb.etl.validate import TargetTable, target_table
from dpdb.healpix import PIXEL_ORDER
from dpdb.model.layout import PIXEL_COLUMN, PROMPT_TABLES, RELEASE_TABLES, layout
from dpdb.pg import fetch_value
from dpdb.registry.activations import resolve_alias
from dpdb.registry.catalogs import all_catalogs, find_catalog
from dpdb.registry.releases import find_release

__all__ = [
    "Snapshot",
    "TableExport",
    "NestedExport",
    "resolve_snapshot",
    "plan_tables",
    "NESTED",
    "HISTOGRAM_ORDER",
]

log = logging.getLogger(__name__)

NESTED = {
    "ObjectNested": ("Object", ("Source", "ForcedSource")),
    "DiaObjectNested": ("DiaObject", ("DiaSource", "DiaForcedSource")),
}
"""Nested catalogs: name -> (parent table, child tables nested as list columns)."""

_HISTOGRAM_ORDER = HISTOGRAM_ORDER = 10
"""Order of the database-side histogram that chunks are cut from (0.06 deg² pixels)."""

_AS_OF_TABLES = {"DiaObject", "SSObject", "DiaSource", "DiaForcedSource", "SSSource", "Visit", "CcdVisit"}
"""Prompt tables with an as-of function (sql/as_of.sql)."""


@dataclass(frozen=True)
class Snapshot:
    """One catalog as it is exported: where the rows come from and what the export is stamped with."""

    catalog: str  # as the user named it: dr2, current, previous, prompt
    schema: str  # the PostgreSQL schema read: a release name or prompt
    kind: str  # release or prompt
    schema_version: int
    partition_order: int
    as_of: float | None  # MJD TAI; always set for the prompt catalog

    @property
    def release(self) -> str | None:
        return self.schema if self.kind == "release" else None

    def identity(self) -> dict[str, object]:
        """What makes two exports the same export (a rerun must match it)."""
        return {"schema": self.schema, "kind": self.kind, "as_of": self.as_of,
                "schema_version": self.schema_version}  # fmt: skip


def resolve_snapshot(conn: psycopg.Connection, catalog: str, as_of: float | None, now: float) -> Snapshot:
    """The snapshot ``catalog`` names (as of ``as_of``, MJD TAI); ``now`` pins the prompt's present."""
    name = catalog.strip()
    instant: float | None
    if name == "prompt":
        schema, instant = "prompt", now if as_of is None else as_of
    elif name in ("current", "previous"):
        schema, instant = resolve_alias(conn, name, as_of), as_of
    else:
        if as_of is not None:
            raise ValidationError(
                f"release {name} is frozen: --as-of applies to prompt, current and previous, not to a release"
            )
        schema, instant = name, None
    found = find_catalog(conn, schema)
    if found is None:
        known = [c.name for c in all_catalogs(conn)]
        rel = find_release(conn, schema)
        if rel is not None and rel.archive_path:
            raise ReleaseStateError(
                f"release {schema} is not loaded; LSDB opens its archive {rel.archive_path} as it is "
                f"(or restore it with `dpdb release restore {schema}`)"
            )
        raise ReleaseStateError(f"unknown catalog {schema!r} (catalogs: {', '.join(known) or 'none'})")
    return Snapshot(name, schema, str(found.kind), found.schema_version, found.partition_order, instant)


# -- tables ----------------------------------------------------------------------------------------


def arrow_schema(target: TargetTable, *, drop: tuple[str, ...] = ()) -> pa.Schema:
    """Canonical Arrow schema of a table, with the felis unit, UCD and description as field metadata."""
    fields = []
    for c in target.columns.values():
        if c.name in drop:
            continue
        meta = {"unit": c.unit, "ucd": c.ucd, "description": " ".join((c.description or "").split())}
        fields.append(pa.field(c.canonical, c.arrow_type, nullable=c.nullable,
                               metadata={k: v for k, v in meta.items() if v} or None))  # fmt: skip
    return pa.schema(fields)


def _from_clause(snapshot: Snapshot, table: str) -> sql.Composable:
    """The relation a table is read from: the table itself, or its as-of function in the prompt."""
    if snapshot.kind == "prompt":
        if table not in _AS_OF_TABLES:
            raise ValidationError(f"prompt.{table} cannot be read as of an instant; export it from a release")
        return sql.SQL("prompt.{}({})").format(
            sql.Identifier(f"{table.lower()}_as_of"),
            sql.Literal(float(snapshot.as_of)),  # type: ignore[arg-type]
        )
    return sql.Identifier(snapshot.schema, table.lower())


@dataclass(frozen=True)
class TableExport:
    """A flat table of a snapshot: its columns, the SQL that reads a chunk, and its chunks."""

    name: str  # canonical table (and catalog) name
    target: TargetTable
    source: str  # SQL text of the FROM relation
    ra: str | None  # canonical position columns (None: no position, not a HATS catalog)
    dec: str | None
    chunks: list[tuple[int, int]] = field(default_factory=list)  # _healpix_29 ranges [lo, hi)
    rows: int = 0
    max_rows: int = 1_000_000  # rows per HATS partition (from the partition size in bytes)
    highest_order: int = 7  # finest HEALPix order hats-import may partition at
    histogram: dict[int, int] = field(default_factory=dict)  # rows per pixel at HISTOGRAM_ORDER

    @property
    def spatial(self) -> bool:
        return self.ra is not None

    def chunk_sql(self, lo: int | None, hi: int | None, columns: list[str] | None = None) -> str:
        cols = columns or [c.canonical for c in self.target.columns.values()]
        where = ""
        if lo is not None and self.target.partitioned:
            where = f" WHERE {PIXEL_COLUMN} >= {int(lo)} AND {PIXEL_COLUMN} < {int(hi)}"  # type: ignore[arg-type]
        names = ", ".join(f'"{c.lower()}"' for c in cols)
        return f"SELECT {names} FROM {self.source}{where}"


@dataclass(frozen=True)
class NestedExport:
    """A parent table with child tables nested as ``list<struct>`` columns (nested-pandas layout)."""

    name: str
    parent: TableExport
    children: dict[str, TableExport]  # nested column name -> child table

    @property
    def rows(self) -> int:
        return self.parent.rows

    @property
    def max_rows(self) -> int:
        return self.parent.max_rows

    @property
    def highest_order(self) -> int:
        return self.parent.highest_order


def nested_column(table: str) -> str:
    """Name of the nested column holding ``table``'s rows (lower camel case: ``source``, ``diaSource``)."""
    return table[0].lower() + table[1:]


def plan_tables(
    conn: psycopg.Connection,
    snapshot: Snapshot,
    tables: list[str] | None,
    chunk_rows: int,
    partition_bytes: int = 256 << 20,
) -> list[TableExport | NestedExport]:
    """The tables (and nested catalogs) to export, with row counts and chunks from the database."""
    available = [t for t in (PROMPT_TABLES if snapshot.kind == "prompt" else RELEASE_TABLES)
                 if not layout(t).internal]  # fmt: skip
    nested = [n for n, (parent, _) in NESTED.items() if parent in available]
    if tables:
        by_lower = {t.lower(): t for t in [*available, *nested]}
        unknown = [t for t in tables if t.lower() not in by_lower]
        if unknown:
            raise ValidationError(
                f"{snapshot.catalog} has no table {unknown[0]!r} (tables: {', '.join([*available, *nested])})"
            )
        wanted = [by_lower[t.lower()] for t in tables]
    else:
        wanted = [*available, *nested]
    cache: dict[str, TableExport] = {}

    def flat(name: str) -> TableExport:
        if name not in cache:
            cache[name] = _plan_flat(conn, snapshot, name, chunk_rows, partition_bytes)
        return cache[name]

    out: list[TableExport | NestedExport] = []
    for name in wanted:
        if name in NESTED:
            parent, children = NESTED[name]
            kids = {nested_column(c): flat(c) for c in children if c in available}
            p = flat(parent)
            counts = _histogram(conn, [p, *kids.values()])
            size = _row_bytes(p) * p.rows + sum(_row_bytes(k) * k.rows for k in kids.values())
            max_rows = max(1, int(partition_bytes / max(size / max(p.rows, 1), 1)))
            p = replace(
                p, chunks=_cut(counts, chunk_rows), max_rows=max_rows,
                highest_order=_highest_order(_histogram(conn, [p]), max_rows),
            )  # fmt: skip
            out.append(NestedExport(name, p, kids))
        else:
            out.append(flat(name))
    return out


def _plan_flat(
    conn: psycopg.Connection, snapshot: Snapshot, name: str, chunk_rows: int, partition_bytes: int
) -> TableExport:
    target = target_table(snapshot.schema, snapshot.schema_version, snapshot.kind, name)
    pos = target.model.canonical_position
    source = _from_clause(snapshot, name).as_string(conn)
    table = TableExport(name, target, source, pos[0] if pos else None, pos[1] if pos else None)
    rows = int(fetch_value(conn, f"SELECT count(*) FROM {source}"))
    max_rows = max(1, partition_bytes // _row_bytes(table))
    counts: dict[int, int] = {}
    if target.partitioned:
        counts = _histogram(conn, [table])
        chunks, highest = _cut(counts, chunk_rows), _highest_order(counts, max_rows)
    else:
        chunks, highest = [(0, 0)], 7
    return replace(table, chunks=chunks if rows else [], rows=rows, max_rows=max_rows, highest_order=highest,
                   histogram=counts)  # fmt: skip


def _row_bytes(table: TableExport) -> int:
    """Rough in-memory size of a row (fixed widths; 16 bytes a string, 64 an array)."""
    size = 0
    for col in table.target.columns.values():
        t = col.arrow_type
        size += t.bit_width // 8 if pa.types.is_primitive(t) else 64 if pa.types.is_list(t) else 16
    return max(size, 1)


def _highest_order(counts: dict[int, int], max_rows: int) -> int:
    """The finest order hats-import needs: one past the first whose densest pixel fits in a partition.

    hats-import's alignment costs time in proportion to the pixels at this order
    (12.6 million at order 10), so it is kept as coarse as the data allow.
    """
    for order in range(_HISTOGRAM_ORDER + 1):
        shift = 2 * (_HISTOGRAM_ORDER - order)
        per_pixel: dict[int, int] = {}
        for pix, n in counts.items():
            per_pixel[pix >> shift] = per_pixel.get(pix >> shift, 0) + n
        if not per_pixel or max(per_pixel.values()) <= max_rows:
            return max(3, min(_HISTOGRAM_ORDER, order + 1))
    return _HISTOGRAM_ORDER


def _histogram(conn: psycopg.Connection, tables: list[TableExport]) -> dict[int, int]:
    """Rows per pixel of the partition key at order 10, summed over ``tables`` (which share the key)."""
    shift = 2 * (PIXEL_ORDER - _HISTOGRAM_ORDER)
    counts: dict[int, int] = {}
    for t in tables:
        for pix, n in conn.execute(f"SELECT {PIXEL_COLUMN} >> {shift}, count(*) FROM {t.source} GROUP BY 1"):
            counts[int(pix)] = counts.get(int(pix), 0) + int(n)
    return counts


def _cut(counts: dict[int, int], chunk_rows: int) -> list[tuple[int, int]]:
    """Consecutive pixel ranges of at most ``chunk_rows`` rows (a denser pixel is a chunk of its own)."""
    shift = 2 * (PIXEL_ORDER - _HISTOGRAM_ORDER)
    chunks: list[tuple[int, int]] = []
    start: int | None = None
    total = 0
    last = 0
    for pix in sorted(counts):
        n = counts[pix]
        if start is not None and total + n > chunk_rows:
            chunks.append((start << shift, last << shift))
            start = None
        if start is None:
            start, total = pix, 0
        total += n
        last = pix + 1
    if start is not None:
        chunks.append((start << shift, last << shift))
    return chunks


def child_struct(child: TableExport) -> pa.Schema:
    """The fields of a nested child row: every column but the parent key (the row's owner)."""
    return arrow_schema(child.target, drop=(child.target.parent_key or "",))


def nested_schema(export: NestedExport) -> pa.Schema:
    parent = arrow_schema(export.parent.target)
    fields = list(parent)
    for column, child in export.children.items():
        struct = pa.struct(list(child_struct(child)))
        meta = {b"description": f"{child.name} rows of this {export.parent.name}".encode(),
                b"dpdb_table": child.name.encode()}  # fmt: skip
        fields.append(pa.field(column, pa.list_(struct), metadata=meta))
    return pa.schema(fields)
