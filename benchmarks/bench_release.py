"""Benchmark: the data-release lifecycle — activation swap, load, validation, archive and restore.

On a fresh embedded server it produces (processing/release.py), creates, loads
and validates five releases:

- dr1, dr2: small (``--small-objects`` static-sky objects, 1,500 by default,
  one night of visits: ~10,000 rows in all);
- dr3, dr4: large (``--large-objects``, 280,000 by default, over ``--nights``
  nights, 6 by default: ~10 million rows each, ~35 rows per object);
- dr5: small, the third release that pushes a large one out of retention.

Each has its own seed (its own sky); a release directory cannot be loaded into
two releases, since its IDs carry the release's origin. Then it measures:

1. activation: ``--swaps`` activations (default 10) alternating between the
   two small releases (dr2, dr1, dr2, ...), then between the two large ones,
   after one warm-up activation each that is not counted. It prints the swap
   transaction alone (``Activation.swap_seconds``, the time readers can wait)
   and the wall time of ``activate_release`` (which also re-creates the
   release's sample in the samples schema, outside the swap), p50 and max,
   with PASS/FAIL: swap under 1 s, and large/small swap p50 ratio <= 3 (the
   swap does not depend on the release's size). During the swaps retention
   keeps up to 20 releases loaded, so nothing is archived in the middle;
2. load throughput (rows/s) of ``load_release`` for the large and the small
   releases, at the partition order used, with and without the checksum
   verification of the files that precedes the load;
3. validation time per million rows of the large releases;
4. archive and restore: dr5 is activated, so the large release activated
   before the last one is superseded and outside the two retention keeps; it
   is archived (``archive_release``, as retention with ``releases_loaded`` = 2
   would) and timed (rows/s, MB/s of Parquet written, archive size against
   its size in the database), then restored (``restore_release``, rows/s) and
   its row counts compared with the first load. Retention then archives the
   two small releases left over.

The simulated sky (30 deg² around ra 150, dec 2) lies in one HEALPix pixel
at order 1, so each table is one file and ``--jobs`` matters only at higher
partition orders.

The first small release (dr1) is loaded by a new ``dpdb release load`` process, timed from
its start to its exit (the end-to-end figure a user sees, target under 3 s). Load figures
only, the older path beside the new one, the key maps' cost, produced directories kept
between runs (production outside a benchmark lock):
python benchmarks/bench_release.py --compare-load --load-only --without-keymaps
       --produced DIR --skip-validation

The key maps' cost (``--without-keymaps``): ``--keymap-pairs N`` (default 3) large releases
loaded with key maps and N without, in pairs of adjacent loads (dr4 with, dr6 without, then
without/with: W N N W N W), compared by their median rates; one load of each differs from
the next by 10-25 % on a shared 2-core machine. Each load, each pair and the older single
figure (dr4 against dr6) are printed too. Without ``--compare-load``, dr3 is a new-path load
with key maps that only warms the server up (the first large load creates the WAL segments
the later ones recycle). With ``--load-only`` each large release is dropped after its load
(the next one finds the same database, and the disk holds one at a time). 3+3 pairs at the
defaults take 4-9 minutes; the older path's comparison fits beside them only with
``--keymap-pairs 1``.

Usage: python benchmarks/bench_release.py [--large-objects N] [--nights N] [--small-objects N]
       [--swaps N] [--jobs N] [--partition-order K]
Defaults take about 14 minutes on 2 cores (two loads of 10M rows, one archive
and one restore of 10M rows); a smoke run takes about 3:
python benchmarks/bench_release.py --large-objects 20000 --nights 2 --swaps 4
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg

from dpdb.config import Settings
from dpdb.db import prepare
from dpdb.etl.release_dir import ReleaseDir
from dpdb.etl.release_dir import read as read_release_dir
from dpdb.keymap import fill_statement, key_columns, keymap_tables
from dpdb.lifecycle.activate import Activation, activate_release, retain
from dpdb.lifecycle.archive import archive_release, drop_release
from dpdb.lifecycle.load import LoadResult, load_release, restore_release
from dpdb.lifecycle.validate import Report, validate_release
from dpdb.model.felis import latest_version
from dpdb.pg import conninfo
from dpdb.processing.release import produce
from dpdb.registry.catalogs import find_catalog
from dpdb.registry.releases import create_release, get_release
from dpdb.server import EmbeddedServer

SWAP_TARGET_S = 1.0
RATIO_TARGET = 3.0
SWAP_RELEASES_LOADED = 20  # retention during the swap phases: archive nothing


@dataclass
class Ready:
    """A produced, created, loaded and validated release."""

    name: str
    manifest: ReleaseDir
    produce_seconds: float
    load: LoadResult
    load_wall: float  # load_release, the checksum verification of the files included
    report: Report
    create_seconds: float = 0.0  # create_release (schema, partitions, indexes, key maps)
    legacy: bool = False  # loaded with the indexes kept (the older path)
    keymaps: bool = True

    @property
    def rows(self) -> int:
        return self.manifest.total_rows


def ready(
    settings: Settings, workdir: Path, name: str, number: int, objects: int, nights: int, jobs: int,
    legacy: bool = False, keymaps: bool = True, produced_dir: Path | None = None, cli: bool = False,
    validate: bool = True,
) -> Ready:
    """Produce release ``name`` (seed = its number), create it, load it (``legacy``: indexes kept
    during the load, the older path; ``cli``: with a new ``dpdb release load`` process, timed from
    its start to its exit), validate it. ``produced_dir`` keeps produced directories between runs."""
    t0 = time.perf_counter()
    where = workdir / "produced" / name
    if produced_dir is not None:
        where = produced_dir / f"{name}-{objects}-{nights}-o{settings.partition_order}"
    if (where / "release.json").exists():
        manifest = read_release_dir(where)
    else:
        manifest = produce(
            where, name, seed=number, objects=objects, nights=nights,
            partition_order=settings.partition_order,
        )  # fmt: skip
    produced = time.perf_counter() - t0
    checkpoint(settings)
    t0 = time.perf_counter()
    with psycopg.connect(conninfo(settings)) as conn:
        create_release(conn, name, latest_version(), settings.partition_order)
    created = time.perf_counter() - t0
    t0 = time.perf_counter()
    if cli:
        loaded = cli_load(settings, name, where, jobs)
    else:
        loaded = load_release(settings, name, where, jobs=jobs, legacy=legacy, keymaps=keymaps)
    load_wall = time.perf_counter() - t0
    report = validate_release(settings, name) if validate else Report(name, None)
    if validate and not report.ok:
        bad = "; ".join(f"{c.name}: {c.figure}" for c in report.checks if not c.ok)
        print(f"  note: {name} failed validation ({bad}); it will be activated with force")
    return Ready(name, manifest, produced, loaded, load_wall, report, created, legacy, keymaps)


def cli_load(settings: Settings, name: str, directory: Path, jobs: int) -> LoadResult:
    """``dpdb release load`` in a new process, as a user runs it: its wall time includes Python's
    start, the imports and the driver's type catalog. Rows come from the release's manifest."""
    env = dict(os.environ)
    env.update(
        DPDB_HOME=str(settings.home), DPDB_DATABASE=settings.database,
        DPDB_PARTITION_ORDER=str(settings.partition_order),
        DPDB_RELEASES_LOADED=str(settings.releases_loaded), DPDB_ARCHIVE_DIR=str(settings.archive_dir),
        DPDB_RELEASE_BULK_ROWS=str(settings.release_bulk_rows),
    )  # fmt: skip
    dpdb = Path(sys.executable).parent / "dpdb"
    t0 = time.perf_counter()
    subprocess.run([str(dpdb), "release", "load", name, str(directory), "--jobs", str(jobs)], env=env,
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    wall = time.perf_counter() - t0
    rows = read_release_dir(directory)
    return LoadResult(name, {t: rows.rows(t) for t in rows.tables}, 0, wall)


def checkpoint(settings: Settings) -> None:
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def alternate(
    settings: Settings, pair: tuple[Ready, Ready], swaps: int
) -> tuple[np.ndarray, np.ndarray, list[Activation]]:
    """Activate pair[0] (warm-up), then ``swaps`` times alternately pair[1], pair[0], ...

    Returns the swap transaction's milliseconds, the wall milliseconds of
    ``activate_release`` and the activations, of the counted ones.
    """
    force = {r.name for r in pair if not r.report.ok}
    first = pair[0].name
    activate_release(settings, first, force=first in force)
    swap_ms, wall_ms, acts = [], [], []
    for i in range(swaps):
        name = pair[(i + 1) % 2].name
        t0 = time.perf_counter()
        act = activate_release(settings, name, force=name in force)
        wall_ms.append((time.perf_counter() - t0) * 1000)
        if not act.swapped or act.archived:
            raise RuntimeError(f"activation of {name}: swapped {act.swapped}, archived {act.archived}")
        swap_ms.append(act.swap_seconds * 1000)
        acts.append(act)
    return np.array(swap_ms), np.array(wall_ms), acts


def swap_line(label: str, swap_ms: np.ndarray, wall_ms: np.ndarray, acts: list[Activation]) -> None:
    attempts = max(a.attempts for a in acts)
    sample = int(np.median([sum(a.sample_rows.values()) for a in acts]))
    held = np.array([a.lock_seconds * 1000 for a in acts])
    print(
        f"  activate (swap) {label:<6} p50 {np.median(swap_ms):8.1f} ms  max {swap_ms.max():8.1f} ms | "
        f"readers held p50 {np.median(held):6.1f} ms  max {held.max():6.1f} ms | "
        f"wall p50 {np.median(wall_ms):8.1f} ms  max {wall_ms.max():8.1f} ms | "
        f"{len(swap_ms)} swaps, max attempts {attempts}, sample {sample:,} rows"
    )


def load_line(label: str, r: Ready) -> None:
    rows = sum(r.load.rows.values())
    how = "legacy (indexes kept)" if r.legacy else "indexes kept"
    if r.load.index_seconds:
        how = "deferred indexes"
    if not r.keymaps:
        how += ", NO key maps"
    print(
        f"  load {label:<6} {r.name}: {rows:>11,} rows in {r.load.seconds:7.1f} s = "
        f"{rows / r.load.seconds:>9,.0f} rows/s | with checksum verification {r.load_wall:7.1f} s = "
        f"{rows / r.load_wall:>9,.0f} rows/s | {r.manifest.total_bytes / 1e6:,.0f} MB Parquet, "
        f"{sum(len(f) for f in r.manifest.tables.values())} files | {how}"
        + (f", index build {r.load.index_seconds:.1f} s (key maps {r.load.keymap_seconds:.1f} s of "
           "connection time)" if r.load.index_seconds else "")
        + f" | create_release {r.create_seconds:.1f} s"
    )  # fmt: skip


def target_lines(small: Ready, large: Ready) -> None:
    """The small release's end-to-end time and what the key maps cost the large one."""
    print(
        f"  small release {small.name} end to end (a new `dpdb release load` process, from its start to "
        f"its exit): {small.rows:,} rows in {small.load_wall:.2f} s "
        f"({'PASS' if small.load_wall < 3 else 'FAIL'}: target < 3 s)"
    )
    lr = large.load
    if lr.index_seconds:
        print(
            f"  key maps of {large.name}: held keys checked (or COPYed and keyed) {lr.keymap_seconds:.1f} s "
            f"(summed over connections, beside the attach of the partitions' indexes); keys COPYed by "
            f"the files themselves (no room to hold them) {lr.keymap_load_seconds:.1f} s; of the "
            f"{lr.seconds:.1f} s load; what they cost the load rate: --without-keymaps"
        )


