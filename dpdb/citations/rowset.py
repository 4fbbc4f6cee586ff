"""The result hash, methods ``dpdb-rowset-v3`` and ``-v2``: computed while the result's batches stream.

Same canonical column types, values and row order as ``dpdb-rowset-v1``
(:mod:`.digest`); what changed is the encoding of a column, so that it can be
fed batch by batch. Each column is hashed as three streams (v3: BLAKE3, v2: SHA-256), each
written in canonical row order:

- ``nulls``: the 0-based row numbers of the NULL values, 8-byte little-endian
  (empty for a column without NULLs);
- ``values``: one fixed-width value per row (NULL as 0), or for ``utf8``,
  ``json`` and ``binary`` the value's byte length;
- ``bytes``: ``utf8``, ``json`` and ``binary`` values' bytes, concatenated
  (empty for the other types).

The column hash is the SHA-256 of the three raw 32-byte digests concatenated
(nulls, values, bytes); the result hash is the SHA-256 of the v1 header text
with the method's name. v2 hashes the streams with SHA-256, v3 with BLAKE3
(32-byte output): the streams are the bulk of what is hashed (8 bytes per row and
column), and BLAKE3 hashes them several times faster than SHA-256 even with the
CPU's SHA instructions (benchmarks/README.md). ``docs/citations.md`` gives the
recipe with plain pyarrow, hashlib and blake3.

:class:`RowsetHasher` takes the batches as the query fetches them (on its own
thread, so that the fetch goes on while a batch is hashed). While the batches
arrive in canonical order (the first sort column strictly increasing, as a
query ordered by, or scanning, a unique key gives them) each batch is hashed at
once and nothing is kept; when one breaks that order the hasher sorts the rows
once at the end, as v1 always did.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .digest import (
    _NUMERIC,
    METHOD,
    METHOD_V1,
    ColumnDigest,
    ResultDigest,
    _fixed_values,
    _order,
    _sort_array,
    canonical_tag,
    check_method,
    digest_table_v1,
    header,
    stream_hasher,
    variable_parts,
)

__all__ = ["RowsetHasher", "digest_table", "digest_table_streamed"]

_VARIABLE = ("utf8", "binary", "json")
_SLICE = 1 << 16  # rows per step when a buffered result is hashed in sorted order


class _Column:
    """The three hash streams of one column."""

    __slots__ = ("tag", "nulls", "values", "data")

    def __init__(self, tag: str, method: str) -> None:
        self.tag = tag
        new = stream_hasher(method)
        self.nulls = new()
        self.values = new()
        self.data = new()

    def digest(self) -> str:
        return hashlib.sha256(self.nulls.digest() + self.values.digest() + self.data.digest()).hexdigest()

    def update(self, array: pa.Array, offset: int, fixed: np.ndarray | None = None) -> None:
        """Hash ``array``, whose first row is row ``offset`` of the result in canonical order.
        ``fixed``: the canonical values of a fixed-width column, when the caller has them already."""
        n = len(array)
        tag = self.tag
        if tag == "null":
            self.nulls.update(_bytes(np.arange(offset, offset + n, dtype="<i8")))
            return
        if array.null_count:
            valid = array.is_valid().to_numpy(zero_copy_only=False)
            self.nulls.update(_bytes(np.flatnonzero(~valid).astype("<i8") + offset))
        if tag not in _VARIABLE:
            values = _fixed_values(array, tag) if fixed is None else fixed
            self.values.update(_bytes(np.ascontiguousarray(values)))
            return
        if tag == "json" and not (pa.types.is_large_string(array.type) or pa.types.is_string(array.type)):
            array = _sort_array(array, tag)  # the values' JSON text
        elif tag == "binary" and pa.types.is_fixed_size_binary(array.type):
            array = array.cast(pa.large_binary())
        lengths, data = variable_parts(array, tag)
        self.values.update(lengths.cast("B"))
        self.data.update(data.cast("B"))


def _bytes(values: np.ndarray) -> memoryview:
    """A contiguous array's memory as bytes (BLAKE3 takes byte buffers only; hashlib any buffer)."""
    return values.data.cast("B")


