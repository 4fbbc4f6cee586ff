"""The hats-import input reader that streams chunks of a dpdb table from PostgreSQL.

Kept apart from source.py so that planning an export (and failing early, with a
one-line error) does not import hats-import, dask and numba.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode

import numpy as np
import pyarrow as pa
from hats_import.catalog.file_readers import InputReader

from .source import NestedExport, TableExport, arrow_schema, child_struct, nested_schema

__all__ = ["PostgresReader", "chunk_name"]


def chunk_name(table: str, lo: int, hi: int) -> str:
    """The "input file" name of a chunk (hats-import keys its resume state on it)."""
    return f"dpdb-chunk:{table}?{urlencode({'lo': lo, 'hi': hi})}"


def _parse_chunk(name: str) -> tuple[int, int]:
    query = parse_qs(str(name).split("?", 1)[1])
    return int(query["lo"][0]), int(query["hi"][0])


class PostgresReader(InputReader):
    """A hats-import input reader whose "files" are chunks of a dpdb table in PostgreSQL.

    It holds only text (an ADBC URI and the table plans), so dask can ship it to
    worker processes; each read opens its own connection and streams record
    batches, renamed to the canonical column names with the schema's unit, UCD
    and description as field metadata.
    """

    def __init__(self, uri: str, export: TableExport | NestedExport, batch_rows: int = 65_536) -> None:
        self.uri = uri
        self.export = export
        self.batch_rows = batch_rows

    def read(self, input_file, read_columns=None) -> Iterator[pa.Table]:  # noqa: ANN001
        lo, hi = _parse_chunk(str(input_file))
        if isinstance(self.export, NestedExport):
            yield from self._read_nested(lo, hi, read_columns)
        else:
            yield from self._read_flat(self.export, lo, hi, read_columns)

    def _read_flat(
        self, table: TableExport, lo: int, hi: int, read_columns: list[str] | None
    ) -> Iterator[pa.Table]:
        schema = arrow_schema(table.target)
        if read_columns:
            schema = pa.schema([schema.field(c) for c in read_columns])
        with _cursor(self.uri) as cur:
            cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(16 << 20)})
            cur.execute(table.chunk_sql(lo, hi, schema.names))
            pending: list[pa.RecordBatch] = []
            size = 0
            for batch in cur.fetch_record_batch():
                if batch.num_rows == 0:
                    continue
                pending.append(_conform(batch, schema))
                size += batch.num_rows
                if size >= self.batch_rows:
                    yield pa.Table.from_batches(pending, schema)
                    pending, size = [], 0
            if pending:
                yield pa.Table.from_batches(pending, schema)

    def _read_nested(self, lo: int, hi: int, read_columns: list[str] | None) -> Iterator[pa.Table]:
        export = self.export
        assert isinstance(export, NestedExport)
        parent = export.parent
        key = parent.target.primary_key[0]
        key_canonical = parent.target.columns[key].canonical
        if read_columns and not set(read_columns) - {parent.ra, parent.dec}:
            yield from self._read_flat(parent, lo, hi, read_columns)  # positions only: no children needed
            return
        parts = list(self._read_flat(parent, lo, hi, None))
        if not parts:
            return
        objects = pa.concat_tables(parts).sort_by(key_canonical)
        columns = dict(zip(objects.column_names, objects.columns, strict=True))
        ids = objects[key_canonical].to_numpy()
        for column, child in export.children.items():
            columns[column] = self._nest(child, lo, hi, ids, key_canonical)
        out = pa.table(columns).cast(nested_schema(export))
        yield out.select(read_columns) if read_columns else out

    def _nest(self, child: TableExport, lo: int, hi: int, ids: np.ndarray, key: str) -> pa.Array:
        """The child rows of each parent (parents sorted by ``ids``) as one list<struct> array."""
        struct_schema = child_struct(child)
        parts = list(self._read_flat(child, lo, hi, None))
        rows = pa.concat_tables(parts) if parts else arrow_schema(child.target).empty_table()
        parent_key = child.target.columns[child.target.parent_key].canonical  # type: ignore[index]
        rows = rows.filter(rows[parent_key].is_valid()) if rows.num_rows else rows
        keys = rows[parent_key].to_numpy() if rows.num_rows else np.array([], dtype=np.int64)
        where = np.searchsorted(ids, keys)
        found = (
            (where < len(ids)) & (ids[np.minimum(where, max(len(ids) - 1, 0))] == keys)
            if len(ids)
            else (np.zeros(len(keys), dtype=bool))
        )
        order = np.argsort(where[found], kind="stable")
        kept = rows.filter(pa.array(found)).take(pa.array(order))
        counts = np.bincount(where[found], minlength=len(ids))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        values = pa.StructArray.from_arrays(
            [kept[f.name].combine_chunks() for f in struct_schema], fields=list(struct_schema)
        )
        return pa.ListArray.from_arrays(
            pa.array(offsets), values, type=pa.list_(pa.struct(list(struct_schema)))
        )


_local = threading.local()


def _connection(uri: str):  # noqa: ANN202
    import adbc_driver_postgresql.dbapi as adbc

    cached = getattr(_local, "conns", None)
    if cached is None:
        cached = _local.conns = {}
    if uri not in cached:
        cached[uri] = adbc.connect(uri)
    return cached[uri]


@contextlib.contextmanager
def _cursor(uri: str) -> Iterator[Any]:
    """A cursor on this thread's cached connection; a failed connection is dropped, not reused."""
    conn = _connection(uri)
    try:
        with conn.cursor() as cur:
            yield cur
        conn.rollback()
    except Exception:
        _local.conns.pop(uri, None)
        with contextlib.suppress(Exception):
            conn.close()
        raise


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A fetched batch with the canonical names, exact types and field metadata of ``schema``."""
    renamed = pa.RecordBatch.from_arrays(batch.columns, names=schema.names)
    return renamed.cast(schema)
