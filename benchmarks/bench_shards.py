"""Benchmark: one release on a single node against the same release over two local shards.

On a fresh embedded server it produces one release (processing/release.py:
``--objects`` static-sky objects over ``--nights`` nights; the defaults make
about 10 million rows) in a field centred where four HEALPix base pixels meet
(ra 135, dec 1), so that its partitions fall on both shards. Then, in the same
run and on the same machine, it loads it twice:

- ``single``: a database with no shards (every partition a local table);
- ``sharded``: a database with two local shard servers (``dpdb db up --shards 2``),
  the partitions balanced over them by the files' row counts.

For each it prints the load rate (rows/s of ``releases.load``) and the median
time of five runs (after one warm-up) of four queries read through ``current``:

1. a full-table aggregate: ``count(*)``, ``avg(psfFlux)`` over ForcedSource (on a sharded
   release the query path runs it once per shard, dpdb/shards/aggregate.py);
2. a 10″ cone on Object (``Archive.cone``, which adds the cone's pixel ranges);
3. an Object with its Sources (one object, by ID, with its pixel);
4. a count per partition of Source (``GROUP BY _healpix_29 >> shift``), and the same
   counted per pixel first (``GROUP BY _healpix_29``, the partition key), which
   postgres_fdw pushes down whole.

For the sharded release it also prints the rows and bytes that crossed from
the shards to the coordinator per query (EXPLAIN ANALYZE: the rows the
Foreign Scans returned, times their row width), next to the table's rows:
they must be of the order of the result, not of the table.

Usage: python benchmarks/bench_shards.py [--objects N] [--nights N] [--partition-order K] [--jobs N]
A smoke run: python benchmarks/bench_shards.py --objects 20000 --nights 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

import dpdb
from dpdb.archive import cone_pixel_ranges
from dpdb.config import Settings
from dpdb.db import prepare
from dpdb.healpix import PIXEL_ORDER
from dpdb.pg import conninfo
from dpdb.processing.release import produce
from dpdb.server import EmbeddedServer
from dpdb.shards.servers import stop_shards

CENTER = (135.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=285_000)
    parser.add_argument("--nights", type=int, default=6)
    parser.add_argument("--partition-order", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dpdb-bench-shards-"))
    os.chmod(home, 0o755)
    server = EmbeddedServer(home)
    try:
        run(home, args)
    finally:
        stop_shards(Settings(home=home))
        server.down()
        shutil.rmtree(home, ignore_errors=True)


def run(home: Path, args: argparse.Namespace) -> None:
    order = args.partition_order
    print(f"# bench_shards: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    t = time.monotonic()
    directory = home / "release"
    manifest = produce(
        directory, "dr1", objects=args.objects, nights=args.nights, partition_order=order, center=CENTER
    )
    total = manifest.total_rows
    print(f"produced dr1: {total:,} rows ({time.monotonic() - t:.0f} s): "
          + ", ".join(f"{k} {manifest.rows(k):,}" for k in manifest.tables))  # fmt: skip
    archives = {}
    for name in ("single", "sharded"):
        settings = Settings(home=home, database=name, partition_order=order, archive_dir=home / name)
        prepare(settings)
        archive = dpdb.Archive(settings=settings)
        if name == "sharded":
            archive.up(shards=2)
        archive.releases.create("dr1", balance_from=directory)
        t = time.monotonic()
        result = archive.releases.load("dr1", directory, jobs=args.jobs)
        seconds = time.monotonic() - t
        loaded = sum(result.rows.values())
        print(f"{name:8s} load: {loaded:,} rows in {seconds:.1f} s = {loaded / seconds:,.0f} rows/s")
        archive.releases.activate("dr1", force=True)
        archives[name] = archive
    placement = archives["sharded"].shards.placement("dr1")
    print("placement: " + "; ".join(f"{s}: {len(r)} pixel range(s)" for s, r in placement.items()))
    queries = _queries(archives["single"], order)
    print()
    print(f"{'query':22s} {'single s':>9s} {'sharded s':>9s} {'ratio':>6s} {'result rows':>11s} "
          f"{'rows moved':>10s} {'bytes moved':>12s} {'table rows':>11s}")  # fmt: skip
    for label, (sql, table_rows) in queries.items():
        times = {name: _median_time(a, sql) for name, a in archives.items()}
        rows = archives["single"].query_arrow(sql).num_rows
        moved, moved_bytes = _moved(archives["sharded"].settings, sql)
        print(
            f"{label:22s} {times['single']:9.3f} {times['sharded']:9.3f} "
            f"{times['sharded'] / times['single']:6.2f} {rows:11,d} {moved:10,d} {moved_bytes:12,d} "
            f"{table_rows:11,d}"
        )
        if label == "full-table aggregate":  # as it ran before the per-shard rewrite: on the coordinator
            plain = _median_plain(archives["sharded"].settings, sql)
            raw_moved, raw_bytes = _moved(archives["sharded"].settings, sql, rewrite=False)
            print(
                f"{'  same, not rewritten':22s} {'':9s} {plain:9.3f} {plain / times['single']:6.2f} "
                f"{rows:11,d} {raw_moved:10,d} {raw_bytes:12,d} {table_rows:11,d}"
            )


def _queries(single: dpdb.Archive, order: int) -> dict[str, tuple[str, int]]:
    counts = {
        t: single.query_arrow(f"SELECT count(*) AS n FROM current.{t}")["n"][0].as_py()
        for t in ("Object", "Source", "ForcedSource")
    }
    # the object with the most sources, and a dense spot for the cone
    row = single.query_arrow(
        "SELECT o.objectid, o.coord_ra, o.coord_dec, o._healpix_29 FROM current.Object o "
        "JOIN current.Source s USING (objectid) GROUP BY 1, 2, 3, 4 ORDER BY count(*) DESC, 1 LIMIT 1"
    ).to_pylist()[0]
    ra, dec, object_id = row["coord_ra"], row["coord_dec"], row["objectId"]
    radius = 10 / 3600
    ranges = " OR ".join(
        f"_healpix_29 >= {lo} AND _healpix_29 < {hi}" for lo, hi in cone_pixel_ranges(ra, dec, radius)
    )
    shift = 2 * (PIXEL_ORDER - order)
    return {
        "full-table aggregate": (
            "SELECT count(*), avg(psfFlux) FROM current.ForcedSource", counts["ForcedSource"]
        ),
        "10\" cone (Object)": (
            "SELECT * FROM current.Object "
            f"WHERE q3c_radial_query(coord_ra, coord_dec, {ra}, {dec}, {radius}) AND ({ranges})",
            counts["Object"],
        ),
        "Object + Sources": (
            "SELECT o.objectId, o.coord_ra, o.coord_dec, s.sourceId, s.psfFlux, s.psfFluxErr "
            f"FROM current.Object o JOIN current.Source s ON s.objectId = o.objectId "
            f"AND s._healpix_29 = o._healpix_29 "
            f"WHERE o.objectId = {object_id} AND o._healpix_29 = {row['_healpix_29']}",
            counts["Object"] + counts["Source"],
        ),
        "count per partition": (
            f"SELECT _healpix_29 >> {shift} AS partition, count(*) FROM current.Source GROUP BY 1 ORDER BY 1",
            counts["Source"],
        ),
        "same, per pixel first": (  # grouped by the partition key: complete aggregates run on the shards
            f"SELECT _healpix_29 >> {shift} AS partition, sum(n) FROM (SELECT _healpix_29, count(*) AS n "
            "FROM current.Source GROUP BY _healpix_29) p GROUP BY 1 ORDER BY 1",
            counts["Source"],
        ),
    }


def _median_time(archive: dpdb.Archive, sql: str, runs: int = 5) -> float:
    archive.query_arrow(sql)  # warm-up: plans, connections, caches
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        archive.query_arrow(sql)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _median_plain(settings: Settings, sql: str, runs: int = 3) -> float:
    """Median time of ``sql`` sent as it is on the coordinator (psycopg, no per-shard rewrite)."""
    times = []
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute(sql).fetchall()
        for _ in range(runs):
            t = time.perf_counter()
            conn.execute(sql).fetchall()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def _moved(settings: Settings, sql: str, rewrite: bool = True) -> tuple[int, int]:
    """Rows and bytes the Foreign Scans of ``sql`` returned to the coordinator (EXPLAIN ANALYZE)."""
    from dpdb.shards.aggregate import rewrite_aggregate

    with psycopg.connect(conninfo(settings)) as conn:
        if rewrite:
            sql = rewrite_aggregate(conn, sql, ["public"]) or sql  # as the query path runs it
        conn.rollback()
        plan = conn.execute(f"EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) {sql}").fetchone()[0]  # type: ignore[index]
    if isinstance(plan, str):
        plan = json.loads(plan)
    rows = size = 0
    stack = [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        if node.get("Node Type") == "Foreign Scan":
            n = int(node.get("Actual Rows", 0) * node.get("Actual Loops", 1))
            rows += n
            size += n * int(node.get("Plan Width", 0))
        stack += node.get("Plans", [])
    return rows, size


if __name__ == "__main__":
    sys.exit(main())
