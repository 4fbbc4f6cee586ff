"""The hash of a query result, in a canonical row order and encoding (``dpdb-rowset-v1``, ``-v2``, ``-v3``).

A citation stores the row count, this hash and the method's name; resolving it
recomputes both with that method. The methods are specified in
``docs/citations.md`` so that anyone can recompute them from the rows;
:func:`digest_rows` is a plain-Python reference implementation of that text,
:func:`digest_table_v1` and :func:`dpdb.citations.rowset.digest_table` the fast ones dpdb uses
(vectorized over Arrow columns).
The tests check that both agree. New citations use ``dpdb-rowset-v3``
(:mod:`.rowset`, computed while the result streams); ``dpdb-rowset-v1`` and ``-v2``
stay for the citations made with them.

In short: every column gets a canonical type (``int64``, ``float64``,
``bool``, ``utf8``, ``binary``, ``timestamp_us``, ``date_days``, ``time_us``,
``duration_us``, ``json``, ``null``); rows are sorted ascending by the canonical
values of all columns in result order (nulls last, NaN after every number,
strings and bytes by their bytes); each column is hashed in that order
(v1: validity bytes, then values; v2: three SHA-256 streams, NULL row numbers,
values or lengths, bytes; v3: the same three streams hashed with BLAKE3, several
times faster than SHA-256); the result hash is the SHA-256 of a short text listing
the method, the row count and, per column, its name, type and hash.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import blake3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "METHOD",
    "METHODS",
    "METHOD_V1",
    "METHOD_V2",
    "METHOD_V3",
    "ColumnDigest",
    "ResultDigest",
    "digest_table_v1",
    "digest_rows",
    "check_method",
    "canonical_tag",
]

METHOD_V1 = "dpdb-rowset-v1"
METHOD_V2 = "dpdb-rowset-v2"
METHOD_V3 = "dpdb-rowset-v3"
METHODS = (METHOD_V1, METHOD_V2, METHOD_V3)
METHOD = METHOD_V3
"""Name and version of the hashing method new citations use (the first line of the hashed header)."""

_NAN = struct.unpack("<d", bytes.fromhex("000000000000f87f"))[0]
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_EPOCH_DATE = _dt.date(1970, 1, 1)


@dataclass(frozen=True)
class ColumnDigest:
    name: str
    type: str  # canonical type tag
    sha256: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "sha256": self.sha256}


@dataclass(frozen=True)
class ResultDigest:
    """Row count, result hash and per-column hashes of a result."""

    rows: int
    sha256: str
    columns: tuple[ColumnDigest, ...]
    method: str = METHOD_V1


def header(method: str, rows: int, columns: Sequence[ColumnDigest]) -> bytes:
    """The text whose SHA-256 is the result hash: method, row count, then name, type and hash per column."""
    lines = [method, f"rows {rows}"] + [f"{c.name}\t{c.type}\t{c.sha256}" for c in columns]
    return ("\n".join(lines) + "\n").encode()


def _result(rows: int, columns: list[ColumnDigest], method: str = METHOD_V1) -> ResultDigest:
    sha256 = hashlib.sha256(header(method, rows, columns)).hexdigest()
    return ResultDigest(rows, sha256, tuple(columns), method)


# -- canonical types -------------------------------------------------------------------------------


def canonical_tag(type_: pa.DataType) -> str:
    """The canonical type of an Arrow column type."""
    if pa.types.is_null(type_):
        return "null"
    if pa.types.is_boolean(type_):
        return "bool"
    if pa.types.is_integer(type_):
        return "int64"
    if pa.types.is_floating(type_) or pa.types.is_decimal(type_):
        return "float64"
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return "utf8"
    if pa.types.is_binary(type_) or pa.types.is_large_binary(type_) or pa.types.is_fixed_size_binary(type_):
        return "binary"
    if pa.types.is_timestamp(type_):
        return "timestamp_us"
    if pa.types.is_date(type_):
        return "date_days"
    if pa.types.is_time(type_):
        return "time_us"
    if pa.types.is_duration(type_):
        return "duration_us"
    return "json"


def _json_value(value: Any) -> Any:
    """A value of a ``json`` column as the JSON encoder sees it (times ISO 8601, bytes hex)."""
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return _micros(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and value == 0.0:
        return 0.0
    return value


def _json_text(value: Any) -> str:
    return json.dumps(_json_value(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _micros(delta: _dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _sort_array(array: pa.Array, tag: str) -> pa.Array | None:
    """The array Arrow sorts by: the column itself where Arrow's order is the canonical one."""
    if tag == "null":
        return None
    if tag == "json":
        return pa.array([None if v is None else _json_text(v) for v in array.to_pylist()], pa.large_string())
    if tag == "float64" and pa.types.is_decimal(array.type):
        return array.cast(pa.float64())
    if tag == "binary" and pa.types.is_fixed_size_binary(array.type):
        return array.cast(pa.large_binary())
    return array  # Arrow orders numbers, booleans, times, strings and bytes as the method says


