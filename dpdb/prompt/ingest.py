"""Prompt ingest: each visit's DiaSources attributed, associated and aggregated in one transaction.

For every visit, in time order (DPDD §3.2.1; the SQL is in sql/prompt_ingest.sql):

1. *load*: the validated Parquet goes into temporary tables (binary COPY); Visit
   and CcdVisit rows go straight in; every file gets a load-manifest entry.
2. *attribute*: DiaSources within ``ss_radius`` of a known SSObject's predicted
   position are attributed to it (an SSSource row, no DiaObject).
3. *associate*: the rest are matched to current DiaObjects within
   ``association_radius``: at most one DiaObject per DiaSource and one DiaSource
   per DiaObject, closest pairs first, ties broken by ID. Unmatched DiaSources
   found new DiaObjects, which take the DiaSource's ID and sky pixel.
4. *forced*: forced measurements are linked to the DiaObject at their position.
5. *aggregate*: every DiaObject that got a DiaSource gets a new version computed
   from its DiaSources and forced measurements of the last
   ``characterization_cutoff`` days.
6. *nearby*: when a data release is active, each new version records the 3
   nearest stars and 3 nearest galaxies of its Object table.
7. *version*: the previous versions are closed at the processing time and the
   new ones inserted; the visit is registered in ``dpdb_meta.prompt_visit``.

After a night's visits, its daytime linkage (if any) moves DiaSources to the
SSObjects orbit linking found (dpdb/prompt/relink.py).

A visit already registered is skipped, and a visit whose transaction did not
commit left nothing behind, so a rerun completes exactly the missing visits.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

import dpdb.prompt.statements as prompt_statements
from dpdb.config import Settings
from dpdb.db import connect
from dpdb.etl.files import fingerprint
from dpdb.pg import adbc_connection
from dpdb.registry import manifest, prompt_log
from dpdb.registry.activations import active_release
from dpdb.registry.catalogs import writable_catalog
from dpdb.timeutil import iso_utc, now_mjd_tai

from .order import LOCK, PromptChange
from .relink import NIGHT_LINKAGE, RelinkResult, is_linkage, relink
from .staging import OWN_PIXEL, VisitInput, find_visits, read_table, read_visit
from .sums import SUMS_VERSION, placeholders

SUMS_PLACEHOLDERS: Any = {k: [v] for k, v in placeholders().items()}
"""Column lists of sql/prompt_sums.sql, as keyword arguments of statements.block."""

__all__ = ["VisitResult", "ingest", "STEPS"]

log = logging.getLogger(__name__)

RELINK_DELAY = 0.25
"""Days between a night's last visit and its daytime linkage, when processing times are given."""
STEPS = ("load", "attribute", "associate", "forced", "aggregate", "nearby", "version")


@dataclass
class VisitResult:
    visit: int
    status: str  # ingested or skipped (already in the catalog)
    processing_time: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    blocks: dict[str, float] = field(default_factory=dict)
    """Seconds per named SQL block (sql/prompt_ingest.sql, sql/prompt_sums.sql), for profiling."""


