"""Sky maps: objects per HEALPix pixel of a catalog, counted in the database, drawn as a density map.

Every object carries its nested order-29 pixel (``_healpix_29``), so the pixel
at order k is a shift: ``_healpix_29 >> 2*(29-k)``. The order is chosen from the
catalog's footprint: the finest at which the occupied pixels number at most
``MAX_PIXELS`` and hold ``MIN_PER_PIXEL`` objects on average.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import psycopg
from psycopg import sql

from dpdb.config import Settings
from dpdb.healpix import PIXEL_ORDER
from dpdb.model.layout import PIXEL_COLUMN

from ._catalog import PROMPT, catalog_named, reading
from ._figure import PlotError, new_figure, save_png

__all__ = ["MAX_PIXELS", "MIN_PER_PIXEL", "SkyMap", "sky_data", "draw_sky", "plot_sky"]

log = logging.getLogger(__name__)

MAX_PIXELS = 3000
MIN_PER_PIXEL = 3.0
_FINEST = 14  # finest order considered (pixels of 13 arcsec)
_TABLES = {"object": "Object", "diaobject": "DiaObject"}

# Occupied pixels at every order 0.._FINEST, from one grouping at the finest order.
_OCCUPANCY = """WITH fine AS (
  SELECT {pixel} >> %(shift)s AS p, count(*) AS n FROM {table} {current} GROUP BY 1)
