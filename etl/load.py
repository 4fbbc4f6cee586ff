"""Bulk loading of Parquet files into a catalog table: validated, atomic per file, idempotent.

Each file is one transaction on an ADBC connection: a manifest row is inserted,
the record batches are validated, cast and given their ``_healpix_29`` and
``_load_id`` columns, streamed with binary COPY straight into the (partitioned,
indexed) target table, the file's primary keys are checked for repeats, and
the transaction commits. Any failure rolls the whole file back, so a rerun of
the same command loads exactly the files that are not in the manifest yet.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from queue import Full, Queue

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from dpdb.config import Settings
from dpdb.db import connect, prepare
from dpdb.errors import DpdbError, ValidationError, first_line
from dpdb.healpix import pixels
from dpdb.model.layout import LOAD_ID_COLUMN, PIXEL_COLUMN, layout
from dpdb.pg import adbc_connection, conninfo, fetch_value, warm_adbc
from dpdb.registry import manifest
from dpdb.registry.catalogs import writable_catalog
from dpdb.shards.commit import ShardTransaction, gid_for, give_back, recover, take_connection
from dpdb.shards.placement import Route, routes
from dpdb.shards.registry import connect_shard, shard_conninfo

from .files import ParquetFile, discover, fingerprint, open_parquet
from .heldkeys import HeldKeys
from .partitions import PREFETCH, DirectTarget, PartitionWriter, direct_target, keymap_writer
from .prompt_last import refresh_last
from .rubin_columns import catalog_ccd_visits
from .validate import ColumnPlan, TargetTable, check_unique, plan_columns, prepare_batch, target_table

__all__ = ["FileResult", "LoadSummary", "load"]

log = logging.getLogger(__name__)

BATCH_ROWS = 65_536
Progress = Callable[[int], None]
"""Called with the number of rows just processed."""


@dataclass(frozen=True)
class FileResult:
    path: Path
    status: str  # loaded, replaced, skipped (already loaded), validated (dry run)
    rows: int
    load_id: int | None = None
    keymap_seconds: float = 0.0
    """Wall time of the COPY of the file's keys into the key map (etl/partitions.py), if it had one."""


@dataclass
class LoadSummary:
    table: str
    target: str
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    skipped_columns: dict[Path, tuple[str, ...]] = field(default_factory=dict)
    """Per file, the columns the target lacks that were skipped (``ignore_extra``)."""
    derived_columns: dict[Path, tuple[str, ...]] = field(default_factory=dict)
    """Per file, the columns computed from others (etl/rubin_columns.py)."""

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files if f.status in ("loaded", "replaced", "validated"))

    @property
    def keymap_seconds(self) -> float:
        """Time spent writing the files' keys into the key map (the check of keys across the table)."""
        return sum(f.keymap_seconds for f in self.files)

    def line(self) -> str:
        """The summary line the CLI prints."""
        counts: dict[str, int] = {}
        for f in self.files:
            counts[f.status] = counts.get(f.status, 0) + 1
        what = ", ".join(f"{n} {s}" for s, n in counts.items())
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.table} -> {self.target}: {len(self.files)} files ({what}), {self.rows} rows, "
            f"{self.seconds:.1f} s, {rate:,.0f} rows/s"
        )