def ingest(
    settings: Settings,
    paths: list[Path],
    *,
    processing_time: float | None = None,
    progress: Callable[[VisitResult], None] | None = None,
    on_relink: Callable[[RelinkResult], None] | None = None,
    incremental: bool = True,
) -> list[VisitResult]:
    """Ingest the visits found under ``paths`` in time order.

    ``processing_time`` (MJD TAI) is the processing time of the earliest visit
    given; later visits follow at their observation spacing (as if processed
    live). Without it each visit is processed at the wall-clock time. A night's
    daytime linkage (a ``linkage`` directory beside its visit directories) is
    applied after its last visit, ``RELINK_DELAY`` days later when times are given.
    ``incremental=False`` computes every new DiaObject version from its stored
    measurements instead of the running sums (dpdb/prompt/sums.py), for comparison.
    """
    with connect(settings) as conn:
        version = writable_catalog(conn, "prompt").schema_version
        done = prompt_log.ingested_visits(conn)
        release = active_release(conn)
    order = sorted((_visit_key(d, version), d) for d in find_visits(paths))
    first_mjd = order[0][0][0] if order else 0.0
    results = []
    with adbc_connection(settings) as aconn:
        for file in _ssobject_files(paths, [d for _, d in order]):
            _load_ssobjects(aconn, file, version, processing_time or now_mjd_tai())
        for i, ((midpoint, visit_id), path) in enumerate(order):
            t = processing_time + (midpoint - first_mjd) if processing_time is not None else None
            if visit_id in done:
                result = VisitResult(visit_id, "skipped")
            else:
                visit = read_visit(path, version)
                result = _VisitTransaction(aconn, settings, visit, version, release, incremental).run(t)
            results.append(result)
            if progress:
                progress(result)
            linkage = path.parent / NIGHT_LINKAGE
            if (i + 1 == len(order) or order[i + 1][1].parent != path.parent) and is_linkage(linkage):
                at = t + RELINK_DELAY if t is not None else None
                relinked = relink(settings, linkage, processing_time=at, aconn=aconn)
                if on_relink:
                    on_relink(relinked)
    return results


def _ssobject_files(paths: list[Path], visits: list[Path]) -> list[Path]:
    """Known-SSObject catalogs (SSObject.parquet) in the directories given or two levels above a visit."""
    places = {p for p in paths if p.is_dir()} | {a for v in visits for a in (v.parent, v.parent.parent)}
    return sorted(p / "SSObject.parquet" for p in places if (p / "SSObject.parquet").is_file())


def _visit_key(path: Path, version: int) -> tuple[float, int]:
    """(midpoint, visit ID) of a visit directory, for ordering and skipping."""
    table = read_table(path / "Visit.parquet", "Visit", version)
    return float(table["expmidptmjd"][0].as_py()), int(table["visit"][0].as_py())


def _load_ssobjects(aconn: adbc.Connection, path: Path, version: int, t: float) -> None:
    """Register known SSObjects not yet in the catalog (version valid from ``t``)."""
    table = read_table(path, "SSObject", version)
    with aconn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext($1))", parameters=(LOCK,))
        cur.fetchall()
        cols = ", ".join(table.column_names)
        cur.execute(
            f"CREATE TEMP TABLE s_ssobject ON COMMIT DROP AS SELECT {cols} FROM prompt.ssobject WITH NO DATA"
        )
        cur.adbc_ingest("s_ssobject", table, mode="append", temporary=True)
        load_id = manifest.add_entry(cur, fingerprint(path), "SSObject", "prompt", version)
        # counted with RETURNING: ADBC's rowcount is -1 for an INSERT ... SELECT, which used to
        # register the file again (row count -1) on every run
        cur.execute(
            f"WITH added AS (INSERT INTO prompt.ssobject ({cols}, validitystartmjdtai, _load_id) "
            f"SELECT {cols}, $1, $2 FROM s_ssobject s WHERE NOT EXISTS "
            "(SELECT 1 FROM prompt.ssobject o WHERE o.ssobjectid = s.ssobjectid) RETURNING 1) "
            "SELECT count(*) FROM added",
            parameters=(t, load_id),
        )
        row = cur.fetchone()
        added = int(row[0]) if row else 0
        if added:
            manifest.set_row_count(cur, load_id, added)
            aconn.commit()
            log.info("%s: %d SSObjects registered", path, added)
        else:
            aconn.rollback()


