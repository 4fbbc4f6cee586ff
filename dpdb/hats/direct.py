"""HATS partitions written straight from PostgreSQL, for tables already partitioned by their own position.

hats-import's catalog pipeline reads its input twice (a histogram pass, then
a split pass that writes every row into intermediate shards), then reads the
shards again to write each partition: for a wide table (Object: 336 columns)
that is three passes of encoding and decoding on top of the database read. A
release's Object (and DiaObject) table is stored partitioned by the
``_healpix_29`` of its own position (docs/architecture.md, decision 6), so the
database already knows every HATS partition's rows. This module writes each
HATS partition with one range query, in parallel:

1. the alignment of the database's pixel histogram into HATS partitions is
   hats' own (``hats.pixel_math.generate_alignment``, as hats-import computes
   it, with the same thresholds);
2. each partition is one ``_healpix_29`` range read through ADBC (binary
   COPY to Arrow), given hats' ``_healpix_29`` column computed from ra/dec
   with hats' ``compute_spatial_index`` (a row whose recomputed pixel falls
   outside the partition stops this path: the caller falls back to
   hats-import), sorted, cut into row groups and written as hats-import
   writes it (``split_to_row_groups``, hats' Parquet settings);
3. the catalog's metadata is hats': ``partition_info.csv``,
   ``_metadata``/``_common_metadata`` (``write_parquet_metadata``), the point
   map and skymap, and ``properties`` (``TableProperties``).

Each partition's rows that lie in its neighbours' margins are mapped into
margin shards as the partition is written (dpdb/hats/margin.py), so the
margin catalog needs no second read of the catalog. Memory is bounded by one
partition per worker (at most the planned partition size). A partition file
whose row count is right is kept on a rerun.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from dpdb._version import code_version
from dpdb.atomic import atomic_file
from dpdb.healpix import PIXEL_ORDER
from dpdb.model.layout import PIXEL_COLUMN

from .margin import MarginWriter
from .reader import PostgresReader, chunk_name
from .source import TableExport

__all__ = ["NotOwnPixel", "write_catalog", "own_pixel_table"]

log = logging.getLogger(__name__)


class NotOwnPixel(Exception):
    """A row's position lies outside the partition its stored pixel put it in (use hats-import)."""


def own_pixel_table(plan: object, kind: str) -> bool:
    """Can ``plan`` be written straight from the database: a partitioned release table with positions?

    Objects (Object, DiaObject) are stored in the pixel of their own position;
    measurements in their object's, so a few near partition edges belong to a
    neighbouring HATS partition: :func:`_arrivals` finds them first.
    """
    return (
        isinstance(plan, TableExport) and plan.spatial and kind == "release"
        and (plan.target.partitioned or plan.rows <= SMALL_ROWS)
    )  # fmt: skip


SMALL_ROWS = 2_000_000
"""A table without partitions (Visit, CcdVisit) is read whole, in memory, up to this many rows."""


