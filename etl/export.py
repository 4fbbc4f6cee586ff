"""Export of catalog tables back to Parquet, with the canonical (camelCase) column names.

Implementation columns (``_healpix_29``, ``_load_id``) are left out and the
columns carry their canonical names and schema types, so a loaded file exports
back as it was. Rows are streamed from the server in primary-key order and
written to a temporary name, then renamed into place.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

from dpdb.atomic import atomic_file
from dpdb.config import Settings
from dpdb.db import connect
from dpdb.errors import DpdbError
from dpdb.pg import adbc_connection
from dpdb.registry.catalogs import find_catalog

from .validate import TargetTable, target_table

__all__ = ["canonical_schema", "export_table", "select_sql", "write_query"]


def canonical_schema(target: TargetTable) -> pa.Schema:
    cols = target.columns.values()
    return pa.schema(pa.field(c.canonical, c.arrow_type, nullable=c.nullable) for c in cols)


def select_sql(target: TargetTable, where: sql.Composable | None = None) -> sql.Composed:
    """SELECT of every canonical column of ``target`` in primary-key order, optionally filtered."""
    return sql.SQL("SELECT {cols} FROM {table}{where} ORDER BY {pk}").format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in target.columns),
        table=sql.Identifier(target.catalog, target.db_name),
        where=sql.SQL(" WHERE {}").format(where) if where is not None else sql.SQL(""),
        pk=sql.SQL(", ").join(sql.Identifier(c) for c in target.primary_key),
    )


def write_query(cur: adbc.Cursor, query: str, target: TargetTable, out: Path) -> int:
    """Stream the rows of ``query`` (a :func:`select_sql`) into Parquet file ``out``; return the row count.

    Writes nothing and returns 0 when the query has no rows.
    """
    schema = target.model.arrow_schema()
    cur.execute(query)
    reader = cur.fetch_record_batch()
    rows = 0
    with contextlib.ExitStack() as stack:  # on any error: the writer closed, the temporary file removed
        writer: pq.ParquetWriter | None = None
        for batch in reader:
            if batch.num_rows == 0:
                continue
            batch = pa.RecordBatch.from_arrays(batch.columns, schema=batch.schema).rename_columns(
                schema.names
            )
            if writer is None:
                f = stack.enter_context(atomic_file(out))
                writer = stack.enter_context(pq.ParquetWriter(f, schema))
            writer.write_table(pa.Table.from_batches([batch]).cast(schema), row_group_size=131_072)
            rows += batch.num_rows
    return rows


def export_table(settings: Settings, table: str, catalog: str, out: Path) -> int:
    """Write ``catalog``.``table`` to the Parquet file ``out`` (primary-key order); return the row count."""
    with connect(settings) as conn:
        found = find_catalog(conn, catalog)
        if found is None:
            raise DpdbError(f"catalog {catalog} does not exist")
        target = target_table(catalog, found.schema_version, found.kind, table)
        query = select_sql(target).as_string(conn)
    with adbc_connection(settings) as aconn, aconn.cursor() as cur:
        rows = write_query(cur, query, target, out)
    if rows == 0:  # an empty table still exports as an empty file with the schema
        with atomic_file(out) as f:
            pq.write_table(target.model.arrow_schema().empty_table(), f)
    return rows
