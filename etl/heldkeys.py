"""A release's keys held in memory while its files stream, to check them once the files are in.

A release loaded with deferred indexes (dpdb/lifecycle/bulk.py) checks that each
partitioned table's keys are unique across its partitions (the job of its key map,
dpdb/keymap.py) after the files are in. Each file's keys, which the ETL sorts anyway to
refuse a key repeated within the file (etl/validate.py), are kept here after the file
commits (8 bytes per key column and row). The build merges each table's files into
key order and looks for two equal neighbours (:func:`first_repeat`): a key repeated in
two files or two partitions refuses the release. The maps stay empty ("deferred"): the
first later statement that writes a key into the table fills its map from the table
(``keymap_fill`` of sql/keymap.sql). Measured on a 10M-row release (benchmarks/README.md):
writing the maps during the load (a COPY of the keys, a unique index, their WAL and its
archiving, ~0.55 CPU-µs per key) cost 19 % of the load rate; the check in memory costs
the sort of keys that are already sorted per file.

Memory is bounded: beyond ``HELD_KEY_BYTES`` a file COPYs its keys into the map in
its own transaction, and the build then COPYs the held rest into the map and gives it
its unique key (the repeat check of that case). A resumed load refills the maps from
the tables.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import psycopg
from psycopg import sql

__all__ = ["HELD_KEY_BYTES", "HeldKeys", "copy_keys", "first_repeat", "sorted_by_key"]

HELD_KEY_BYTES = 1 << 30
"""Keys held in memory for a whole release load (1 GiB: some 40M rows of a 3-column map)."""

COPY_ROWS = 1 << 20
"""Rows encoded per write of :func:`copy_keys`."""

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # binary COPY header: signature, flags, extension length
_TRAILER = b"\xff\xff"
_WIRE = {"i": ">i8", "f": ">f8"}  # bigint and double precision keys, as 8 bytes in network order


@dataclass
class HeldKeys:
    """Per table (database name), the committed files' keys then pixels, each file's sorted by key."""

    limit: int = field(default_factory=lambda: HELD_KEY_BYTES)
    _files: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)
    _spilled: set[str] = field(default_factory=set)
    _bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def fits(columns: list[np.ndarray]) -> bool:
        """Whether :func:`copy_keys` can write these columns (8-byte integers or floats)."""
        return all(c.dtype.kind in _WIRE and c.dtype.itemsize == 8 for c in columns)

    def reserve(self, columns: list[np.ndarray]) -> bool:
        """Room for a file's keys (released by :meth:`release` if the file does not commit)."""
        size = sum(c.nbytes for c in columns)
        with self._lock:
            if not self.fits(columns) or self._bytes + size > self.limit:
                return False
            self._bytes += size
            return True

    def release(self, columns: list[np.ndarray]) -> None:
        with self._lock:
            self._bytes -= sum(c.nbytes for c in columns)

    def add(self, table: str, columns: list[np.ndarray]) -> None:
        """Keep a committed file's keys (reserved before its commit)."""
        with self._lock:
            self._files.setdefault(table, []).append(columns)

    def spill(self, table: str) -> None:
        """A file of ``table`` wrote its keys into the map itself (no room here)."""
        with self._lock:
            self._spilled.add(table)

    def spilled(self, table: str) -> bool:
        return table in self._spilled

    def take(self, table: str) -> list[np.ndarray] | None:
        """``table``'s keys and pixels, all files together, sorted by key; forgotten here."""
        with self._lock:
            files = self._files.pop(table, None)
        if not files:
            return None
        if len(files) == 1:
            return files[0]
        return sorted_by_key([np.concatenate(cols) for cols in zip(*files, strict=True)])


def sorted_by_key(columns: list[np.ndarray]) -> list[np.ndarray]:
    """``columns`` (key columns, then the pixel) in key order; as they are if already in it."""
    keys = columns[:-1]
    if len(keys[0]) < 2:
        return columns
    later = np.zeros(len(keys[0]) - 1, dtype=bool)  # row i+1 sorts after row i on the keys so far
    tied = np.ones(len(keys[0]) - 1, dtype=bool)
    for k in keys:
        later |= tied & (k[1:] > k[:-1])
        tied &= k[1:] == k[:-1]
    if (later | tied).all():
        return columns
    order = np.lexsort(keys[::-1])
    return [c[order] for c in columns]


def first_repeat(columns: list[np.ndarray]) -> tuple[object, ...] | None:
    """The first key (values of the key columns) held twice in ``columns`` (key columns, then the
    pixel, sorted by key: :meth:`HeldKeys.take`), or None if every key is held once."""
    keys = columns[:-1]
    if len(keys[0]) < 2:
        return None
    tied = np.ones(len(keys[0]) - 1, dtype=bool)
    for k in keys:
        tied &= k[1:] == k[:-1]
    at = np.flatnonzero(tied)
    return tuple(k[at[0]].item() for k in keys) if len(at) else None


def copy_keys(
    conn: psycopg.Connection,
    catalog: str,
    keymap: str,
    names: list[str],
    columns: list[np.ndarray],
    *,
    freeze: bool,
) -> None:
    """Binary COPY of ``columns`` (named ``names``) into ``catalog.keymap``, in the caller's transaction.

    ``freeze``: the map was created or truncated in this transaction (COPY ... FREEZE).
    """
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for i, c in enumerate(columns):
        fields += [(f"l{i}", ">i4"), (f"v{i}", _WIRE[c.dtype.kind])]
    wire = np.dtype(fields)
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary{})").format(
        sql.Identifier(catalog, keymap),
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", FREEZE") if freeze else sql.SQL(""),
    )
    rows = len(columns[0])
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        copy.write(_SIGNATURE)
        for lo in range(0, rows, COPY_ROWS):
            hi = min(rows, lo + COPY_ROWS)
            rec = np.empty(hi - lo, dtype=wire)
            rec["n"] = len(columns)
            for i, c in enumerate(columns):
                rec[f"l{i}"] = 8
                rec[f"v{i}"] = c[lo:hi]
            copy.write(rec.data)
        copy.write(_TRAILER)
