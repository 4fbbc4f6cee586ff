"""Benchmark: time travel (issue 5) — cone searches and light curves as of a past instant vs. the present.

On a fresh embedded server:

1. prefill prompt.DiaObject with ``--objects`` DiaObjects (default 1,000,000)
   over ~1000 deg²; a share ``--reobserved-share`` (default 0.6) of them has
   ``--versions-min``..``--versions-max`` versions (default 10-20), the rest
   one. Versions are consecutive validity intervals between MJD 60000 and
   61000, the last one open, positions jittered by ~0.1" between versions;
   DiaObjectLast holds the current versions;
2. prefill prompt.DiaSource for ``--lightcurve-objects`` re-observed objects
   (default 100,000): one DiaSource per DiaObject version k
   (midpointMjdTai = start_k - 0.5, timeProcessedMjdTai = start_k), and a
   share ``--withdrawn-share`` (default 2%) withdrawn at a later instant and
   relinked to an SSObject (a second row version, diaObjectId NULL);
3. time, at the same random draws, with psycopg over the socket, planning
   included (no server-side prepared statements unless stated):

   - a 10-arcmin cone search at the present (partial current-version index)
     and as of the middle of the history (``prompt.diaobject_as_of(t)`` and the
     session form ``SET dpdb.as_of`` + ``prompt_as_of.diaobject``), as the
     query path sends them (``dpdb query``, ``Archive.query``/``cone``, TAP:
     :func:`dpdb.pruning.prune_sql` adds the ``_healpix_29`` ranges of the
     partitions the cone overlaps), and through the SQL functions
     ``prompt.diaobject_cone(ra, dec, r[, t])`` (sql/cones.sql);
   - a single-object light curve at the present and as of the same instant,
     through ``prompt.diasource_lightcurve(id[, t])`` (the partitions around
     the object only), by ``diaObjectId`` alone through the query path (which
     adds the object's partitions), and by ``diaObjectId`` alone as written;
   - for comparison, the cones as written by hand without any partition
     condition (every partition planned), on ``--unpruned-draws`` draws;
   - the same forms server side (EXPLAIN ANALYZE planning + execution) on
     ``--server-draws`` draws, and end to end through the Python API
     (``Archive.query_arrow``: reader connection, schema check, rewrite, ADBC
     fetch) on ``--api-draws`` draws.

The targets are checked on what a user's SQL runs: the documented SQL functions
as any client sends them, and the statement the query path (``dpdb query``,
``Archive.query``/``cone``, TAP) sends, timed from psycopg; the API's Python
overhead is printed beside them.

Prints medians and p95 in ms, the ratio as_of/present, PASS/FAIL against the
targets (cone median <= 10 ms, ratios <= 1.5, light curve <= 5 ms), checks the
answers against the generated data, and EXPLAIN (ANALYZE, BUFFERS) summaries.
Usage: python benchmarks/bench_asof.py [--objects N] [--reobserved-share F]
       [--versions-min N] [--versions-max N] [--repeats N] [--partition-order K]
       [--home DIR [--prefill-only]]

``--home DIR`` keeps the embedded server in DIR: the first run fills it, later runs with the same
prefill options reuse it (the rows are generated again from the same seed, for the checks, but not
loaded) after reinstalling the SQL functions of the code that runs (``dpdb.migrate``). Fill it
outside the benchmark lock, niced, with ``--prefill-only``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import healpy
import numpy as np
import psycopg
import pyarrow as pa

from dpdb import Archive
from dpdb.config import Settings
from dpdb.db import prepare
from dpdb.healpix import partition_bounds, pixels
from dpdb.ids import PROMPT_ORIGIN, make_id
from dpdb.migrate import migrate
from dpdb.pg import adbc_uri, conninfo
from dpdb.pruning import prune_sql
from dpdb.query import partition_orders

try:
    from dpdb.query import object_positions
except ImportError:  # older code (a "before" run on main's code): light curves by id are not pruned
    object_positions = None
from dpdb.server import EmbeddedServer

CENTER = (150.0, 2.0)
SIDE = 31.6  # deg: ~1000 deg²
RADIUS = 10 / 60  # deg
HISTORY = (60000.0, 61000.0)  # MJD TAI: first version start .. last version start
CREATED_BY = 60400.0  # every object exists before the as-of instant, so both answers have the same size
AS_OF = 60500.0  # the middle of the history
NOW = HISTORY[1] + 1  # after every version start: the present
RATIO_TARGET = 1.5
CONE_TARGET_MS = 10.0
LC_TARGET_MS = 5.0

CONE_PRESENT = (
    "SELECT * FROM prompt.diaobject WHERE validityendmjdtai IS NULL "
    "AND q3c_radial_query(ra, dec, %s, %s, 10/60.)"
)
CONE_AS_OF = (
    "SELECT * FROM prompt.diaobject_as_of(%s::double precision) "
    "WHERE q3c_radial_query(ra, dec, %s, %s, 10/60.)"
)
CONE_API_AS_OF = "SELECT * FROM diaobject WHERE q3c_radial_query(ra, dec, %s, %s, 10/60.)"  # with as_of=
CONE_SESSION = "SELECT * FROM prompt_as_of.diaobject WHERE q3c_radial_query(ra, dec, %s, %s, 10/60.)"
LC_PRESENT = (
    "SELECT * FROM prompt.diasource WHERE diaobjectid = %s AND timewithdrawnmjdtai IS NULL "
    "ORDER BY midpointmjdtai"
)
LC_AS_OF = (
    "SELECT * FROM prompt.diasource_as_of(%s::double precision) WHERE diaobjectid = %s "
    "ORDER BY midpointmjdtai"
)
CONE_FN_PRESENT = "SELECT * FROM prompt.diaobject_cone(%s, %s, 10/60.)"
CONE_FN_AS_OF = "SELECT * FROM prompt.diaobject_cone(%s, %s, 10/60., %s::double precision)"
LC_FN_PRESENT = "SELECT * FROM prompt.diasource_lightcurve(%s)"
LC_FN_AS_OF = "SELECT * FROM prompt.diasource_lightcurve(%s, %s::double precision)"


def literal(sql: str, params: tuple) -> str:
    """``sql`` with its parameters written in (constants, as a user's SQL or the API has them)."""
    return sql % tuple(repr(float(p)) if isinstance(p, float) else str(int(p)) for p in params)


def query_path(conn: psycopg.Connection, sql: str, params: tuple, path: list[str]) -> str:
    """The SQL ``dpdb query`` runs for these constants: with the ranges of the cone's partitions (or of
    the DiaObject's, for a light curve by ``diaObjectId``)."""
    orders = partition_orders(conn, path, AS_OF)
    if object_positions is None:
        return prune_sql(literal(sql, params), orders)
    return prune_sql(literal(sql, params), orders, object_positions(conn, path))


@dataclass
class Catalog:
    """The generated rows, kept to check the answers."""

    ids: np.ndarray  # per object
    pix: np.ndarray  # per object
    ra: np.ndarray  # per version
    dec: np.ndarray  # per version
    owner: np.ndarray  # per version: object index
    start: np.ndarray  # per version
    end: np.ndarray  # per version, +inf when open
    lc_objects: np.ndarray  # object indexes with DiaSources
    src_owner: np.ndarray  # per DiaSource row version: object index (-1: relinked to an SSObject)
    src_processed: np.ndarray
    src_withdrawn: np.ndarray  # +inf when not withdrawn


def generate(
    objects: int, share: float, vmin: int, vmax: int, lc_objects: int, withdrawn: float, seed: int = 7
) -> tuple[Catalog, dict[str, pa.Table]]:
    rng = np.random.default_rng(seed)
    ra0 = CENTER[0] + (rng.random(objects) - 0.5) * SIDE / np.cos(np.radians(CENTER[1]))
    dec0 = CENTER[1] + (rng.random(objects) - 0.5) * SIDE
    ids = make_id(PROMPT_ORIGIN, (1 << 57) + np.arange(objects, dtype=np.int64))
    pix = pixels(ra0, dec0)
    reobserved = rng.random(objects) < share
    nver = np.where(reobserved, rng.integers(vmin, vmax + 1, objects), 1)
    rows = int(nver.sum())
    owner = np.repeat(np.arange(objects), nver)
    first = np.cumsum(nver) - nver
    k = np.arange(rows) - first[owner]
    created = HISTORY[0] + rng.random(objects) * (CREATED_BY - HISTORY[0])
    u = rng.random(rows)
    u[k == 0] = 0.0
    u = u[np.lexsort((u, owner))]  # sorted within each object; version 0 first
    c = created[owner]
    start = c + u * (HISTORY[1] - c)
    last = k == nver[owner] - 1
    end = np.full(rows, np.inf)
    end[~last] = start[1:][~last[:-1]]
    jitter = 0.1 / 3600
    ra = ra0[owner] + rng.normal(0, jitter, rows) / np.cos(np.radians(dec0[owner]))
    dec = dec0[owner] + rng.normal(0, jitter, rows)

    order = np.argsort(start, kind="stable")  # rows arrive in time order, as in prompt processing
    diaobject = pa.table(
        {
            "diaobjectid": pa.array(ids[owner][order]),
            "validitystartmjdtai": pa.array(start[order]),
            "validityendmjdtai": pa.array(np.where(np.isinf(end), np.nan, end)[order], from_pandas=True),
            "ra": pa.array(ra[order]),
            "dec": pa.array(dec[order]),
            "ndiasources": pa.array((k + 1).astype(np.int32)[order]),
            "firstdiasourcemjdtai": pa.array((c - 0.5)[order]),
            "lastdiasourcemjdtai": pa.array((start - 0.5)[order]),
            **{f"{b}_psffluxndata": pa.array(np.zeros(rows, np.int32)) for b in "ugrizy"},
            "_healpix_29": pa.array(pix[owner][order]),
        }
    )
    cur = np.flatnonzero(last)
    diaobjectlast = pa.table(
        {
            "diaobjectid": pa.array(ids[owner[cur]]),
            "validitystartmjdtai": pa.array(start[cur]),
            "ra": pa.array(ra[cur]),
            "dec": pa.array(dec[cur]),
            "ndiasources": pa.array((k[cur] + 1).astype(np.int32)),
            "firstdiasourcemjdtai": pa.array(c[cur] - 0.5),
            "lastdiasourcemjdtai": pa.array(start[cur] - 0.5),
            "healpix29": pa.array(pix[owner[cur]]),
        }
    )

    # DiaSources: one per version of lc_objects re-observed objects.
    chosen = rng.choice(np.flatnonzero(reobserved), min(lc_objects, int(reobserved.sum())), replace=False)
    chosen.sort()
    sel = np.flatnonzero(np.isin(owner, chosen))
    n = len(sel)
    sids = make_id(PROMPT_ORIGIN, (1 << 56) + np.arange(n, dtype=np.int64))
    processed = start[sel]
    gone = rng.random(n) < withdrawn
    when = np.where(gone, processed + rng.random(n) * (HISTORY[1] + 1 - processed), np.inf)
    relinked = np.flatnonzero(gone)
    m = len(relinked)
    idx = np.concatenate([np.arange(n), relinked])  # the relinked rows' second version at the end
    src_owner = np.concatenate([owner[sel], np.full(m, -1)])
    src_processed = np.concatenate([processed, when[relinked]])
    src_withdrawn = np.concatenate([when, np.full(m, np.inf)])
    total = n + m
    visit = rng.integers(1, 2_000_000, total)
    detector = rng.integers(0, 189, total).astype(np.int16)
    dia_ids = np.where(src_owner >= 0, ids[np.maximum(src_owner, 0)], 0)
    diasource = pa.table(
        {
            "diasourceid": pa.array(sids[idx]),
            "ccdvisitid": pa.array(visit * 1000 + detector),
            "visit": pa.array(visit),
            "detector": pa.array(detector),
            "diaobjectid": pa.array(dia_ids, mask=src_owner < 0),
            "ssobjectid": pa.array(
                make_id(PROMPT_ORIGIN, (1 << 55) + np.arange(total, dtype=np.int64)), mask=src_owner >= 0
            ),
            "midpointmjdtai": pa.array(start[sel][idx] - 0.5),
            "ra": pa.array(ra[sel][idx] + rng.normal(0, jitter, total)),
            "dec": pa.array(dec[sel][idx] + rng.normal(0, jitter, total)),
            "band": pa.array(np.array(list("ugrizy"))[rng.integers(0, 6, total)]),
            "psfflux": pa.array(rng.normal(1000, 100, total).astype(np.float32)),
            "psffluxerr": pa.array(np.full(total, 50, np.float32)),
            "timeprocessedmjdtai": pa.array(src_processed),
            "timewithdrawnmjdtai": pa.array(
                np.where(np.isinf(src_withdrawn), np.nan, src_withdrawn), from_pandas=True
            ),
            "_healpix_29": pa.array(pix[owner[sel]][idx]),
        }
    )
    o = np.argsort(src_processed, kind="stable")
    diasource = diasource.take(pa.array(o))
    catalog = Catalog(ids, pix, ra, dec, owner, start, end, chosen,
                      src_owner[o], src_processed[o], src_withdrawn[o])  # fmt: skip
    return catalog, {"diaobject": diaobject, "diaobjectlast": diaobjectlast, "diasource": diasource}


def load(settings: Settings, tables: dict[str, pa.Table]) -> None:
    with adbc.connect(adbc_uri(settings)) as conn, conn.cursor() as cur:
        for name, table in tables.items():
            cur.adbc_ingest(name, table, mode="append", db_schema_name="prompt")
        conn.commit()
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        for name in tables:
            conn.execute(f"VACUUM ANALYZE prompt.{name}")


# ---------------------------------------------------------------- checks against the generated rows


def _sep(ra1: np.ndarray, dec1: np.ndarray, ra2: float, dec2: float) -> np.ndarray:
    r1, d1, r2, d2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = np.sin((d1 - d2) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r1 - r2) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h)))


