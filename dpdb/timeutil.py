"""Instants as MJD in TAI: parsing user input and reading the clock with astropy.

See docs/architecture.md, "Conventions".
"""

from __future__ import annotations

import warnings

from astropy.time import Time
from erfa import ErfaWarning

from .errors import ValidationError

__all__ = ["now_mjd_tai", "parse_instant", "iso_utc"]


def now_mjd_tai() -> float:
    """The wall-clock time as MJD TAI (astropy applies the leap seconds)."""
    return float(Time.now().tai.mjd)


def parse_instant(text: str) -> float:
    """MJD TAI of ``text``: a number is an MJD in TAI; anything else an ISO 8601 time in UTC."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        with warnings.catch_warnings():  # "dubious year": leap seconds of the future are not known yet
            warnings.simplefilter("ignore", ErfaWarning)
            return float(Time(text, format="isot" if "T" in text else "iso", scale="utc").tai.mjd)
    except ValueError:
        raise ValidationError(
            f"invalid time {text!r}: give an MJD (TAI) or an ISO 8601 time in UTC, e.g. 2026-11-21T04:00:00"
        ) from None


def iso_utc(mjd_tai: float) -> str:
    """ISO 8601 UTC rendering of an MJD TAI, to the millisecond."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ErfaWarning)
        return str(Time(mjd_tai, format="mjd", scale="tai").utc.isot)