SELECT k, count(DISTINCT p >> (2 * (%(finest)s - k))), sum(n)
FROM fine, generate_series(0, %(finest)s) AS k GROUP BY k ORDER BY k"""
_COUNTS = "SELECT {pixel} >> %(shift)s, count(*) FROM {table} {current} GROUP BY 1 ORDER BY 1"


@dataclass(frozen=True)
class SkyMap:
    """Objects per HEALPix pixel (nested) of one catalog table."""

    release: str  # as asked: current, previous, prompt, dr1, ...
    catalog: str  # the schema read
    table: str  # Object or DiaObject
    order: int
    pixels: np.ndarray  # int64, nested, at ``order``
    counts: np.ndarray  # int64

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def pixel_area(self) -> float:
        """Area of one pixel, deg²."""
        return float(4 * 180.0**2 / np.pi / (12 * 4**self.order))

    @property
    def density(self) -> np.ndarray:
        """Objects per deg² of each pixel."""
        return self.counts / self.pixel_area


def sky_data(
    settings: Settings, *, release: str = "current", table: str | None = None, order: int | None = None
) -> SkyMap:
    """Count the objects of a catalog table per HEALPix pixel, in the database.

    Parameters
    ----------
    settings
        The database.
    release
        ``current`` (the active release), ``previous``, a release name (``dr1``)
        or ``prompt`` (the prompt catalog's current DiaObject versions).
    table
        ``Object`` or ``DiaObject`` (case-insensitive); default Object for a
        release, DiaObject for the prompt catalog.
    order
        HEALPix order of the map; default chosen from the footprint.

    Raises
    ------
    PlotError
        Unknown table, a table the catalog lacks, an order outside 0..29, or an empty table.
    ReleaseStateError
        The release is unknown, not loaded, or there is no current (previous) one.
    """
    name = _TABLES.get((table or ("DiaObject" if release == PROMPT else "Object")).lower())
    if name is None:
        raise PlotError(f"unknown table {table} for a sky map (tables: Object, DiaObject)")
    if order is not None and not 0 <= order <= PIXEL_ORDER:
        raise PlotError(f"HEALPix order {order} outside 0..{PIXEL_ORDER}")
    with reading(settings) as conn:
        catalog = catalog_named(conn, release)
        if catalog == PROMPT and name == "Object":
            raise PlotError("the prompt catalog has no Object table (use --table DiaObject or a release)")
        parts = {
            "pixel": sql.Identifier(PIXEL_COLUMN),
            "table": sql.Identifier(catalog, name.lower()),
            "current": sql.SQL("WHERE validityendmjdtai IS NULL" if name == "DiaObject" else ""),
        }
        if order is None:
            order = _choose_order(conn, parts, f"{catalog}.{name}")
        shift = 2 * (PIXEL_ORDER - order)
        rows = conn.execute(sql.SQL(_COUNTS).format(**parts), {"shift": shift}).fetchall()
    if not rows:
        raise PlotError(f"{catalog}.{name} is empty: nothing to map")
    pixels, counts = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    log.info(
        "sky map of %s.%s: %d objects in %d pixels at order %d", catalog, name, counts.sum(), len(rows), order
    )
    return SkyMap(release, catalog, name, order, pixels, counts)


def _choose_order(conn: psycopg.Connection, parts: dict[str, sql.Composable], what: str) -> int:
    rows = conn.execute(
        sql.SQL(_OCCUPANCY).format(**parts), {"shift": 2 * (PIXEL_ORDER - _FINEST), "finest": _FINEST}
    ).fetchall()
    if not rows:
        raise PlotError(f"{what} is empty: nothing to map")
    total = int(rows[0][2])
    fits = [(int(k), int(occupied)) for k, occupied, _ in rows if occupied <= MAX_PIXELS]
    dense = [k for k, occupied in fits if total / occupied >= MIN_PER_PIXEL]
    return max(dense) if dense else max(k for k, _ in fits)


class Outlines(NamedTuple):
    """Each occupied pixel's outline and centre in degrees, RA kept in one piece around the footprint."""

    ra: np.ndarray  # (pixels, corners)
    dec: np.ndarray
    centre_ra: np.ndarray  # (pixels,)
    centre_dec: np.ndarray
    corners: np.ndarray  # (pixels, 3, corners): unit vectors


def pixel_outlines(sky: SkyMap, step: int) -> Outlines:
    """The outlines of ``sky``'s pixels (``4 * step`` corners each) for drawing (PNG and the portal)."""
    import healpy

    nside = 1 << sky.order
    corners = healpy.boundaries(nside, sky.pixels, step=step, nest=True)  # (pixels, 3, 4*step)
    ra, dec = healpy.vec2ang(np.moveaxis(corners, 1, -1).reshape(-1, 3), lonlat=True)
    ra, dec = ra.reshape(len(sky.pixels), -1), dec.reshape(len(sky.pixels), -1)
    # Keep the footprint in one piece across RA = 0: angles relative to its (count-weighted) centre.
    c_ra, c_dec = healpy.pix2ang(nside, sky.pixels, nest=True, lonlat=True)
    phase = np.deg2rad(c_ra)
    centre = np.rad2deg(np.arctan2((sky.counts * np.sin(phase)).sum(), (sky.counts * np.cos(phase)).sum()))

    def unwrap(a: np.ndarray) -> np.ndarray:
        return centre + (a - centre + 180.0) % 360.0 - 180.0

    return Outlines(unwrap(ra), dec, unwrap(c_ra), c_dec, corners)


def draw_sky(sky: SkyMap, out: Path) -> Path:
    """Draw ``sky`` (each occupied pixel a polygon coloured by density) and write it as PNG to ``out``."""
    from matplotlib.collections import PolyCollection

    outline = pixel_outlines(sky, step=1 if sky.order >= 6 else 8)  # large pixels have curved edges
    ra, dec = outline.ra, outline.dec

    fig = new_figure(8.5, 7.0)
    ax = fig.add_subplot()
    polygons = PolyCollection(
        list(np.stack([ra, dec], axis=-1)),
        array=sky.density,
        cmap="viridis",
        edgecolors="face",
        linewidths=0.3,
    )
    polygons.set_clim(0.0, float(sky.density.max()))
    ax.add_collection(polygons)
    margin = 0.05 * max(np.ptp(ra), np.ptp(dec), 0.01)
    ax.set_xlim(ra.max() + margin, ra.min() - margin)  # east to the left
    ax.set_ylim(max(dec.min() - margin, -90.0), min(dec.max() + margin, 90.0))
    mid_dec = np.deg2rad(float(np.average(outline.centre_dec, weights=sky.counts)))
    ax.set_aspect(1.0 / max(np.cos(mid_dec), 0.05))  # equal angles on the sky at the footprint's centre
    ax.set_xlabel("RA (deg)")
    ax.set_ylabel("Dec (deg)")
    ax.set_axisbelow(True)
    ax.grid(True, color="0.85", linewidth=0.6)
    fig.colorbar(polygons, ax=ax, label="objects per deg²", shrink=0.85)
    asked = f" ({sky.release})" if sky.release != sky.catalog else ""
    ax.set_title(
        f"{sky.catalog}{asked} {sky.table}: {sky.total:,} objects\n"
        f"HEALPix order {sky.order} (nested), {len(sky.pixels):,} pixels of {sky.pixel_area:.4g} deg²"
    )
    return save_png(fig, out)


def plot_sky(settings: Settings, out: Path, *, release: str = "current", table: str | None = None) -> Path:
    """Plot the density of a catalog's objects on the sky to the PNG file ``out`` (see :func:`sky_data`).

    Returns
    -------
    Path
        ``out``, written atomically; nothing is written when the catalog cannot be mapped.
    """
    return draw_sky(sky_data(settings, release=release, table=table), out)