def cone_truth(cat: Catalog, t: float, ra: float, dec: float) -> set[int]:
    valid = (cat.start <= t) & (cat.end > t)
    inside = valid & (np.abs(cat.dec - dec) < 2 * RADIUS)
    inside[inside] = _sep(cat.ra[inside], cat.dec[inside], ra, dec) < RADIUS
    return {int(i) for i in cat.ids[cat.owner[inside]]}


def lightcurve_truth(cat: Catalog, t: float, obj: int) -> int:
    return int(np.sum((cat.src_owner == obj) & (cat.src_processed <= t) & (cat.src_withdrawn > t)))


def check(
    conn: psycopg.Connection, cat: Catalog, cones: np.ndarray, objs: np.ndarray, order: int
) -> list[str]:
    """Compare the SQL answers with the generated rows; returns the problems found."""
    problems = []
    for ra, dec in cones:
        for label, sql, params, t in (
            ("present cone", CONE_PRESENT, (ra, dec), NOW),
            ("as-of cone", CONE_AS_OF, (AS_OF, ra, dec), AS_OF),
            ("session cone", CONE_SESSION, (ra, dec), AS_OF),
            ("as-of cone at the present", CONE_AS_OF, (NOW, ra, dec), NOW),
            ("pruned as-of cone", CONE_AS_OF + partition_condition(ra, dec, order), (AS_OF, ra, dec), AS_OF),
            ("query-path present cone", query_path(conn, CONE_PRESENT, (ra, dec), []), (), NOW),
            ("query-path as-of cone", query_path(conn, CONE_AS_OF, (AS_OF, ra, dec), []), (), AS_OF),
            ("query-path session cone", query_path(conn, CONE_SESSION, (ra, dec), []), (), AS_OF),
            ("function present cone", CONE_FN_PRESENT, (ra, dec), NOW),
            ("function as-of cone", CONE_FN_AS_OF, (ra, dec, AS_OF), AS_OF),
        ):
            if "_healpix_29" not in sql and "query-path" in label:
                problems.append(f"{label}: no partition ranges added")
            got = [r[0] for r in conn.execute(sql.replace("*", "diaobjectid", 1), params or None)]
            want = cone_truth(cat, t, ra, dec)
            if len(got) != len(set(got)) or set(got) != want:
                problems.append(f"{label} at ({ra:.4f}, {dec:.4f}): {len(got)} rows, expected {len(want)}")
    for obj in objs:
        oid = int(cat.ids[obj])
        for label, sql, params, t in (
            ("present light curve", LC_PRESENT, (oid,), NOW),
            ("as-of light curve", LC_AS_OF, (AS_OF, oid), AS_OF),
            ("function present light curve", LC_FN_PRESENT, (oid,), NOW),
            ("query-path present light curve", query_path(conn, LC_PRESENT, (oid,), []), (), NOW),
            ("query-path as-of light curve", query_path(conn, LC_AS_OF, (AS_OF, oid), []), (), AS_OF),
            ("function as-of light curve", LC_FN_AS_OF, (oid, AS_OF), AS_OF),
        ):
            if "_healpix_29" not in sql and "query-path" in label and object_positions is not None:
                problems.append(f"{label}: no partition ranges added")
            got = len(conn.execute(sql, params or None).fetchall())
            want = lightcurve_truth(cat, t, obj)
            if got != want:
                problems.append(f"{label} of {oid}: {got} rows, expected {want}")
    # One brute-force count in SQL, without the as-of function and without the positional index.
    ra, dec = cones[0]
    brute = conn.execute(
        "SELECT count(*) FROM prompt.diaobject WHERE validitystartmjdtai <= %s "
        "AND (validityendmjdtai IS NULL OR validityendmjdtai > %s) AND q3c_dist(ra, dec, %s, %s) < 10/60.",
        (AS_OF, AS_OF, ra, dec),
    ).fetchone()[0]
    fn = conn.execute(CONE_AS_OF.replace("*", "count(*)", 1), (AS_OF, ra, dec)).fetchone()[0]
    if brute != fn:
        problems.append(f"as-of cone at ({ra:.4f}, {dec:.4f}): {fn} rows, brute-force SQL count {brute}")
    return problems