def _fixed_values(array: pa.Array, tag: str) -> np.ndarray:
    """Values of a fixed-width column as the little-endian numbers the method hashes (NULL as 0)."""
    if tag == "timestamp_us":
        array = array.cast(pa.timestamp("us", tz=array.type.tz), safe=False).cast(pa.int64())
    elif tag == "date_days":
        array = array.cast(pa.date32()).cast(pa.int32())
    elif tag == "time_us":
        array = array.cast(pa.time64("us"), safe=False).cast(pa.int64())
    elif tag == "duration_us":
        array = array.cast(pa.duration("us"), safe=False).cast(pa.int64())
    elif tag == "float64" and pa.types.is_decimal(array.type):
        array = array.cast(pa.float64())
    if array.null_count:
        array = array.fill_null(False if tag == "bool" else 0)
    values = array.to_numpy(zero_copy_only=False)
    if tag == "bool":
        return values.astype(np.uint8)
    if tag == "float64":
        values = values.astype("<f8", copy=False)
        if not len(values):
            return values
        # min() is NaN when there is a NaN; without one, a -0.0 needs min <= 0 <= max. Two quick
        # passes without temporaries settle it for most columns (positions, times, fluxes).
        low = values.min()
        if not (np.isnan(low) or low <= 0 <= values.max()):
            return values
        nan = np.isnan(values)
        negative_zero = (values == 0) & np.signbit(values)
        if nan.any() or negative_zero.any():  # copy only when something is not canonical yet
            values = values.copy()
            values[negative_zero] = 0.0
            values[nan] = _NAN
        return values
    return values.astype("<i8", copy=False)


# -- the fast path: Arrow --------------------------------------------------------------------------


def check_method(method: str) -> str:
    """``method`` when dpdb knows it; a ValueError naming the known ones otherwise."""
    if method not in METHODS:
        raise ValueError(f"unknown hash method {method!r} (known: {', '.join(METHODS)})")
    return method


def digest_table_v1(table: pa.Table) -> ResultDigest:
    """Row count and hash (``dpdb-rowset-v1``) of an Arrow table; :func:`dpdb.citations.digest_table`
    computes either method."""
    n = table.num_rows
    tags = [canonical_tag(t) for t in table.schema.types]
    arrays = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in table.columns]
    sort_arrays = [_sort_array(a, tag) for a, tag in zip(arrays, tags, strict=True)]
    order: np.ndarray | None = None
    keys = {f"c{k}": a for k, a in enumerate(sort_arrays) if a is not None}
    if n > 1 and keys:
        key_tags = [t for t, a in zip(tags, sort_arrays, strict=True) if a is not None]
        order = _order(list(keys.values()), key_tags)
    columns = []
    for name, array, sort_array, tag in zip(table.column_names, arrays, sort_arrays, tags, strict=True):
        source = sort_array if tag in ("json", "binary") and sort_array is not None else array
        columns.append(ColumnDigest(name, tag, _hash_column(source, tag, order)))
    return _result(n, columns)


_NUMERIC = ("int64", "float64", "timestamp_us", "date_days", "time_us", "duration_us")


def _order(keys: list[pa.Array], tags: list[str]) -> np.ndarray | None:
    """Indices that sort the rows ascending by every key in turn (nulls last, NaN after numbers);
    None when they are in that order already.

    Shortcut: when the first key is numeric without nulls or NaN and no two rows
    share its value (an ID first, the usual case), sorting by it alone is the
    whole order; numpy does that far faster than a multi-key sort.
    """
    first, tag = keys[0], tags[0]
    if tag in _NUMERIC and not first.null_count:
        values = _fixed_values(first, tag) if tag != "float64" else first.to_numpy(zero_copy_only=False)
        if tag != "float64" or not np.isnan(values).any():
            if bool(np.all(values[1:] > values[:-1])):  # already in order (ORDER BY, index scans)
                return None
            order = np.argsort(values, kind="quicksort")
            ordered = values[order]
            if not np.any(ordered[1:] == ordered[:-1]):
                return order
    table = pa.table({f"c{k}": a for k, a in enumerate(keys)})
    indices = pc.sort_indices(table, sort_keys=[(f"c{k}", "ascending", "at_end") for k in range(len(keys))])
    return indices.to_numpy()


def _hash_column(array: pa.Array, tag: str, order: np.ndarray | None) -> str:
    h = hashlib.sha256()
    n = len(array)
    if array.null_count:
        valid = array.is_valid().to_numpy(zero_copy_only=False).astype(np.uint8)
        h.update(valid[order] if order is not None else valid)
    else:
        h.update(b"\x01" * n)
    if tag == "null":
        return h.hexdigest()
    if tag in ("utf8", "binary", "json"):
        if order is not None:
            array = array.take(pa.array(order))
        lengths, data = variable_parts(array, tag)
        h.update(lengths)
        h.update(data)
        return h.hexdigest()
    values = _fixed_values(array, tag)
    h.update(np.ascontiguousarray(values[order] if order is not None else values).data)
    return h.hexdigest()


# -- the reference: plain Python, from rows --------------------------------------------------------


