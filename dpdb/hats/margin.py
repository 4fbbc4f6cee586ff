"""A HATS margin catalog made while the main catalog's partitions are written, not by a second pipeline.

hats-import makes a margin catalog after the main catalog, in a pipeline of
its own: it reads every partition file back (its pixel column, then all its
columns when a row falls in a margin), writes the rows that lie in each
neighbour's margin as shard files, then gathers each neighbour's shards into
its margin file. The direct writer (dpdb/hats/direct.py) already holds each
partition's rows, with hats' pixel column, in memory when it writes them, so
this module does the same mapping there, on that table (no second read of the
catalog, no dask client), and gathers the shards at the end:

- which rows go to which margin is hats-import's rule, with hats' functions:
  the margin order is ``margin2order`` of the threshold, a row belongs to the
  margin of every partition (or empty "negative tree" pixel,
  ``compute_negative_tree_pixels``) whose bordering pixels at that order
  (``get_margin``) hold the row's ``_healpix_29``;
- the margin files, ``partition_info.csv``, ``_metadata`` and ``properties``
  are hats' (``catalog_type=margin``, ``margin_threshold``, the primary
  catalog), and ``collection.properties`` names the default margin, as
  hats-import's collection pipeline writes it.

Shards live in the export's temporary folder; a partition's shards are marked
done before its file is written, so a rerun after a kill maps again only the
partitions whose shards are missing (reading their file, as hats-import does).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dpdb._version import code_version
from dpdb.atomic import atomic_file
from dpdb.errors import DpdbError

__all__ = ["MarginError", "MarginWriter", "write_collection_properties"]

log = logging.getLogger(__name__)


class MarginError(DpdbError):
    """The margin cannot be made at this threshold for this catalog's partitions."""


