"""Benchmark: citing and resolving a query (issue 21) against running the query alone.

On a fresh embedded server, prompt.DiaSource is filled with ``--rows`` rows
(default 1,000,000; every non-nullable column set, plus positions and fluxes),
then for results of 10,000, 100,000 and ``--rows`` rows (``diaSourceId <= n``,
10 columns, read as of an instant through the time-travel views) it times, each
``--repeats`` times (default 101 at 10k rows, 41 at 100k, 11 at 1M; interleaved,
the order of the three rotating):

- the query alone: ``Archive.query_arrow(sql, as_of=t)``;
- ``Archive.citations.cite(sql, as_of=t)``: planner check (EXPLAIN), the query
  (the same ``run_query`` path, its batches hashed as they stream), the store
  (the citation row is deleted between repeats);
- ``Archive.citations.resolve(id)``: the query again, the hash, the comparison;
- the hash alone on the fetched result, ``dpdb-rowset-v3`` (what citing uses),
  ``dpdb-rowset-v2`` and ``dpdb-rowset-v1`` (before);
- a durable commit of one small row (``commit``): the floor of what citing adds
  (its citation row and audit entry are one such commit, which must reach the
  disk before the identifier is printed).

The rows come in the canonical order (a scan of the key, first column). With
``--unordered`` each size is also timed with ``ra`` as the first column (not
unique, not in order: the hash must sort the rows once at the end).

The bare query is what a user runs (``Archive.query_arrow``: the same
``run_query``, connection pool, as-of rewrite and Arrow conversion as citing,
which only adds the hash of each batch as it streams). Prints the medians, the
overheads in % of the query's own time (of the medians; and the median of the
ratios of each repetition, whose three runs come right after one another, with
its interquartile range as the spread); the target is at most 10 % for results
up to 1M rows.
``--visits N`` first writes N visits into the visit log (a survey's registry after N visits), the
last processed just after the queries' instant: every as-of query reads the latest change.
Usage: python benchmarks/bench_cite.py [--rows N] [--repeats N] [--unordered] [--visits N]
"""

from __future__ import annotations

import argparse
import itertools
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
from dpdb.citations.digest import METHOD, METHOD_V1, METHOD_V2, METHOD_V3
from dpdb.config import Settings
from dpdb.db import prepare
from dpdb.pg import conninfo
from dpdb.server import EmbeddedServer

COLUMNS = "diaSourceId, visit, detector, ra, dec, midpointMjdTai, band, psfFlux, psfFluxErr, diaObjectId"
UNORDERED = "ra, dec, diaSourceId, visit, detector, midpointMjdTai, band, psfFlux, psfFluxErr, diaObjectId"
REPEATS = {10_000: 101, 100_000: 41}
AS_OF = 61000.5


def _fill(settings: Settings, rows: int) -> None:
    """Rows in prompt.DiaSource: every NOT NULL column filled by type, processed at MJD 61000."""
    given = {
            "diasourceid": "g", "visit": "g / 1000", "detector": "g % 189", "diaobjectid": "g / 7",
            "ra": "150 + (g % 10000) * 1e-4", "dec": "2 + (g / 10000) * 1e-4",
            "midpointmjdtai": "60999 + g * 1e-6", "band": "substr('ugrizy', (g % 6)::int + 1, 1)",
            "psfflux": "1000 + g % 977", "psffluxerr": "10 + g % 13", "timeprocessedmjdtai": "61000",
            "_healpix_29": "0",
    }  # fmt: skip
    _insert(settings, "prompt.diasource", rows, given)


def _fill_visits(settings: Settings, visits: int) -> None:
    """``visits`` rows in the visit log (a survey's registry), the last processed just after the
    instant the queries are read at: the latest change every as-of query and citation reads."""
    given = {"visit": "g", "processing_time_mjd_tai": f"{AS_OF} + 0.1 - ({visits} - g) * 1e-5",
             "midpoint_mjd_tai": f"{AS_OF} - ({visits} - g) * 1e-5"}  # fmt: skip
    _insert(settings, "dpdb_meta.prompt_visit", visits, given)


def _insert(settings: Settings, table: str, rows: int, given: dict[str, str]) -> None:
    """``rows`` rows in ``table``: the ``given`` columns (SQL of the row number ``g``), every other
    NOT NULL column filled by its type."""
    with psycopg.connect(conninfo(settings)) as conn:
        columns = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            (table,),
        ).fetchall()
        names, values = [], []
        for name, type_, not_null in columns:
            if name in given:
                names.append(name)
                values.append(given[name])
            elif not_null:
                names.append(name)
                values.append(_DEFAULTS.get(type_.split("(")[0], "0"))
        conn.execute(
            f"INSERT INTO {table} ({', '.join(names)}) "  # noqa: S608 - our own names
            f"SELECT {', '.join(values)} FROM generate_series(1, {rows}) g"
        )
        conn.execute(f"ANALYZE {table}")


_DEFAULTS = {"boolean": "false", "text": "'x'", "character varying": "'x'", "character": "'x'",
             "jsonb": "'{}'", "json": "'{}'", "timestamp with time zone": "now()"}  # fmt: skip


