"""Loads straight into a partitioned table's partitions, the key map written by the loader.

The key map of a partitioned catalog table (dpdb/keymap.py) is kept by a statement-level
trigger with a transition table on the parent. PostgreSQL's COPY into a partitioned table
with such a trigger inserts row by row (``CIM_SINGLE`` in copyfrom.c: "for partitioned tables
we can't support multi-inserts when there are any statement level insert triggers") and
collects every inserted row, all columns, into the transition table. A file load does
better in the same transaction: it groups each batch's rows by partition (they arrive
sorted by pixel, so each partition's rows are one slice), COPYs each group into its
partition (batched inserts, no routing, no transition table: the parent's statement
triggers do not fire for a partition), then COPYs the file's keys and pixels into the key
map, whose unique key refuses a key held anywhere in the table exactly as the trigger's
insert does. PostgreSQL checks every row against its partition's bounds. Other writers
(prompt processing, relink, deletes) keep going through the parent and its triggers.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import adbc_driver_postgresql.dbapi as adbc
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from dpdb.keymap import MAP_PREFIX, fill_statement, map_name
from dpdb.model.layout import PIXEL_COLUMN

__all__ = [
    "DirectTarget",
    "direct_target",
    "PartitionWriter",
    "KeyMapWriter",
    "keymap_writer",
    "FLUSH_ROWS",
    "PREFETCH",
]

FLUSH_ROWS = 131_072
"""Rows held (as slices of the batches read) before each partition's share is COPYed: a COPY
statement per partition and flush; the reader decodes ahead meanwhile (``PREFETCH`` batches)."""

PREFETCH = 4

_BOUND = re.compile(r"^FOR VALUES FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)$")


@dataclass(frozen=True)
class DirectTarget:
    """A partitioned table that can be loaded partition by partition, and its key map."""

    catalog: str
    partitions: tuple[str, ...]  # in pixel order
    starts: np.ndarray  # first _healpix_29 of each partition
    ends: np.ndarray  # end (exclusive)
    keymap: str
    map_columns: tuple[str, ...]  # the map's key columns, then the pixel column


def direct_target(conn: psycopg.Connection, catalog: str, table: str) -> DirectTarget | None:
    """``catalog.table`` if its rows can go straight into its partitions: range partitions on the
    pixel (no default, no foreign one) and a key map kept by an enabled insert trigger; else None
    (a release loading with deferred indexes has dropped the triggers: it COPYs into the parent)."""
    keymap = map_name(table)
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = "
        "to_regclass(%s) AND tgname = 'dpdb_keys_insert' AND tgenabled IN ('O', 'A'))",
        (f'"{catalog}"."{keymap}"', f'"{catalog}"."{table}"'),
    ).fetchone()
    if not row or not row[0]:
        return None
    parts = conn.execute(
        "SELECT c.relname, c.relkind, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
        (f'"{catalog}"."{table}"',),
    ).fetchall()
    key = conn.execute(
        "SELECT a.attname FROM pg_partitioned_table p JOIN pg_attribute a ON a.attrelid = p.partrelid "
        "AND a.attnum = p.partattrs[0] WHERE p.partrelid = to_regclass(%s) AND p.partstrat = 'r' "
        "AND p.partnatts = 1",
        (f'"{catalog}"."{table}"',),
    ).fetchone()
    if not parts or key is None or key[0] != PIXEL_COLUMN:
        return None
    bounds = []
    for name, kind, bound in parts:
        m = _BOUND.match(str(bound or ""))
        if kind != "r" or m is None:
            return None  # a foreign (sharded) or default partition: through the parent
        bounds.append((int(m.group(1)), int(m.group(2)), str(name)))
    bounds.sort()
    columns = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        (f'"{catalog}"."{keymap}"',),
    ).fetchall()
    return DirectTarget(
        catalog,
        tuple(b[2] for b in bounds),
        np.array([b[0] for b in bounds], dtype=np.int64),
        np.array([b[1] for b in bounds], dtype=np.int64),
        keymap,
        tuple(str(c[0]) for c in columns),
    )


@dataclass
class KeyMapWriter:
    """Collects a file's keys and pixels from its batches and COPYs them into the key map, in the
    file's transaction (``cur``)."""

    catalog: str
    keymap: str
    columns: tuple[str, ...]  # the map's key columns, then the pixel column
    sort: bool = True
    """COPY in key order (for a map with its unique index; not for an unkeyed one being filled)."""
    seconds: float = 0.0
    """Wall time of the COPY into the key map (what the check of keys across the table costs)."""
    _keys: list[pa.RecordBatch] = field(default_factory=list)

    def take(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        self._keys.append(
            pa.RecordBatch.from_arrays([batch.column(c) for c in self.columns], names=list(self.columns))
        )
        return batch

    def write(self, cur: adbc.Cursor) -> None:
        """COPY the keys, in key order: the map's unique index then fills page after page instead
        of at random places (the rows came grouped by pixel)."""
        if self._keys:
            start = time.monotonic()
            keys = pa.Table.from_batches(self._keys)
            if self.sort:
                keys = keys.take(pc.sort_indices(keys, [(c, "ascending") for c in self.columns[:-1]]))
            cur.adbc_ingest(self.keymap, keys.to_reader(), mode="append", db_schema_name=self.catalog)
            self.seconds += time.monotonic() - start
            self._keys.clear()


def keymap_writer(conn: psycopg.Connection, catalog: str, table: str) -> KeyMapWriter | None:
    """A writer into the key map of ``catalog.table``, if it has one (unkeyed: a release loading with
    deferred indexes, dpdb/lifecycle/bulk.py)."""
    keymap = map_name(table)
    columns = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        (f'"{catalog}"."{keymap}"',),
    ).fetchall()
    if not columns:
        return None
    return KeyMapWriter(catalog, keymap, tuple(str(c[0]) for c in columns), sort=False)


