"""Benchmark: `dpdb load` against a raw binary COPY of the same Arrow data.

Generates a DiaSource-shaped Parquet file (every schema column, 2 million rows
by default) and, on a fresh embedded server, loads it

  (a) with dpdb's loader (validation, pixel computation, manifest, COPY, key map)
      into the partitioned, indexed prompt.DiaSource,
  (b) with a raw ADBC binary COPY (adbc_ingest) of the same rows, already in
      memory with their pixel column, into an identical empty table (its key
      map's trigger included, as for any client), and
  (b2) with raw ADBC COPYs of the same rows grouped by partition in memory
      straight into the partitions of an identical table without key map (the
      engine's limit, for reference);

then loads the same rows split into 8 HEALPix-partitioned files
(Norder=1/Dir=0/Npix=N.parquet) with --jobs 1 and --jobs 2, and finally (c) a
second file of as many rows with new keys into the filled table (what the check
that keys are unique across the whole table costs grows with). Prints rows/s,
the ratios and the time the loader spent writing keys into the key map.
Usage: python benchmarks/bench_load.py [--rows N] [--without-keymap]"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dpdb.config import Settings
from dpdb.db import prepare
from dpdb.etl.load import load
from dpdb.healpix import pixels
from dpdb.keymap import drop_triggers
from dpdb.model.felis import latest_version
from dpdb.pg import adbc_uri, conninfo
from dpdb.processing.synthetic import synthetic_table
from dpdb.registry.catalogs import create_catalog
from dpdb.server import EmbeddedServer


def make_data(rows: int, workdir: Path) -> tuple[Path, Path, pa.Table]:
    table = synthetic_table("DiaSource", rows, seed=1, ra_range=(0.0, 90.0), dec_range=(0.0, 41.8))
    single = workdir / "DiaSource.parquet"
    pq.write_table(table, single, row_group_size=131_072)
    # The same rows as a HATS-like tree: Norder=1 pixels of the positions.
    tree = workdir / "hats"
    pix = pixels(table["ra"].to_numpy(), table["dec"].to_numpy()) >> (2 * (29 - 1))
    for n in np.unique(pix):
        part = table.filter(pa.array(pix == n))
        path = tree / "Norder=1" / "Dir=0" / f"Npix={n}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, path, row_group_size=131_072)
    return single, tree, table


def reset(settings: Settings) -> None:
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        conn.execute("TRUNCATE prompt.diasource, dpdb_meta.load_manifest")
        for schema in ("rawcopy", "rawparts"):
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute("DELETE FROM dpdb_meta.catalog WHERE name = %s", (schema,))
        conn.execute("CHECKPOINT")


def drop_keymap_triggers(settings: Settings, catalog: str) -> None:
    """Take the key map off ``catalog``.DiaSource (dropped: a disabled trigger still collects rows)."""
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        drop_triggers(conn, catalog, "diasource")


def timed_load(settings: Settings, path: Path, jobs: int) -> float:
    reset(settings)
    start = time.perf_counter()
    summary = load(settings, "DiaSource", [path], jobs=jobs)
    elapsed = time.perf_counter() - start
    assert summary.rows > 0
    KEYMAP_SECONDS[path.name] = summary.keymap_seconds
    return elapsed


KEYMAP_SECONDS: dict[str, float] = {}
"""Per load (file or tree name), the loader's time writing keys into the key map."""


def raw_data(table: pa.Table) -> pa.Table:
    data = table.rename_columns([n.lower() for n in table.column_names])
    return data.append_column("_healpix_29", pa.array(pixels(data["ra"].to_numpy(), data["dec"].to_numpy())))


