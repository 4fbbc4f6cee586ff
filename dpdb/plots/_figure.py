"""What the plots share: their error, band colours and markers, a figure without pyplot, atomic PNG output.

matplotlib is imported inside the functions: importing it is slow, and the CLI
imports this package to register its commands.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from dpdb._version import code_version
from dpdb.atomic import atomic_file
from dpdb.errors import PlotError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["BANDS", "BAND_COLOURS", "BAND_MARKERS", "PlotError", "band_order", "new_figure", "save_png"]

BANDS = ("u", "g", "r", "i", "z", "y")

BAND_COLOURS = {
    "u": "#1600ea",
    "g": "#31de1f",
    "r": "#b52626",
    "i": "#370201",
    "z": "#ba52ff",
    "y": "#61a2b3",
}
"""Rubin's colour-blind-friendly band palette for a white background (RTN-045)."""

BAND_MARKERS = {"u": "o", "g": "^", "r": "v", "i": "s", "z": "D", "y": "p"}
"""One marker shape per band, so bands stay apart without colour."""

OTHER_COLOUR = "0.45"
"""Colour of a band outside ugrizy."""


def band_order(bands: Iterable[str]) -> list[str]:
    """The distinct bands of ``bands``, ugrizy first, then any others sorted."""
    present = {str(b) for b in bands}
    return [b for b in BANDS if b in present] + sorted(present - set(BANDS))


def new_figure(width: float = 9.0, height: float = 5.5, dpi: int = 110) -> Figure:
    """A matplotlib figure on its own Agg canvas (no pyplot, no global state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, out: Path) -> Path:
    """Write ``fig`` as PNG to ``out`` atomically: the file appears complete, or not at all.

    Parameters
    ----------
    fig
        The figure to render.
    out
        Destination; missing parent directories are created. The image is
        rendered into a temporary file in the same directory, then renamed.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    PlotError
        The file cannot be written (the temporary file is removed).
    """
    out = Path(out)
    try:
        with atomic_file(out) as f:
            fig.savefig(f, format="png", metadata={"Software": f"dpdb {code_version()}"})
    except OSError as e:
        raise PlotError(f"cannot write {out}: {e.strerror or e}") from e
    return out
