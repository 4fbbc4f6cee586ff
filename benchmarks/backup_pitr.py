"""Cost of WAL archiving and speed of backup and point-in-time recovery (pgBackRest).

Two embedded clusters, one archiving its WAL and one not, load the same DiaSource file; the
archiving one then takes a full backup and recovers a copy as of an instant after the load.

    python benchmarks/backup_pitr.py [--rows 300000]

Prints load times (archiving on and off), the backup's duration and sizes, and the restore's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from dpdb.archive import Archive
from dpdb.processing.synthetic import synthetic_table
from dpdb.server import EmbeddedServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dpdb-bench-pitr-"))
    os.chmod(work, 0o755)
    data = work / "DiaSource.parquet"
    pq.write_table(synthetic_table("DiaSource", args.rows, seed=5), data, row_group_size=50_000)
    homes = {"archiving on": work / "on", "archiving off": work / "off"}
    try:
        for label, home in homes.items():
            archive = Archive(home=home, partition_order=1, wal_archive=label == "archiving on")
            archive.up()
            start = time.monotonic()
            archive.load("DiaSource", [data])
            seconds = time.monotonic() - start
            rate = args.rows / seconds
            print(f"load {args.rows:,} DiaSource rows, {label}: {seconds:.1f} s ({rate:,.0f} rows/s)")
        on = Archive(home=homes["archiving on"], partition_order=1)
        start = time.monotonic()
        info = on.backups.take()
        print(f"full backup: {time.monotonic() - start:.1f} s, cluster {info.size / 2**20:,.0f} MiB, "
              f"stored {info.stored / 2**20:,.0f} MiB (lz4)")  # fmt: skip
        time.sleep(1.5)
        instant = dt.datetime.now(dt.UTC)
        start = time.monotonic()
        result = on.backups.restore(instant, work / "copy")
        took = time.monotonic() - start
        print(f"restore as of now into a new home (restore, WAL replay, start): {took:.1f} s")
        print(f"  {result.stopped_at}")
        wal = on.backups.wal()
        print(f"WAL archive: {wal.first}..{wal.last}")
    finally:
        for home in [*homes.values(), work / "copy"]:
            EmbeddedServer(home).down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