def timed_raw_copy(settings: Settings, data: pa.Table, *, partitions: bool = False) -> float:
    """A raw ADBC COPY of ``data`` (already in memory, with its pixel) into a new copy of the
    prompt catalog's DiaSource: into the partitioned table as any client would (b), or, with
    ``partitions``, grouped by partition in memory and COPYed into each partition of a copy
    without key map (b2: the engine's own limit: no routing, no triggers, no key map)."""
    reset(settings)
    schema = "rawparts" if partitions else "rawcopy"
    with psycopg.connect(conninfo(settings)) as conn:
        create_catalog(conn, schema, "prompt", latest_version(), settings.partition_order)
    groups: list[tuple[str, pa.Table]] = []
    if partitions:
        drop_keymap_triggers(settings, schema)
        shift = 2 * (29 - settings.partition_order)
        part = pc.shift_right(data["_healpix_29"], shift).to_numpy()
        order = np.argsort(part, kind="stable")
        data = data.take(pa.array(order))
        part = part[order]
        with psycopg.connect(conninfo(settings)) as conn:
            names = dict(
                conn.execute(
                    "SELECT pg_get_expr(c.relpartbound, c.oid), c.relname FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'rawparts.diasource'::regclass"
                ).fetchall()
            )
        by_start = {int(b.split("'")[1]) >> shift: n for b, n in names.items()}
        cuts = np.flatnonzero(np.diff(part)) + 1
        for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(part)]]), strict=True):
            groups.append((by_start[int(part[lo])], data.slice(int(lo), int(hi - lo))))
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    start = time.perf_counter()
    with adbc.connect(adbc_uri(settings)) as aconn, aconn.cursor() as cur:
        for name, chunk in groups or [("diasource", data)]:
            cur.adbc_ingest(name, chunk.to_reader(max_chunksize=65_536), mode="append", db_schema_name=schema)
        aconn.commit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--partition-order", type=int, default=1)
    parser.add_argument(
        "--without-keymap",
        action="store_true",
        help="Drop the key map's triggers of prompt.DiaSource (dpdb/keymap.py) to measure what it costs.",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="dpdb-bench-"))
    os.chmod(workdir, 0o755)
    home = workdir / "home"
    settings = Settings(home=home, database="bench", partition_order=args.partition_order)
    try:
        t0 = time.perf_counter()
        single, tree, table = make_data(args.rows, workdir)
        size = single.stat().st_size
        print(
            f"data: {args.rows:,} DiaSource rows x {table.num_columns} columns, {size / 1e6:.0f} MB Parquet "
            f"(generated in {time.perf_counter() - t0:.0f} s); "
            f"{len(list(tree.rglob('*.parquet')))} files in tree"
        )
        prepare(settings)
        if args.without_keymap:
            drop_keymap_triggers(settings, "prompt")
        data = raw_data(table)
        ours = timed_load(settings, single, jobs=1)
        raw = timed_raw_copy(settings, data)
        limit = timed_raw_copy(settings, data, partitions=True)
        del data
        jobs1 = timed_load(settings, tree, jobs=1)
        jobs2 = timed_load(settings, tree, jobs=2)
        second = workdir / "DiaSource-2.parquet"
        ids = pc.add(table["diaSourceId"], pa.scalar(1 << 40, pa.int64()))
        renumbered = table.set_column(table.schema.get_field_index("diaSourceId"), "diaSourceId", ids)
        pq.write_table(renumbered, second, row_group_size=131_072)
        start = time.perf_counter()
        summary = load(settings, "DiaSource", [second])
        filled = time.perf_counter() - start
        n = args.rows
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"partition order {args.partition_order} ({12 * 4**args.partition_order} partitions)"
        )
        print(f"(a) dpdb load, 1 file:        {n / ours:>12,.0f} rows/s  ({ours:.1f} s)")
        print(f"(b) raw ADBC binary COPY:     {n / raw:>12,.0f} rows/s  ({raw:.1f} s)  into the same table")
        print(f"ratio (a)/(b):                {raw / ours:>12.2f}   (target >= 0.95)")
        print(
            f"(b2) raw COPY per partition:  {n / limit:>12,.0f} rows/s  ({limit:.1f} s)  rows grouped "
            "in memory, no key map"
        )
        print(f"ratio (a)/(b2):               {limit / ours:>12.2f}")
        print(f"dpdb load --jobs 1, tree:     {n / jobs1:>12,.0f} rows/s  ({jobs1:.1f} s)")
        print(f"dpdb load --jobs 2, tree:     {n / jobs2:>12,.0f} rows/s  ({jobs2:.1f} s)")
        print(f"speed-up jobs 2 / jobs 1:     {jobs1 / jobs2:>12.2f}   (target > 1)")
        print(f"(c) 1 file into filled table: {n / filled:>12,.0f} rows/s  ({filled:.1f} s)")
        if args.without_keymap:
            print("key map: dropped (keys NOT checked across the table)")
        else:
            for label, seconds, wall in (
                ("(a)", KEYMAP_SECONDS[single.name], ours),
                ("(c)", summary.keymap_seconds, filled),
            ):
                print(
                    f"key map {label}: {seconds:.1f} s of {wall:.1f} s = {seconds / wall * 100:.1f} % "
                    "of the load's time (keys unique across the table; target <= 10 %)"
                )
    finally:
        EmbeddedServer(home).down()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
