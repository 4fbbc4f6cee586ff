"""Daytime relink (DPDD §3.2.2 step 4): DiaSources moved from DiaObjects to the SSObjects orbit linking found.

A linkage is a directory with ``SSSource.parquet`` (at least diaSourceId and
ssObjectId of each DiaSource to move; other SSSource columns optional) and,
optionally, ``SSObject.parquet`` (new or updated orbits, which become new
SSObject versions). It is applied in one transaction (sql/prompt_relink.sql):
the moved DiaSources' rows are withdrawn and new rows carry the SSObject, the
DiaObjects they leave are re-aggregated or, left empty, deleted, all at one
processing time and without overwriting anything, so that the catalog as of
any earlier instant stays what it was. A linkage is applied once (it is
registered by the SHA-256 of its SSSource file in ``dpdb_meta.prompt_relink``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa

import dpdb.prompt.statements as prompt_statements
from dpdb.config import Settings
from dpdb.db import connect
from dpdb.errors import ValidationError
from dpdb.etl.files import fingerprint
from dpdb.pg import adbc_connection
from dpdb.registry import manifest, prompt_log
from dpdb.registry.catalogs import writable_catalog
from dpdb.timeutil import iso_utc

from .order import PromptChange
from .staging import input_target, read_table
from .sums import SUMS_VERSION

__all__ = ["RelinkResult", "relink", "is_linkage", "NIGHT_LINKAGE", "LINK_FILE", "ORBIT_FILE"]

log = logging.getLogger(__name__)

NIGHT_LINKAGE = "linkage"
"""A linkage directory of this name beside a night's visit directories is applied after them."""
LINK_FILE = "SSSource.parquet"
ORBIT_FILE = "SSObject.parquet"


@dataclass
class RelinkResult:
    path: Path
    status: str  # relinked or skipped (already applied)
    processing_time: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def is_linkage(path: Path) -> bool:
    return (path / LINK_FILE).is_file()


def relink(
    settings: Settings,
    path: Path,
    *,
    processing_time: float | None = None,
    aconn: adbc.Connection | None = None,
) -> RelinkResult:
    """Apply the linkage in directory ``path`` at ``processing_time`` (MJD TAI; default: now)."""
    path = Path(path)
    if not is_linkage(path):
        raise ValidationError(f"{path}: not a linkage directory (no {LINK_FILE})")
    with connect(settings) as conn:
        version = writable_catalog(conn, "prompt").schema_version
    if aconn is None:
        with adbc_connection(settings) as own:
            return _Relink(own, settings, path, version).run(processing_time)
    return _Relink(aconn, settings, path, version).run(processing_time)


class _Relink(PromptChange):
    def __init__(self, aconn: adbc.Connection, settings: Settings, path: Path, version: int) -> None:
        super().__init__(aconn)
        self.settings = settings
        self.path = path
        self.version = version
        self.link_file = fingerprint(path / LINK_FILE)
        self.links = read_table(path / LINK_FILE, "SSSource", version)
        orbits = path / ORBIT_FILE
        self.orbit_file = fingerprint(orbits) if orbits.is_file() else None
        self.orbits = read_table(orbits, "SSObject", version) if self.orbit_file else None
        self.columns = {
            "source_columns": list(input_target("DiaSource", version).columns),
            "link_columns": self.links.column_names,
            "ssobject_columns": self.orbits.column_names if self.orbits is not None else [],
        }

    def run(self, processing_time: float | None) -> RelinkResult:
        start = time.monotonic()
        sha = self.link_file.sha256
        with self.transaction():
            if prompt_log.relink_applied_in(self.cur, sha):
                return RelinkResult(self.path, "skipped")
            t = self.processing_time(processing_time, f"linkage {self.path}")
            counts = self._steps(t)
            seconds = time.monotonic() - start
            self._run(
                "record_relink",
                (
                    sha, str(self.path), t, counts["ssobjects"], counts["diasources"],
                    counts["diaobjects_deleted"], counts["diaobjects_updated"], seconds,
                ),
            )  # fmt: skip
        log.info("linkage %s applied at %s: %s", self.path, iso_utc(t), counts)
        return RelinkResult(self.path, "relinked", t, counts, time.monotonic() - start)

    def _steps(self, t: float) -> dict[str, int]:
        load_link, load_orbits = self._stage()
        latest = prompt_log.latest_midpoint_in(self.cur)
        self._run("params", file="prompt_ingest.sql")
        self._run(
            "set_params",
            (t, latest if latest is not None else t, self.settings.characterization_cutoff) + (None,) * 6,
            file="prompt_ingest.sql",
        )
        self._run("relink_params")
        self._run("set_relink_params", (t, load_link, load_orbits))
        ssobjects = self._run("ssobject_versions") if self.orbits is not None else 0
        unknown = self._query(self._sql("unknown_ssobject")[0])
        if unknown:
            raise ValidationError(
                f"{self.path / LINK_FILE}: ssObjectId {unknown[0][0]} is not in the prompt catalog "
                f"nor in {ORBIT_FILE} of the linkage"
            )
        self._run("moved")
        bad = self._query(self._sql("not_movable")[0])
        if bad:
            source, missing, other = bad[0]
            why = "is not in the prompt catalog" if missing else f"is already attributed to SSObject {other}"
            raise ValidationError(f"{self.path / LINK_FILE}: diaSourceId {source} {why}")
        self._run("drop_linked")
        moved = self._run("insert_moved_sources")
        self._run("withdraw_sources")
        self._run("insert_sssources")
        self._run("affected")
        if self.version >= SUMS_VERSION:
            self._run("forget_sums")
        deleted = self._run("delete_orphans")
        self._run("touched")
        self._run("window_sources", file="prompt_ingest.sql")
        self._run("aggregate", file="prompt_ingest.sql")
        self._run("keep_nearby")
        self._run("close_versions")
        updated = self._run("insert_versions", file="prompt_ingest.sql")
        self._run("update_last", file="prompt_ingest.sql")
        return {
            "ssobjects": ssobjects,
            "diasources": moved,
            "diaobjects_deleted": deleted,
            "diaobjects_updated": updated,
        }

    def _stage(self) -> tuple[int, int | None]:
        """Temporary tables s_link and s_ssobject, manifest entries; returns their load ids."""
        load_link = manifest.add_entry(self.cur, self.link_file, "SSSource", "prompt", self.version)
        manifest.set_row_count(self.cur, load_link, self.links.num_rows)
        load_orbits = None
        staged: list[tuple[str, str, pa.Table | None]] = [
            ("s_link", "sssource", self.links),
            ("s_ssobject", "ssobject", self.orbits),
        ]
        for stage, table_name, table in staged:
            cols = ", ".join(table.column_names) if table is not None else "ssobjectid"
            self._execute(
                f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS "
                f"SELECT {cols} FROM prompt.{table_name} WITH NO DATA"
            )
            if table is not None:
                self.cur.adbc_ingest(stage, table, mode="append", temporary=True)
            self._execute(f"ANALYZE {stage}")
        if self.orbit_file is not None and self.orbits is not None:
            load_orbits = manifest.add_entry(self.cur, self.orbit_file, "SSObject", "prompt", self.version)
            manifest.set_row_count(self.cur, load_orbits, self.orbits.num_rows)
        return load_link, load_orbits

    def _sql(self, name: str, file: str = "prompt_relink.sql") -> list[str]:
        return prompt_statements.block(name, self.settings, file=file, **self.columns)

    def _run(self, name: str, parameters: tuple | None = None, file: str = "prompt_relink.sql") -> int:
        return self._execute_all(self._sql(name, file), parameters)
