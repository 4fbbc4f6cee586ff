"""``dpdb hats export``: a catalog snapshot as HATS collections that LSDB opens.

One HATS collection per table under the output folder, each written by
hats-import (docs/architecture.md, decision 9: HATS is written with the
``hats``/``hats-import`` libraries, not imitated)::

    OUT/dpdb_export.json                 the export manifest, written last
    OUT/Object/collection.properties     the collection: main catalog + margin
    OUT/Object/Object/properties         hats properties, with dpdb's provenance
    OUT/Object/Object/partition_info.csv, skymap.fits, point_map.fits
    OUT/Object/Object/dataset/_metadata, _common_metadata, Norder=K/Dir=D/Npix=N.parquet
    OUT/Object/Object_10arcs/...         margin catalog (rows within 10" of each pixel)
    OUT/ObjectNested/...                 Object with its Sources and ForcedSources nested
    OUT/SSObject.parquet                 a table without a position (not a HATS catalog)

A release's partitioned tables are written straight from PostgreSQL, one
HATS partition per range query, in parallel (dpdb/hats/direct.py: hats'
alignment, pixel column and metadata, no intermediate files), and so are
their margin catalogs, mapped from the same rows as each partition is written
(dpdb/hats/margin.py: hats-import's rule with hats' pixel functions), and the
collection's properties: no dask client, no second read. Other catalogs (the prompt
catalog as of an instant, the nested catalogs) come from PostgreSQL chunk by
chunk (dpdb/hats/source.py) through hats-import's map / split / reduce stages
on a dask cluster. Memory is bounded by the partition size (and the chunk
size), whatever the table's size. Every row lies in the partition of its own
position (``_healpix_29`` computed by hats from ra/dec), also Sources, which
the database keeps in their Object's pixel. A killed export resumes: complete collections whose properties
and row counts match are kept, and hats-import resumes an unfinished one from
its intermediate files, rewriting no partition whose row count checks out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from dpdb._version import code_version
from dpdb.atomic import atomic_file
from dpdb.config import Settings
from dpdb.db import connect
from dpdb.errors import DpdbError, ValidationError, first_line
from dpdb.pg import adbc_uri
from dpdb.timeutil import iso_utc, now_mjd_tai

from .direct import own_pixel_table
from .source import (
    HISTOGRAM_ORDER,
    NestedExport,
    Snapshot,
    TableExport,
    arrow_schema,
    plan_tables,
    resolve_snapshot,
)

__all__ = ["ExportResult", "CatalogResult", "HatsExportError", "export_hats", "MANIFEST", "PLAN"]

log = logging.getLogger(__name__)

MANIFEST = "dpdb_export.json"
"""Written last: the export is complete once it exists."""
PLAN = ".dpdb_export_plan.json"
"""Written first: which snapshot this folder holds, so a rerun continues the same export."""
TMP = ".dpdb_tmp"
ZSTD_LEVEL = 3
"""Parquet's zstd level. hats' default, 15, takes 16 times the CPU of level 3 for files 5 % smaller on
a release's Object table (benchmarks/README.md, bench_hats.py): the export's largest cost."""


class HatsExportError(DpdbError):
    """A HATS export cannot be made or continued (folder holds another export, a library refused)."""


@dataclass
class CatalogResult:
    name: str
    path: str  # relative to the export folder
    rows: int
    kind: str  # "hats" (a collection) or "parquet" (a table without a position)
    margin: str | None = None
    margin_rows: int = 0
    reused: bool = False
    seconds: float = 0.0


@dataclass
class ExportResult:
    out: Path
    snapshot: dict[str, Any]
    catalogs: list[CatalogResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.catalogs)

    def line(self) -> str:
        made = sum(not c.reused for c in self.catalogs)
        return (
            f"{len(self.catalogs)} catalogs ({made} written, {len(self.catalogs) - made} already complete), "
            f"{self.rows:,} rows in {self.out} ({self.seconds:.1f} s)"
        )


def export_hats(
    settings: Settings,
    catalog: str,
    out: Path,
    *,
    tables: list[str] | None = None,
    as_of: float | None = None,
    margin: float = 10.0,
    jobs: int = 2,
    chunk_rows: int = 250_000,
    partition_bytes: int = 256 << 20,
    zstd_level: int = ZSTD_LEVEL,
    processes: bool | None = None,
    progress: bool = False,
    on_catalog: Callable[[CatalogResult], None] | None = None,
) -> ExportResult:
    """Export ``catalog`` (a release, ``current``, ``previous`` or ``prompt``) as HATS collections in ``out``.

    See :meth:`dpdb.Archive.export_hats` for the parameters.
    """
    start = time.monotonic()
    if margin < 0:
        raise ValidationError(f"--margin {margin}: give a margin in arcseconds >= 0 (0: no margin)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan_file = out / PLAN
    previous = _read_json(plan_file)
    if previous is not None and as_of is None and catalog == previous.get("catalog"):
        as_of = previous["snapshot"].get("as_of") if previous["snapshot"]["kind"] == "prompt" else None
    with connect(settings) as conn:
        snapshot = resolve_snapshot(conn, catalog, as_of, now_mjd_tai())
        plans = plan_tables(conn, snapshot, tables, chunk_rows, partition_bytes)
    log.info("%s: planned in %.1f s", catalog, time.monotonic() - start)
    identity = snapshot.identity()
    if previous is not None and previous["snapshot"] != identity:
        raise HatsExportError(
            f"{out} holds an export of {previous['catalog']} ({_describe(previous['snapshot'])}); "
            f"export {catalog} ({_describe(identity)}) to another folder"
        )
    if previous is None:
        _write_json(plan_file, {"catalog": catalog, "snapshot": identity})
    provenance = _provenance(snapshot)
    result = ExportResult(out, {"catalog": catalog, **identity, **provenance})
    uri = adbc_uri(settings)
    quiet = _Quiet()
    logging.getLogger().addFilter(quiet)
    with contextlib.ExitStack() as stack:
        stack.callback(logging.getLogger().removeFilter, quiet)
        client = None  # started when a collection needs it
        # hats-import's catalog pipeline runs best in worker processes; a catalog written straight from
        # the database (dpdb/hats/direct.py, dpdb/hats/margin.py) needs no client, unless it falls back.
        imported = any(isinstance(p, NestedExport) or (p.spatial and not own_pixel_table(p, snapshot.kind))
                       for p in plans)  # fmt: skip
        for plan in plans:
            t0 = time.monotonic()
            if isinstance(plan, TableExport) and not plan.spatial:
                done = _export_plain(settings, plan, out)
            else:

                def need_client() -> Any:
                    nonlocal client
                    if client is None:
                        use_processes = (jobs > 1 and imported) if processes is None else processes
                        client = stack.enter_context(_client(jobs, use_processes, out / TMP))
                    return client

                done = _export_collection(
                    need_client, uri, plan, out, provenance, margin, progress, jobs, zstd_level
                )
            done.seconds = time.monotonic() - t0
            result.catalogs.append(done)
            if on_catalog is not None:
                on_catalog(done)
    shutil.rmtree(out / TMP, ignore_errors=True)
    result.seconds = time.monotonic() - start
    _write_json(out / MANIFEST, {
        "dpdb_version": code_version(), "catalog": catalog, "snapshot": identity, "provenance": provenance,
        "margin_arcsec": margin, "catalogs": [asdict(c) for c in result.catalogs],
    })  # fmt: skip
    return result


class _Quiet(logging.Filter):
    """Drops hats' root-logger warning that a path it validates is a collection (ours are)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Looking for catalog - found collection")


