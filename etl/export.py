"""Export of a catalog table back to Parquet, with the canonical (camelCase) column names."""

from __future__ import annotations

from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

from dpdb.catalogs import catalog_info
from dpdb.config import Settings
from dpdb.db import adbc_uri, connect
from dpdb.errors import DpdbError

from .validate import target_table

__all__ = ["export_table"]


def export_table(settings: Settings, table: str, catalog: str, out: Path) -> int:
    """Write ``catalog``.``table`` to the Parquet file ``out`` (primary-key order); return the row count.

    Implementation columns (``_healpix_29``, ``_load_id``) are left out, and the
    columns carry their canonical names, so a loaded file exports back as it was.
    """
    with connect(settings) as conn:
        info = catalog_info(conn, catalog)
        if info is None:
            raise DpdbError(f"catalog {catalog} does not exist")
        kind, version = info
        target = target_table(catalog, version, kind, table)
        query = (
            sql.SQL("SELECT {cols} FROM {table} ORDER BY {pk}")
            .format(
                cols=sql.SQL(", ").join(sql.Identifier(c) for c in target.columns),
                table=sql.Identifier(catalog, target.db_name),
                pk=sql.SQL(", ").join(sql.Identifier(c) for c in target.primary_key),
            )
            .as_string(conn)
        )
    with adbc.connect(adbc_uri(settings)) as aconn, aconn.cursor() as cur:
        cur.execute(query)
        data = cur.fetch_arrow_table()
    fields = [pa.field(c.canonical, c.arrow_type, nullable=c.nullable) for c in target.columns.values()]
    data = data.rename_columns([f.name for f in fields]).cast(pa.schema(fields))
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, out)
    return data.num_rows
