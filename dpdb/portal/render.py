"""Jinja2 templates of the portal and the filters they use to show values, units and instants."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from .._version import code_version
from ..ids import origin_of
from ..timeutil import iso_utc, iso_utc_many

__all__ = ["templates", "page", "show_value", "is_object_id", "mjd_iso", "isos"]

templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))

_OBJECT_KEYS = {"diaobjectid", "ssobjectid", "objectid", "parentobjectid"}


def show_value(value: Any) -> str:
    """A value as a cell shows it: NULL, floats to 7 significant digits, the rest as they are."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.7g}" if abs(value) < 1e15 else repr(value)
    return str(value)


def is_object_id(column: str, value: Any) -> bool:
    """The column holds the ID of an object with a page (a DiaObject, SSObject or Object)."""
    name = column.lower()
    keyed = name in _OBJECT_KEYS or (name.startswith("nearbyobj") and name[9:].isdigit())
    return keyed and isinstance(value, int) and value > 0 and origin_of(value) >= 1


def mjd_iso(mjd_tai: float | None) -> str:
    """ISO UTC (seconds) of an MJD TAI, or an empty string."""
    return "" if mjd_tai is None else iso_utc(mjd_tai)[:19]


def isos(mjds: list[float | None]) -> list[str]:
    """:func:`mjd_iso` of many instants in one call (astropy's set-up per value costs a millisecond)."""
    known = iter(iso_utc_many([m for m in mjds if m is not None]))
    return ["" if m is None else next(known)[:19] for m in mjds]


templates.env.filters["show"] = show_value
templates.env.filters["iso"] = mjd_iso
templates.env.globals["is_object_id"] = is_object_id
templates.env.globals["isos"] = isos
templates.env.globals["version"] = code_version()


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render template ``name`` for ``request``."""
    return templates.TemplateResponse(request, name, context, status_code=status_code)
