"""One writer at a time, and processing time only moving forward, for every change to the prompt catalog."""

from __future__ import annotations

import adbc_driver_postgresql.dbapi as adbc

from dpdb.errors import ValidationError
from dpdb.sqlfiles import named_blocks
from dpdb.timeutil import iso_utc

__all__ = ["LOCK", "check_time_order"]

LOCK = "dpdb.prompt.ingest"
"""Transaction advisory lock (hashtext) held by visit ingests and relinks."""


def check_time_order(cur: adbc.Cursor, t: float, what: str) -> None:
    """Refuse a processing time ``t`` not later than every one the prompt catalog holds."""
    cur.execute(named_blocks("prompt_ingest.sql")["latest_time"])
    held = cur.fetchall()[0][0]
    if held is not None and t <= held:
        raise ValidationError(
            f"{what}: processing time {iso_utc(t)} is not later than {iso_utc(held)}, "
            "which the prompt catalog already holds"
        )
