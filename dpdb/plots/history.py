"""The history of a prompt DiaObject: its versions over processing time.

Each visit that adds a DiaSource makes a new version (``validityStartMjdTai``)
and closes the previous one (``validityEndMjdTai``); a daytime relink that takes
all its DiaSources away closes the last version without a successor (deletion).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from psycopg import sql

from dpdb.config import Settings
from dpdb.ids import origin_of

from ._catalog import PROMPT, catalog_of_id, latest_processing_time, reading
from ._figure import BAND_COLOURS, BAND_MARKERS, BANDS, PlotError, new_figure, save_png

__all__ = ["History", "history_data", "draw_history", "plot_history"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class History:
    """The versions of one prompt DiaObject, in time order."""

    dia_object_id: int
    start: np.ndarray  # validityStartMjdTai
    end: np.ndarray  # validityEndMjdTai, NaN while open
    n_dia_sources: np.ndarray
    flux_mean: dict[str, np.ndarray]  # band -> <band>_psfFluxMean per version, nJy (NaN: none)
    flux_mean_err: dict[str, np.ndarray]
    latest: float  # the catalog's latest processing time, MJD TAI

    @property
    def versions(self) -> int:
        return len(self.start)

    @property
    def deleted(self) -> bool:
        """The last version was closed without a successor."""
        return bool(np.isfinite(self.end[-1]))


def history_data(settings: Settings, dia_object_id: int) -> History:
    """Read every version of prompt DiaObject ``dia_object_id``.

    Raises
    ------
    PlotError
        The ID is not a prompt ID, or no DiaObject has it.
    """
    columns = [sql.Identifier(f"{b}_{c}") for b in BANDS for c in ("psffluxmean", "psffluxmeanerr")]
    query = sql.SQL(
        "SELECT validitystartmjdtai, validityendmjdtai, ndiasources, {} FROM prompt.diaobject "
        "WHERE diaobjectid = %s ORDER BY validitystartmjdtai"
    ).format(sql.SQL(", ").join(columns))
    with reading(settings) as conn:
        if catalog_of_id(conn, dia_object_id) != PROMPT:
            origin = origin_of(dia_object_id)
            raise PlotError(
                f"ID {dia_object_id} is from release dr{origin - 1}, not a prompt DiaObject: "
                "only prompt DiaObjects have versions"
            )
        rows = conn.execute(query, (dia_object_id,)).fetchall()
        latest = latest_processing_time(conn)
    if not rows:
        raise PlotError(f"DiaObject {dia_object_id} not found in the prompt catalog")
    data = np.array(rows, dtype=float)  # NULL -> NaN
    start, end = data[:, 0], data[:, 1]
    means = {b: data[:, 3 + 2 * i] for i, b in enumerate(BANDS)}
    errors = {b: data[:, 4 + 2 * i] for i, b in enumerate(BANDS)}
    last = np.nanmax(np.r_[start, end, latest if latest is not None else np.nan])
    log.info("history of DiaObject %d: %d versions", dia_object_id, len(rows))
    return History(dia_object_id, start, end, data[:, 2].astype(int), means, errors, float(last))


def draw_history(history: History, out: Path) -> Path:
    """Draw ``history`` (nDiaSources and per-band mean fluxes per version) and write it as PNG to ``out``."""
    fig = new_figure(9.5, 6.5)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1, 2])
    close = history.end[-1] if history.deleted else history.latest
    edges = np.r_[history.start, close]
    top.stairs(history.n_dia_sources, edges, baseline=None, color="0.2", linewidth=1.6)
    top.plot(history.start, history.n_dia_sources, "o", color="0.2", markersize=4, label="version start")
    top.set_ylabel("nDiaSources")
    top.set_ylim(0, max(int(history.n_dia_sources.max()), 1) * 1.15 + 0.5)
    top.yaxis.get_major_locator().set_params(integer=True)
    for band in BANDS:
        mean, err = history.flux_mean[band], history.flux_mean_err[band]
        if not np.isfinite(mean).any():
            continue
        colour = BAND_COLOURS[band]
        bottom.stairs(mean, edges, baseline=None, color=colour, linewidth=1.0, alpha=0.6)
        bottom.errorbar(
            history.start, mean, yerr=np.nan_to_num(err), fmt=BAND_MARKERS[band], color=colour,
            markersize=5, elinewidth=0.9, capsize=0, label=f"{band}_psfFluxMean",
        )  # fmt: skip
    bottom.axhline(0.0, color="0.75", linewidth=0.8, zorder=0)
    bottom.set_ylabel("weighted mean psfFlux (nJy)")
    bottom.set_xlabel("processing time (MJD TAI)")
    bottom.ticklabel_format(axis="x", useOffset=False, style="plain")
    if history.deleted:
        state, end_style = f"deleted at MJD {close:.4f} TAI", {"color": "crimson", "linestyle": "--"}
        end_label = "deleted: closed without\nsuccessor (daytime relink)"
    else:
        state, end_style = "current version open", {"color": "0.5", "linestyle": ":"}
        end_label = "latest processing\n(version still open)"
    top.axvline(close, linewidth=1.4, label=end_label, **end_style)
    bottom.axvline(close, linewidth=1.4, **end_style)
    for ax in (top, bottom):
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.grid(True, color="0.92")
    plural = "" if history.versions == 1 else "s"
    top.set_title(
        f"DiaObject {history.dia_object_id}\n{history.versions} version{plural}, {state}, prompt catalog"
    )
    return save_png(fig, out)


def plot_history(settings: Settings, dia_object_id: int, out: Path) -> Path:
    """Plot the versions of prompt DiaObject ``dia_object_id`` to the PNG file ``out``.

    See :func:`history_data`.

    Returns
    -------
    Path
        ``out``, written atomically; nothing is written when the ID cannot be plotted.
    """
    return draw_history(history_data(settings, dia_object_id), out)