def load(
    settings: Settings,
    table: str,
    paths: list[Path],
    *,
    into: str = "prompt",
    dry_run: bool = False,
    jobs: int = 1,
    ignore_extra: bool = False,
    replace: bool = False,
    progress: Progress | None = None,
    checksums: Mapping[Path, str] | None = None,
    parents: Callable[[pa.RecordBatch], np.ndarray] | None = None,
    spatial_order: bool = True,
    direct: bool = True,
    held_keys: HeldKeys | None = None,
) -> LoadSummary:
    """Load Parquet files into ``into``.``table``; see the module docstring for the guarantees.

    Every file's schema is checked before any file is loaded, so a wrong column
    or type anywhere fails the whole command up front. Value errors are found
    while streaming and roll back only the file that has them.

    ``checksums`` (absolute path -> SHA-256) are files' hashes already verified by the
    caller (a release directory's manifest), so they are not read an extra time;
    ``parents`` gives each batch its rows' pixels instead of looking up their parent
    objects in the database (a release loaded with deferred indexes, dpdb/lifecycle/bulk.py);
    ``spatial_order=False`` sends each batch as read instead of grouped by pixel (which only
    speeds up the maintenance of indexes that are there during the load); ``direct=False``
    COPYs into the partitioned parent even where its partitions could be loaded directly
    (etl/partitions.py): the older path, kept to compare (``dpdb release load --legacy-load``);
    ``held_keys``: the table's key map has neither key nor trigger while a release loads with
    deferred indexes (dpdb/lifecycle/bulk.py); each committed file's keys, sorted, are kept there for
    the map's build (etl/heldkeys.py), or COPYed into the map by the file when there is no room.
    """
    start = time.monotonic()
    if not dry_run:
        prepare(settings)
        warm_adbc(settings)  # the driver's type catalog is read while the files' footers are read
    try:
        lay = layout(table)
    except KeyError:
        raise ValidationError(f"unknown table {table}") from None
    canonical = lay.name
    if lay.internal:
        raise ValidationError(f"table {canonical} is kept by dpdb itself and cannot be loaded from files")
    with connect(settings) as conn:
        catalog = writable_catalog(conn, into)
        target = target_table(into, catalog.schema_version, catalog.kind, canonical)
        shards = _Shards.of(conn, target) if target.partitioned and not dry_run else None
    files = discover(paths)
    plans, rows = {}, {}
    for path in files:
        pf = open_parquet(path)
        plans[path] = plan_columns(path, pf.schema_arrow, target, ignore_extra)
        rows[path] = pf.metadata.num_rows
    loader = _FileLoader(settings, target, catalog.schema_version, dry_run, replace, progress, shards)
    loader.checksums = dict(checksums or {})
    loader.parents = parents
    loader.spatial_order = spatial_order
    loader.direct = direct and not dry_run and shards is None
    if held_keys is not None and not dry_run and shards is None and target.partitioned:
        loader.held_keys = held_keys
    summary = LoadSummary(canonical, into)
    summary.skipped_columns = {p: plans[p].ignored for p in files if plans[p].ignored}
    summary.derived_columns = {p: plans[p].derived for p in files if plans[p].derived}
    for p, names in summary.skipped_columns.items():
        # a HATS file's own _healpix_29 (every file of an archive): dpdb derives that column itself
        level = logging.INFO if tuple(names) == (PIXEL_COLUMN,) else logging.WARNING
        message = "%s: skipped %d columns %s does not hold: %s"
        log.log(level, message, p, len(names), canonical, ", ".join(names))
    try:
        if jobs <= 1 or len(files) == 1:
            results = [loader.run(path, plans[path], rows[path]) for path in files]
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                results = list(pool.map(lambda p: loader.run(p, plans[p], rows[p]), files))
    finally:
        loader.close()
    summary.files = results
    if canonical == "DiaObject" and str(catalog.kind) == "prompt" and not dry_run:
        with connect(settings) as conn:  # loaded versions join the association's current DiaObjects
            refresh_last(conn, into, [f.load_id for f in results if f.load_id is not None])
    summary.seconds = time.monotonic() - start
    return summary