@dataclass
class PartitionWriter:
    """COPYs one file's batches into their partitions and its keys into the key map, on ``cur``
    (the file's transaction). Batches must come sorted by pixel."""

    target: DirectTarget
    cur: adbc.Cursor
    schema: pa.Schema
    rows: int = 0
    _pending: dict[int, list[pa.RecordBatch]] = field(default_factory=dict)
    _held: int = 0
    _keys: KeyMapWriter | None = None

    def __post_init__(self) -> None:
        self._keys = KeyMapWriter(self.target.catalog, self.target.keymap, self.target.map_columns)
        # A deferred map is filled from the table first, before this file's rows are in it.
        table = self.target.keymap.removeprefix(MAP_PREFIX)
        self.cur.execute(fill_statement(self.target.catalog, table, list(self.target.map_columns[:-1])))
        self.cur.fetchall()

    @property
    def keymap_seconds(self) -> float:
        """Wall time of the key map's COPY."""
        return self._keys.seconds if self._keys else 0.0

    def add(self, batch: pa.RecordBatch) -> None:
        pix = batch.column(PIXEL_COLUMN).to_numpy()
        if len(pix) == 0:
            return
        if np.any(pix[1:] < pix[:-1]):
            raise ValueError("batch not sorted by pixel")  # a bug of the caller, not of the file
        t = self.target
        part = np.searchsorted(t.starts, pix, side="right") - 1
        outside = (part < 0) | (pix >= t.ends[np.clip(part, 0, len(t.ends) - 1)])
        if outside.any():  # no partition holds it: PostgreSQL names the row in its error
            part[outside] = 0
        cuts = np.flatnonzero(np.diff(part)) + 1
        for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(part)]]), strict=True):
            self._pending.setdefault(int(part[lo]), []).append(batch.slice(int(lo), int(hi - lo)))
        assert self._keys is not None
        self._keys.take(batch)
        self._held += batch.num_rows
        if self._held >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        for part, slices in sorted(self._pending.items()):
            reader = pa.RecordBatchReader.from_batches(self.schema, slices)
            self.rows += self.cur.adbc_ingest(
                self.target.partitions[part], reader, mode="append", db_schema_name=self.target.catalog
            )
        self._pending.clear()
        self._held = 0

    def finish(self) -> int:
        """COPY what is held, then the keys into the key map (a key the table holds fails here)."""
        self.flush()
        assert self._keys is not None
        self._keys.write(self.cur)
        return self.rows