def _describe(identity: dict[str, Any]) -> str:
    text = f"{identity['kind']} {identity['schema']}"
    return text + (f" as of MJD {identity['as_of']} TAI" if identity.get("as_of") is not None else "")


def _provenance(snapshot: Snapshot) -> dict[str, Any]:
    """The dpdb provenance every catalog's ``properties`` carries."""
    out: dict[str, Any] = {
        "dpdb_catalog": snapshot.catalog,
        "dpdb_schema": snapshot.schema,
        "dpdb_kind": snapshot.kind,
        "dpdb_schema_version": snapshot.schema_version,
        "dpdb_version": code_version(),
    }
    if snapshot.release:
        out["dpdb_release"] = snapshot.release
    if snapshot.as_of is not None:
        out["dpdb_as_of_mjd_tai"] = repr(float(snapshot.as_of))
        out["dpdb_as_of_utc"] = iso_utc(snapshot.as_of)
    return out


@contextlib.contextmanager
def _client(jobs: int, processes: bool, tmp: Path) -> Iterator[Any]:
    """A local dask cluster of ``jobs`` single-threaded workers for hats-import."""
    import dask
    from dask.distributed import Client, LocalCluster

    tmp.mkdir(parents=True, exist_ok=True)
    # distributed sets its loggers to INFO when imported, and its records reach the CLI's root handler
    # (silence_logs quiets only distributed's own handler): no scheduler/worker chatter on stderr, and
    # no "Compute Failed" report with a traceback when a task fails (e.g. the server went away): the
    # failure comes back to dpdb as the task's exception, which the CLI prints as one error line
    quiet = logging.getLogger("distributed")
    level = quiet.level
    if not logging.getLogger().isEnabledFor(logging.INFO):  # dpdb -v: the tasks' errors are shown
        quiet.setLevel(logging.CRITICAL)
    with contextlib.ExitStack() as restore, dask.config.set({"logging.distributed": "error"}):
        restore.callback(quiet.setLevel, level)
        cluster = LocalCluster(
            n_workers=max(1, jobs), threads_per_worker=1, processes=processes, dashboard_address=":0",
            local_directory=str(tmp / "dask"), silence_logs=logging.ERROR,
        )  # fmt: skip
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()