class _FileLoader:
    """Loads one file at a time, in its own transaction.

    Thread-safe: each thread keeps its own pair of connections for the whole
    load; the ADBC one comes from the process's pool (``dpdb.db.adbc_connection``:
    opening one reads the server's type catalog, which grows with every catalog).
    """

    def __init__(
        self,
        settings: Settings,
        target: TargetTable,
        version: int,
        dry_run: bool,
        replace: bool,
        progress: Progress | None,
        shards: _Shards | None = None,
    ) -> None:
        self.settings = settings
        self.shards = shards
        self.target = target
        self.version = version
        self.dry_run = dry_run
        self.replace = replace
        self.progress = progress or (lambda n: None)
        self.checksums: dict[Path, str] = {}
        self.parents: Callable[[pa.RecordBatch], np.ndarray] | None = None
        self.spatial_order = True
        self.direct = False
        self.held_keys: HeldKeys | None = None
        self._direct_target: DirectTarget | None = None
        self._direct_looked_up = False
        self._local = threading.local()
        self._opened = ExitStack()
        self._lock = threading.Lock()

    def _connections(self) -> tuple[adbc.Connection, psycopg.Connection]:
        pair = getattr(self._local, "pair", None)
        if pair is None or pair[1].closed:
            with self._lock:
                pair = (
                    self._opened.enter_context(adbc_connection(self.settings)),
                    self._opened.enter_context(psycopg.connect(conninfo(self.settings), autocommit=True)),
                )
            self._local.pair = pair
        return pair

    def _shard_connection(self, shard: str) -> adbc.Connection:
        """This thread's autocommit ADBC connection to ``shard`` (kept for the whole load)."""
        conns: dict[str, adbc.Connection] = self._local.__dict__.setdefault("shard_conns", {})
        conn = conns.get(shard)
        if conn is None:
            assert self.shards is not None
            info = self.shards.infos[shard]
            conn = take_connection(info, shard)
            with self._lock:
                self._opened.callback(give_back, info, conn)
            conns[shard] = conn
        return conn

    def _lookups(self, lookup: psycopg.Connection) -> list[psycopg.Connection]:
        """Where parents' pixels are looked up: the coordinator, or each shard directly (one indexed
        query per shard instead of one per foreign partition)."""
        if self.shards is None:
            return [lookup]
        conns: dict[str, psycopg.Connection] = self._local.__dict__.setdefault("shard_lookups", {})
        for shard, info in self.shards.infos.items():
            if shard not in conns or conns[shard].closed:
                conn = connect_shard(info, shard, autocommit=True)
                with self._lock:
                    self._opened.callback(conn.close)
                conns[shard] = conn
        return list(conns.values())

    def close(self) -> None:
        self._opened.close()

    def _direct(self, lookup: psycopg.Connection, plan: ColumnPlan) -> DirectTarget | None:
        """Where this file's rows can go partition by partition (etl/partitions.py), or None."""
        if not (self.direct and self.spatial_order and self.target.partitioned):
            return None
        with self._lock:
            if not self._direct_looked_up:
                self._direct_target = direct_target(lookup, self.target.catalog, self.target.db_name)
                self._direct_looked_up = True
            found = self._direct_target
        if found is None or not set(found.map_columns) <= set(self._schema(plan).names):
            return None
        return found

    def run(self, path: Path, plan: ColumnPlan, rows: int) -> FileResult:
        """Load one file (``rows`` rows, from its footer) in one transaction, or skip or refuse it."""
        aconn, lookup = self._connections()
        try:
            return self._run(aconn, lookup, path, plan, rows)
        except BaseException:
            try:
                aconn.rollback()  # nothing of this file stays; the connection serves the next one
            except adbc_driver_manager.Error:
                self._local.pair = None  # unusable: the next file opens new connections
            self._local.__dict__.pop("shard_conns", None)  # a shard's session may be mid-COPY: new ones
            raise

    def _run(
        self,
        aconn: adbc.Connection,
        lookup: psycopg.Connection,
        path: Path,
        plan: ColumnPlan,
        rows: int,
    ) -> FileResult:
        """Decide what to do with the file, then ingest it.

        A path never loaded into the table streams at once, its SHA-256 computed by a
        thread while the COPY runs (no pass over the file before it), and the content
        is compared with the manifest before the commit. A path loaded before (a rerun,
        a replacement), a dry run and a sharded target hash the file first.
        """
        target = self.target
        with aconn.cursor() as cur:
            manifest.lock_path(cur, str(path))
            known = self.checksums.get(path)
            streaming = (
                known is None
                and not self.dry_run
                and self.shards is None
                and not manifest.has_path(cur, str(path), target.canonical, target.catalog)
            )
            if streaming:
                return self._ingest(aconn, cur, path, plan, lookup, (), _Hasher(path))
            fp = ParquetFile(path, path.stat().st_size, known) if known else fingerprint(path)
            manifest.lock(cur, fp)
            decision = manifest.decide(cur, fp, target.canonical, target.catalog)
            if decision.action == "same":
                aconn.rollback()
                log.info("%s: already loaded (load %s), skipped", path, decision.load_ids[0])
                return FileResult(path, "skipped", rows, decision.load_ids[0])
            if decision.action == "changed" and not self.replace:
                raise ValidationError(
                    f"{path}: already loaded into {target.catalog}.{target.canonical} with different "
                    f"content (load {decision.load_ids[0]}); use --replace to reload it"
                )
            if self.dry_run:
                aconn.rollback()
                checked = sum(b.num_rows for b in self._batches(path, plan, lookup, load_id=0))
                return FileResult(path, "validated", checked)
            if self.shards is not None:
                load_id = manifest.add_entry(cur, fp, target.canonical, target.catalog, self.version)
                return self._ingest_sharded(aconn, cur, fp, plan, lookup, decision.load_ids, load_id)
            return self._ingest(aconn, cur, path, plan, lookup, decision.load_ids, fp)

    def _ingest(
        self,
        aconn: adbc.Connection,
        cur: adbc.Cursor,
        path: Path,
        plan: ColumnPlan,
        lookup: psycopg.Connection,
        replaced: tuple[int, ...],
        fp: ParquetFile | _Hasher,
    ) -> FileResult:
        """Manifest row, old rows out (when replacing), COPY, key check, commit: all or nothing.

        With a :class:`_Hasher` the manifest row is written with a pending checksum, and the
        content, hashed while streaming, is checked against the manifest before the commit:
        content already loaded under another path is rolled back and reported skipped.
        """
        target = self.target
        entry = fp if isinstance(fp, ParquetFile) else ParquetFile(path, fp.size, manifest.PENDING)
        load_id = manifest.add_entry(cur, entry, target.canonical, target.catalog, self.version)
        if replaced:
            ids = ",".join(str(int(i)) for i in replaced)
            table = f'"{target.catalog}"."{target.db_name}"'  # names validated against the catalog
            cur.execute(f"DELETE FROM {table} WHERE {LOAD_ID_COLUMN} IN ({ids})")
            manifest.remove_entries(cur, replaced)
        failure: list[BaseException] = []
        direct = self._direct(lookup, plan)
        keymap_seconds = 0.0
        depth = 3 if direct is None else PREFETCH  # decoding goes on while a flush COPYs
        held: list[list[np.ndarray]] | None = [] if self.held_keys is not None and direct is None else None
        batches = _prefetch(self._batches(path, plan, lookup, load_id, failure, held), depth)
        reserved: list[np.ndarray] | None = None
        try:
            if direct is None:
                reader = pa.RecordBatchReader.from_batches(self._schema(plan), batches)
                rows = cur.adbc_ingest(target.db_name, reader, mode="append", db_schema_name=target.catalog)
                if held:
                    reserved, keymap_seconds = self._hold_keys(lookup, cur, held[0])
            else:
                with closing(batches):
                    writer = PartitionWriter(direct, cur, self._schema(plan))
                    for batch in batches:
                        writer.add(batch)
                    rows = writer.finish()
                keymap_seconds = writer.keymap_seconds
        except (adbc_driver_manager.Error, pa.ArrowException) as e:
            aconn.rollback()
            if isinstance(fp, _Hasher):  # a copy of a loaded file collides with its rows: skip it
                skipped = self._loaded_copy(cur, path, fp)
                if skipped is not None:
                    return skipped
            if failure:
                raise failure[0] from None
            raise self._explain(path, e, lookup) from e
        if isinstance(fp, _Hasher):
            done = ParquetFile(path, fp.size, fp.hexdigest())
            manifest.lock(cur, done)  # racing loads of this content under other paths: one wins
            same = manifest.same_content(cur, done.sha256, target.canonical, target.catalog)
            if same:
                aconn.rollback()
                if reserved is not None and self.held_keys is not None:
                    self.held_keys.release(reserved)
                log.info("%s: same content as load %s, skipped", path, same[0])
                return FileResult(path, "skipped", rows, same[0])
            manifest.set_checksum(cur, load_id, done.sha256)
        manifest.set_row_count(cur, load_id, rows)
        aconn.commit()
        if reserved is not None and self.held_keys is not None:
            self.held_keys.add(target.db_name, reserved)
        return FileResult(path, "replaced" if replaced else "loaded", rows, load_id, keymap_seconds)

    def _hold_keys(
        self, lookup: psycopg.Connection, cur: adbc.Cursor, columns: list[np.ndarray]
    ) -> tuple[list[np.ndarray] | None, float]:
        """Reserve room for a file's sorted keys and pixels in ``held_keys`` (kept after the commit);
        without room, COPY them into the unkeyed key map in the file's transaction. Returns the
        reserved columns (or None) and the COPY's wall time."""
        assert self.held_keys is not None
        target = self.target
        if self.held_keys.reserve(columns):
            return columns, 0.0
        self.held_keys.spill(target.db_name)
        writer = keymap_writer(lookup, target.catalog, target.db_name)
        if writer is None:
            return None, 0.0
        names = [*target.primary_key, PIXEL_COLUMN]
        writer.take(pa.RecordBatch.from_arrays([pa.array(c) for c in columns], names=names))
        writer.write(cur)
        return None, writer.seconds

    def _loaded_copy(self, cur: adbc.Cursor, path: Path, hasher: _Hasher) -> FileResult | None:
        """The skip of a file whose content is already loaded under another path, if it is."""
        try:
            sha = hasher.hexdigest()
        except DpdbError:
            return None
        same = manifest.same_content(cur, sha, self.target.canonical, self.target.catalog)
        cur.connection.rollback()
        if not same:
            return None
        log.info("%s: same content as load %s, skipped", path, same[0])
        return FileResult(path, "skipped", 0, same[0])

    def _ingest_sharded(
        self,
        aconn: adbc.Connection,
        cur: adbc.Cursor,
        fp: ParquetFile,
        plan: ColumnPlan,
        lookup: psycopg.Connection,
        replaced: tuple[int, ...],
        load_id: int,
    ) -> FileResult:
        """The same for a sharded release: rows straight into the shards that own their partitions,
        committed with the manifest row by two-phase commit (dpdb/shards/commit.py)."""
        target, shards = self.target, self.shards
        assert shards is not None  # the manifest row (load_id) is in this transaction already
        tx = ShardTransaction(self._shard_connection, gid_for(shards.database, load_id, fp.sha256))
        try:
            if replaced:
                ids = ",".join(str(int(i)) for i in replaced)
                for shard in shards.infos:  # the old rows may be on any shard
                    tx.execute(
                        shard, f'DELETE FROM "{target.catalog}"."{target.db_name}" '
                        f"WHERE {LOAD_ID_COLUMN} IN ({ids})",
                    )  # fmt: skip
                manifest.remove_entries(cur, replaced)
            rows = 0
            names = np.array(shards.route.shards)
            for batch in _prefetch(self._batches(fp.path, plan, lookup, load_id)):
                owner = names[shards.route.shard_index(batch.column(PIXEL_COLUMN).to_numpy())]
                for shard in np.unique(owner):
                    part = batch.filter(pa.array(owner == shard))
                    try:
                        rows += tx.ingest(str(shard), target.catalog, target.db_name, part)
                    except adbc_driver_manager.Error as e:
                        raise self._explain(fp.path, e, shard=str(shard)) from e
            manifest.set_row_count(cur, load_id, rows)
            tx.prepare()
            aconn.commit()
        except BaseException:
            tx.abort()
            raise
        tx.commit()
        return FileResult(fp.path, "replaced" if replaced else "loaded", rows, load_id)

    def _schema(self, plan: ColumnPlan) -> pa.Schema:
        fields = [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in plan.mapping.values()]
        if self.target.partitioned:
            fields.append(pa.field(PIXEL_COLUMN, pa.int64(), nullable=False))
        fields.append(pa.field(LOAD_ID_COLUMN, pa.int64()))
        return pa.schema(fields)

    def _batches(
        self,
        path: Path,
        plan: ColumnPlan,
        lookup: psycopg.Connection,
        load_id: int,
        failure: list[BaseException] | None = None,
        held: list[list[np.ndarray]] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Validated, cast batches with pixel and load id; the file's keys are checked at the end.

        An error is recorded in ``failure`` before it propagates, because ADBC
        re-raises errors from inside a stream as generic Arrow errors. ``held`` receives,
        once the file is read, its key columns and pixels sorted by key (etl/heldkeys.py).
        """
        target = self.target
        try:
            pf = open_parquet(path)
            parent_pixels = self.parents or _ParentPixels(self._lookups(lookup), target)
            ccd_visits = catalog_ccd_visits(lookup, target.catalog) if plan.steps else None
            keys: list[list[np.ndarray]] = []
            pixels: list[np.ndarray] = []
            row0 = 0
            for raw in pf.iter_batches(batch_size=BATCH_ROWS, columns=plan.read):
                batch = prepare_batch(raw, plan, target, row0, ccd_visits)
                keys.append([batch.column(k).to_numpy(zero_copy_only=False) for k in target.primary_key])
                arrays = list(batch.columns)
                order = None
                if target.partitioned:
                    pix = parent_pixels(batch)
                    arrays.append(pa.array(pix, pa.int64()))
                    if held is not None:
                        pixels.append(np.asarray(pix, dtype=np.int64))
                    # Rows grouped by pixel fill PostgreSQL's per-partition COPY buffers
                    # and insert into the indexes in spatial order: measurably faster.
                    if self.spatial_order:
                        order = np.argsort(pix, kind="stable")
                arrays.append(pa.array(np.full(batch.num_rows, load_id, dtype=np.int64)))
                row0 += batch.num_rows
                self.progress(batch.num_rows)
                out = pa.RecordBatch.from_arrays(arrays, schema=self._schema(plan))
                yield out if order is None else out.take(pa.array(order))
            ranked = check_unique(path, target, keys)
            if held is not None and ranked is not None:
                by_key, sorted_keys = ranked
                held.append([*sorted_keys, np.concatenate(pixels)[by_key]])
        except BaseException as e:
            if failure is not None:
                failure.append(e)
            raise

    def _explain(
        self,
        path: Path,
        e: BaseException,
        lookup: psycopg.Connection | None = None,
        shard: str | None = None,
    ) -> DpdbError:
        """Turn a database error during COPY into a one-line error naming the file and key.

        A key the table already holds in any partition violates its key map
        (dpdb/keymap.py); the file that loaded it is looked up in the manifest.
        """
        text = str(e)
        m = re.search(r"Key \((.*?)\)=\((.*?)\) already exists", text)
        if m:
            names = [n.strip() for n in m.group(1).split(",")]
            values = [v.strip() for v in m.group(2).split(",")]
            canon = {c.name: c.canonical for c in self.target.columns.values()}
            pairs = [(n, v) for n, v in zip(names, values, strict=False) if n != PIXEL_COLUMN]
            key = ", ".join(f"{canon.get(n, n)}={v}" for n, v in pairs)
            where = f"{self.target.catalog}.{self.target.canonical}"
            holder = self._holder(lookup, pairs) if lookup is not None else None
            return ValidationError(
                f"{path}: duplicate primary key ({key}): already loaded in {where} "
                + (f"from {holder}" if holder else "or repeated in the file")
            )
        where = f" on shard {shard}" if shard else ""
        return DpdbError(
            f"{path}: load into {self.target.catalog}.{self.target.canonical}{where} failed: {first_line(e)}"
        )

    def _holder(self, lookup: psycopg.Connection, pairs: list[tuple[str, str]]) -> str | None:
        """The file (or prompt processing) that loaded the committed row with this key, if any."""
        cond = sql.SQL(" AND ").join(
            sql.SQL("{}::text = {}").format(sql.Identifier(n), sql.Literal(v)) for n, v in pairs
        )
        try:
            row = lookup.execute(
                sql.SQL("SELECT {} FROM {} WHERE {} LIMIT 1").format(
                    sql.Identifier(LOAD_ID_COLUMN),
                    sql.Identifier(self.target.catalog, self.target.db_name),
                    cond,
                )
            ).fetchone()
            if row is None:
                return None  # not committed: repeated within this file
            if row[0] is None:
                return "prompt processing"
            entry = manifest.entries(lookup, [int(row[0])]).get(int(row[0]))
        except psycopg.Error:
            return None
        return str(entry["path"]) if entry else None


class _Hasher:
    """SHA-256 and size of a file, computed by a thread while the file streams (hashlib releases
    the GIL on large updates, so it runs beside Parquet decoding and the COPY)."""

    def __init__(self, path: Path) -> None:
        self.size = path.stat().st_size
        self._digest = hashlib.sha256()
        self._error: BaseException | None = None
        self._read = 0
        self.path = path
        self._thread = threading.Thread(target=self._run, args=(path,), name="dpdb-etl-sha256", daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    self._digest.update(chunk)
                    self._read += len(chunk)
        except BaseException as e:  # re-raised by hexdigest
            self._error = e

    def hexdigest(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise DpdbError(f"{self.path}: cannot read ({first_line(self._error)})") from self._error
        if self._read != self.size:
            raise ValidationError(
                f"{self.path}: file changed size while loading ({self.size} -> {self._read} bytes)"
            )
        return self._digest.hexdigest()


_HASH_CHUNK = 4 << 20


def _prefetch(items: Iterator[pa.RecordBatch], depth: int = 3) -> Generator[pa.RecordBatch, None, None]:
    """Produce ``items`` in a background thread, so Parquet decoding and validation
    overlap with the COPY stream (both release the GIL in their C++ parts)."""
    queue: Queue[object] = Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        queue.put(item, timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put(done)
        except BaseException as e:  # handed to the consumer, which re-raises it
            queue.put(e)

    worker = threading.Thread(target=produce, name="dpdb-etl-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = queue.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


@dataclass(frozen=True)
class _Shards:
    """Where a sharded target's partitions live and how to reach their shards."""

    route: Route
    infos: dict[str, str]  # shard -> libpq conninfo
    database: str  # the coordinator's database (in the prepared transactions' ids)

    @classmethod
    def of(cls, conn: psycopg.Connection, target: TargetTable) -> _Shards | None:
        """The target's shards, or None when it is not sharded; settles interrupted loads first."""
        route = routes(conn, target.catalog, target.db_name)
        if route is None:
            return None
        infos = {s: shard_conninfo(conn, s) for s in sorted(set(route.shards))}
        recover(conn, infos)
        return cls(route, infos, conn.info.dbname)


class _ParentPixels:
    """The ``_healpix_29`` of each row: its parent object's if loaded, else its own position's.

    Measurements share their object's partition (docs/architecture.md, decision 6); the parent
    key column has the same name in parent and child (diaObjectId, objectId). In the prompt
    catalog the parents' pixels are read from ``DiaObjectLast`` (one row per DiaObject, its
    ``healpix29`` fixed by its first position): one index probe per key, instead of a probe in
    every DiaObject partition. Keys it does not hold (DiaObjects loaded from files rather than
    by prompt processing) are looked up in the parent table.
    """

    def __init__(self, conns: list[psycopg.Connection], target: TargetTable) -> None:
        self.conns = conns  # the coordinator, or the shards of a sharded release (each holds some parents)
        self.target = target
        self.parent: str | None = None
        self.last = False
        if target.parent and target.parent_key:
            parent = target.parent.lower()
            self.last = len(conns) == 1 and _has_last(conns[0], target)
            tables = [parent, _LAST[1]] if self.last else [parent]
            for t in tables:
                exists = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(target.catalog, t))
                if any(fetch_value(conn, exists) for conn in conns):
                    self.parent = parent
                    break

    def __call__(self, batch: pa.RecordBatch) -> np.ndarray:
        if self.target.position is None:
            raise ValidationError(f"table {self.target.canonical} has no position to compute its pixel from")
        ra_name, dec_name = self.target.position
        own = pixels(
            batch.column(ra_name).to_numpy(zero_copy_only=False),
            batch.column(dec_name).to_numpy(zero_copy_only=False),
        )
        key = self.target.parent_key
        if self.parent is None or key is None or key not in batch.schema.names:
            return own
        ids = batch.column(key)
        valid = ids.is_valid().to_numpy(zero_copy_only=False)
        id_values = ids.fill_null(0).to_numpy(zero_copy_only=False)
        wanted = np.unique(id_values[valid])
        if not len(wanted):
            return own
        rows: list[tuple[int, int]] = []
        if self.last:
            conn = self.conns[0]
            rows = conn.execute(parent_pixel_query(self.target, last=True), (wanted.tolist(),)).fetchall()
            if len(rows) < len(wanted):  # parents loaded from files, not kept in DiaObjectLast
                missing = np.setdiff1d(wanted, np.array([r[0] for r in rows], dtype=np.int64))
                rows += conn.execute(parent_pixel_query(self.target), (missing.tolist(),)).fetchall()
        else:
            query = parent_pixel_query(self.target)
            rows = [r for conn in self.conns for r in conn.execute(query, (wanted.tolist(),)).fetchall()]
        if not rows:
            return own
        known = np.array(rows, dtype=np.int64)
        known = known[np.argsort(known[:, 0])]
        pos = np.clip(np.searchsorted(known[:, 0], id_values), 0, len(known) - 1)
        hit = valid & (known[pos, 0] == id_values)
        return np.where(hit, known[pos, 1], own)


