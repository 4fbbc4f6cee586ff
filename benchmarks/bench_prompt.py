"""Benchmark: prompt ingest of 10,000-DiaSource visits into a catalog of 1 million DiaObjects.

On a fresh embedded server:

1. prefill prompt.DiaObject with ``--objects`` current DiaObjects (default
   1,000,000) spread over ~1000 deg² around the simulated survey, each with 1-5
   versions of history (about 3 million rows), and DiaObjectLast to match;
2. simulate ``--warmup-nights`` + ``--visits`` / 10 nights (10 visits a night) of
   about 10,000 DiaSources a visit over a 9.6 deg² field (processing/survey.py),
   fields revisited night after night inside a 100 deg² survey;
3. first ingest the survey's first ``--warmup-nights`` nights (default 10, 100 visits),
   so that the survey area's DiaObjects have DiaSources in every band, running sums
   and several versions, as in a survey that has been running for a while: the
   prefill of step 1 has no DiaSources, so without the warm-up the first measured
   visits find only empty histories (the cheap path: mostly new DiaObjects) and
   "last 10 / first 10" measures how the histories fill up during the first
   nights, not a growth with the history (benchmarks/README.md). The warm-up
   founds ~0.34M DiaObjects on top of the prefill: the measurement starts at
   ~1.34M current DiaObjects;
4. ingest the next ``--visits`` visits (default 200) one by one with
   `dpdb.prompt.ingest` (load, attribute, associate, forced, aggregate, version),
   timing each visit and each step.

``--warmup-nights 0`` (the default up to the fifth session of 2026-11-30) measures the visits
of nights 0-19 right after the prefill.

Prints p50/p95 seconds per visit, the split by step, and the first and last
10 visits (per-visit time must not grow with the visits already ingested).
At the end, every DiaObject version of the last visit is checked against numpy
over its window's DiaSources (rtol 1e-6).
Usage: python benchmarks/bench_prompt.py [--objects N] [--visits N] [--warmup-nights N]
       [--partition-order K] [--full-aggregation] [--cutoff DAYS] [--home DIR] [--prefill-only]
       [--statements] [--monitor]

With ``--home DIR`` the server, the prefilled and warmed-up database (kept as the
template ``bench_prefill_<objects>_<order>_<warm-up visits>``) and the simulated visits
stay in DIR: a later run with the same DIR and sizes copies the template (STRATEGY FILE_COPY) instead of
prefilling again. ``--prefill-only`` stops after that, so the slow set-up can run
outside the benchmark lock.
"""

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
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet  # noqa: F401  (pa.parquet)

from dpdb.config import Settings
from dpdb.db import prepare
from dpdb.healpix import pixels
from dpdb.ids import PROMPT_ORIGIN, make_id
from dpdb.pg import adbc_uri, close_idle_adbc, conninfo
from dpdb.processing.survey import SurveyConfig, simulate
from dpdb.prompt import STEPS, ingest
from dpdb.prompt.statements import BANDS
from dpdb.server import EmbeddedServer

CENTER = (150.0, 2.0)
PREFILL_SIDE = 31.6  # deg: ~1000 deg² around the 100 deg² survey


