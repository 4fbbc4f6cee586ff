"""As-of instants (DPDD §2.5): repeatable answers only, ``now`` resolved once, out-of-range refused.

Every catalog change (visit, relink, release activation) gets an instant later
than every change committed before it: one timeline (docs/architecture.md,
decision 14). So an answer as of an instant up to the latest committed change
can never change; one as of a later instant can (a visit processed next may
fall before it). Such instants are refused,
unless asked for explicitly (``provisional``, or ``now``, which names the
present): then the answer is labelled *not yet repeatable*, with the resolved
instant, so nobody mistakes it for a citable one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .config import Settings
from .errors import ValidationError
from .timeutil import iso_utc, now_mjd_tai, parse_instant

__all__ = [
    "AsOf",
    "MJD_MIN",
    "MJD_MAX",
    "parse_as_of",
    "resolve_as_of",
    "as_of_against",
    "check_instant",
    "latest_processing_time",
]

MJD_MIN = 0.0
"""1858-11-17: nothing earlier is an instant a catalog can hold."""
MJD_MAX = 2_973_483.0
"""9999-12-31, the last instant ISO 8601 (and PostgreSQL's timestamp arithmetic here) can write."""


@dataclass(frozen=True)
class AsOf:
    """A resolved as-of instant: MJD TAI, whether the answer is final, and the catalog's latest time."""

    mjd_tai: float
    repeatable: bool
    latest: float | None
    now: bool = False

    @property
    def iso(self) -> str:
        return iso_utc(self.mjd_tai)

    def label(self) -> str:
        """One line for the user: the resolved instant and, when so, that the answer may still change."""
        text = f"as of {self.iso} UTC (MJD TAI {self.mjd_tai:.8f})"
        if not self.repeatable:
            held = f"{iso_utc(self.latest)} UTC" if self.latest is not None else "none yet"
            text += f": not yet repeatable (later than the latest processing time, {held})"
        return text

    def metadata(self) -> dict[str, str]:
        """What file outputs record (Parquet schema metadata, VOTable INFO)."""
        meta = {"dpdb.as_of_mjd_tai": repr(self.mjd_tai), "dpdb.as_of_utc": self.iso,
                "dpdb.as_of_repeatable": "true" if self.repeatable else "false",
                "dpdb.as_of_now": "true" if self.now else "false"}  # fmt: skip
        if self.latest is not None:
            meta["dpdb.latest_processing_mjd_tai"] = repr(self.latest)
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[bytes, bytes] | None) -> AsOf | None:
        """The instant recorded by :meth:`metadata` in a result's schema metadata (None if none)."""
        meta = meta or {}
        if b"dpdb.as_of_mjd_tai" not in meta:
            return None
        latest = meta.get(b"dpdb.latest_processing_mjd_tai")
        return cls(float(meta[b"dpdb.as_of_mjd_tai"]), meta[b"dpdb.as_of_repeatable"] == b"true",
                   float(latest) if latest else None, meta.get(b"dpdb.as_of_now") == b"true")  # fmt: skip


def parse_as_of(text: str | float) -> tuple[float, bool]:
    """(MJD TAI, is-now) of user input: ``now``, an MJD TAI or an ISO 8601 UTC time, within range."""
    is_now = isinstance(text, str) and text.strip().lower() == "now"
    value = now_mjd_tai() if is_now else (float(text) if not isinstance(text, str) else parse_instant(text))
    if not math.isfinite(value) or not MJD_MIN <= value <= MJD_MAX:
        raise ValidationError(
            f"as-of instant {text!r} out of range: give an MJD TAI between {MJD_MIN:.0f} and {MJD_MAX:.0f}, "
            "an ISO 8601 time in UTC (years 1858-9999) or 'now'"
        )
    return value, is_now


def latest_processing_time(conn: psycopg.Connection) -> float | None:
    """The latest committed change an as-of query can see, MJD TAI: a prompt visit ingest or relink, or a
    release activation (which moves ``current``/``previous``). Instants up to it give repeatable answers."""
    times: list[float] = []
    for view, column in (("prompt_latest", "latest_mjd_tai"), ("release_activation", "activated_mjd_tai")):
        if conn.execute("SELECT to_regclass(%s)", (f"dpdb_registry.{view}",)).fetchone() == (None,):
            continue
        row = conn.execute(
            sql.SQL("SELECT max({}) FROM {}").format(
                sql.Identifier(column), sql.Identifier("dpdb_registry", view)
            )
        ).fetchone()
        if row and row[0] is not None:
            times.append(float(row[0]))
    return max(times) if times else None  # None: tables filled by `dpdb load` only, no change has a time


def resolve_as_of(
    conn: psycopg.Connection, instant: float, *, provisional: bool = False, now: bool = False
) -> AsOf:
    """Check ``instant`` against the latest processing time; refuse a later one unless asked for.

    Raises
    ------
    ValidationError
        The instant is out of range, or later than the latest processing time
        without ``provisional`` (or ``now``).
    """
    return as_of_against(instant, latest_processing_time(conn), provisional=provisional, now=now)


def as_of_against(
    instant: float, latest: float | None, *, provisional: bool = False, now: bool = False
) -> AsOf:
    """:func:`resolve_as_of` with the latest processing time already read (``latest``)."""
    value, _ = parse_as_of(instant)
    repeatable = latest is None or value <= latest
    if latest is not None and not repeatable and not (provisional or now):
        raise ValidationError(
            f"as-of instant {iso_utc(value)} UTC (MJD TAI {value:.6f}) is later than the latest processing "
            f"time {iso_utc(latest)} UTC, so its answer could still change; give an earlier instant, "
            "'now', or --provisional to evaluate it anyway"
        )
    return AsOf(value, repeatable, latest, now)


def check_instant(settings: Settings, instant: str | float, *, provisional: bool = False) -> AsOf:
    """Parse and resolve a user's as-of instant against the database (as the read-only login)."""
    from .readers import reader_connect

    value, is_now = parse_as_of(instant)
    with reader_connect(settings) as conn:
        return resolve_as_of(conn, value, provisional=provisional, now=is_now)
