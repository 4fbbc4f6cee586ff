"""The prompt catalog reprocessed for a data release (DPDD §3.3.5): visits and DIA tables.

Reads the current state of the prompt catalog in one read-only transaction:
Visit and CcdVisit as they are; the DiaSources, DiaForcedSources and SSSources
not withdrawn; the current SSObject versions; and DiaObjects re-aggregated over
their whole history by the prompt ingest's own SQL with no 12-month window.
Every minted ID moves to the release's origin (same local number), so the
release's IDs are unique across releases and the prompt catalog (DPDD §2.4)
while a prompt row stays traceable to its release row.
"""

from __future__ import annotations

import math

import adbc_driver_postgresql.dbapi as adbc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from dpdb.config import Settings
from dpdb.db import connect
from dpdb.errors import ValidationError
from dpdb.etl.export import select_sql
from dpdb.etl.validate import TargetTable, target_table
from dpdb.ids import reorigin
from dpdb.model.felis import latest_version
from dpdb.pg import adbc_connection
from dpdb.prompt import statements as prompt_statements
from dpdb.registry.catalogs import find_catalog

__all__ = ["from_prompt", "conform"]

# Columns holding minted IDs, moved to the release's origin.
_ID_COLUMNS = ("diaObjectId", "diaSourceId", "diaForcedSourceId", "ssObjectId", "parentDiaSourceId")
# Rows as they are now: not withdrawn, or the current version.
_CURRENT = {
    "DiaSource": "timewithdrawnmjdtai IS NULL",
    "DiaForcedSource": "timewithdrawnmjdtai IS NULL",
    "SSSource": "timewithdrawnmjdtai IS NULL",
    "SSObject": "validityendmjdtai IS NULL",
}
# Columns that say when a row was processed: the release's processing time.
_TIME_COLUMNS = ("timeProcessedMjdTai", "validityStartMjdTai")


def conform(data: pa.Table, target: TargetTable) -> pa.Table:
    """``data`` (database or canonical names) as ``target``'s canonical schema; absent columns null."""
    by_name = {n.lower(): data[n] for n in data.column_names}
    arrays, fields = [], []
    for col in target.columns.values():
        field = pa.field(col.canonical, col.arrow_type, nullable=col.nullable)
        values = by_name.get(col.name)
        arrays.append(
            pa.nulls(data.num_rows, col.arrow_type) if values is None else values.cast(col.arrow_type)
        )
        fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def from_prompt(settings: Settings, origin: int) -> dict[str, pa.Table]:
    """Visit, CcdVisit, DiaObject, DiaSource, DiaForcedSource, SSObject and SSSource of a release."""
    version = latest_version()
    with connect(settings) as conn:
        prompt = find_catalog(conn, "prompt")
        queries = {
            table: select_sql(
                target_table("prompt", version, "prompt", table),
                sql.SQL(_CURRENT[table]) if table in _CURRENT else None,
            ).as_string(conn)
            for table in ("Visit", "CcdVisit", "DiaSource", "DiaForcedSource", "SSObject", "SSSource")
        }
    if prompt is None or prompt.schema_version != version:
        raise ValidationError(
            "the prompt catalog is missing or not at the newest schema; run `dpdb db migrate`"
        )
    out: dict[str, pa.Table] = {}
    with adbc_connection(settings) as aconn, aconn.cursor() as cur:
        cur.execute(prompt_statements.block("release_time", settings, file="release_from_prompt.sql")[0])
        t, last_midpoint = cur.fetchone()
        if t is None:
            raise ValidationError("the prompt catalog holds no visits; nothing to reprocess")
        for table, query in queries.items():
            cur.execute(query)
            out[table] = cur.fetch_arrow_table()
        out["DiaObject"] = _reaggregated(cur, settings, t, last_midpoint)
        aconn.rollback()
    release = {}
    for table, data in out.items():
        target = target_table("release", version, "release", table)
        data = conform(data, target)
        for name in _ID_COLUMNS:
            if name in data.column_names:
                data = data.set_column(data.schema.get_field_index(name), name, _reorigin(data[name], origin))
        for name in _TIME_COLUMNS:
            if name in data.column_names:
                i = data.schema.get_field_index(name)
                data = data.set_column(
                    i, data.schema.field(i), pa.array(np.full(data.num_rows, t, dtype=np.float64))
                )
        release[table] = data
    return release


def _reaggregated(cur: adbc.Cursor, settings: Settings, t: float, last_midpoint: float) -> pa.Table:
    """Every current DiaObject aggregated over all its DiaSources (cutoff = infinity)."""
    steps = [
        ("params", "prompt_ingest.sql"),
        ("set_params", "prompt_ingest.sql"),
        ("touched", "release_from_prompt.sql"),
        ("window_sources", "prompt_ingest.sql"),
        ("aggregate", "prompt_ingest.sql"),
    ]
    for name, file in steps:
        params = (t, last_midpoint, math.inf, 0.0, 0.0, 0.0, 0, 0, 0) if name == "set_params" else None
        for statement in prompt_statements.block(name, settings, file=file):
            cur.execute(statement, parameters=params)
    columns = ", ".join(prompt_statements.VERSION_COLUMNS)
    cur.execute(f"SELECT {columns} FROM new_version ORDER BY diaobjectid")
    return cur.fetch_arrow_table()


def _reorigin(column: pa.ChunkedArray, origin: int) -> pa.Array:
    values = column.combine_chunks()
    moved = reorigin(values.fill_null(0).to_numpy(zero_copy_only=False), origin)
    return pa.array(moved, pa.int64(), mask=pc.is_null(values).to_numpy(zero_copy_only=False))