class _VisitTransaction(PromptChange):
    """The ingest of one visit: all steps on one ADBC connection, committed together."""

    def __init__(
        self,
        aconn: adbc.Connection,
        settings: Settings,
        visit: VisitInput,
        version: int,
        release: str | None,
        incremental: bool = True,
    ) -> None:
        super().__init__(aconn)
        self.settings = settings
        self.visit = visit
        self.version = version
        self.release = release
        self.steps: dict[str, float] = dict.fromkeys(STEPS, 0.0)
        self.incremental = incremental
        self.blocks: dict[str, float] = {}

    def run(self, processing_time: float | None) -> VisitResult:
        start = time.monotonic()
        visit = self.visit
        with self.transaction():
            if prompt_log.visit_ingested_in(self.cur, visit.visit):
                return VisitResult(visit.visit, "skipped")
            t = self.processing_time(processing_time, f"visit {visit.visit}")
            counts = self._steps(t)
            total = time.monotonic() - start
            self._run(
                "record_visit",
                (
                    visit.visit, t, visit.midpoint,
                    counts["diasources"], counts["ss_attributed"], counts["associated"],
                    counts["new_diaobjects"], counts["forced"], counts["forced_unlinked"],
                    json.dumps({k: round(v, 4) for k, v in self.steps.items()}), total,
                ),
            )  # fmt: skip
        log.info("visit %d ingested at %s: %s", visit.visit, iso_utc(t), counts)
        return VisitResult(
            visit.visit, "ingested", t, counts, self.steps, time.monotonic() - start, self.blocks
        )

    def _steps(self, t: float) -> dict[str, int]:
        v, s = self.visit, self.settings
        with self._step("load"):
            loads = self._stage(t)
            self._run("params")
            self._run(
                "set_params",
                (
                    t, v.midpoint, s.characterization_cutoff, v.center[0], v.center[1],
                    prompt_statements.field_radius(v, s),
                    loads.get("DiaSource"), loads.get("DiaForcedSource"), loads.get("SSEphemeris"),
                ),
            )  # fmt: skip
            self._run("match_tables")
        with self._step("attribute"):
            self._run("ss_candidates")
            self._match()
            self._run("ss_keep")
            self._run("match_reset")
        with self._step("associate"):
            self._run("near_objects")
            self._run("near_objects_index")
            self._run("association_candidates")
            associated = self._match()
            self._run("source_links")
            self._run("insert_sources")
            ss = self._run("insert_sssources")
            self._run("match_reset")
        with self._step("forced"):
            self._run("field_objects")
            self._run("forced_candidates")
            forced = self._match()
            self._run("insert_forced")
        with self._step("aggregate"):
            self._run("touched")
            self._aggregate()
        if self.release:
            with self._step("nearby"):
                self._run("release_objects")
                self._run("nearby")
        with self._step("version"):
            self._run("close_versions")
            touched = self._run("insert_versions")
            self._run("update_last")
        n_src = v.tables["DiaSource"].num_rows
        n_forced = v.tables["DiaForcedSource"].num_rows
        return {
            "diasources": n_src,
            "ss_attributed": ss,
            "associated": associated,
            "new_diaobjects": touched - associated,
            "forced": forced,
            "forced_unlinked": n_forced - forced,
        }

    def _aggregate(self) -> None:
        """New versions of the touched DiaObjects: from their running sums, or in full from their rows.

        In full when asked, when the catalog predates the sums (schema < 9), or when
        a measurement of the visit is later than its midpoint (outside the window
        that ends there, so not addable to the sums).
        """
        if self.incremental and self.version >= SUMS_VERSION and not self._beyond_midpoint():
            self._run_sums("sums_objects")
            # rows may leave the window (none while every window is younger than the cutoff):
            # subtract them
            if self._count("sums_obj WHERE expiring AND NOT slow AND NOT is_new"):
                self._run_sums("sums_expiring")
                for name in ("sums_expire", "sums_delta", "sums_subtract"):
                    self._run_sums(name)
            self._run_sums("sums_visit_rows")
            if self._count("sums_obj WHERE slow"):  # sums to rebuild from the stored rows
                self._run_sums("sums_rebuild_rows")
            for name in ("sums_delta", "sums_add", "sums_version", "sums_forget"):
                self._run_sums(name)
            return
        self._run("window_sources")
        self._run("aggregate")
        if self.version >= SUMS_VERSION:
            self._run_sums("sums_forget_visit")

    def _count(self, table: str) -> int:
        """Rows of a temporary table (``table`` may carry a WHERE clause)."""
        return int(self._query(f"SELECT count(*) FROM {table}")[0][0])

    def _beyond_midpoint(self) -> bool:
        v = self.visit
        for name in ("DiaSource", "DiaForcedSource"):
            column = v.tables[name]["midpointmjdtai"]
            if column.null_count or (len(column) and pa.compute.max(column).as_py() > v.midpoint):
                return True
        return False

    def _run_sums(self, name: str) -> int:
        blocks = prompt_statements.block(name, self.settings, file="prompt_sums.sql", **SUMS_PLACEHOLDERS)
        return self._timed(name, blocks, None)

    def _timed(self, name: str, blocks: list[str], parameters: tuple | None) -> int:
        start = time.monotonic()
        try:
            return self._execute_all(blocks, parameters)
        finally:
            self.blocks[name] = self.blocks.get(name, 0.0) + time.monotonic() - start

    def _stage(self, t: float) -> dict[str, int]:
        """Temporary input tables, Visit/CcdVisit rows (visible from ``t``), manifest entries; load ids."""
        v = self.visit
        load_ids = {}
        for name, fp in v.files.items():
            load_ids[name] = manifest.add_entry(self.cur, fp, name, "prompt", self.version)
        for name in ("Visit", "CcdVisit"):
            table = v.tables[name]
            table = table.append_column("_load_id", pa.array([load_ids[name]] * table.num_rows, pa.int64()))
            table = table.append_column("timeprocessedmjdtai", pa.array([t] * table.num_rows, pa.float64()))
            self.cur.adbc_ingest(name.lower(), table, mode="append", db_schema_name="prompt")
        for name, stage in (("DiaSource", "s_src"), ("DiaForcedSource", "s_forced")):
            table = v.tables[name]
            cols = ", ".join(c for c in table.column_names if c != OWN_PIXEL)
            self._execute(
                f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS "
                f"SELECT {cols} FROM prompt.{name.lower()} WITH NO DATA"
            )
            self._execute(f"ALTER TABLE {stage} ADD COLUMN {OWN_PIXEL} bigint")
            self.cur.adbc_ingest(stage, table, mode="append", temporary=True)
        self._execute(
            "CREATE TEMP TABLE s_eph (ssobjectid bigint, ra double precision, dec double precision, "
            "ephrate real, ephratera real, ephratedec real, ephvmag real) ON COMMIT DROP"
        )
        if "SSEphemeris" in v.tables:
            self.cur.adbc_ingest("s_eph", v.tables["SSEphemeris"], mode="append", temporary=True)
            self._execute("CREATE INDEX ON s_eph (q3c_ang2ipix(ra, dec))")
        # the join columns only: a full ANALYZE of these wide tables took ~0.1 s a visit
        self._execute("ANALYZE s_src (diasourceid, ra, dec)")
        self._execute("ANALYZE s_forced (diaforcedsourceid, ra, dec)")
        self._execute("ANALYZE s_eph")
        for name, load_id in load_ids.items():
            manifest.set_row_count(self.cur, load_id, v.tables[name].num_rows)
        return load_ids

    def _match(self) -> int:
        """Run greedy matching rounds on ``cand`` until nothing more is taken; pairs matched."""
        total = 0
        while True:
            taken = self._run("match_round")
            total += taken
            if taken == 0:
                return total

    def _run(self, name: str, parameters: tuple | None = None) -> int:
        """Run a named block of sql/prompt_ingest.sql; return the rows affected by its last statement."""
        blocks = prompt_statements.block(name, self.settings, visit=self.visit, release=self.release)
        return self._timed(name, blocks, parameters)

    @contextmanager
    def _step(self, name: str) -> Iterator[None]:
        """Add the time spent in the block to step ``name``."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] += time.monotonic() - start