def _properties(path: Path) -> dict[str, str]:
    """A HATS ``properties`` (or ``collection.properties``) file as a dict."""
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _complete(path: Path, name: str, rows: int, provenance: dict[str, Any], margin_name: str | None) -> bool:
    """Is the collection at ``path`` finished, valid for hats, and the export of these very rows?"""
    from hats.io.validation import is_valid_catalog

    if not (path / "collection.properties").is_file():
        return False
    props = _properties(path / name / "properties") if (path / name / "properties").is_file() else {}
    if any(props.get(k) != str(v) for k, v in provenance.items()) or props.get("hats_nrows") != str(rows):
        return False
    if margin_name is not None and not (path / margin_name / "properties").is_file():
        return False
    return bool(is_valid_catalog(path / name, strict=True))


def _export_collection(
    need_client: Callable[[], Any],
    uri: str,
    plan: TableExport | NestedExport,
    out: Path,
    provenance: dict[str, Any],
    margin: float,
    progress: bool,
    jobs: int = 2,
    zstd_level: int = ZSTD_LEVEL,
) -> CatalogResult:
    from hats_import.collection.arguments import CollectionArguments
    from hats_import.pipeline import pipeline_with_client

    from .direct import NotOwnPixel
    from .margin import MarginError
    from .reader import PostgresReader, chunk_name

    name = plan.name
    table = plan.parent if isinstance(plan, NestedExport) else plan
    path = out / name
    margin_name = f"{name}_{_angle(margin)}" if margin > 0 else None
    result = CatalogResult(name, name, plan.rows, "hats", margin_name)
    if plan.rows == 0:
        shutil.rmtree(path, ignore_errors=True)
        result.path = ""
        result.margin = None
        return result
    if _complete(path, name, plan.rows, provenance, margin_name):
        result.reused = True
        result.margin_rows = _margin_rows(path, margin_name)
        return result
    if (path / "collection.properties").is_file():  # finished once, but not for these rows: start over
        shutil.rmtree(path)
    properties = {**provenance, "dpdb_table": name,
                  "obs_title": f"dpdb {provenance['dpdb_schema']} {name}"}  # fmt: skip
    schema_file = out / TMP / f"{name}.schema.parquet"
    _write_schema(plan, schema_file)
    reader = PostgresReader(uri, plan)
    if own_pixel_table(plan, provenance["dpdb_kind"]):
        assert isinstance(plan, TableExport)
        try:  # straight from the database, the margin mapped from the same rows: no hats-import pipeline
            result.margin_rows = _write_direct(
                uri, plan, path, name, margin_name, properties, margin, out, jobs, zstd_level, progress
            )
            return result
        except NotOwnPixel as e:
            log.info("%s; exporting it with hats-import", e)
            shutil.rmtree(path, ignore_errors=True)
        except MarginError as e:
            raise HatsExportError(f"{name}: {e}") from e
    try:
        args = CollectionArguments(
            output_artifact_name=name, output_path=out, tmp_dir=out / TMP, resume=True,
            progress_bar=progress, simple_progress_bar=True, addl_hats_properties=properties,
            write_table_kwargs={"compression_level": zstd_level},
        ).catalog(
            input_file_list=[chunk_name(name, lo, hi) for lo, hi in table.chunks],
            file_reader=reader, ra_column=table.ra, dec_column=table.dec,
            catalog_type="object" if isinstance(plan, NestedExport) or not table.target.parent else "source",
            expected_total_rows=plan.rows, pixel_threshold=plan.max_rows,
            sort_columns=table.target.columns[table.target.primary_key[0]].canonical,
            use_schema_file=str(schema_file), highest_healpix_order=plan.highest_order,
        )  # fmt: skip
        if margin_name is not None:
            args.add_margin(margin_threshold=margin, output_artifact_name=margin_name, is_default=True)
        pipeline_with_client(args, need_client())
    except ValueError as e:
        raise HatsExportError(f"{name}: hats-import refused the export: {str(e).splitlines()[0]}") from e
    except RuntimeError as e:  # hats-import's "Some mapping stages failed": its tasks' errors are logged
        if "stages failed" not in str(e):
            raise
        raise HatsExportError(f"{name}: {_failed_tasks(uri, str(e))}") from e
    result.margin_rows = _margin_rows(path, margin_name)
    return result