def keymap_order(pairs: int) -> list[bool]:
    """Key maps built or not for the large releases after dr5 (dr4, with them, comes first).

    Pairs of adjacent loads: (dr4 with, dr6 without), then (without, with) each: W N N W N W ...
    The loads with key maps sit on average later in the run than those without, so a drift of
    the machine or the growing database counts against the key maps, never for them.
    """
    return [False] + [k for _ in range(pairs - 1) for k in (False, True)]


def rate(r: Ready) -> float:
    return sum(r.load.rows.values()) / r.load.seconds


def keymap_lines(loads: list[Ready]) -> None:
    """What the key maps cost the load rate: the older single figure (dr4 against dr6) and the
    median over interleaved loads with and without them (``loads``: dr4, then dr6, dr7, ...)."""
    first_with, first_without = loads[0], loads[1]
    single = (1 - rate(first_with) / rate(first_without)) * 100
    print(
        f"  key maps cost, one load of each (the older figure): rows/s with {rate(first_with):,.0f} "
        f"({first_with.name}), without {rate(first_without):,.0f} ({first_without.name}): "
        f"{single:.1f} % of the load rate"
    )
    pairs = [(loads[0], loads[1])] + [(loads[i + 1], loads[i]) for i in range(2, len(loads) - 1, 2)]
    costs = []
    for w, n in pairs:
        cost = (1 - rate(w) / rate(n)) * 100
        costs.append(cost)
        print(
            f"    pair {w.name} with / {n.name} without: {rate(w):,.0f} / {rate(n):,.0f} rows/s "
            f"({w.load.seconds:.1f} / {n.load.seconds:.1f} s; index build {w.load.index_seconds:.1f} / "
            f"{n.load.index_seconds:.1f} s): {cost:.1f} %"
        )
    withs = [w for w, _ in pairs]
    withouts = [n for _, n in pairs]
    median_with = float(np.median([rate(r) for r in withs]))
    median_without = float(np.median([rate(r) for r in withouts]))
    cost = (1 - median_with / median_without) * 100
    build = float(
        np.median([r.load.index_seconds for r in withs]) - np.median([r.load.index_seconds for r in withouts])
    )
    stream = float(
        np.median([r.load.seconds - r.load.index_seconds for r in withs])
        - np.median([r.load.seconds - r.load.index_seconds for r in withouts])
    )
    verdict = "PASS" if cost <= 10 else "FAIL"
    print(
        f"  key maps cost, median of {len(pairs)} interleaved loads each: rows/s with {median_with:,.0f}, "
        f"without {median_without:,.0f}: {cost:.1f} % of the load rate ({verdict}: target <= 10 %); "
        f"median of the {len(pairs)} pairs' figures {float(np.median(costs)):.1f} %; medians' difference "
        f"in the index build {build:+.1f} s, in the streaming {stream:+.1f} s"
    )


