"""TAI - UTC (``dpdb_meta.leap_second``), which the as-of SQL (sql/as_of.sql) reads to turn UTC
instants into MJD TAI inside the database."""

from __future__ import annotations

from datetime import UTC, datetime

import erfa
import psycopg

__all__ = ["store_leap_seconds"]


def store_leap_seconds(conn: psycopg.Connection) -> None:
    """TAI - UTC since 1972 (integral leap seconds) from ERFA's table, which astropy keeps current."""
    rows = [
        (datetime(int(year), int(month), 1, tzinfo=UTC), float(offset))
        for year, month, offset in erfa.leap_seconds.get()
        if year >= 1972
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO dpdb_meta.leap_second (utc_from, tai_minus_utc) VALUES (%s, %s) "
            "ON CONFLICT (utc_from) DO UPDATE SET tai_minus_utc = excluded.tai_minus_utc",
            rows,
        )