_LAST = ("diaobject", "diaobjectlast", "healpix29")
"""The prompt catalog's one-row-per-object table of DiaObject and its pixel column."""


def _has_last(conn: psycopg.Connection, target: TargetTable) -> bool:
    if (target.parent or "").lower() != _LAST[0]:
        return False
    row = conn.execute("SELECT to_regclass(%s)", (f'"{target.catalog}"."{_LAST[1]}"',)).fetchone()
    return row is not None and row[0] is not None


def parent_pixel_query(target: TargetTable, *, last: bool = False) -> sql.Composed:
    """The query the ETL runs for a batch's parent pixels (one parameter: the array of parent keys).

    ``last``: from the prompt catalog's ``DiaObjectLast`` (its primary-key index) rather than
    the partitioned parent table.
    """
    assert target.parent and target.parent_key
    key = sql.Identifier(target.parent_key.lower())
    if last:
        return sql.SQL("SELECT {k}, {p} FROM {t} WHERE {k} = ANY(%s)").format(
            k=key, p=sql.Identifier(_LAST[2]), t=sql.Identifier(target.catalog, _LAST[1])
        )
    return sql.SQL("SELECT DISTINCT ON ({k}) {k}, {p} FROM {t} WHERE {k} = ANY(%s)").format(
        k=key, p=sql.Identifier(PIXEL_COLUMN), t=sql.Identifier(target.catalog, target.parent.lower())
    )
