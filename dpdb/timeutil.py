"""Instants as MJD in TAI: parsing user input and reading the clock with astropy.

See docs/architecture.md, "Conventions".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import erfa
import numpy as np
from astropy.time import Time
from erfa import ErfaWarning

from .errors import ValidationError

__all__ = ["now_mjd_tai", "parse_instant", "iso_utc", "iso_utc_many"]


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
    return iso_utc_many([mjd_tai])[0]


def iso_utc_many(mjds_tai: Sequence[float] | np.ndarray) -> list[str]:
    """:func:`iso_utc` of many instants at once: what ``Time(mjd, format="mjd", scale="tai").utc.isot``
    gives, computed with the same ERFA calls (leap seconds applied) without astropy's per-call set-up,
    which costs about a millisecond (a page lists dozens of instants)."""
    from astropy.time.utils import day_frac

    mjd = np.asarray(mjds_tai, dtype=float)
    jd1, jd2 = day_frac(mjd, 0.0)
    jd1, jd2 = day_frac(jd1 + erfa.DJM0, jd2)  # as astropy's TimeMJD keeps it: two doubles, exactly
    with warnings.catch_warnings():  # "dubious year": leap seconds of the future are not known yet
        warnings.simplefilter("ignore", ErfaWarning)
        utc1, utc2 = erfa.taiutc(jd1, jd2)
        years, months, days, hmsf = erfa.d2dtf(b"UTC", 3, utc1, utc2)
    return [
        f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{f:03d}"
        for y, mo, d, (h, mi, s, f) in zip(
            years.ravel().tolist(), months.ravel().tolist(), days.ravel().tolist(),
            hmsf.ravel().tolist(), strict=True,
        )
    ]  # fmt: skip
