"""Instants as users give them (MJD TAI, ISO time, ``now``, astropy Time, aware datetime) read as MJD TAI.

Kept apart from :mod:`dpdb.archive` so the services below the API (TAP, portal) read instants the
same way without importing the API module. astropy is imported when first used.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import TYPE_CHECKING, TypeAlias, overload

from .errors import ValidationError

if TYPE_CHECKING:
    from astropy.time import Time

__all__ = ["Instant", "to_mjd_tai"]

Instant: TypeAlias = "float | str | Time | _dt.datetime"  # noqa: F821 (Time: astropy, imported lazily)
"""An instant: MJD TAI (float), an ISO 8601 UTC string or an MJD string, ``"now"``,
an astropy :class:`~astropy.time.Time` or a timezone-aware :class:`datetime.datetime`."""


@overload
def to_mjd_tai(instant: None) -> None: ...
@overload
def to_mjd_tai(instant: Instant) -> float: ...
def to_mjd_tai(instant: Instant | None) -> float | None:
    """The MJD TAI of ``instant`` (``None`` stays ``None``: the present).

    Raises
    ------
    ValidationError
        The instant cannot be read or is not a finite time.
    """
    from astropy.time import Time

    from .timeutil import now_mjd_tai, parse_instant

    if instant is None:
        return None
    if isinstance(instant, Time):
        value = float(instant.tai.mjd)
    elif isinstance(instant, _dt.datetime):
        if instant.tzinfo is None:
            raise ValidationError(f"instant {instant.isoformat()} has no time zone; give one (e.g. UTC)")
        value = float(Time(instant.astimezone(_dt.UTC).replace(tzinfo=None), scale="utc").tai.mjd)
    elif isinstance(instant, str):
        value = now_mjd_tai() if instant.strip().lower() == "now" else parse_instant(instant.strip())
    elif isinstance(instant, int | float):
        value = float(instant)
    else:
        raise ValidationError(f"instant {instant!r}: give an MJD TAI, an ISO time, 'now' or an astropy Time")
    if not math.isfinite(value):
        raise ValidationError(f"instant {instant!r} is not a finite time")
    return value