def prefill(settings: Settings, objects: int, seed: int = 5) -> int:
    """``objects`` DiaObjects with 1-5 versions each; returns the number of version rows."""
    rng = np.random.default_rng(seed)
    ra = CENTER[0] + (rng.random(objects) - 0.5) * PREFILL_SIDE / np.cos(np.radians(CENTER[1]))
    dec = CENTER[1] + (rng.random(objects) - 0.5) * PREFILL_SIDE
    ids = make_id(PROMPT_ORIGIN, (1 << 57) + np.arange(objects, dtype=np.int64))
    pix = pixels(ra, dec)
    nversions = rng.integers(1, 6, objects)
    rows = int(nversions.sum())
    owner = np.repeat(np.arange(objects), nversions)
    k = np.arange(rows) - np.repeat(np.cumsum(nversions) - nversions, nversions)  # version index
    start = 60000.0 + 10.0 * k
    end = np.where(k == nversions[owner] - 1, np.nan, start + 10.0)
    cols = {
        "diaobjectid": pa.array(ids[owner]),
        "validitystartmjdtai": pa.array(start),
        "validityendmjdtai": pa.array(end, from_pandas=True),
        "ra": pa.array(ra[owner] + rng.normal(0, 1e-5, rows)),
        "dec": pa.array(dec[owner] + rng.normal(0, 1e-5, rows)),
        "ndiasources": pa.array((k + 1).astype(np.int32)),
        "firstdiasourcemjdtai": pa.array(np.full(rows, 59990.0)),
        "lastdiasourcemjdtai": pa.array(start - 1),
        **{f"{b}_psffluxndata": pa.array(np.zeros(rows, np.int32)) for b in "ugrizy"},
        "_healpix_29": pa.array(pix[owner]),
    }
    table = pa.table(cols)
    current = table.filter(pa.compute.is_null(table["validityendmjdtai"]))
    last = pa.table(
        {
            "diaobjectid": current["diaobjectid"],
            "validitystartmjdtai": current["validitystartmjdtai"],
            "ra": current["ra"],
            "dec": current["dec"],
            "ndiasources": current["ndiasources"],
            "firstdiasourcemjdtai": current["firstdiasourcemjdtai"],
            "lastdiasourcemjdtai": current["lastdiasourcemjdtai"],
            "healpix29": current["_healpix_29"],
        }
    )
    with adbc.connect(adbc_uri(settings)) as conn, conn.cursor() as cur:
        cur.adbc_ingest("diaobject", table, mode="append", db_schema_name="prompt")
        cur.adbc_ingest("diaobjectlast", last, mode="append", db_schema_name="prompt")
        conn.commit()
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE prompt.diaobject")
        conn.execute("VACUUM ANALYZE prompt.diaobjectlast")
    return rows


TEMPLATE = "bench_prefill"
WARMUP_TIME = 61000.9
"""Processing time (MJD TAI) of the first ingested visit (the warm-up's, or the measured one's)."""


def warm_up(settings: Settings, dirs: list[Path]) -> None:
    """Ingest the warm-up visits ``dirs`` (the survey's earlier nights): every object of the survey
    area then has a DiaSource history in every band, running sums and versions, as in a survey
    that has run for a while (the visits measured next no longer fill empty histories)."""
    t0 = time.perf_counter()
    results = ingest(settings, dirs, processing_time=WARMUP_TIME)
    secs = np.array([r.seconds for r in results])
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(
        f"warm-up: {len(dirs)} visits of the survey's earlier nights ingested "
        f"(p50 {np.percentile(secs, 50):.2f} s; {time.perf_counter() - t0:.0f} s with VACUUM ANALYZE)"
    )