# ---------------------------------------------------------------- timing


def run(conn: psycopg.Connection, variants: dict[str, list[tuple[str, tuple]]], prepared: bool) -> dict:
    """Milliseconds per execution (client side, rows fetched) and rows per answer, per variant.

    Variants are interleaved draw by draw (in rotating order) so that noise
    from other work on the machine hits them alike.
    """
    names = list(variants)
    ms: dict[str, list[float]] = {n: [] for n in names}
    rows: dict[str, list[int]] = {n: [] for n in names}
    draws = len(next(iter(variants.values())))
    for i in range(draws):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            sql, params = variants[name][i]
            t0 = time.perf_counter()
            got = conn.execute(sql, params or None, prepare=prepared or None).fetchall()
            ms[name].append((time.perf_counter() - t0) * 1000)
            rows[name].append(len(got))
    return {n: (np.array(ms[n]), np.array(rows[n])) for n in names}


def explain(conn: psycopg.Connection, sql: str, params: tuple, full: bool) -> list[str]:
    plan = [r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params or None)]
    if full:
        return plan
    text = "\n".join(plan)
    scans = re.findall(
        r"(?:Seq Scan|Bitmap Heap Scan|Index Scan using \S+|Index Only Scan using \S+) on (\S+)", text
    )
    indexes = re.findall(r"(?:Bitmap Index Scan on|Index Scan using|Index Only Scan using) (\S+)", text)
    kinds = re.findall(r"(Seq Scan|Bitmap Heap Scan|Bitmap Index Scan|Index Scan|Index Only Scan) ", text)
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
    parent_of = dict(
        conn.execute(
            "SELECT c.relname, p.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE c.relkind = 'i'"
        ).fetchall()
    )
    parents = sorted({parent_of.get(i, i) for i in indexes})
    out = [
        f"  {len(set(scans))} partitions scanned ({counts}); indexes: {', '.join(parents) or 'none'}",
    ]
    cond = next((ln.strip() for ln in plan if "Index Cond" in ln), None)
    if cond:
        out.append(f"  first {cond[:400]}{' ...' if len(cond) > 400 else ''}")
    filt = next((ln.strip() for ln in plan if ln.strip().startswith("Filter")), None)
    if filt:
        out.append(f"  first {filt[:200]}{' ...' if len(filt) > 200 else ''}")
    top_buffers = next((ln.strip() for ln in plan if ln.strip().startswith("Buffers")), None)
    if top_buffers:
        out.append(f"  execution {top_buffers}")
    for i, ln in enumerate(plan):
        if ln.startswith("Planning:") and i + 1 < len(plan):
            out.append(f"  planning {plan[i + 1].strip()}")
        elif ln.startswith(("Planning Time", "Execution Time", "JIT")):
            out.append(f"  {ln.strip()}")
    return out


