"""DiaObjectLast after DiaObject versions are loaded from files into a prompt catalog.

Prompt association reads the current DiaObjects from ``DiaObjectLast`` (one row per DiaObject,
docs/architecture.md decision 5), which the visit ingest keeps. DiaObject versions loaded with
``dpdb load`` (an APDB export in Rubin's ``apdb.yaml`` layout, for instance) must be visible to the
next visit's association too, so after such a load each loaded DiaObject's open version (no
``validityEndMjdTai``) becomes its DiaObjectLast row, unless that row already holds a later version.
Idempotent: a rerun over the same loads changes nothing.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

__all__ = ["refresh_last"]

_COLUMNS = (
    "diaobjectid",
    "validitystartmjdtai",
    "ra",
    "dec",
    "ndiasources",
    "firstdiasourcemjdtai",
    "lastdiasourcemjdtai",
)


def refresh_last(conn: psycopg.Connection, catalog: str, load_ids: list[int]) -> int:
    """Bring ``catalog``.DiaObjectLast up to the open versions loaded by ``load_ids``; rows written."""
    if not load_ids:
        return 0
    cols = sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
    updates = sql.SQL(", ").join(
        sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in (*_COLUMNS[1:], "healpix29")
    )
    query = sql.SQL(
        "INSERT INTO {last} AS l ({cols}, healpix29) "
        "SELECT DISTINCT ON (diaobjectid) {cols}, _healpix_29 FROM {obj} "
        "WHERE _load_id = ANY(%s) AND validityendmjdtai IS NULL "
        "ORDER BY diaobjectid, validitystartmjdtai DESC "
        "ON CONFLICT (diaobjectid) DO UPDATE SET {updates} "
        "WHERE excluded.validitystartmjdtai >= l.validitystartmjdtai"
    ).format(
        last=sql.Identifier(catalog, "diaobjectlast"),
        obj=sql.Identifier(catalog, "diaobject"),
        cols=cols,
        updates=updates,
    )
    with conn.transaction():
        return conn.execute(query, (load_ids,)).rowcount