def fill_deferred_maps(settings: Settings, name: str) -> tuple[float, int]:
    """Seconds the first later write into release ``name`` spends filling its deferred key maps
    (each map filled from its table, sql/keymap.sql ``keymap_fill``), and the keys filled."""
    with psycopg.connect(conninfo(settings)) as conn:
        catalog = find_catalog(conn, name)
        assert catalog is not None
        t0 = time.perf_counter()
        keys = 0
        for table, keymap in keymap_tables(name, catalog.schema_version, str(catalog.kind)):
            conn.execute(fill_statement(name, table.name, key_columns(keymap)))
            keys += conn.execute(f'SELECT count(*) FROM "{name}"."{keymap.name}"').fetchone()[0]  # type: ignore[index]
        conn.commit()
        return time.perf_counter() - t0, keys


def db_size(settings: Settings, schema: str) -> tuple[int, int]:
    """(total bytes with indexes and TOAST, heap bytes) of a release schema's tables."""
    with psycopg.connect(conninfo(settings)) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0), "
            "coalesce(sum(pg_relation_size(c.oid)), 0) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-objects", type=int, default=280_000, help="static-sky objects, large")
    parser.add_argument("--nights", type=int, default=6, help="nights of visits of the large releases")
    parser.add_argument("--small-objects", type=int, default=1_500, help="static-sky objects, small")
    parser.add_argument("--small-nights", type=int, default=1)
    parser.add_argument("--swaps", type=int, default=10, help="counted activations per size")
    parser.add_argument("--jobs", type=int, default=2, help="load and restore parallelism")
    parser.add_argument("--partition-order", type=int, default=1)
    parser.add_argument(
        "--legacy-load", action="store_true", help="load every release the older way (indexes kept)"
    )
    parser.add_argument(
        "--compare-load", action="store_true",
        help="load the first large release the older way, the second the new way (same run)",
    )  # fmt: skip
    parser.add_argument(
        "--without-keymaps", action="store_true",
        help="with --load-only: also load a third large release without building its key maps",
    )  # fmt: skip
    parser.add_argument(
        "--keymap-pairs", type=int, default=3,
        help="with --without-keymaps: large releases loaded with and without key maps, this many of "
        "each, interleaved (dr4 is the first with; the median compares them)",
    )  # fmt: skip
    parser.add_argument(
        "--bulk-rows", type=int, default=None,
        help="release_bulk_rows setting: smallest release loaded with deferred indexes",
    )  # fmt: skip
    parser.add_argument(
        "--load-only", action="store_true", help="stop after the load figures (no activation, archive)"
    )
    parser.add_argument(
        "--produced", type=Path, default=None,
        help="keep the produced release directories here and reuse them in later runs",
    )  # fmt: skip
    parser.add_argument(
        "--skip-validation", action="store_true", help="with --load-only: do not validate the releases"
    )
    args = parser.parse_args()
    if args.skip_validation and not args.load_only:
        parser.error("--skip-validation needs --load-only")
    if args.swaps < 1:
        parser.error("--swaps must be at least 1")
    if args.keymap_pairs < 1:
        parser.error("--keymap-pairs must be at least 1")

    workdir = Path(tempfile.mkdtemp(prefix="dpdb-bench-"))
    os.chmod(workdir, 0o755)
    settings = Settings(
        home=workdir / "home", database="bench", partition_order=args.partition_order,
        archive_dir=workdir / "archive", releases_loaded=2,
    )  # fmt: skip
    if args.bulk_rows is not None:
        settings = settings.model_copy(update={"release_bulk_rows": args.bulk_rows})
    swap_settings = settings.model_copy(update={"releases_loaded": SWAP_RELEASES_LOADED})
    started = time.perf_counter()
    try:
        prepare(settings)
        with psycopg.connect(conninfo(settings)) as conn:
            server = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB, "
            f"Python {platform.python_version()}, PostgreSQL {server}, "
            f"partition order {args.partition_order} ({12 * 4**args.partition_order} partitions), "
            f"load/restore jobs {args.jobs}"
        )

        print("setup (produce, create, load, validate):")
        small = args.small_objects, args.small_nights
        large = args.large_objects, args.nights
        releases: dict[str, Ready] = {}
        fill_line = ""
        # (objects, nights, key maps built)
        plan = [(*small, True), (*small, True), (*large, True), (*large, True), (*small, True)]
        if args.without_keymaps:
            plan += [(*large, keymaps) for keymaps in keymap_order(args.keymap_pairs)]
        for number, (objects, nights, keymaps) in enumerate(plan, start=1):
            name = f"dr{number}"
            legacy = args.legacy_load or (args.compare_load and number == 3)
            r = ready(
                settings, workdir, name, number, objects, nights, args.jobs, legacy, keymaps,
                produced_dir=args.produced, cli=number == 1, validate=not args.skip_validation,
            )  # fmt: skip
            releases[name] = r
            tables = ", ".join(f"{t} {r.manifest.rows(t):,}" for t in r.manifest.tables)
            dropped = args.load_only and (objects, nights) == large
            if args.without_keymaps and name == "dr4" and r.load.index_seconds:
                filled, keys = fill_deferred_maps(settings, name)
                fill_line = (
                    f"  {name}'s deferred key maps, filled as the first later write into it would: "
                    f"{filled:.1f} s for {keys:,} keys (not part of the load)"
                )
            if dropped:  # the next loads find the same database; the disk holds ~8 GB per 10M-row load
                drop_release(settings, name)
            print(
                f"  {name}: {objects:,} objects, {nights} night(s): {r.rows:,} rows ({tables}); "
                f"produced {r.produce_seconds:.1f} s, loaded {r.load.seconds:.1f} s, "
                + (f"validated {r.report.seconds:.1f} s ({'ok' if r.report.ok else 'FAILED'})"
                   if not args.skip_validation else "not validated")
                + (", dropped" if dropped else "")
            )
        dr1, dr2, dr4, dr5 = (releases[f"dr{n}"] for n in (1, 2, 4, 5))
        if args.load_only:
            print(f"load (partition order {args.partition_order}, {args.jobs} jobs):")
            for label, name in (("large", "dr3"), ("large", "dr4"), ("small", "dr1"), ("small", "dr2"),
                                ("small", "dr5")):  # fmt: skip
                if name in releases:
                    load_line(label, releases[name])
            after = [r for n, r in releases.items() if int(n[2:]) > 5]
            for r in after:
                load_line("large", r)
            if args.compare_load:
                old = sum(releases["dr3"].load.rows.values()) / releases["dr3"].load.seconds
                new = sum(dr4.load.rows.values()) / dr4.load.seconds
                print(f"  large release: new/legacy rows/s {new / old:.2f} (target >= 2)")
            target_lines(dr1, dr4)
            if args.without_keymaps:
                keymap_lines([dr4, *after])
                if fill_line:
                    print(fill_line)
            print(f"total run time {(time.perf_counter() - started) / 60:.1f} min")
            return

        dr3 = releases["dr3"]
        print(f"activation: {args.swaps} counted swaps per size, alternating two releases of that size")
        checkpoint(settings)
        s_swap, s_wall, s_acts = alternate(swap_settings, (dr1, dr2), args.swaps)
        checkpoint(settings)
        l_swap, l_wall, l_acts = alternate(swap_settings, (dr3, dr4), args.swaps)
        swap_line(f"small ({dr1.rows:,} / {dr2.rows:,} rows)", s_swap, s_wall, s_acts)
        swap_line(f"large ({dr3.rows:,} / {dr4.rows:,} rows)", l_swap, l_wall, l_acts)
        ratio = float(np.median(l_swap) / np.median(s_swap))
        wall_ratio = float(np.median(l_wall) / np.median(s_wall))
        print(f"  large/small ratio: swap p50 {ratio:.2f}, wall p50 {wall_ratio:.2f}")
        worst = max(s_swap.max(), l_swap.max()) / 1000
        for label, ok in (
            (f"swap max {worst * 1000:.1f} ms < {SWAP_TARGET_S:.0f} s (small and large)",
             worst < SWAP_TARGET_S),
            (f"swap independent of size: large/small p50 ratio {ratio:.2f} <= {RATIO_TARGET:.0f}",
             ratio <= RATIO_TARGET),
        ):  # fmt: skip
            print(f"  {'PASS' if ok else 'FAIL'}  {label}")

        print(f"load (partition order {args.partition_order}, {args.jobs} jobs):")
        for label, r in (("large", dr3), ("large", dr4), ("small", dr1), ("small", dr2)):
            load_line(label, r)
        if args.compare_load:
            old = sum(dr3.load.rows.values()) / dr3.load.seconds
            new = sum(dr4.load.rows.values()) / dr4.load.seconds
            print(f"  large release: new/legacy rows/s {new / old:.2f} (target >= 2)")
        target_lines(dr1, dr4)

        print("validation:")
        for r in (dr3, dr4, dr1):
            rows = sum(r.report.rows.values())
            print(
                f"  validate {r.name}: {rows:>11,} rows in {r.report.seconds:6.1f} s = "
                f"{r.report.seconds / (rows / 1e6):6.2f} s per million rows, {len(r.report.checks)} checks"
            )

        print("archive and restore:")
        act = activate_release(swap_settings, dr5.name, force=not dr5.report.ok)
        with psycopg.connect(conninfo(settings)) as conn:
            old = get_release(conn, dr3.name if act.previous == dr4.name else dr4.name)
        big = releases[old.name]
        print(f"  activated {dr5.name} (previous {act.previous}); {old.name} is {old.state}, archiving it")
        total, heap = db_size(settings, old.name)
        checkpoint(settings)
        arch = archive_release(settings, old.name)
        files = sum(1 for _ in arch.path.rglob("*.parquet"))
        print(
            f"  archive {old.name}: {arch.rows:>11,} rows in {arch.seconds:6.1f} s = "
            f"{arch.rows / arch.seconds:>9,.0f} rows/s, {arch.bytes / 1e6 / arch.seconds:6.1f} MB/s written "
            f"({arch.bytes / 1e6:,.0f} MB in {files} files{', reused' if arch.reused else ''})"
        )
        print(
            f"  sizes: archive {arch.bytes / 1e6:,.0f} MB, produced directory "
            f"{big.manifest.total_bytes / 1e6:,.0f} MB, database {total / 1e6:,.0f} MB with indexes "
            f"(heap {heap / 1e6:,.0f} MB, indexes and TOAST {(total - heap) / 1e6:,.0f} MB); "
            f"archive/database {arch.bytes / total:.2f}"
        )
        checkpoint(settings)
        t0 = time.perf_counter()
        restored = restore_release(settings, old.name, jobs=args.jobs)
        wall = time.perf_counter() - t0
        rows = sum(restored.rows.values())
        same = restored.rows == big.load.rows
        print(
            f"  restore {old.name}: {rows:>11,} rows in {restored.seconds:6.1f} s = "
            f"{rows / restored.seconds:>9,.0f} rows/s | with checksum verification {wall:6.1f} s = "
            f"{rows / wall:>9,.0f} rows/s | row counts {'equal to' if same else 'DIFFER from'} the first load"
        )
        t0 = time.perf_counter()
        retired = retain(settings)
        print(
            f"  retention (releases_loaded {settings.releases_loaded}) archived "
            f"{', '.join(retired) or 'nothing'} in {time.perf_counter() - t0:.1f} s"
        )
        print(f"total run time {(time.perf_counter() - started) / 60:.1f} min")
    finally:
        EmbeddedServer(settings.home).down()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