def partition_condition(ra: float, dec: float, order: int) -> str:
    """`` AND (...)`` restricting ``_healpix_29`` to the partitions that a 10' cone overlaps."""
    vec = healpy.ang2vec(ra, dec, lonlat=True)
    parts = healpy.query_disc(1 << order, vec, np.radians(RADIUS), inclusive=True, nest=True)
    bounds = partition_bounds(order)
    ranges = [f"(_healpix_29 >= {bounds[p][1]} AND _healpix_29 < {bounds[p][2]})" for p in parts]
    return f" AND ({' OR '.join(ranges)})"


def summary(label: str, present: tuple[np.ndarray, np.ndarray], asof: tuple[np.ndarray, np.ndarray]) -> float:
    (p_ms, p_rows), (a_ms, a_rows) = present, asof
    ratio = float(np.median(a_ms) / np.median(p_ms))
    print(
        f"  {label:<28} present p50 {np.median(p_ms):7.2f}  p95 {np.percentile(p_ms, 95):7.2f} | "
        f"as-of p50 {np.median(a_ms):7.2f}  p95 {np.percentile(a_ms, 95):7.2f} | ratio {ratio:5.2f}"
        f" | rows {p_rows.mean():.1f} / {a_rows.mean():.1f}"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--reobserved-share", type=float, default=0.6)
    parser.add_argument("--versions-min", type=int, default=10)
    parser.add_argument("--versions-max", type=int, default=20)
    parser.add_argument("--lightcurve-objects", type=int, default=100_000)
    parser.add_argument("--withdrawn-share", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--partition-order", type=int, default=1)
    parser.add_argument("--unpruned-draws", type=int, default=40, help="draws of the unpruned comparison")
    parser.add_argument("--server-draws", type=int, default=50, help="draws timed by EXPLAIN ANALYZE")
    parser.add_argument("--api-draws", type=int, default=40, help="draws through Archive.query_arrow")
    parser.add_argument("--home", type=Path, help="keep the server here and reuse its prefill (see above)")
    parser.add_argument("--prefill-only", action="store_true", help="with --home: fill it and stop")
    parser.add_argument("--explain-full", action="store_true", help="print whole EXPLAIN plans")
    args = parser.parse_args()

    options = ("objects", "reobserved_share", "versions_min", "versions_max", "lightcurve_objects",
               "withdrawn_share", "partition_order")  # fmt: skip
    prefill = {k: getattr(args, k) for k in options}
    if args.home is None:
        workdir = Path(tempfile.mkdtemp(prefix="dpdb-bench-"))
        os.chmod(workdir, 0o755)
        home = workdir / "home"
    else:
        workdir, home = None, args.home.absolute()
    marker = home / "bench_asof.json"
    reuse = marker.exists() and json.loads(marker.read_text()) == prefill
    if home.exists() and not reuse and args.home is not None:
        held = marker.read_text() if marker.exists() else "none"
        raise SystemExit(f"{home} holds another prefill ({marker.name}: {held}); remove it or choose another")
    settings = Settings(home=home, database="bench", partition_order=args.partition_order)
    try:
        prepare(settings)
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"partition order {args.partition_order} ({12 * 4**args.partition_order} partitions)"
        )
        t0 = time.perf_counter()
        cat, tables = generate(args.objects, args.reobserved_share, args.versions_min, args.versions_max,
                               args.lightcurve_objects, args.withdrawn_share)  # fmt: skip
        t_gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        if reuse:
            migrate(settings)  # the SQL functions of the code that runs now
        else:
            load(settings, tables)
            marker.write_text(json.dumps(prefill))
        t_load = time.perf_counter() - t0
        nver = np.bincount(cat.owner, minlength=len(cat.ids))
        reobs = nver > 1
        src = tables["diasource"]
        relinked = int(np.sum(cat.src_owner < 0))
        print(
            f"prefill: {len(cat.ids):,} DiaObjects, {len(cat.owner):,} versions; {int(reobs.sum()):,} "
            f"re-observed with {nver[reobs].mean():.2f} versions on average "
            f"({int(nver[reobs].min())}-{int(nver[reobs].max())}), {int((~reobs).sum()):,} with one"
        )
        print(
            f"         {src.num_rows:,} DiaSource rows for {len(cat.lc_objects):,} re-observed objects "
            f"(one per version), {relinked:,} withdrawn and relinked to an SSObject (2 rows each)"
        )
        print(f"         history MJD {HISTORY[0]:.0f}-{HISTORY[1]:.0f}, as of MJD {AS_OF:.0f}; "
              f"generated in {t_gen:.0f} s, "
              + (f"reused {home} (SQL functions reinstalled in {t_load:.0f} s)" if reuse
                 else f"loaded + VACUUM ANALYZE in {t_load:.0f} s"))  # fmt: skip
        if args.prefill_only:
            return
        tables.clear()

        rng = np.random.default_rng(1)
        margin = 1.0  # deg from the edges of the filled area
        half_ra = (SIDE / 2 - margin) / np.cos(np.radians(CENTER[1]))
        cones = np.column_stack([
            CENTER[0] + (rng.random(args.repeats) * 2 - 1) * half_ra,
            CENTER[1] + (rng.random(args.repeats) * 2 - 1) * (SIDE / 2 - margin),
        ])  # fmt: skip
        objs = rng.choice(cat.lc_objects, args.repeats)
        cone_params = [(float(r), float(d)) for r, d in cones]
        lc_params = [(int(cat.ids[o]),) for o in objs]

        with psycopg.connect(conninfo(settings), autocommit=True, prepare_threshold=None) as conn:
            conn.execute(f"SET dpdb.as_of = '{AS_OF}'")
            t0 = time.perf_counter()
            problems = check(conn, cat, cones[:5], objs[:5], args.partition_order)
            print(f"checks (5 cones x 5 forms, 5 light curves x 2, 1 brute-force SQL count) in "
                  f"{time.perf_counter() - t0:.0f} s: {'OK' if not problems else 'FAILED'}")  # fmt: skip
            for p in problems:
                print(f"  WRONG: {p}")

            qp = [
                (query_path(conn, CONE_PRESENT, p, []), query_path(conn, CONE_AS_OF, (AS_OF, *p), []),
                 query_path(conn, CONE_SESSION, p, []))
                for p in cone_params
            ]  # fmt: skip
            cone_variants = {
                "present": [(q[0], ()) for q in qp],
                "as_of": [(q[1], ()) for q in qp],
                "session": [(q[2], ()) for q in qp],
                "fn_present": [(CONE_FN_PRESENT, p) for p in cone_params],
                "fn_as_of": [(CONE_FN_AS_OF, (*p, AS_OF)) for p in cone_params],
            }
            lc_variants = {
                "fn_present": [(LC_FN_PRESENT, p) for p in lc_params],
                "fn_as_of": [(LC_FN_AS_OF, (*p, AS_OF)) for p in lc_params],
                "qp_present": [(query_path(conn, LC_PRESENT, p, []), ()) for p in lc_params],
                "qp_as_of": [(query_path(conn, LC_AS_OF, (AS_OF, *p), []), ()) for p in lc_params],
                "present": [(LC_PRESENT, p) for p in lc_params],
                "as_of": [(LC_AS_OF, (AS_OF, *p)) for p in lc_params],
            }
            # For comparison: the cones as written by hand, no partition condition (every partition planned).
            n_unpruned = min(args.unpruned_draws, args.repeats)
            unpruned_variants = {
                "present": [(CONE_PRESENT, p) for p in cone_params[:n_unpruned]],
                "as_of": [(CONE_AS_OF, (AS_OF, *p)) for p in cone_params[:n_unpruned]],
                "session": [(CONE_SESSION, p) for p in cone_params[:n_unpruned]],
            }
            warm = min(20, args.repeats)
            for variants in (cone_variants, lc_variants):  # warm-up on the last draws
                run(conn, {k: v[-warm:] for k, v in variants.items()}, prepared=False)
            run(conn, {k: v[:3] for k, v in unpruned_variants.items()}, prepared=False)

            print(f"milliseconds per query, {args.repeats} draws each (client side, planning included), "
                  "rows = mean rows returned (present / as of)")  # fmt: skip
            cone = run(conn, cone_variants, prepared=False)
            lc = run(conn, lc_variants, prepared=False)
            r_cone = summary("cone 10' query path", cone["present"], cone["as_of"])
            r_sess = summary("cone 10' query path session", cone["present"], cone["session"])
            r_fn = summary("cone 10' SQL function", cone["fn_present"], cone["fn_as_of"])
            r_lc = summary("light curve SQL function", lc["fn_present"], lc["fn_as_of"])
            r_lcq = summary("light curve by id query path", lc["qp_present"], lc["qp_as_of"])
            summary("light curve by id unpruned", lc["present"], lc["as_of"])
            unpruned = run(conn, unpruned_variants, prepared=False)
            summary(f"cone unpruned ({n_unpruned} draws)", unpruned["present"], unpruned["as_of"])
            summary(f"cone unpruned session ({n_unpruned})", unpruned["present"], unpruned["session"])
            # What a Python user runs end to end: Archive.query_arrow (a reader connection, the schema
            # check, the sqlglot rewrite, the ADBC fetch), on the as-of cone through the session form
            # as `dpdb query --as-of` sends it, and on the SQL function.
            n_api = min(args.api_draws, args.repeats)
            archive = Archive(settings=settings)
            api_variants = {
                "present": lambda p: archive.query_arrow(literal(CONE_PRESENT, p)),
                "as_of": lambda p: archive.query_arrow(literal(CONE_API_AS_OF, p), as_of=AS_OF),
                "fn_present": lambda p: archive.query_arrow(literal(CONE_FN_PRESENT, p)),
                "fn_as_of": lambda p: archive.query_arrow(literal(CONE_FN_AS_OF, (*p, AS_OF))),
            }
            api: dict[str, tuple[list[float], list[int]]] = {k: ([], []) for k in api_variants}
            for i, p in enumerate(cone_params[: n_api + 3]):
                for name, call in api_variants.items():
                    t0 = time.perf_counter()
                    got = call(p)
                    if i >= 3:  # the first three warm the pools
                        api[name][0].append((time.perf_counter() - t0) * 1000)
                        api[name][1].append(got.num_rows)
            api_np = {k: (np.array(v[0]), np.array(v[1])) for k, v in api.items()}
            summary(f"cone Archive.query_arrow ({n_api})", api_np["present"], api_np["as_of"])
            summary(f"cone API, SQL function ({n_api})", api_np["fn_present"], api_np["fn_as_of"])
            parts = np.mean([max(q[0].count(" BETWEEN "), 1) for q in qp])
            print(f"    (query path: {parts:.2f} partitions' ranges on average of "
                  f"{12 * 4**args.partition_order}; unpruned: every partition planned)")  # fmt: skip

            # Server side, less sensitive to the machine's load than the client's clock: EXPLAIN ANALYZE's
            # planning + execution time (for a PL/pgSQL function, its statement's planning is inside
            # the function's execution), median over the first draws.
            n_server = min(args.server_draws, args.repeats)
            print(f"server side (EXPLAIN ANALYZE planning + execution, median of {n_server} draws), ms:")
            for label, variants, name in (
                ("cone query path present", cone_variants, "present"),
                ("cone query path as of", cone_variants, "as_of"),
                ("cone query path session", cone_variants, "session"),
                ("cone SQL function present", cone_variants, "fn_present"),
                ("cone SQL function as of", cone_variants, "fn_as_of"),
                ("light curve SQL function present", lc_variants, "fn_present"),
                ("light curve SQL function as of", lc_variants, "fn_as_of"),
                ("light curve by id query path present", lc_variants, "qp_present"),
                ("light curve by id query path as of", lc_variants, "qp_as_of"),
                ("light curve by id unpruned present", lc_variants, "present"),
            ):
                plan, run_ms = [], []
                for sql, params in variants[name][:n_server]:
                    rows = conn.execute("EXPLAIN (ANALYZE, SUMMARY) " + sql, params or None)
                    text = "\n".join(r[0] for r in rows)
                    times = dict(re.findall(r"(Planning|Execution) Time: ([0-9.]+)", text))
                    plan.append(float(times["Planning"]))
                    run_ms.append(float(times["Execution"]))
                p50 = np.median(np.array(plan) + np.array(run_ms))
                print(f"  {label:<38} {p50:7.2f}  (planning {np.median(plan):6.2f}, "
                      f"execution {np.median(run_ms):6.2f})")  # fmt: skip

            def med(x: tuple[np.ndarray, np.ndarray]) -> float:
                return float(np.median(x[0]))

            print("targets (plain execution, planning included):")
            for label, value, limit in (
                ("query-path cone present median ms", med(cone["present"]), CONE_TARGET_MS),
                ("query-path cone as-of median ms", med(cone["as_of"]), CONE_TARGET_MS),
                ("query-path cone session median ms", med(cone["session"]), CONE_TARGET_MS),
                ("SQL-function cone present median ms", med(cone["fn_present"]), CONE_TARGET_MS),
                ("SQL-function cone as-of median ms", med(cone["fn_as_of"]), CONE_TARGET_MS),
                ("cone ratio as_of/present", r_cone, RATIO_TARGET),
                ("cone ratio session/present", r_sess, RATIO_TARGET),
                ("SQL-function cone ratio as_of/present", r_fn, RATIO_TARGET),
                ("light curve present median ms", med(lc["fn_present"]), LC_TARGET_MS),
                ("light curve as-of median ms", med(lc["fn_as_of"]), LC_TARGET_MS),
                ("light-curve ratio as_of/present", r_lc, RATIO_TARGET),
                ("query-path light curve by id present median ms", med(lc["qp_present"]), LC_TARGET_MS),
                ("query-path light curve by id as-of median ms", med(lc["qp_as_of"]), LC_TARGET_MS),
                ("query-path light-curve ratio as_of/present", r_lcq, RATIO_TARGET),
            ):
                print(f"  {'PASS' if value <= limit else 'FAIL'}  {label} {value:.2f} <= {limit}")

            ra, dec = cone_params[0]
            oid = lc_params[0][0]
            for label, sql, params in (
                ("query-path present cone", qp[0][0], ()),
                ("query-path as-of cone", qp[0][1], ()),
                ("query-path session cone", qp[0][2], ()),
                ("unpruned as-of cone", CONE_AS_OF, (AS_OF, ra, dec)),
                ("query-path present light curve by id", query_path(conn, LC_PRESENT, (oid,), []), ()),
                ("unpruned present light curve by id", LC_PRESENT, (oid,)),
                ("unpruned as-of light curve by id", LC_AS_OF, (AS_OF, oid)),
            ):
                print(f"EXPLAIN (ANALYZE, BUFFERS) {label}:")
                for line in explain(conn, sql, params, args.explain_full):
                    print(line if not args.explain_full else "  " + line)
    finally:
        EmbeddedServer(settings.home).down()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
