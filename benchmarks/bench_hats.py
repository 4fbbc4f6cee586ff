"""Benchmark: `dpdb hats export` of an Object table, against `dpdb load` of the same table, and an
LSDB cross-match against the same `q3c_join` in PostgreSQL.

On a fresh embedded server it generates a synthetic Object table (every one of
its 336 columns; positions uniform over a 20° x 20° box) as Parquet files of at
most 100,000 rows, and

  (a) loads them into a release with `dpdb load --jobs 2` (rows/s);
  (b) exports the release's Object as a HATS collection with a 10" margin,
      `dpdb hats export --jobs 2` (rows/s, and the peak RSS of this process and
      of the Dask workers, which hold the data);
  (c) cross-matches 10,000 external positions (9,000 within 0.9" of an Object,
      1,000 anywhere in the box) within 1": in PostgreSQL with `q3c_join`
      against the loaded table, and in LSDB (2 worker processes) against the
      HATS catalog; both pair lists must be equal.

Usage: python benchmarks/bench_hats.py [--rows N] [--jobs N] [--keep DIR] [--load-only]
(default 1,000,000 rows: about 3 GiB of Parquet and 15-30 minutes on 2 cores).

With ``--keep DIR`` the generated files and the loaded database stay in DIR: a
rerun reuses them (the load's figure is the one recorded by the run that
loaded, in DIR/load.json, printed with its date and load average), so the load
(``--load-only``) and the export can be timed in two runs of a few minutes each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow.parquet as pq

from dpdb.config import Settings
from dpdb.db import prepare, reset_database
from dpdb.etl.load import load
from dpdb.model.felis import latest_version
from dpdb.pg import conninfo
from dpdb.processing.synthetic import synthetic_table
from dpdb.registry.releases import create_release
from dpdb.server import EmbeddedServer

BOX = ((140.0, 160.0), (-10.0, 10.0))
EXPORT = """
import logging, resource, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s")
logging.getLogger("dpdb.hats").setLevel(logging.INFO)
from pathlib import Path
from dpdb.config import Settings
from dpdb.hats import export_hats
home, out, jobs = sys.argv[1:]
settings = Settings(home=Path(home), database="bench")
result = export_hats(settings, "bench", Path(out), tables=["Object"], jobs=int(jobs), margin=10.0)
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(result.catalogs[0].margin_rows, own, workers)
"""
FILE_ROWS = 100_000


def make_files(rows: int, workdir: Path) -> list[Path]:
    files = []
    for i, first in enumerate(range(0, rows, FILE_ROWS)):
        n = min(FILE_ROWS, rows - first)
        path = workdir / "object" / f"part-{i:04d}.parquet"
        if path.is_file() and pq.read_metadata(path).num_rows == n:  # kept from an earlier run
            files.append(path)
            continue
        table = synthetic_table("Object", n, seed=i, first_id=first + 1, ra_range=BOX[0], dec_range=BOX[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path.with_suffix(".tmp"), row_group_size=65_536)
        path.with_suffix(".tmp").rename(path)
        files.append(path)
    return files


def _has_release(settings: Settings) -> bool:
    with psycopg.connect(conninfo(settings)) as conn:
        return conn.execute("SELECT to_regclass('bench.object') IS NOT NULL").fetchone()[0]


def external_positions(settings: Settings, n: int = 10_000) -> pd.DataFrame:
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute("SELECT setseed(0.7)")
        sample = "SELECT coord_ra, coord_dec FROM bench.object ORDER BY random() LIMIT %s"
        near = np.array(conn.execute(sample, (int(n * 0.9),)).fetchall())
    rng = np.random.default_rng(7)
    shift = rng.uniform(0, 0.9, len(near)) / 3600
    angle = rng.uniform(0, 2 * np.pi, len(near))
    ra = near[:, 0] + shift * np.cos(angle) / np.cos(np.radians(near[:, 1]))
    dec = near[:, 1] + shift * np.sin(angle)
    far = n - len(near)
    return pd.DataFrame({
        "ext_id": np.arange(n),
        "ra": np.concatenate([ra, rng.uniform(*BOX[0], far)]),
        "dec": np.concatenate([dec, rng.uniform(*BOX[1], far)]),
    })  # fmt: skip


def sql_crossmatch(settings: Settings, ext: pd.DataFrame) -> tuple[set[tuple[int, int]], float]:
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute("CREATE TEMP TABLE ext (ext_id bigint, ra double precision, dec double precision)")
        with conn.cursor().copy("COPY ext FROM STDIN") as copy:
            for row in ext.itertuples(index=False):
                copy.write_row((int(row.ext_id), float(row.ra), float(row.dec)))
        conn.execute("CREATE INDEX ON ext (q3c_ang2ipix(ra, dec))")
        conn.execute("ANALYZE ext")
        start = time.perf_counter()
        pairs = conn.execute(
            "SELECT e.ext_id, o.objectid FROM ext e JOIN bench.object o "
            "ON q3c_join(e.ra, e.dec, o.coord_ra, o.coord_dec, 1.0 / 3600)"
        ).fetchall()
        return set(pairs), time.perf_counter() - start


def lsdb_crossmatch(catalog: Path, ext: pd.DataFrame, jobs: int) -> tuple[set[tuple[int, int]], float]:
    import lsdb
    from dask.distributed import Client

    with Client(n_workers=jobs, threads_per_worker=1, dashboard_address=":0"):
        start = time.perf_counter()
        left = lsdb.from_dataframe(ext, ra_column="ra", dec_column="dec", catalog_name="external")
        right = lsdb.open_catalog(catalog, columns=["objectId", "coord_ra", "coord_dec"])
        matched = left.crossmatch(right, radius_arcsec=1.0, n_neighbors=20, suffixes=("_ext", "")).compute()
        elapsed = time.perf_counter() - start
    return set(zip(matched["ext_id_ext"].astype(int), matched["objectId"].astype(int), strict=True)), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--partition-order", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="Work directory to keep and reuse (default: temporary).")
    parser.add_argument("--generate-only", action="store_true", help="Only write the input files (--keep).")
    parser.add_argument("--load-only", action="store_true", help="Stop after the load (with --keep).")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="dpdb-bench-hats-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    home = workdir / "home"
    settings = Settings(home=home, database="bench", partition_order=args.partition_order)
    try:
        prepare(settings)
        t0 = time.perf_counter()
        files = make_files(args.rows, workdir)
        made = time.perf_counter() - t0
        if args.generate_only:
            return
        record = workdir / "load.json"
        loaded_run = json.loads(record.read_text()) if record.is_file() else None
        if loaded_run is None or loaded_run["rows"] != args.rows:
            if loaded_run is not None or _has_release(settings):  # another size, or a load cut short
                reset_database(settings)
                prepare(settings)
            with psycopg.connect(conninfo(settings)) as conn:
                create_release(conn, "bench", latest_version(), args.partition_order, 9)
            load_avg = os.getloadavg()[0]
            t0 = time.perf_counter()
            summary = load(settings, "Object", files, into="bench", jobs=args.jobs)
            loaded_run = {"rows": args.rows, "seconds": time.perf_counter() - t0, "load_avg": load_avg,
                          "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
            assert summary.rows == args.rows, summary.line()
            with psycopg.connect(conninfo(settings), autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE bench.object")
            record.write_text(json.dumps(loaded_run))
        loaded = loaded_run["seconds"]
        n, j = args.rows, args.jobs
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{n:,} Object rows (336 columns), generated in {made:.0f} s"
        )
        print(f"(a) dpdb load --jobs {j}:          {n / loaded:>10,.0f} rows/s  ({loaded:.1f} s; "
              f"{loaded_run['when']}, load average {loaded_run['load_avg']:.1f} at its start)")  # fmt: skip
        if args.load_only:
            return
        out = workdir / "hats"
        shutil.rmtree(out, ignore_errors=True)
        export_load = os.getloadavg()[0]
        t0 = time.perf_counter()
        # In a process of its own, so that its peak RSS (and its workers') is the export's alone.
        run = subprocess.run(
            [sys.executable, "-c", EXPORT, str(home), str(out), str(args.jobs)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        measured = run.stdout.split()
        exported = time.perf_counter() - t0
        margin_rows, own_rss, worker_rss = int(measured[-3]), float(measured[-2]), float(measured[-1])
        phases = [line for line in run.stderr.splitlines() if " written in " in line or "planned in" in line]
        size = sum(p.stat().st_size for p in (out / "Object").rglob("*") if p.is_file())
        ext = external_positions(settings)
        sql_pairs, sql_time = sql_crossmatch(settings, ext)
        lsdb_pairs, lsdb_time = lsdb_crossmatch(out / "Object", ext, args.jobs)

        print(f"load average before the export: {export_load:.1f}")
        print(f"(b) dpdb hats export --jobs {j}:   {n / exported:>10,.0f} rows/s  ({exported:.1f} s), "
              f"{size / 2**20:,.0f} MiB, margin {margin_rows:,} rows")  # fmt: skip
        print(f"ratio (b)/(a):                  {loaded / exported:>10.2f}   (target >= 1)")
        for line in phases:
            print(f"    {line}")
        rss = f"{own_rss:,.0f} MiB" + (
            f", largest child process {worker_rss:,.0f} MiB" if worker_rss else ""
        )
        print(f"peak RSS of the export: {rss} (target: < 4 GiB for a 10M-row release)")
        same = sql_pairs == lsdb_pairs
        print(f"cross-match of {len(ext):,} positions within 1\": q3c_join {sql_time:.2f} s, "
              f"LSDB {lsdb_time:.2f} s; {len(sql_pairs):,} pairs, same pairs: {same}")  # fmt: skip
    finally:
        EmbeddedServer(home).down()
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
