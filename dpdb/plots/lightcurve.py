"""Light curves: per-band PSF fluxes over time of a DiaObject (prompt or release) or a release Object.

Detections (DiaSource, Source) are filled markers, forced photometry
(DiaForcedSource, ForcedSource) open ones. The prompt catalog is read as it is
now (rows not withdrawn) or as of an instant (``prompt.<table>_as_of``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

from dpdb.config import Settings
from dpdb.timeutil import iso_utc

from ._catalog import PROMPT, catalog_of_id, reading
from ._figure import BAND_COLOURS, BAND_MARKERS, OTHER_COLOUR, PlotError, band_order, new_figure, save_png

__all__ = ["LightCurve", "lightcurve_data", "read_lightcurve", "draw_lightcurve", "plot_lightcurve"]

log = logging.getLogger(__name__)

# Detections (forced = false) and forced photometry of one object, with psfFlux, in time order.
_DIA = """SELECT false, band, midpointmjdtai, psfflux, psffluxerr FROM {sources}
WHERE diaobjectid = %(id)s AND psfflux IS NOT NULL {live}
UNION ALL
SELECT true, band, midpointmjdtai, psfflux, psffluxerr FROM {forced}
WHERE diaobjectid = %(id)s AND psfflux IS NOT NULL {live}
ORDER BY 3, 1"""
_OBJECT = """SELECT false, s.band, c.expmidptmjd, s.psfflux, s.psffluxerr FROM {sources} s
JOIN {ccd} c USING (ccdvisitid) WHERE s.objectid = %(id)s AND s.psfflux IS NOT NULL
UNION ALL
SELECT true, f.band, c.expmidptmjd, f.psfflux, f.psffluxerr FROM {forced} f
JOIN {ccd} c USING (ccdvisitid) WHERE f.objectid = %(id)s AND f.psfflux IS NOT NULL
ORDER BY 3, 1"""


@dataclass(frozen=True)
class LightCurve:
    """The measurements of one object, one entry per point, in time order."""

    object_id: int
    table: str  # DiaObject or Object
    catalog: str  # prompt, or the release schema
    as_of: float | None  # MJD TAI the prompt catalog was read as of (None: now)
    forced: np.ndarray  # bool: forced photometry (else a detection)
    band: np.ndarray  # str
    time: np.ndarray  # MJD TAI
    flux: np.ndarray  # psfFlux, nJy
    flux_err: np.ndarray  # psfFluxErr, nJy (NaN when unknown)

    @property
    def points(self) -> int:
        return len(self.time)

    @property
    def detections(self) -> int:
        return int((~self.forced).sum())

    @property
    def detection_table(self) -> str:
        return "DiaSource" if self.table == "DiaObject" else "Source"

    @property
    def forced_table(self) -> str:
        return "DiaForcedSource" if self.table == "DiaObject" else "ForcedSource"

    @property
    def summary(self) -> str:
        """E.g. ``24 points (12 DiaSource, 12 DiaForcedSource)``."""
        forced = self.points - self.detections
        return (
            f"{self.points} point{'' if self.points == 1 else 's'} "
            f"({self.detections} {self.detection_table}, {forced} {self.forced_table})"
        )

    @property
    def catalog_label(self) -> str:
        if self.catalog != PROMPT:
            return f"release {self.catalog}"
        return "prompt catalog" + (f" as of {iso_utc(self.as_of)} UTC" if self.as_of is not None else "")


def lightcurve_data(settings: Settings, object_id: int, *, as_of: float | None = None) -> LightCurve:
    """Read the light curve of ``object_id`` from the catalog its ID came from.

    Parameters
    ----------
    settings
        The database.
    object_id
        A prompt DiaObject ID, or a release's Object or DiaObject ID.
    as_of
        Read the prompt catalog as it was at this instant (MJD TAI); None reads
        it now (DiaSources and forced measurements not withdrawn).

    Raises
    ------
    PlotError
        Unknown ID, a deleted DiaObject, ``as_of`` with a release ID, or no measurement with a flux.
    ReleaseStateError
        The release of the ID's origin is not loaded.
    """
    with reading(settings) as conn:
        return read_lightcurve(conn, object_id, as_of=as_of)


def read_lightcurve(conn: psycopg.Connection, object_id: int, *, as_of: float | None = None) -> LightCurve:
    """:func:`lightcurve_data` on an open connection (a read-only one the caller keeps, e.g. pooled)."""
    catalog = catalog_of_id(conn, object_id)
    if catalog == PROMPT:
        table, query = "DiaObject", _prompt_query(conn, object_id, as_of)
    else:
        if as_of is not None:
            raise PlotError(f"ID {object_id} is from release {catalog}: --as-of reads the prompt catalog")
        table, query = _release_query(conn, catalog, object_id)
    return read_points(conn, query, table, catalog, object_id, as_of)


def read_points(
    conn: psycopg.Connection, query: sql.Composed, table: str, catalog: str, object_id: int,
    as_of: float | None,
) -> LightCurve:  # fmt: skip
    """Run a light-curve query (parameters ``id`` and ``t``) and make its rows a :class:`LightCurve`."""
    rows = conn.execute(query, {"id": object_id, "t": as_of}).fetchall()
    if not rows:
        raise PlotError(f"{table} {object_id} in {catalog} has no measurement with a psfFlux")
    forced, band, time, flux, err = zip(*rows, strict=True)
    log.info("light curve of %s %d: %d points from %s", table, object_id, len(rows), catalog)
    return LightCurve(
        object_id, table, catalog, as_of, np.array(forced, dtype=bool), np.array(band, dtype=str),
        np.array(time, dtype=float), np.array(flux, dtype=float), np.array(err, dtype=float),
    )  # fmt: skip


def prompt_points_query(as_of: float | None) -> sql.Composed:
    """The points of prompt DiaObject ``%(id)s``: now (not withdrawn), or as of ``%(t)s``."""
    if as_of is None:
        tables: list[sql.Composable] = [
            sql.Identifier(PROMPT, "diasource"), sql.Identifier(PROMPT, "diaforcedsource")
        ]  # fmt: skip
        live = sql.SQL("AND timewithdrawnmjdtai IS NULL")
    else:
        tables = [
            sql.SQL("{}(%(t)s::float8)").format(sql.Identifier(PROMPT, f"{t}_as_of"))
            for t in ("diasource", "diaforcedsource")
        ]
        live = sql.SQL("")
    return sql.SQL(_DIA).format(sources=tables[0], forced=tables[1], live=live)


def _prompt_query(conn: psycopg.Connection, object_id: int, as_of: float | None) -> sql.Composed:
    if as_of is None:
        found = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE validityendmjdtai IS NULL), max(validityendmjdtai) "
            "FROM prompt.diaobject WHERE diaobjectid = %s",
            (object_id,),
        ).fetchone()
        assert found is not None
        if found[0] and not found[1]:
            raise PlotError(
                f"DiaObject {object_id} was deleted at MJD {found[2]:.5f} TAI (closed without successor); "
                "plot it --as-of an earlier instant"
            )
    else:
        found = conn.execute(
            "SELECT count(*) FROM prompt.diaobject_as_of(%s::float8) WHERE diaobjectid = %s",
            (as_of, object_id),
        ).fetchone()
    if not found or not found[0]:
        when = f" as of {iso_utc(as_of)} UTC (MJD {as_of} TAI)" if as_of is not None else ""
        raise PlotError(f"DiaObject {object_id} not found in the prompt catalog{when}")
    return prompt_points_query(as_of)


def _release_query(conn: psycopg.Connection, release: str, object_id: int) -> tuple[str, sql.Composed]:
    def has(table: str, key: str) -> bool:
        stmt = sql.SQL("SELECT 1 FROM {} WHERE {} = %s LIMIT 1").format(
            sql.Identifier(release, table), sql.Identifier(key)
        )
        return conn.execute(stmt, (object_id,)).fetchone() is not None

    if has("object", "objectid"):
        return "Object", sql.SQL(_OBJECT).format(
            sources=sql.Identifier(release, "source"), forced=sql.Identifier(release, "forcedsource"),
            ccd=sql.Identifier(release, "ccdvisit"),
        )  # fmt: skip
    if has("diaobject", "diaobjectid"):
        return "DiaObject", sql.SQL(_DIA).format(
            sources=sql.Identifier(release, "diasource"), forced=sql.Identifier(release, "diaforcedsource"),
            live=sql.SQL("AND timewithdrawnmjdtai IS NULL"),
        )  # fmt: skip
    raise PlotError(f"ID {object_id} not found in release {release} (neither an Object nor a DiaObject)")


def draw_lightcurve(curve: LightCurve, out: Path) -> Path:
    """Draw ``curve`` (flux with error bars per band over time) and write it as PNG to ``out``."""
    from matplotlib.lines import Line2D

    fig = new_figure(9.5, 5.2)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.75", linewidth=0.8, zorder=0)
    handles = []
    for band in band_order(curve.band):
        colour, marker = BAND_COLOURS.get(band, OTHER_COLOUR), BAND_MARKERS.get(band, "o")
        for forced in (False, True):
            sel = (curve.band == band) & (curve.forced == forced)
            if sel.any():
                ax.errorbar(
                    curve.time[sel], curve.flux[sel], yerr=np.nan_to_num(curve.flux_err[sel]), fmt=marker,
                    color=colour, markerfacecolor="white" if forced else colour, markersize=6,
                    elinewidth=0.9, capsize=0, alpha=0.9,
                )  # fmt: skip
        handles.append(Line2D([], [], color=colour, marker=marker, linestyle="", label=f"{band} band"))
    handles += [
        Line2D([], [], color="0.3", marker="o", linestyle="", label=f"{curve.detection_table} (detection)"),
        Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle="",
               label=f"{curve.forced_table} (forced)"),
    ]  # fmt: skip
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel("time (MJD TAI)")
    ax.set_ylabel("psfFlux (nJy)")
    ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    if np.ptp(curve.time) < 0.2:  # one night: a day wide, not matplotlib's default span
        ax.set_xlim(curve.time.min() - 0.5, curve.time.max() + 0.5)
    ax.grid(True, color="0.92")
    ax.set_title(f"{curve.table} {curve.object_id}\n{curve.summary}, {curve.catalog_label}")
    return save_png(fig, out)


def plot_lightcurve(settings: Settings, object_id: int, out: Path, *, as_of: float | None = None) -> Path:
    """Plot the light curve of ``object_id`` to the PNG file ``out`` (see :func:`lightcurve_data`).

    Returns
    -------
    Path
        ``out``, written atomically; nothing is written when the ID cannot be plotted.
    """
    return draw_lightcurve(lightcurve_data(settings, object_id, as_of=as_of), out)
