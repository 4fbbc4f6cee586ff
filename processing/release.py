"""Data-release production (``dpdb release produce``): a release directory of Parquet files.

The release holds (DPDD §4.3, §3.3.5) Object, Source and ForcedSource measured
on a simulated static sky of stars and galaxies (processing/static_sky.py),
Visit and CcdVisit, and the DIA tables. With ``settings`` (``--from-prompt``)
the visits and the DIA tables are the prompt catalog's, reprocessed with no
12-month window (processing/release_from_prompt.py); without, the visits
follow the survey simulator's plan and the DIA tables come from the static
sky's variable stars. From the prompt, each DiaObject with two DiaSources or more
also gets a static counterpart in Object. Every ID carries the release's origin
(DPDD §2.4).

Files are laid out by HEALPix pixel at ``partition_order`` (etl/release_dir.py),
measurements in their object's pixel, so a release loads partition by
partition; ``release.json`` is written last.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dpdb.config import Settings
from dpdb.errors import ReleaseStateError
from dpdb.etl import release_dir
from dpdb.healpix import pixels
from dpdb.ids import release_origin
from dpdb.locks import folder_lock
from dpdb.model.felis import latest_version
from dpdb.model.layout import RELEASE_TABLES
from dpdb.model.table import catalog_table
from dpdb.registry.releases import release_number

from .static_sky import plan_visits, simulate_static_sky

__all__ = ["produce"]

_FROM_PROMPT = ("Visit", "CcdVisit", "DiaObject", "DiaSource", "DiaForcedSource", "SSObject", "SSSource")


def produce(
    out: Path,
    name: str,
    *,
    number: int | None = None,
    seed: int = 1,
    objects: int = 20_000,
    nights: int = 3,
    settings: Settings | None = None,
    partition_order: int = 1,
    center: tuple[float, float] = (150.0, 2.0),
) -> release_dir.ReleaseDir:
    """Write release ``name`` under ``out``; return its manifest (``settings``: reprocess the prompt).

    ``center`` (ra, dec in degrees) places the simulated survey's field (not with ``settings``).
    """
    try:
        origin = release_origin(release_number(name, number))
    except ValueError as e:
        raise ReleaseStateError(f"release {name}: {e}") from None
    out = Path(out)
    # One producer per folder (a second one fails at once: busy ... (pid N)); leftovers of a
    # killed run are removed under the lock.
    with folder_lock(out, f"release produce into {out}"):
        release_dir.remove_temporaries(out)
        (out / release_dir.MANIFEST).unlink(missing_ok=True)  # incomplete until rewritten
        return _produce(out, name, origin, seed, objects, nights, settings, partition_order, center)


def _produce(
    out: Path, name: str, origin: int, seed: int, objects: int, nights: int, settings: Settings | None,
    partition_order: int, center: tuple[float, float] = (150.0, 2.0),
) -> release_dir.ReleaseDir:  # fmt: skip
    prompt: dict[str, pa.Table] = {}
    if settings is not None:
        from .release_from_prompt import from_prompt

        prompt = from_prompt(settings, origin)
        visits, ccd_visits = prompt["Visit"], prompt["CcdVisit"]
    else:
        visits, ccd_visits = plan_visits(seed, nights, center=center)
    tables = {"Visit": visits, "CcdVisit": ccd_visits}
    tables |= simulate_static_sky(
        visits, ccd_visits, origin, seed=seed, objects=objects, counterparts=_counterparts(prompt)
    )
    tables |= {t: prompt[t] for t in _FROM_PROMPT if t in prompt}
    manifest = release_dir.ReleaseDir(
        name, origin, latest_version(), partition_order, "production",
        info={
            "seed": seed, "objects": objects, "from_prompt": settings is not None,
            "nights": None if settings is not None else nights,
            "produced_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
    )  # fmt: skip
    object_pixels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for table in RELEASE_TABLES:
        data = tables.get(table)
        if data is None:
            continue
        pix = _pixels(table, data, object_pixels)
        manifest.tables[table] = release_dir.write_table(
            out, table, data, pix, partition_order if pix is not None else None
        )
    manifest.write(out)
    return manifest


def _counterparts(prompt: dict[str, pa.Table]) -> tuple[np.ndarray, np.ndarray] | None:
    """Positions of the prompt's persistent DiaObjects (two DiaSources or more): the coadds of a
    release detect these sources too, so each gets a static Object there."""
    if not prompt:
        return None
    dia = prompt["DiaObject"]
    persistent = pc.greater_equal(dia["nDiaSources"], 2)
    return (
        dia["ra"].filter(persistent).to_numpy(),
        dia["dec"].filter(persistent).to_numpy(),
    )


def _pixels(
    table: str, data: pa.Table, object_pixels: dict[str, tuple[np.ndarray, np.ndarray]]
) -> np.ndarray | None:
    """Order-29 pixel of each row: its own position's for objects, its object's for measurements."""
    model = catalog_table(table)
    if not model.partitioned:
        return None
    if model.canonical_position is None:
        raise ValueError(f"partitioned table {table} has no position")
    ra, dec = model.canonical_position  # data are in canonical names
    if model.parent is None:
        pix = pixels(data[ra].to_numpy(), data[dec].to_numpy())
        key = model.canonical_names[model.primary_key[0]]  # objectId / diaObjectId
        ids = data[key].to_numpy()
        order = np.argsort(ids)
        object_pixels[table] = (ids[order], pix[order])
        return pix
    ids, pix = object_pixels.get(model.parent, (np.empty(0, np.int64), np.empty(0, np.int64)))
    own = pixels(data[ra].to_numpy(), data[dec].to_numpy())  # rows without their object (SSObject's)
    if not len(ids):
        return own
    parent_key = model.layout.parent_key
    assert parent_key is not None  # a table with a parent names its key
    wanted = data[parent_key].fill_null(-1).to_numpy()
    pos = np.clip(np.searchsorted(ids, wanted), 0, len(ids) - 1)
    return np.where(ids[pos] == wanted, pix[pos], own)