def _write_direct(
    uri: str,
    plan: TableExport,
    path: Path,
    name: str,
    margin_name: str | None,
    properties: dict[str, Any],
    margin: float,
    out: Path,
    jobs: int,
    zstd_level: int,
    progress: bool,
) -> int:
    """A release table's collection written straight from the database (dpdb/hats/direct.py), with its
    margin (dpdb/hats/margin.py) and ``collection.properties``; the margin's rows."""
    from .direct import write_catalog
    from .margin import write_collection_properties

    t0 = time.monotonic()
    shards = out / TMP / f"{name}.margin"
    written, margins = write_catalog(
        uri, plan, plan.histogram, HISTOGRAM_ORDER, path / name, name, properties, jobs,
        margin=margin, shards=shards, zstd_level=zstd_level, progress=progress,
    )  # fmt: skip
    t1 = time.monotonic()
    margin_rows = 0
    if margins is not None and margin_name is not None:
        schema = pq.read_schema(path / name / "dataset" / "_common_metadata")
        assert plan.ra is not None and plan.dec is not None
        margin_rows = margins.write(
            path / margin_name, path / name, margin_name, schema,
            plan.target.columns[plan.target.primary_key[0]].canonical, properties, plan.ra, plan.dec, jobs,
            zstd_level,
        )  # fmt: skip
    write_collection_properties(path, name, margin_name, properties)
    shutil.rmtree(shards, ignore_errors=True)
    log.info("%s: %d rows written in %.1f s, margin of %d rows in %.1f s", name, written, t1 - t0,
             margin_rows, time.monotonic() - t1)  # fmt: skip
    return margin_rows


def _failed_tasks(uri: str, message: str) -> str:
    """Why hats-import's tasks failed, in one line: most often the database went away mid-export."""
    import psycopg

    stage = message.split("Some ", 1)[-1].split(" stages failed", 1)[0]
    try:
        with psycopg.connect(uri, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        return (
            f"hats-import's {stage} tasks failed: lost the connection to the database server "
            f"({first_line(e)}); check `dpdb db status`, then rerun (finished parts are kept)"
        )
    return f"hats-import's {stage} tasks failed (`dpdb -v` shows their errors); rerun to resume"


def _margin_rows(path: Path, margin_name: str | None) -> int:
    if margin_name is None or not (path / margin_name / "properties").is_file():
        return 0
    return int(_properties(path / margin_name / "properties").get("hats_nrows", 0))


def _angle(arcsec: float) -> str:
    """hats-import's own spelling of a margin in a catalog name (10 -> 10arcs)."""
    if arcsec >= 3600:
        return f"{int(arcsec / 3600)}deg"
    if arcsec >= 60:
        return f"{int(arcsec / 60)}arcmin"
    if arcsec >= 1:
        return f"{int(arcsec)}arcs"
    return f"{int(arcsec * 1000)}msec"


def _write_schema(plan: TableExport | NestedExport, path: Path) -> None:
    """An empty Parquet file with the catalog's schema and column metadata, for hats-import."""
    import pyarrow.parquet as pq

    from .source import nested_schema

    schema = nested_schema(plan) if isinstance(plan, NestedExport) else arrow_schema(plan.target)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(schema.empty_table(), path)


def _export_plain(settings: Settings, plan: TableExport, out: Path) -> CatalogResult:
    """A table without a position as one Parquet file (kept when its row count already matches)."""
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow.parquet as pq

    path = out / f"{plan.name}.parquet"
    result = CatalogResult(plan.name, path.name, plan.rows, "parquet")
    if path.is_file() and pq.read_metadata(path).num_rows == plan.rows:
        result.reused = True
        return result
    schema = arrow_schema(plan.target)
    with (
        atomic_file(path) as fh,
        adbc.connect(adbc_uri(settings)) as conn,
        conn.cursor() as cur,
        pq.ParquetWriter(fh, schema) as w,
    ):
        cur.execute(plan.chunk_sql(None, None))
        for batch in cur.fetch_record_batch():
            if batch.num_rows:
                import pyarrow as pa

                w.write_table(pa.Table.from_batches([pa.RecordBatch.from_arrays(
                    batch.columns, names=schema.names).cast(schema)]))  # fmt: skip
    return result


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_file(path, binary=False) as fh:
        fh.write(json.dumps(data, indent=1, sort_keys=True) + "\n")