def prepared_database(settings: Settings, objects: int, keep: bool, warmup: list[Path]) -> None:
    """The prefilled database ``settings.database``: copied from the kept template, or prefilled
    (and warmed up with the visits ``warmup``)."""
    marker = settings.home.parent / f"prefilled-{objects}-{settings.partition_order}-{len(warmup)}"
    template = f"{TEMPLATE}_{objects}_{settings.partition_order}_{len(warmup)}"  # one per set-up
    if keep and marker.exists():
        EmbeddedServer(settings.home).up()
        admin = conninfo(settings, "postgres")
        t0 = time.perf_counter()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {settings.database} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {settings.database} TEMPLATE {template} STRATEGY FILE_COPY")
        prepare(settings)
        print(f"prefill: copied from the kept template {template} ({time.perf_counter() - t0:.0f} s)")
        steady_server(settings)
        return
    if keep and (settings.home / "data").exists():  # another set-up's database in the same DIR
        EmbeddedServer(settings.home).up()
        with psycopg.connect(conninfo(settings, "postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {settings.database} WITH (FORCE)")
    prepare(settings)
    t0 = time.perf_counter()
    versions = prefill(settings, objects)
    print(
        f"prefill: {objects:,} current DiaObjects, {versions:,} versions ({time.perf_counter() - t0:.0f} s)"
    )
    if warmup:
        warm_up(settings, warmup)
    if keep:
        close_idle_adbc()
        with psycopg.connect(conninfo(settings, "postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {template}")
            conn.execute("CHECKPOINT")
            conn.execute(f"CREATE DATABASE {template} TEMPLATE {settings.database} STRATEGY FILE_COPY")
        marker.write_text(
            f"{objects} objects, partition order {settings.partition_order}, {len(warmup)} warm-up visits\n"
        )
    steady_server(settings)


def steady_server(settings: Settings) -> None:
    """The server as it is in a survey that has been running: the copy's files written out (so that
    the kernel does not write them back during the first visits) and the prompt tables and indexes
    in shared buffers (pg_prewarm; a server just started reads them in during the first visits,
    which then look slower than the rest and flatter "last 10 / first 10")."""
    t0 = time.perf_counter()
    os.sync()
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        row = conn.execute(
            "SELECT sum(pg_prewarm(c.oid)), current_setting('shared_buffers') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'prompt' AND c.relkind IN ('r', 'i')"
        ).fetchone()
    assert row is not None
    print(f"server: {int(row[0]) * 8 / 1024:,.0f} MB of prompt tables and indexes read into shared buffers "
          f"({row[1]}) ({time.perf_counter() - t0:.0f} s)")  # fmt: skip


def statement_profile(log: Path, since: int) -> list[tuple[str, float, int]]:
    """(statement start, total ms, calls) from the server log after byte ``since``, slowest first."""
    totals: dict[str, list[float]] = {}
    with open(log, errors="replace") as fh:
        fh.seek(since)
        lines = fh.read().splitlines()
    for line in lines:  # "duration: N ms  statement: ..." or "... execute <name>: ..." (parse/bind left out)
        if "duration: " not in line:
            continue
        rest = line.split("duration: ", 1)[1]
        ms, _, what = rest.partition(" ms  ")
        if not (what.startswith("statement: ") or what.startswith("execute ")):
            continue
        text = " ".join(what.partition(": ")[2].split())[:90]
        entry = totals.setdefault(text, [0.0, 0])
        entry[0] += float(ms)
        entry[1] += 1
    return sorted(((k, v[0], int(v[1])) for k, v in totals.items()), key=lambda r: -r[1])


def check_aggregates(settings: Settings, cutoff: float) -> int:
    """Every DiaObject of the last visit against numpy over its window's DiaSources (rtol 1e-6).

    The DiaSources are those of the window as of the last visit: the night's daytime
    linkage, after it, may have withdrawn some since.

    Returns the number of (DiaObject, band) pairs checked; raises AssertionError on a mismatch.
    """
    with psycopg.connect(conninfo(settings)) as conn:
        t, mjd = conn.execute(
            "SELECT processing_time_mjd_tai, midpoint_mjd_tai FROM dpdb_meta.prompt_visit "
            "ORDER BY processing_time_mjd_tai DESC LIMIT 1"
        ).fetchone()
        stats = ("psffluxmean", "psffluxmeanerr", "psffluxsigma", "psffluxchi2", "psffluxndata", "psffluxmin")
        columns = [f"{b}_{s}" for b in BANDS for s in stats]
        stored = {
            r[0]: r[1:]
            for r in conn.execute(
                f"SELECT diaobjectid, ra, dec, {', '.join(columns)} FROM prompt.diaobject "
                "WHERE validitystartmjdtai = %s",
                (t,),
            )
        }
        sources = conn.execute(
            "SELECT d.diaobjectid, d.band, d.psfflux::float8, d.psffluxerr::float8, d.ra, d.dec, "
            "d.raerr::float8 "
            "FROM prompt.diasource d JOIN prompt.diaobject o USING (diaobjectid, _healpix_29) "
            # as of the last visit: a daytime linkage after it withdraws DiaSources later
            "WHERE o.validitystartmjdtai = %s "
            "AND (d.timewithdrawnmjdtai IS NULL OR d.timewithdrawnmjdtai > %s) "
            "AND d.midpointmjdtai > %s AND d.midpointmjdtai <= %s",
            (t, t, mjd - cutoff, mjd),
        ).fetchall()
    groups: dict[int, list[tuple]] = {}
    for r in sources:
        groups.setdefault(r[0], []).append(r)
    assert set(groups) == set(stored), "objects of the last visit without window DiaSources"
    checked = 0
    for obj, rows in groups.items():
        got = stored[obj]
        ra = np.array([r[4] for r in rows])
        raerr = np.array([r[6] for r in rows], dtype=np.float64)
        w = 1 / raerr**2
        np.testing.assert_allclose(got[0], np.sum(w * ra) / np.sum(w), rtol=0, atol=1e-9)
        for i, band in enumerate(BANDS):
            sel = [r for r in rows if r[1] == band]
            mean, meanerr, sigma, chi2, ndata, fmin = got[2 + 6 * i : 8 + 6 * i]
            assert ndata == len(sel), (obj, band)
            if not sel:
                continue
            f = np.array([r[2] for r in sel], dtype=np.float64)
            e = np.array([r[3] for r in sel], dtype=np.float64)
            wf = 1 / e**2
            m = np.sum(wf * f) / np.sum(wf)
            np.testing.assert_allclose(mean, m, rtol=1e-6)
            np.testing.assert_allclose(meanerr, np.sqrt(1 / np.sum(wf)), rtol=1e-6)
            np.testing.assert_allclose(chi2, np.sum(wf * (f - m) ** 2), rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(fmin, f.min(), rtol=1e-6)
            if len(sel) > 1:
                np.testing.assert_allclose(sigma, np.std(f, ddof=1), rtol=1e-6, atol=1e-6)
            checked += 1
    return checked


MONITOR_SQL = """
SELECT (SELECT coalesce(sum(heap_blks_read + coalesce(idx_blks_read, 0)), 0)
          FROM pg_statio_user_tables WHERE schemaname = 'prompt'),
       (SELECT coalesce(sum(heap_blks_hit + coalesce(idx_blks_hit, 0)), 0)
          FROM pg_statio_user_tables WHERE schemaname = 'prompt'),
       (SELECT coalesce(sum(autovacuum_count), 0) FROM pg_stat_user_tables WHERE schemaname = 'prompt'),
       (SELECT coalesce(max(n_dead_tup), 0) FROM pg_stat_user_tables
          WHERE schemaname = 'prompt' AND relname LIKE 'diaobject\\_hpx%'),
       (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter),
       (SELECT buffers_backend FROM pg_stat_bgwriter),
       -- the WAL position, not pg_stat_wal.wal_bytes: backends report those at most once a second
       pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint,
       (SELECT wal_fpi FROM pg_stat_wal)
"""


class Monitor:
    """Server counters after each visit (a separate connection, outside the visit's time):
    shared-buffer misses of the prompt tables, autovacuums, DiaObject's dead versions, checkpoints."""

    def __init__(self, settings: Settings) -> None:
        self.conn = psycopg.connect(conninfo(settings), autocommit=True)
        self.rows = [self._sample()]

    def _sample(self) -> tuple:
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        return tuple(int(v) for v in self.conn.execute(MONITOR_SQL).fetchone())

    def __call__(self, result: object) -> None:
        self.rows.append(self._sample())

    def report(self, results: list, group: int = 20) -> None:
        a = np.array(self.rows, dtype=np.float64)
        secs = np.array([r.seconds for r in results])
        load = np.array([r.steps["load"] for r in results])
        version = np.array([r.steps["version"] for r in results])
        close = np.array([r.blocks.get("close_versions", 0.0) for r in results])
        print(f"by groups of {group} visits: s per visit (÷ load step), version step, close_versions, "
              "shared-buffer miss % of the prompt tables, autovacuums started, DiaObject dead versions "
              "(largest partition) at the end, checkpoints, buffers written by the backends, WAL MB a visit "
              "(full-page images a visit)")  # fmt: skip
        for g in range(0, len(results), group):
            h = min(g + group, len(results))
            d = a[h] - a[g]
            miss = 100 * d[0] / max(d[0] + d[1], 1)
            print(f"  {g + 1:>3}-{h:<3} {secs[g:h].mean():.3f} ({secs[g:h].mean() / load[g:h].mean():5.1f}) "
                  f"{version[g:h].mean():.3f} {close[g:h].mean():.3f}  miss {miss:5.2f} %  "
                  f"autovacuums {int(d[2]):>2}  dead {int(a[h][3]):>9,}  checkpoints {int(d[4])}  "
                  f"backend writes {int(d[5]):>7,}  WAL {d[6] / (h - g) / 1e6:5.1f} MB "
                  f"({d[7] / (h - g):,.0f} FPI)")  # fmt: skip
        self.conn.close()


def _counts(settings: Settings) -> tuple[int, int, int]:
    """DiaObject versions, DiaObjects (current) and DiaSources in the catalog."""
    with psycopg.connect(conninfo(settings)) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM prompt.diaobject), (SELECT count(*) FROM prompt.diaobjectlast), "
            "(SELECT count(*) FROM prompt.diasource)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _midpoint(visit: Path) -> float:
    return float(pa.parquet.read_table(visit / "Visit.parquet", columns=["expMidptMJD"])[0][0].as_py())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--visits", type=int, default=200)
    parser.add_argument("--sources-per-visit", type=int, default=10_700)  # ~10,000 detected
    parser.add_argument("--partition-order", type=int, default=1)
    parser.add_argument(
        "--full-aggregation",
        action="store_true",
        help="recompute every version from its stored rows (the code before the running sums)",
    )
    parser.add_argument(
        "--cutoff",
        type=float,
        default=None,
        help="characterization window in days (default: the setting, 365.25); a short one "
        "makes rows leave the window every night",
    )
    parser.add_argument(
        "--explain-ms",
        type=int,
        default=None,
        help="log EXPLAIN ANALYZE of every statement slower than this (auto_explain) and copy the "
        "server log to bench_prompt_explain.log",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="keep the server, the prefilled template and the visits in this directory",
    )
    parser.add_argument(
        "--warmup-nights",
        type=int,
        default=10,
        help="first ingest this many earlier nights of the survey into the prefilled database (kept in "
        "the template), so that the measured visits find the survey area's DiaObjects with a history in "
        "every band (steady state) instead of empty ones",
    )
    parser.add_argument(
        "--monitor",
        action="store_true",
        help="sample the server's counters after each visit and print them by groups of 20 visits "
        "(shared-buffer misses, autovacuums, dead versions, checkpoints); logs autovacuums and checkpoints",
    )
    parser.add_argument("--prefill-only", action="store_true", help="with --home: prepare and stop")
    parser.add_argument(
        "--statements",
        action="store_true",
        help="log every statement's duration and print the slowest statements",
    )
    args = parser.parse_args()

    keep = args.home is not None
    logging_options = args.explain_ms is not None or args.statements or args.monitor
    workdir = args.home.absolute() if keep else Path(tempfile.mkdtemp(prefix="dpdb-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    settings = Settings(home=workdir / "home", database="bench", partition_order=args.partition_order)
    if args.cutoff is not None:
        settings = settings.model_copy(update={"characterization_cutoff": args.cutoff})
    try:
        config = SurveyConfig(seed=11, visits_per_night=10, sources_per_visit=args.sources_per_visit,
                              area_deg2=100.0, center=CENTER)  # fmt: skip
        t0 = time.perf_counter()
        nights = args.warmup_nights + -(-args.visits // config.visits_per_night)
        survey = workdir / f"survey-{nights}-{args.sources_per_visit}"
        done = survey / "complete"
        if not done.exists():  # the visit directories in time order, once written
            shutil.rmtree(survey, ignore_errors=True)
            done.write_text("\n".join(str(d) for d in simulate(survey, nights, config)) + "\n")
        every = [Path(d) for d in done.read_text().split()]
        warm = args.warmup_nights * config.visits_per_night
        warmup, dirs = every[:warm], every[warm : warm + args.visits]
        took = time.perf_counter() - t0
        print(f"simulated {len(warmup)} warm-up and {len(dirs)} measured visits in {took:.0f} s")
        # the measured visits' processing times follow the warm-up's at the observation spacing
        start = WARMUP_TIME + (_midpoint(dirs[0]) - _midpoint(warmup[0]) if warmup else 0.0)
        prepared_database(settings, args.objects, keep, warmup)
        server_log = settings.home / "log" / "server.log"
        log_start = server_log.stat().st_size if server_log.exists() else 0
        if logging_options:
            with psycopg.connect(conninfo(settings), autocommit=True) as conn:
                conn.execute("LOAD 'auto_explain'")
                options = [("log_autovacuum_min_duration", "0"), ("log_checkpoints", "on")]
                if args.explain_ms is not None:
                    options += [
                        ("session_preload_libraries", "auto_explain"),
                        ("auto_explain.log_min_duration", f"{args.explain_ms}ms"),
                        ("auto_explain.log_analyze", "on"),
                        ("auto_explain.log_buffers", "on"),
                        ("auto_explain.log_nested_statements", "on"),
                    ]
                if args.statements:
                    options.append(("log_min_duration_statement", "0"))
                for setting, value in options:
                    conn.execute(f"ALTER SYSTEM SET {setting} = '{value}'")
                conn.execute("SELECT pg_reload_conf()")
        if args.prefill_only:
            return
        counts = _counts(settings)
        print(f"before: {counts[0]:,} DiaObject versions, {counts[1]:,} DiaObjects, {counts[2]:,} DiaSources")
        monitor = Monitor(settings) if args.monitor else None
        t0 = time.perf_counter()
        results = ingest(
            settings, dirs, processing_time=start, incremental=not args.full_aggregation, progress=monitor
        )
        wall = time.perf_counter() - t0
        secs = np.array([r.seconds for r in results])
        sources = np.array([r.counts["diasources"] for r in results])
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"partition order {args.partition_order} ({12 * 4**args.partition_order} partitions)"
        )
        print(f"visits: {len(results)}, DiaSources per visit: mean {sources.mean():,.0f} "
              f"(min {sources.min():,}, max {sources.max():,}); total wall {wall:.0f} s")  # fmt: skip
        print(f"seconds per visit: p50 {np.percentile(secs, 50):.3f}  p95 {np.percentile(secs, 95):.3f}"
              "   (targets: p50 <= 1.5, p95 <= 2.5)")  # fmt: skip
        n = min(10, len(results))
        print(f"step        mean s   p50 s   p95 s   first {n}   last {n}")
        for step in STEPS:
            v = np.array([r.steps[step] for r in results])
            print(f"{step:<10} {v.mean():>7.3f} {np.percentile(v, 50):>7.3f} {np.percentile(v, 95):>7.3f} "
                  f"{v[:n].mean():>9.3f} {v[-n:].mean():>8.3f}")  # fmt: skip
        names = sorted({b for r in results for b in r.blocks})
        block_times = {b: np.array([r.blocks.get(b, 0.0) for r in results]) for b in names}
        print(f"slowest SQL blocks   mean s   p95 s   first {n}   last {n}")
        for b in sorted(names, key=lambda b: -block_times[b].mean())[:14]:
            v = block_times[b]
            print(f"  {b:<18} {v.mean():>7.3f} {np.percentile(v, 95):>7.3f} {v[:n].mean():>9.3f} "
                  f"{v[-n:].mean():>8.3f}")  # fmt: skip
        if monitor is not None:
            monitor.report(results)
        print(
            f"first {n} visits: mean {secs[:n].mean():.3f} s; "
            f"last {n} visits: mean {secs[-n:].mean():.3f} s; "
            f"ratio {secs[-n:].mean() / secs[:n].mean():.2f} (target <= 1.15)"
        )
        counts = _counts(settings)
        print(f"after: {counts[0]:,} DiaObject versions, {counts[1]:,} DiaObjects, {counts[2]:,} DiaSources")
        assoc = sum(r.counts["associated"] for r in results)
        print(f"associated {assoc:,} of {int(sources.sum()):,} DiaSources to existing DiaObjects")
        t0 = time.perf_counter()
        checked = check_aggregates(settings, settings.characterization_cutoff)
        print(f"aggregates of the last visit's DiaObjects equal numpy over their windows (rtol 1e-6): "
              f"{checked:,} (DiaObject, band) pairs checked ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
        if args.statements:
            print("slowest statements   total s   calls")
            for text, ms, calls in statement_profile(server_log, log_start)[:25]:
                print(f"  {ms / 1000:>8.2f} {calls:>6}  {text}")
    finally:
        if args.explain_ms is not None or args.statements:
            with psycopg.connect(conninfo(settings), autocommit=True) as conn:
                conn.execute("ALTER SYSTEM RESET ALL")
                conn.execute("SELECT pg_reload_conf()")
        if args.explain_ms is not None:
            shutil.copy(settings.home / "log" / "server.log", "bench_prompt_explain.log")
        EmbeddedServer(settings.home).down()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
