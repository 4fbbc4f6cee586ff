"""Validation of a sharded release, per shard and in parallel (dpdb/lifecycle/validate.py combines).

Run on the coordinator, a check that scans a whole table (counts of rows, of
non-null values, of IDs of another origin, of positions out of range) pulls
every row of every foreign partition through postgres_fdw, one shard after
the other: PostgreSQL 15 ships no partial aggregate to a shard. Here each
check's query runs on every shard at once, on the shard's own partitioned
table (its partitions only), and the coordinator adds the shards' figures up:

- :func:`summed`: counts that add across shards (``count(*)``, ``count(col)``,
  ``count(*) FILTER (...)``);
- :func:`distinct_keys`: keys are unique per partition on each shard; across
  shards only the keys themselves tell, so each shard sends its key columns
  (ADBC, binary) and the coordinator counts the distinct ones;
- :func:`arrow_per_shard`: a few columns of every row, for checks computed in
  Python (an object's stored pixel against its position's).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from dpdb.errors import ShardError

from . import registry
from .commit import adbc_uri_of
from .placement import _sharded_tables

__all__ = ["sharded_tables", "summed", "distinct_keys", "arrow_per_shard"]

T = TypeVar("T")


def sharded_tables(conn: psycopg.Connection, release: str) -> dict[str, list[str]]:
    """Partitioned tables of ``release`` (lower-case) -> the shards holding their partitions."""
    return _sharded_tables(conn, release)


def _on_shards(conn: psycopg.Connection, shards: list[str], work: Callable[[str, str], T]) -> list[T]:
    """``work(shard, conninfo)`` on every shard at once (one thread each); results in shard order."""
    infos = {s: registry.shard_conninfo(conn, s) for s in shards}
    with ThreadPoolExecutor(max(1, len(shards)), thread_name_prefix="validate-shard") as pool:
        return list(pool.map(lambda s: work(s, infos[s]), shards))


def summed(
    conn: psycopg.Connection, release: str, table: str, shards: list[str], select: sql.Composable
) -> list[int]:
    """``SELECT <select> FROM release.table`` on every shard, the columns added up across shards."""
    query = sql.SQL("SELECT {} FROM {}").format(select, sql.Identifier(release, table)).as_string(conn)

    def one(shard: str, info: str) -> tuple:
        with registry.connect_shard(info, shard) as remote:
            remote.execute("SET jit = off")
            row = remote.execute(query.encode()).fetchone()
            assert row is not None
            return tuple(row)

    rows = _on_shards(conn, shards, one)
    return [sum(values) for values in zip(*rows, strict=True)]


def arrow_per_shard(
    conn: psycopg.Connection, release: str, table: str, shards: list[str], columns: list[str]
) -> list[pa.Table]:
    """``columns`` of every row of ``release.table``, one Arrow table per shard (read at once)."""
    import adbc_driver_postgresql.dbapi as adbc

    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(release, table)
    ).as_string(conn)

    def one(shard: str, info: str) -> pa.Table:
        try:
            link = adbc.connect(adbc_uri_of(info))
        except Exception as e:  # the driver's errors are not a DB-API hierarchy we can name
            raise ShardError(f"shard {shard} is unreachable: {str(e).splitlines()[0]}") from e
        with link, link.cursor() as cur:
            cur.execute(query)
            return cur.fetch_arrow_table()

    return _on_shards(conn, shards, one)


def distinct_keys(
    conn: psycopg.Connection, release: str, table: str, shards: list[str], key: list[str]
) -> int:
    """How many distinct values of the key columns ``key`` the shards hold together."""
    parts = arrow_per_shard(conn, release, table, shards, key)
    if len(key) == 1:
        values = np.concatenate([p.column(0).to_numpy(zero_copy_only=False) for p in parts])
        return int(np.unique(values).size)
    dtype = [(f"k{i}", parts[0].column(i).to_numpy(zero_copy_only=False).dtype) for i in range(len(key))]
    records = []
    for p in parts:
        rec = np.empty(p.num_rows, dtype=dtype)
        for i in range(len(key)):
            rec[f"k{i}"] = p.column(i).to_numpy(zero_copy_only=False)
        records.append(rec)
    return int(np.unique(np.concatenate(records)).size)
