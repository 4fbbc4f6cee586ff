"""Benchmark: archiving a ~10M-row release as HATS against the plain archive it replaced, with peak memory.

On a fresh embedded server it produces one release (processing/release.py:
``--objects`` static-sky objects over ``--nights`` nights; the defaults make
about 10 million rows, mostly ForcedSource and Source), loads it, then in the
same run and on the same machine:

  (a) the plain archive as it was before HATS (every table to Parquet per
      partition in the release-directory layout, with the same functions:
      etl/export.py ``write_query``), rows/s;
  (b) the HATS archive that retiring a release writes now
      (``dpdb.hats.archive.write_archive``: one HATS collection per table with
      10" margins, and the checksummed release.json), rows/s;
  (c) the peak RSS of (b), run in a process of its own: sampled every 0.1 s
      over the process and its children (psutil), and the kernel's ru_maxrss.

Usage: python benchmarks/bench_hats_release.py [--objects N] [--nights N] [--jobs N] [--keep DIR]
       [--prepare-only]   (produce and load into --keep DIR, so the timed run, e.g. under a lock, reuses them)
A smoke run: python benchmarks/bench_hats_release.py --objects 5000 --nights 1
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import psycopg

import dpdb
from dpdb.config import Settings
from dpdb.db import conninfo, prepare
from dpdb.etl import release_dir
from dpdb.etl.export import select_sql, write_query
from dpdb.etl.validate import target_table
from dpdb.healpix import partition_bounds
from dpdb.model.felis import latest_version
from dpdb.model.layout import PIXEL_COLUMN, RELEASE_TABLES
from dpdb.pg import adbc_connection
from dpdb.processing.release import produce
from dpdb.server import EmbeddedServer

CENTER = (135.0, 1.0)
HATS = """
import resource, sys, time
from pathlib import Path
from dpdb.config import Settings
from dpdb.hats.archive import write_archive
from dpdb.model.felis import latest_version
home, out, jobs, order = sys.argv[1:]
settings = Settings(home=Path(home), database="bench", partition_order=int(order))
t = time.perf_counter()
manifest = write_archive(settings, "dr1", 0, latest_version(), int(order), Path(out), jobs=int(jobs))
print(manifest.total_rows, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def plain_archive(settings: Settings, name: str, version: int, order: int, out: Path) -> int:
    """The archive writer before HATS (git 8087a43^: dpdb/lifecycle/archive.py ``_export``)."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = release_dir.ReleaseDir(name, 0, version, order, "archive")
    with (
        adbc_connection(settings) as aconn,
        aconn.cursor() as cur,
        psycopg.connect(conninfo(settings)) as conn,
    ):
        for table in RELEASE_TABLES:
            target = target_table(name, version, "release", table)
            parts: list = [(None, None)]
            if target.partitioned:
                pixel = psycopg.sql.Identifier(PIXEL_COLUMN)
                parts = [
                    (n, psycopg.sql.SQL("{p} >= {lo} AND {p} < {hi}").format(p=pixel, lo=lo, hi=hi))
                    for n, lo, hi in partition_bounds(order)
                ]
            files = []
            for npix, where in parts:
                path = release_dir.part_path(out, table, order if npix is not None else None, npix)
                rows = write_query(cur, select_sql(target, where).as_string(conn), target, path)
                if rows:
                    files.append(release_dir.entry_for(out, path, rows))
            manifest.tables[table] = files
    manifest.write(out)
    return manifest.total_rows


def peak_rss(proc: subprocess.Popen, peak: list[int]) -> None:
    """Sample the RSS of ``proc`` and its children until it ends; the largest sum in ``peak[0]``."""
    try:
        root = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            break
        peak[0] = max(peak[0], total)
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=280_000)
    parser.add_argument("--nights", type=int, default=6)
    parser.add_argument("--partition-order", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="Work directory to keep (default: a temporary one).")
    parser.add_argument(
        "--prepare-only", action="store_true", help="Produce and load only (with --keep)."
    )
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="dpdb-bench-hats-release-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    home, order = workdir / "home", args.partition_order
    settings = Settings(home=home, database="bench", partition_order=order, archive_dir=workdir / "archive")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"# bench_hats_release: {machine}, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    try:
        t = time.monotonic()
        directory = workdir / "release"
        if not (directory / release_dir.MANIFEST).is_file():
            produce(directory, "dr1", objects=args.objects, nights=args.nights, partition_order=order,
                    center=CENTER)  # fmt: skip
        print(f"produced dr1 ({time.monotonic() - t:.0f} s)")
        prepare(settings)
        archive = dpdb.Archive(settings=settings)
        if "dr1" not in [r.name for r in archive.releases.list()]:  # a kept folder's release is reused
            archive.releases.create("dr1", balance_from=directory)
            t = time.monotonic()
            loaded = sum(archive.releases.load("dr1", directory, jobs=args.jobs).rows.values())
            seconds = time.monotonic() - t
            rate = loaded / seconds
            print(f"load:            {loaded:>11,} rows in {seconds:7.1f} s = {rate:>9,.0f} rows/s")
            with psycopg.connect(conninfo(settings), autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
        if args.prepare_only:
            return
        out = workdir / "plain"
        shutil.rmtree(out, ignore_errors=True)
        t = time.monotonic()
        rows = plain_archive(settings, "dr1", latest_version(), order, out)
        plain = time.monotonic() - t
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(f"(a) plain archive: {rows:>11,} rows in {plain:7.1f} s = {rows / plain:>9,.0f} rows/s, "
              f"{size / 2**20:,.0f} MiB")  # fmt: skip
        out = workdir / "hats"
        shutil.rmtree(out, ignore_errors=True)
        peak = [0]
        t = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", HATS, str(home), str(out), str(args.jobs), str(order)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        sampler = threading.Thread(target=peak_rss, args=(proc, peak), daemon=True)
        sampler.start()
        stdout, stderr = proc.communicate()
        sampler.join()
        wall = time.monotonic() - t
        if proc.returncode != 0:
            raise SystemExit(f"HATS archive failed:\n{stderr[-3000:]}")
        total, seconds, own, children = stdout.split()[-4:]
        hats = float(seconds)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        n = int(total)
        print(f"(b) HATS archive:  {n:>11,} rows in {hats:7.1f} s = {n / hats:>9,.0f} rows/s, "
              f"{size / 2**20:,.0f} MiB (process wall {wall:.1f} s)")  # fmt: skip
        print(f"ratio (b)/(a) rows/s: {plain / hats:.2f}   (target: >= 1, no slower than the plain archive)")
        print(
            f"(c) peak RSS of the HATS archive: {peak[0] / 2**20:,.0f} MiB sampled (process tree); "
            f"ru_maxrss {float(own):,.0f} MiB, largest child {float(children):,.0f} MiB (target: < 4 GiB)"
        )
    finally:
        EmbeddedServer(home).down()
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
