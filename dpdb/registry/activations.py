"""Which release ``current`` and ``previous`` name (``dpdb_meta.release_activation``), now or at a
past instant: the one place that turns those aliases into a release."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from astropy.time import Time
from psycopg.rows import dict_row

from dpdb.errors import ReleaseStateError

from .catalogs import find_catalog
from .states import ReleaseState

__all__ = [
    "ALIASES",
    "active_release",
    "previous_release",
    "resolve_alias",
    "record_activation",
    "activation_floor",
    "activation_history",
    "by_last_activation",
    "named_now",
]

ALIASES = ("current", "previous")
"""The stable schema names users read: views on the active and the penultimate release."""


def active_release(conn: psycopg.Connection) -> str | None:
    """Name of the active data release (the one ``current`` points at), if any."""
    row = conn.execute("SELECT name FROM dpdb_meta.release WHERE state = %s", (str(ReleaseState.ACTIVE),))
    found = row.fetchone()
    return found[0] if found else None


def previous_release(conn: psycopg.Connection) -> str | None:
    """Name of the penultimate release (the one ``previous`` points at), if any."""
    return _named(conn)[1]


def named_now(conn: psycopg.Connection) -> tuple[str | None, str | None]:
    """(current, previous) now, from the activation history alone (what a reader login may read)."""
    return _named(conn)


def _named(conn: psycopg.Connection, as_of: float | None = None) -> tuple[str | None, str | None]:
    """(current, previous) as the last activation (up to MJD TAI ``as_of``) left them."""
    row = conn.execute(
        "SELECT name, previous FROM dpdb_meta.release_activation "
        "WHERE %(t)s::float8 IS NULL OR activated_mjd_tai <= %(t)s ORDER BY activation_id DESC LIMIT 1",
        {"t": as_of},
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def resolve_alias(conn: psycopg.Connection, alias: str, as_of: float | None = None) -> str:
    """The release ``alias`` (``current`` or ``previous``) names now, or named at MJD TAI ``as_of``.

    Raises
    ------
    ReleaseStateError
        No release is (was) ``alias``, or, at a past instant, that release is no longer loaded.
    """
    if alias not in ALIASES:
        raise ValueError(f"not a release alias: {alias!r}")
    if as_of is None:
        name = active_release(conn) if alias == "current" else previous_release(conn)
        if name is None:
            raise ReleaseStateError(f"no release is {alias} (activate one with `dpdb release activate NAME`)")
        return name
    found = _named(conn, as_of)[ALIASES.index(alias)]
    if found is None:
        raise ReleaseStateError(f"no release was {alias} at MJD {as_of} (TAI)")
    if find_catalog(conn, found) is None:
        raise ReleaseStateError(
            f"release {found}, {alias} at MJD {as_of}, is not loaded; "
            f"restore it with `dpdb release restore {found}`"
        )
    return str(found)


def record_activation(
    conn: psycopg.Connection, name: str, previous: str | None, mjd_tai: float, *, forced: bool
) -> datetime:
    """Record that ``name`` became current (and ``previous`` previous) at MJD TAI ``mjd_tai``; the
    instant as a UTC datetime (what ``dpdb_meta.release.activated_at`` records too)."""
    at: datetime = Time(mjd_tai, format="mjd", scale="tai").utc.to_datetime(timezone=UTC)
    conn.execute(
        "INSERT INTO dpdb_meta.release_activation (name, previous, activated_at, activated_mjd_tai, forced) "
        "VALUES (%s, %s, %s, %s, %s)",
        (name, previous, at, mjd_tai, forced),
    )
    return at


def activation_floor(conn: psycopg.Connection) -> tuple[float | None, float | None]:
    """(the latest committed change, the latest instant any citation is pinned to), MJD TAI: an
    activation must come after both, or an answer already given as of an earlier instant would change."""
    from .prompt_log import LATEST_TIME_SQL

    latest = conn.execute(LATEST_TIME_SQL).fetchone()
    cited = conn.execute("SELECT max(as_of_mjd_tai) FROM dpdb_meta.citation").fetchone()
    return (
        float(latest[0]) if latest and latest[0] is not None else None,
        float(cited[0]) if cited and cited[0] is not None else None,
    )


def activation_history(
    conn: psycopg.Connection, name: str
) -> tuple[tuple[str, ...], tuple[dict[str, Any], ...]]:
    """(aliases naming release ``name`` now, the activations that made it current or previous:
    ``at``, ``made`` (the alias), ``other`` (the release in the other alias), ``forced``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT activated_at AS at, "
            "CASE WHEN name = %(n)s THEN 'current' ELSE 'previous' END AS made, "
            "CASE WHEN name = %(n)s THEN previous ELSE name END AS other, forced "
            "FROM dpdb_meta.release_activation WHERE name = %(n)s OR previous = %(n)s ORDER BY activation_id",
            {"n": name},
        ).fetchall()
    roles = tuple(alias for alias, who in zip(ALIASES, _named(conn), strict=True) if who == name)
    return roles, tuple(rows)


def by_last_activation(conn: psycopg.Connection) -> list[str]:
    """The active and superseded releases, most recently activated first (what retention keeps)."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT name FROM dpdb_meta.release WHERE state = ANY(%s) "
            "ORDER BY activated_at DESC NULLS LAST, name",
            ([str(ReleaseState.ACTIVE), str(ReleaseState.SUPERSEDED)],),
        )
    ]