class MarginWriter:
    """The margin catalog of one HATS catalog: shards mapped per partition, gathered per margin pixel.

    ``pixels`` are the main catalog's partitions (order, pixel); ``threshold`` is in arcseconds.
    """

    def __init__(self, pixels: list[tuple[int, int]], threshold: float, shards: Path) -> None:
        import hats.pixel_math.healpix_shim as hp
        from hats.pixel_math import HealpixPixel
        from hats.pixel_math.pixel_margins import get_margin
        from hats.pixel_tree.negative_tree import compute_negative_tree_pixels
        from hats.pixel_tree.pixel_tree import PixelTree

        self.threshold = threshold
        self.order = int(hp.margin2order(margin_thr_arcmin=np.asarray(threshold / 60.0)))
        highest = max(k for k, _ in pixels)
        # hats-import's own checks (MarginCacheArguments), with its messages
        if self.order < highest + 1:
            raise MarginError(
                f'margin {threshold}": margin_order must be of a higher order than the highest order '
                f"catalog partition pixel ({self.order} <= {highest}); use a smaller --margin "
                "or a larger --partition-mb"
            )
        if hp.order2mindist(self.order) * 60.0 < threshold:
            raise MarginError(f'margin {threshold}": margin pixels must be larger than margin_threshold')
        tree = PixelTree.from_healpix([HealpixPixel(k, p) for k, p in pixels])
        combined = [(k, p) for k, p in pixels] + [
            (int(h.order), int(h.pixel)) for h in compute_negative_tree_pixels(tree)
        ]
        self.combined = combined
        margin_pixels, owners = [], []
        for i, (k, p) in enumerate(combined):
            found = get_margin(k, p, self.order - k)
            margin_pixels.append(np.asarray(found, dtype=np.int64))
            owners.append(np.full(len(found), i, dtype=np.int64))
        pix = np.concatenate(margin_pixels)
        own = np.concatenate(owners)
        order = np.argsort(pix, kind="stable")
        self._pairs_pixel, self._pairs_owner = pix[order], own[order]
        self.shards = shards

    # -- map: one written partition's rows into the margins of its neighbours --------------------

    def _marker(self, k: int, p: int) -> Path:
        return self.shards / "done" / f"{k}_{p}"

    def mapped(self, k: int, p: int) -> bool:
        return self._marker(k, p).is_file()

    def map(self, table: pa.Table, k: int, p: int) -> int:
        """Write the rows of partition (k, p) that lie in other pixels' margins; their count."""
        from hats.pixel_math.spatial_index import SPATIAL_INDEX_COLUMN, SPATIAL_INDEX_ORDER

        index = table[SPATIAL_INDEX_COLUMN].to_numpy()
        at = index >> (2 * (SPATIAL_INDEX_ORDER - self.order))
        lo = np.searchsorted(self._pairs_pixel, at, side="left")
        hi = np.searchsorted(self._pairs_pixel, at, side="right")
        rows = np.nonzero(hi > lo)[0]
        written = 0
        if len(rows):
            counts = (hi - lo)[rows]
            row_of_pair = np.repeat(rows, counts)
            first = np.repeat(np.cumsum(counts) - counts, counts)
            pair = np.repeat(lo[rows], counts) + (np.arange(len(row_of_pair)) - first)
            owner = self._pairs_owner[pair]
            for dest in np.unique(owner):
                take = np.unique(row_of_pair[owner == dest])
                dk, dp = self.combined[int(dest)]
                folder = self.shards / f"{dk}_{dp}"
                folder.mkdir(parents=True, exist_ok=True)
                with atomic_file(folder / f"{k}_{p}.parquet") as fh:
                    pq.write_table(table.take(pa.array(take)), fh)
                written += len(take)
        self._marker(k, p).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(self._marker(k, p), binary=False) as fh:
            fh.write(f"{written}\n")
        return written

    # -- reduce: each margin pixel's shards into its file, then the catalog's metadata ----------------

    def write(
        self,
        path: Path,
        primary: Path,
        name: str,
        schema: pa.Schema,
        sort_key: str,
        properties: dict[str, Any],
        ra: str,
        dec: str,
        jobs: int,
        zstd_level: int | None = None,
    ) -> int:
        """Gather the shards into the margin catalog ``path`` of the catalog ``primary``; its rows."""
        import hats.pixel_math as pixel_math
        from hats.catalog import PartitionInfo, TableProperties
        from hats.io import file_io, paths
        from hats.io.parquet_metadata import write_parquet_metadata
        from hats.pixel_math.healpix_pixel import HealpixPixel
        from hats.pixel_math.spatial_index import SPATIAL_INDEX_COLUMN

        for stale in (path / "dataset").glob("Norder=*/Dir=*/.*.tmp"):
            stale.unlink(missing_ok=True)
        found = sorted(
            (int(k), int(p)) for k, p in (d.name.split("_") for d in self.shards.glob("*_*") if d.is_dir())
        )

        def one(pixel: tuple[int, int]) -> int:
            k, p = pixel
            files = sorted((self.shards / f"{k}_{p}").glob("*.parquet"))
            table = pa.concat_tables([pq.read_table(f, schema=schema) for f in files])
            table = table.sort_by([(SPATIAL_INDEX_COLUMN, "ascending"), (sort_key, "ascending")])
            target = paths.pixel_catalog_file(path, HealpixPixel(k, p))
            Path(str(target.path)).parent.mkdir(parents=True, exist_ok=True)
            level: dict[str, object] = {} if zstd_level is None else {"compression_level": zstd_level}
            kwargs = file_io.get_parquet_write_table_kwargs(table.schema, write_table_kwargs=level)
            with atomic_file(Path(str(target.path))) as fh:
                pq.write_table(table, fh, **kwargs)
            return table.num_rows

        with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="hats-margin") as pool:
            counts = list(pool.map(one, found))
        total = sum(counts)
        path.mkdir(parents=True, exist_ok=True)
        if total:
            if write_parquet_metadata(path, create_metadata=True) != total:
                raise ValueError(f"{name}: the margin's Parquet metadata does not hold its {total} rows")
        else:  # hats-import's empty margin: the schema alone
            (path / "dataset").mkdir(parents=True, exist_ok=True)
            pq.write_metadata(schema, str(paths.get_common_metadata_pointer(path).path))
            pq.write_metadata(schema, str(paths.get_parquet_metadata_pointer(path).path))
        pixels = [HealpixPixel(k, p) for (k, p), n in zip(found, counts, strict=True) if n]
        partition_info = PartitionInfo.from_healpix(pixels)
        partition_info.write_to_file(paths.get_partition_info_pointer(path))
        highest = partition_info.get_highest_order() if pixels else max(k for k, _ in self.combined)
        info = TableProperties.new_provenance_dict(
            path, builder=f"dpdb {code_version()} (hats v{_version('hats')})", **properties
        ) | {
            "catalog_name": name, "total_rows": total, "catalog_type": "margin",
            "ra_column": ra, "dec_column": dec, "primary_catalog": str(primary),
            "margin_threshold": self.threshold, "hats_order": highest,
            "moc_sky_fraction": f"{partition_info.calculate_fractional_coverage():0.5f}",
            "hats_col_healpix": pixel_math.spatial_index.SPATIAL_INDEX_COLUMN,
            "hats_col_healpix_order": pixel_math.spatial_index.SPATIAL_INDEX_ORDER,
            "npix_suffix": ".parquet",
        }  # fmt: skip
        TableProperties(**info).to_properties_file(path)
        return total


def write_collection_properties(
    collection: Path, name: str, margin: str | None, properties: dict[str, Any]
) -> None:
    """``collection.properties`` as hats-import's collection pipeline writes it (primary + default margin)."""
    from hats.catalog.dataset.collection_properties import CollectionProperties
    from hats.catalog.dataset.table_properties import TableProperties

    info: dict[str, Any] = {"name": name, "hats_primary_table_url": name}
    if margin is not None:
        info |= {"all_margins": [margin], "default_margin": margin}
    info |= TableProperties.new_provenance_dict(
        collection, builder=f"dpdb {code_version()} (hats v{_version('hats')})", **properties
    )
    CollectionProperties(**info).to_properties_file(collection)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