class RowsetHasher:
    """Row count and ``dpdb-rowset-v3`` (or ``-v2``) hash of a result fed as Arrow record batches.

    Parameters
    ----------
    method
        ``dpdb-rowset-v3`` (the default: what new citations use) or ``dpdb-rowset-v2``.
    threaded
        Hash on a thread of its own: :meth:`add` only queues the batch, so the
        caller goes on fetching while it is hashed.

    Call :meth:`add` with every batch in the order they come, then :meth:`finish`.
    """

    def __init__(self, method: str = METHOD, *, threaded: bool = False, inline_below: int = 0) -> None:
        if check_method(method) == METHOD_V1:
            raise ValueError(f"{METHOD_V1} cannot be computed batch by batch (digest_table_v1)")
        self._method = method
        self._schema: pa.Schema | None = None
        self._columns: list[_Column] = []
        self._batches: list[pa.RecordBatch] = []
        self._rows = 0
        self._key = -1  # index of the first column that takes part in the order (-1: none)
        self._last: Any = None  # the key's last value so far
        self._buffered = False  # the batches broke the canonical order: sort once at the end
        self._queue: queue.Queue[pa.RecordBatch | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._threaded = threaded
        self._inline_below = inline_below

    @property
    def streaming(self) -> bool:
        """True while every batch so far was hashed as it came (in canonical order); False once the
        hasher keeps them to sort at the end."""
        return not self._buffered

    # -- feeding ---------------------------------------------------------------------------------

    def add(self, batch: pa.RecordBatch) -> None:
        """Hash (or queue) the next batch of the result.

        Threaded, a first batch of fewer than ``inline_below`` bytes is hashed at once, by the caller:
        a batch smaller than the fetch's batch size is the whole result, and a thread woken for it
        costs more than it saves on a busy machine (the wake-up, not the hashing:
        benchmarks/README.md). Any other batch starts the thread."""
        if self._queue is not None:
            self._queue.put(batch)
        elif self._threaded and (self._schema is not None or batch.nbytes >= self._inline_below):
            self._queue = queue.Queue()
            self._queue.put(batch)
            self._thread = threading.Thread(target=self._work, name="dpdb-rowset", daemon=True)
            self._thread.start()
        else:
            self._add(batch)

    def _work(self) -> None:
        assert self._queue is not None
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._error is None:
                try:
                    self._add(batch)
                except BaseException as e:  # noqa: BLE001 - re-raised by finish()
                    self._error = e

    def _start(self, schema: pa.Schema) -> None:
        self._schema = schema
        tags = [canonical_tag(t) for t in schema.types]
        self._columns = [_Column(tag, self._method) for tag in tags]
        self._key = next((k for k, tag in enumerate(tags) if tag != "null"), -1)

    def _add(self, batch: pa.RecordBatch) -> None:
        if self._schema is None:
            self._start(batch.schema)
        self._batches.append(batch)
        n = batch.num_rows
        if not n:
            return
        if not self._buffered:
            fixed = self._in_order(batch)
            if self._buffered:
                return
            for k, (column, array) in enumerate(zip(self._columns, batch.columns, strict=True)):
                column.update(array, self._rows, fixed if k == self._key else None)
        self._rows += n

    def _in_order(self, batch: pa.RecordBatch) -> np.ndarray | None:
        """Whether ``batch`` continues the canonical order (else the hasher turns to buffering); the
        key column's canonical values when they were computed for the check."""
        if self._key < 0:
            return None  # every column is all-NULL: every order is the canonical one
        array, tag = batch.column(self._key), self._columns[self._key].tag
        if array.null_count:
            self._buffered = True
            return None
        if tag in _NUMERIC or tag == "bool":
            values = _fixed_values(array, tag)
            ordered = bool(np.all(values[1:] > values[:-1])) and (
                self._last is None or values[0] > self._last
            )
            self._last = values[-1]
        elif tag in ("utf8", "binary") and not pa.types.is_fixed_size_binary(array.type):
            values = None
            first, last = array[0].as_py(), array[-1].as_py()
            ordered = (self._last is None or first > self._last) and (
                len(array) < 2 or bool(pc.all(pc.greater(array[1:], array[:-1])).as_py())
            )
            self._last = last
        else:
            ordered, values = False, None
        if not ordered:
            self._buffered = True
        return values

    def close(self) -> None:
        """Stop the hashing thread (what was added is dropped); :meth:`finish` does it too."""
        if self._thread is not None:
            assert self._queue is not None
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    # -- the result ------------------------------------------------------------------------------

    def finish(self, names: Sequence[str] | None = None, schema: pa.Schema | None = None) -> ResultDigest:
        """The digest of every batch added; ``names`` the result's column names (default: the
        batches'), ``schema`` the result's schema when no batch came."""
        self.close()
        if self._error is not None:
            raise self._error
        if self._schema is None:
            self._start(schema if schema is not None else pa.schema([]))
        assert self._schema is not None
        if self._buffered:
            self._hash_sorted()
        names = list(names) if names is not None else self._schema.names
        columns = [ColumnDigest(n, c.tag, c.digest()) for n, c in zip(names, self._columns, strict=True)]
        sha256 = hashlib.sha256(header(self._method, self._rows, columns)).hexdigest()
        return ResultDigest(self._rows, sha256, tuple(columns), self._method)

    def _hash_sorted(self) -> None:
        """Hash the kept batches in canonical order (once, at the end)."""
        assert self._schema is not None
        table = pa.Table.from_batches(self._batches, self._schema).combine_chunks()
        n = table.num_rows
        self._rows = n
        tags = [c.tag for c in self._columns]
        self._columns = [_Column(tag, self._method) for tag in tags]
        arrays = [c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for c in table.columns]
        sort_arrays = [_sort_array(a, tag) for a, tag in zip(arrays, tags, strict=True)]
        keys = [(a, tag) for a, tag in zip(sort_arrays, tags, strict=True) if a is not None]
        order = _order([a for a, _ in keys], [t for _, t in keys]) if n > 1 and keys else None
        json_text = {k: s for k, (s, t) in enumerate(zip(sort_arrays, tags, strict=True)) if t == "json"}
        sources: list[pa.Array] = [
            a if json_text.get(k) is None else json_text[k] for k, a in enumerate(arrays)
        ]
        for start in range(0, n, _SLICE):
            stop = min(n, start + _SLICE)
            indices = None if order is None else pa.array(order[start:stop])
            for column, array in zip(self._columns, sources, strict=True):
                part = array.slice(start, stop - start) if indices is None else array.take(indices)
                column.update(part, start)


def digest_table_streamed(table: pa.Table, method: str = METHOD) -> ResultDigest:
    """Row count and ``dpdb-rowset-v3`` (or ``-v2``) hash of an Arrow table."""
    hasher = RowsetHasher(method)
    for batch in table.to_batches():
        hasher.add(batch)
    return hasher.finish(table.column_names, table.schema)


def digest_table(table: pa.Table, method: str = METHOD) -> ResultDigest:
    """Row count and hash of an Arrow table, e.g. a query result, with ``method`` (default: the one new
    citations use, ``dpdb-rowset-v3``; a citation names its own)."""
    if check_method(method) == METHOD_V1:
        return digest_table_v1(table)
    return digest_table_streamed(table, method)