def write_catalog(
    uri: str,
    plan: TableExport,
    histogram: dict[int, int],
    histogram_order: int,
    path: Path,
    name: str,
    properties: dict[str, Any],
    jobs: int,
    margin: float = 0.0,
    shards: Path | None = None,
    zstd_level: int | None = None,
    progress: bool = False,
) -> tuple[int, MarginWriter | None]:
    """Write ``plan``'s table as the HATS catalog ``path``: its rows, and (``margin`` > 0, in arcseconds)
    the :class:`MarginWriter` holding its margin's shards (in ``shards``), to be written by the caller.
    ``zstd_level`` None: hats' Parquet compression level; ``progress``: a bar of the partitions written.
    Raises :class:`NotOwnPixel`, :class:`MarginError`."""
    import hats.pixel_math as pixel_math
    from hats.catalog import PartitionInfo, TableProperties
    from hats.io import file_io, paths
    from hats.io.parquet_metadata import write_parquet_metadata
    from hats.io.skymap import write_skymap
    from hats.pixel_math.healpix_pixel import HealpixPixel
    from hats.pixel_math.spatial_index import compute_spatial_index

    start = time.monotonic()
    order = plan.highest_order
    raw = np.zeros(12 * 4**order, dtype=np.int64)
    reader = PostgresReader(uri, plan)
    moved = whole = whole_index = None
    if not plan.target.partitioned:  # a small table: read whole, partitioned here
        parts = list(reader.read(chunk_name(plan.name, 0, 0)))
        whole = pa.concat_tables(parts) if parts else arrow_empty(reader)
        whole_index = compute_spatial_index(
            whole[plan.ra].to_numpy().astype(np.float64), whole[plan.dec].to_numpy().astype(np.float64)
        )
        raw += np.bincount(whole_index >> (2 * (PIXEL_ORDER - order)), minlength=raw.size)
    elif plan.target.parent:  # measurements: partitioned by their own positions, not their objects'
        raw, moved = _own_positions(uri, plan, order)
    else:
        shift = 2 * (histogram_order - order)
        for pix, n in histogram.items():
            raw[pix >> shift] += n
    alignment = pixel_math.generate_alignment(
        raw, highest_order=order, lowest_order=0, threshold=plan.max_rows, drop_empty_siblings=True,
        use_lower_order=True,
    )  # fmt: skip
    destinations = sorted(
        {(int(a[0]), int(a[1]), int(a[2])) for a in alignment if a is not None and a[2] > 0}
    )
    total = sum(d[2] for d in destinations)
    if total != plan.rows:
        raise ValueError(f"{name}: the pixel histogram holds {total} rows, the table {plan.rows}")
    margins = None
    if margin > 0:
        assert shards is not None
        margins = MarginWriter([(k, p) for k, p, _ in destinations], margin, shards)
    path.mkdir(parents=True, exist_ok=True)
    for stale in (path / "dataset").glob("Norder=*/Dir=*/.*.tmp"):
        # a partition cut short by a killed run: hats' metadata pass reads every file (not only *.parquet)
        stale.unlink(missing_ok=True)
    sort_key = plan.target.columns[plan.target.primary_key[0]].canonical
    arrivals = _arrivals(moved, destinations) if moved is not None else {}

    def one(dest: tuple[int, int, int]) -> int:
        k, pixel, rows = dest
        target = paths.pixel_catalog_file(path, HealpixPixel(k, pixel))
        file = Path(str(target.path))
        if file.is_file() and pq.read_metadata(file).num_rows == rows:  # written by an earlier run
            if margins is not None and not margins.mapped(k, pixel):
                margins.map(pq.read_table(file), k, pixel)
            return rows
        if whole is not None and whole_index is not None:
            mine = (whole_index >> (2 * (PIXEL_ORDER - k))) == pixel
            return _write_table(whole.filter(pa.array(mine)), whole_index[mine], (k, pixel), file, sort_key,
                                margins, zstd_level)  # fmt: skip
        return _write_partition(reader, plan, k, pixel, rows, file, sort_key, arrivals.get((k, pixel)),
                                margins, zstd_level)  # fmt: skip

    workers = max(1, jobs)
    with (
        ThreadPoolExecutor(workers, thread_name_prefix="hats-partition") as pool,
        tqdm(total=len(destinations), desc=f"{name} partitions", disable=not progress) as bar,
    ):
        written = 0
        for done in as_completed([pool.submit(one, d) for d in destinations]):
            written += done.result()
            bar.update(1)
    log.info("%s: %d partitions written in %.1f s", name, len(destinations), time.monotonic() - start)
    pixels = [HealpixPixel(k, p) for k, p, _ in destinations]
    partition_info = PartitionInfo.from_healpix(pixels)
    partition_info.write_to_file(paths.get_partition_info_pointer(path))
    parquet_rows = write_parquet_metadata(path, create_metadata=True)
    if parquet_rows != written or written != plan.rows:
        raise ValueError(f"{name}: {parquet_rows} rows in the partitions' Parquet, {plan.rows} in the table")
    file_io.write_fits_image(raw, paths.get_point_map_file_pointer(path))
    write_skymap(histogram=raw, catalog_dir=path, orders=None)
    info = TableProperties.new_provenance_dict(
        path, builder=f"dpdb {code_version()} (hats v{_version('hats')})", **properties
    ) | {
        "catalog_name": name, "catalog_type": "source" if plan.target.parent else "object",
        "total_rows": plan.rows,
        "ra_column": plan.ra, "dec_column": plan.dec, "hats_cols_sort": sort_key,
        "hats_max_rows": plan.max_rows, "hats_order": partition_info.get_highest_order(),
        "moc_sky_fraction": f"{partition_info.calculate_fractional_coverage():0.5f}",
        "hats_npix_suffix": ".parquet", "hats_skymap_order": order,
        "hats_col_healpix": pixel_math.spatial_index.SPATIAL_INDEX_COLUMN,
        "hats_col_healpix_order": pixel_math.spatial_index.SPATIAL_INDEX_ORDER,
    }  # fmt: skip
    TableProperties(**info).to_properties_file(path)
    return written, margins


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _own_positions(uri: str, plan: TableExport, order: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Histogram at ``order`` of the rows' own positions, and the rows stored in another pixel at that
    order than their own (their keys, own and stored pixels): one pass over four columns."""
    from hats.pixel_math.spatial_index import compute_spatial_index

    from .reader import _cursor

    target = plan.target
    assert plan.ra is not None and plan.dec is not None  # a table with a position
    pos = [plan.ra.lower(), plan.dec.lower()]
    keys = list(target.primary_key)
    cols = ", ".join(f'"{c}"' for c in [*pos, PIXEL_COLUMN, *keys])
    raw = np.zeros(12 * 4**order, dtype=np.int64)
    shift = 2 * (PIXEL_ORDER - order)
    found: dict[str, list[np.ndarray]] = {k: [] for k in ["own", "stored", *keys]}
    with _cursor(uri) as cur:
        cur.execute(f"SELECT {cols} FROM {plan.source}")
        for batch in cur.fetch_record_batch():
            if not batch.num_rows:
                continue
            own = compute_spatial_index(
                batch.column(0).to_numpy(zero_copy_only=False).astype(np.float64),
                batch.column(1).to_numpy(zero_copy_only=False).astype(np.float64),
            )
            stored = batch.column(2).to_numpy(zero_copy_only=False)
            raw += np.bincount(own >> shift, minlength=raw.size)
            away = (own >> shift) != (stored >> shift)
            if away.any():
                found["own"].append(own[away])
                found["stored"].append(stored[away])
                for i, k in enumerate(keys):
                    found[k].append(batch.column(3 + i).to_numpy(zero_copy_only=False)[away])
    moved = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in found.items()}
    return raw, moved


def _arrivals(
    moved: dict[str, np.ndarray], destinations: list[tuple[int, int, int]]
) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    """Per HATS partition, the keys of the rows that belong to it but are stored outside its range."""
    lows = np.array([p << 2 * (PIXEL_ORDER - k) for k, p, _ in destinations], dtype=np.int64)
    by_range = np.argsort(lows)  # destinations are sorted by (order, pixel), not by where their range starts
    lows = lows[by_range]
    orders = np.array([d[0] for d in destinations], dtype=np.int64)[by_range]
    pixels = np.array([d[1] for d in destinations], dtype=np.int64)[by_range]

    def where(index: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(lows, index, side="right") - 1, 0, None)
        inside = (index >= lows[i]) & ((index >> (2 * (PIXEL_ORDER - orders[i]))) == pixels[i])
        return np.where(inside, by_range[i], -1)

    own, stored = where(moved["own"]), where(moved["stored"])
    keys = [k for k in moved if k not in ("own", "stored")]
    out = {}
    for i in np.unique(own[own != stored]):
        pick = (own == i) & (stored != i)
        k, p, _ = destinations[int(i)]
        out[(k, p)] = {c: moved[c][pick] for c in keys}
    return out


def _write_partition(
    reader: PostgresReader,
    plan: TableExport,
    order: int,
    pixel: int,
    rows: int,
    file: Path,
    sort_key: str,
    arrivals: dict[str, np.ndarray] | None = None,
    margins: MarginWriter | None = None,
    zstd_level: int | None = None,
) -> int:
    """One HATS partition: its pixel range from the database (with the rows of its sky stored in a
    neighbour's range), only the rows of its own sky, hats' pixel column, sorted, written."""
    from hats.pixel_math.spatial_index import compute_spatial_index

    span = 2 * (PIXEL_ORDER - order)
    lo, hi = pixel << span, (pixel + 1) << span
    parts = list(reader.read(chunk_name(plan.name, lo, hi)))
    if arrivals:
        parts += _read_keys(reader, plan, arrivals)
    table = pa.concat_tables(parts) if parts else arrow_empty(reader)
    del parts
    index = compute_spatial_index(
        table[plan.ra].to_numpy().astype(np.float64), table[plan.dec].to_numpy().astype(np.float64)
    )
    mine = (index >> span) == pixel
    if not mine.all():
        if not plan.target.parent:
            raise NotOwnPixel(f"{plan.name}: rows of partition {order}/{pixel} lie outside it")
        table, index = table.filter(pa.array(mine)), index[mine]  # measurements of a neighbour's sky
    if table.num_rows != rows:
        raise ValueError(f"{plan.name}: partition {order}/{pixel} has {table.num_rows} rows, planned {rows}")
    return _write_table(table, index, (order, pixel), file, sort_key, margins, zstd_level)


def _write_table(
    table: pa.Table,
    index: np.ndarray,
    pixel: tuple[int, int],
    file: Path,
    sort_key: str,
    margins: MarginWriter | None = None,
    zstd_level: int | None = None,
) -> int:
    """Rows of one HATS partition with hats' pixel column, sorted, cut into row groups, written atomically
    (its rows in its neighbours' margins mapped first, so a kept file's margin shards are complete)."""
    from hats.io import file_io
    from hats.pixel_math.spatial_index import SPATIAL_INDEX_COLUMN, split_to_row_groups

    table = table.add_column(0, SPATIAL_INDEX_COLUMN, [pa.array(index)])
    ordering = [(SPATIAL_INDEX_COLUMN, "ascending"), (sort_key, "ascending")]
    table = table.sort_by(ordering)
    if margins is not None:
        margins.map(table, *pixel)
    options: dict[str, Any] = {"sorting_columns": pq.SortingColumn.from_ordering(table.schema, ordering)}
    if zstd_level is not None:
        options["compression_level"] = zstd_level
    kwargs = file_io.get_parquet_write_table_kwargs(table.schema, write_table_kwargs=options)
    kwargs.pop("row_group_size", None)
    with atomic_file(file) as fh, pq.ParquetWriter(fh, table.schema, **kwargs) as writer:
        for group in split_to_row_groups(table, {}, pixel[0]):
            writer.write_table(group)
    return table.num_rows


def _read_keys(reader: PostgresReader, plan: TableExport, keys: dict[str, np.ndarray]) -> list[pa.Table]:
    """The rows with these keys (a few per partition: measurements just across its edge)."""
    from .reader import _conform, _cursor
    from .source import arrow_schema

    schema = arrow_schema(plan.target)
    names = list(keys)
    out = []
    step = 10_000
    total = len(next(iter(keys.values())))
    for start in range(0, total, step):
        values = ", ".join(
            "(" + ", ".join(_literal(keys[k][i]) for k in names) + ")"
            for i in range(start, min(total, start + step))
        )
        cols = ", ".join(f'"{k}"' for k in names)
        text = plan.chunk_sql(None, None) + f" WHERE ({cols}) IN (VALUES {values})"
        with _cursor(reader.uri) as cur:
            cur.execute(text)
            batches = [_conform(b, schema) for b in cur.fetch_record_batch() if b.num_rows]
        if batches:
            out.append(pa.Table.from_batches(batches, schema))
    return out


def _literal(value: Any) -> str:
    """A key value as SQL: an integer, or a float spelled so that it reads back as the same double (a
    DiaSource's key includes its processing time, MJD)."""
    if isinstance(value, np.floating | float):
        return f"'{float(value)!r}'::float8"
    return str(int(value))


def arrow_empty(reader: PostgresReader) -> pa.Table:
    from .source import arrow_schema

    assert isinstance(reader.export, TableExport)
    return arrow_schema(reader.export.target).empty_table()