def _time(archive: dpdb.Archive, settings: Settings, sql: str, repeats: int) -> dict[str, list[float]]:
    """Times (s) of the query, cite and resolve, interleaved with their order rotating, and of the
    three hashes on the fetched result, per repetition."""
    result = archive.query_arrow(sql, as_of=AS_OF)  # warms the cache
    made = archive.citations.cite(sql, as_of=AS_OF)
    n = result.num_rows
    assert made.citation.row_count == n and made.citation.hash_method == METHOD == METHOD_V3
    assert archive.citations.resolve(made.citation.citation_id).verified
    runs = {
        "query": lambda: archive.query_arrow(sql, as_of=AS_OF),
        "cite": lambda: archive.citations.cite(sql, as_of=AS_OF),
        "resolve": lambda: archive.citations.resolve(made.citation.citation_id),
        "hash v3": lambda: digest_table(result, METHOD_V3),
        "hash v2": lambda: digest_table(result, METHOD_V2),
        "hash v1": lambda: digest_table(result, METHOD_V1),
    }
    times: dict[str, list[float]] = {k: [] for k in [*runs, "commit"]}
    orders = itertools.cycle(itertools.permutations(("query", "cite", "resolve")))
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.bench_commit (at timestamptz)")
        # what a durable commit of one small row costs now (cite's is one: its row and audit entry)
        runs["commit"] = lambda: conn.execute("INSERT INTO public.bench_commit VALUES (now())")
        for _ in range(repeats):
            for what in (*next(orders), "hash v3", "hash v2", "hash v1", "commit"):
                if what == "cite":  # a new citation each time (cite makes it again, for resolve too)
                    conn.execute("DELETE FROM dpdb_meta.citation")
                start = time.perf_counter()
                runs[what]()
                times[what].append(time.perf_counter() - start)
    return times


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def _overhead(times: dict[str, list[float]], what: str) -> tuple[float, float, float, float]:
    """(% of the medians, then q1, median, q3 of the per-repetition % over that repetition's query)."""
    of_medians = 100 * (statistics.median(times[what]) / statistics.median(times["query"]) - 1)
    paired = [100 * (t / q - 1) for t, q in zip(times[what], times["query"], strict=True)]
    q1, q2, q3 = _quartiles(paired)
    return of_medians, q1, q2, q3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=None, help="per size (default 101/41/11)")
    parser.add_argument("--unordered", action="store_true", help="also time results not in canonical order")
    parser.add_argument(
        "--visits", type=int, default=0, help="visits in the visit log first (365,000: a year of a survey)"
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dpdb-bench-cite-"))
    os.chmod(home, 0o755)
    settings = Settings(home=home, partition_order=0)
    try:
        prepare(settings)
        start = time.perf_counter()
        _fill(settings, args.rows)
        print(f"filled prompt.DiaSource with {args.rows:,} rows in {time.perf_counter() - start:.1f} s")
        if args.visits:
            _fill_visits(settings, args.visits)
            print(f"{args.visits:,} visits in the visit log, the last at MJD TAI {AS_OF + 0.1}")
        machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        print(f"{machine}, dpdb {dpdb.__version__}, load average {os.getloadavg()[0]:.2f}")
        archive = dpdb.Archive(settings=settings)
        print("medians in s (query: [q1, q3]); cite/resolve: % over the query's median, then the median of")
        print("the per-repetition % [q1, q3]")
        heads = f"{'query s [q1, q3]':>22} {'cite s':>6} {'+%':>7} {'paired +% [q1, q3]':>25} "
        heads += f"{'resolve s':>6} {'+%':>7} {'paired +% [q1, q3]':>25} "
        heads += f"{'hash v3':>7} {'hash v2':>7} {'hash v1':>7} {'commit':>7}"
        print(f"{'rows':>10} {'order':>9} {'reps':>4} " + heads)
        shapes = [("canonical", COLUMNS)] + ([("unordered", UNORDERED)] if args.unordered else [])
        for n in sorted({10_000, 100_000, args.rows}):
            if n > args.rows:
                continue
            repeats = args.repeats or REPEATS.get(n, 11)
            for label, columns in shapes:
                sql = f"SELECT {columns} FROM prompt.DiaSource WHERE diaSourceId <= {n}"
                t = _time(archive, settings, sql, repeats)
                q1, query_s, q3 = _quartiles(t["query"])
                cells = [f"{query_s:.4f} [{q1:.3f}, {q3:.3f}]"]
                for what in ("cite", "resolve"):
                    of_medians, p1, p2, p3 = _overhead(t, what)
                    cells.append(f"{statistics.median(t[what]):.4f} {of_medians:6.1f}% "
                                 f"{p2:7.1f}% [{p1:5.1f}, {p3:5.1f}]")  # fmt: skip
                hashes = " ".join(
                    f"{statistics.median(t[h]):7.4f}" for h in ("hash v3", "hash v2", "hash v1", "commit")
                )
                line = f"{n:>10,} {label:>9} {repeats:>4} {cells[0]:>22} {cells[1]:>40} {cells[2]:>42}"
                print(f"{line} {hashes}", flush=True)
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        EmbeddedServer(home).down()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
