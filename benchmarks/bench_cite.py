"""Benchmark: citing and resolving a query (issue 21) against running the query alone.

On a fresh embedded server, prompt.DiaSource is filled with ``--rows`` rows
(default 1,000,000; every non-nullable column set, plus positions and fluxes),
then for results of 10,000, 100,000 and ``--rows`` rows (``diaSourceId <= n``,
10 columns, read as of an instant through the time-travel views) it times, each
``--repeats`` times (default 5, interleaved; medians):

- the query alone: ``Archive.query_arrow(sql, as_of=t)``;
- ``Archive.citations.cite(sql, as_of=t)``: planner check (EXPLAIN), the query,
  the result hash, the store (the citation row is deleted between repeats);
- ``Archive.citations.resolve(id)``: the query again, the hash, the comparison;
- the hash alone (``digest_table``) on the fetched result.

Prints the overheads in % of the query's own time; the target is at most 10 %
for results up to 1M rows.
Usage: python benchmarks/bench_cite.py [--rows N] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

import dpdb
from dpdb.citations import digest_table
from dpdb.config import Settings
from dpdb.db import prepare
from dpdb.pg import conninfo
from dpdb.server import EmbeddedServer

COLUMNS = "diaSourceId, visit, detector, ra, dec, midpointMjdTai, band, psfFlux, psfFluxErr, diaObjectId"
AS_OF = 61000.5


def _fill(settings: Settings, rows: int) -> None:
    """Rows in prompt.DiaSource: every NOT NULL column filled by type, processed at MJD 61000."""
    with psycopg.connect(conninfo(settings)) as conn:
        columns = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a "
            "WHERE a.attrelid = 'prompt.diasource'::regclass AND a.attnum > 0 AND NOT a.attisdropped"
        ).fetchall()
        given = {
            "diasourceid": "g", "visit": "g / 1000", "detector": "g % 189", "diaobjectid": "g / 7",
            "ra": "150 + (g % 10000) * 1e-4", "dec": "2 + (g / 10000) * 1e-4",
            "midpointmjdtai": "60999 + g * 1e-6", "band": "substr('ugrizy', (g % 6)::int + 1, 1)",
            "psfflux": "1000 + g % 977", "psffluxerr": "10 + g % 13", "timeprocessedmjdtai": "61000",
            "_healpix_29": "0",
        }  # fmt: skip
        names, values = [], []
        for name, type_, not_null in columns:
            if name in given:
                names.append(name)
                values.append(given[name])
            elif not_null:
                names.append(name)
                values.append(
                    "false" if type_ == "boolean" else "'x'" if "char" in type_ or type_ == "text" else "0"
                )
        conn.execute(
            f"INSERT INTO prompt.diasource ({', '.join(names)}) "  # noqa: S608 - our own names
            f"SELECT {', '.join(values)} FROM generate_series(1, {rows}) g"
        )
        conn.execute("ANALYZE prompt.diasource")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dpdb-bench-cite-"))
    os.chmod(home, 0o755)
    settings = Settings(home=home, partition_order=0)
    try:
        prepare(settings)
        start = time.perf_counter()
        _fill(settings, args.rows)
        print(f"filled prompt.DiaSource with {args.rows:,} rows in {time.perf_counter() - start:.1f} s")
        machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        print(f"{machine}, dpdb {dpdb.__version__}")
        archive = dpdb.Archive(settings=settings)
        heads = ("query s", "cite s", "cite +%", "resolve s", "resolve +%", "hash s")
        print(f"{'rows':>10} " + " ".join(f"{h:>10}" for h in heads))
        for n in sorted({10_000, 100_000, args.rows}):
            if n > args.rows:
                continue
            sql = f"SELECT {COLUMNS} FROM prompt.DiaSource WHERE diaSourceId <= {n}"
            archive.query_arrow(sql, as_of=AS_OF)  # warm the cache
            result = archive.query_arrow(sql, as_of=AS_OF)
            made = archive.citations.cite(sql, as_of=AS_OF)
            assert made.citation.row_count == n
            assert archive.citations.resolve(made.citation.citation_id).verified
            times: dict[str, list[float]] = {"query": [], "cite": [], "resolve": [], "hash": []}
            for _ in range(args.repeats):  # interleaved, so that a busy machine slows all alike
                with psycopg.connect(conninfo(settings)) as conn:
                    conn.execute("DELETE FROM dpdb_meta.citation")
                for what, run in (
                    ("query", lambda: archive.query_arrow(sql, as_of=AS_OF)),  # noqa: B023
                    ("cite", lambda: archive.citations.cite(sql, as_of=AS_OF)),  # noqa: B023
                    ("resolve", lambda: archive.citations.resolve(made.citation.citation_id)),  # noqa: B023
                    ("hash", lambda: digest_table(result)),  # noqa: B023
                ):
                    start = time.perf_counter()
                    run()
                    times[what].append(time.perf_counter() - start)
            query_s, cite_s, resolve_s, hash_s = (statistics.median(times[k]) for k in times)
            print(
                f"{n:>10,} {query_s:>10.3f} {cite_s:>10.3f} {100 * (cite_s / query_s - 1):>9.1f}% "
                f"{resolve_s:>10.3f} {100 * (resolve_s / query_s - 1):>9.1f}% {hash_s:>10.3f}"
            )
    finally:
        EmbeddedServer(home).down()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