def _canonical_value(value: Any, tag: str) -> Any:
    if value is None:
        return None
    if tag == "int64":
        return int(value)
    if tag == "float64":
        v = float(value)
        return _NAN if math.isnan(v) else v + 0.0
    if tag == "bool":
        return bool(value)
    if tag == "utf8":
        return str(value)
    if tag == "binary":
        return bytes(value)
    if tag == "timestamp_us":
        aware = value if value.tzinfo is not None else value.replace(tzinfo=_dt.UTC)
        return _micros(aware - _EPOCH)
    if tag == "date_days":
        return (value - _EPOCH_DATE).days
    if tag == "time_us":
        return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
    if tag == "duration_us":
        return _micros(value)
    if tag == "null":
        return None
    return _json_text(value)


def _sort_key(value: Any, tag: str) -> tuple:
    if value is None:
        return (1, 0, 0)
    if tag == "float64" and math.isnan(value):
        return (0, 1, 0)
    return (0, 0, value)


def _streams(values: list[Any], tag: str) -> tuple[bytes, bytes, bytes]:
    """The canonical encoding of a column: its validity bytes, its values (NULL as 0) or for
    ``utf8``, ``json`` and ``binary`` its byte lengths, and those values' bytes."""
    valid = b"".join(b"\x00" if v is None else b"\x01" for v in values)
    if tag == "null":
        return valid, b"", b""
    if tag in ("utf8", "binary", "json"):
        data = [b"" if v is None else (v if isinstance(v, bytes) else v.encode()) for v in values]
        return valid, b"".join(struct.pack("<q", len(d)) for d in data), b"".join(data)
    if tag == "float64":
        return valid, b"".join(struct.pack("<d", 0.0 if v is None else v) for v in values), b""
    if tag == "bool":
        return valid, bytes(0 if v is None else int(v) for v in values), b""
    return valid, b"".join(struct.pack("<q", 0 if v is None else v) for v in values), b""


def _column_sha256(values: list[Any], tag: str, method: str) -> str:
    valid, fixed, data = _streams(values, tag)
    if method == METHOD_V1:  # validity bytes, then values (or lengths), then bytes: one stream
        return hashlib.sha256(valid + fixed + data).hexdigest()
    # v2, v3: the NULL rows' numbers; values or lengths; bytes: three streams, their digests hashed
    nulls = b"".join(struct.pack("<q", k) for k, v in enumerate(values) if v is None)
    stream_hash = stream_hasher(method)
    digests = b"".join(stream_hash(stream).digest() for stream in (nulls, fixed, data))
    return hashlib.sha256(digests).hexdigest()


def stream_hasher(method: str) -> Any:
    """The hash of a column's three streams in ``method`` (v2: SHA-256; v3: BLAKE3, 32 bytes): a
    constructor with hashlib's interface (``update``, ``digest``)."""
    return blake3.blake3 if method == METHOD_V3 else hashlib.sha256


def digest_rows(
    columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]], method: str = METHOD
) -> ResultDigest:
    """The reference implementation of the hashing methods over plain Python values.

    Parameters
    ----------
    columns
        (name, canonical type) of each column, in result order (a citation
        lists them; :func:`canonical_tag` maps Arrow types).
    rows
        The rows as sequences of Python values (``None`` for NULL; ints,
        floats, bools, str, bytes, datetimes, dates, times, timedeltas, lists).
    method
        ``dpdb-rowset-v3`` (the default), ``-v2`` or ``-v1``: a citation names its own.
    """
    check_method(method)
    tags = [tag for _, tag in columns]
    canonical = [tuple(_canonical_value(v, tag) for v, tag in zip(row, tags, strict=True)) for row in rows]
    canonical.sort(key=lambda row: tuple(_sort_key(v, tag) for v, tag in zip(row, tags, strict=True)))
    digests = [
        ColumnDigest(name, tag, _column_sha256([row[k] for row in canonical], tag, method))
        for k, (name, tag) in enumerate(columns)
    ]
    return _result(len(canonical), digests, method)


def variable_parts(array: pa.Array, tag: str) -> tuple[memoryview, memoryview]:
    """A text, binary or JSON column's value lengths (int64 little-endian, a null as empty) and the
    values' bytes one after another: how both hash methods encode variable-length values."""
    n = len(array)
    if array.null_count:
        array = array.fill_null("" if tag != "binary" else b"")
    wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    if not (wide or pa.types.is_string(array.type) or pa.types.is_binary(array.type)):
        array = array.cast(pa.large_binary() if tag == "binary" else pa.large_string())
        wide = True
    _, offsets_buf, data_buf = array.buffers()[:3]
    offsets = np.frombuffer(offsets_buf, dtype="<i8" if wide else "<i4")[array.offset : array.offset + n + 1]
    lengths = np.ascontiguousarray(np.diff(offsets), dtype="<i8").data
    if data_buf is None or not n or offsets[-1] <= offsets[0]:
        return lengths, memoryview(b"")
    return lengths, memoryview(data_buf)[int(offsets[0]) : int(offsets[-1])]
