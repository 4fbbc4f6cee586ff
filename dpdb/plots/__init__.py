"""Plots of the catalog as PNG files: light curves, sky density maps, DiaObject histories.

Each plot has a reader that queries the database (set-based, read-only) and
returns the numbers, a drawer that renders them with matplotlib's object API
(no pyplot) and writes the PNG atomically, and ``plot_*`` doing both.
matplotlib is imported only when drawing.
"""

from __future__ import annotations

from ._figure import PlotError
from .history import History, draw_history, history_data, plot_history
from .lightcurve import LightCurve, draw_lightcurve, lightcurve_data, plot_lightcurve
from .sky import SkyMap, draw_sky, plot_sky, sky_data

__all__ = [
    "PlotError",
    "LightCurve",
    "lightcurve_data",
    "draw_lightcurve",
    "plot_lightcurve",
    "SkyMap",
    "sky_data",
    "draw_sky",
    "plot_sky",
    "History",
    "history_data",
    "draw_history",
    "plot_history",
]
