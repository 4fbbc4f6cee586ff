"""The prompt catalog's log (``dpdb_meta.prompt_visit``, ``dpdb_meta.prompt_relink``): which visits
were ingested and which daytime linkages applied, at which processing time.

The rows are written by the ingest and relink SQL itself (sql/prompt_ingest.sql,
sql/prompt_relink.sql, in the same transaction as the catalog change); the
readers are here. Functions named ``*_in`` take the ADBC cursor of an ingest
transaction, the others a psycopg connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import psycopg
from psycopg.rows import dict_row

__all__ = [
    "WRITER_LOCK",
    "writers_lock_shared_statement",
    "ingested_visits",
    "last_visit",
    "latest_processing_time",
    "queue_latest_processing_time",
    "visit_totals",
    "relink_count",
    "newest_visit",
    "processing_time_before_visit",
    "made_by",
    "visit_ingested_in",
    "relink_applied_in",
    "latest_midpoint_in",
]


def ingested_visits(conn: psycopg.Connection) -> set[int]:
    """Every visit ingested into the prompt catalog."""
    return {int(r[0]) for r in conn.execute("SELECT visit FROM dpdb_meta.prompt_visit")}


def last_visit(conn: psycopg.Connection) -> int | None:
    """The highest visit ingested, if any."""
    row = conn.execute("SELECT max(visit) FROM dpdb_meta.prompt_visit").fetchone()
    return int(row[0]) if row and row[0] is not None else None


LATEST_TIME_SQL = (  # the latest committed change: one timeline (docs/architecture.md, decision 14)
    "SELECT greatest((SELECT max(processing_time_mjd_tai) FROM dpdb_meta.prompt_visit), "
    "(SELECT max(processing_time_mjd_tai) FROM dpdb_meta.prompt_relink), "
    "(SELECT max(activated_mjd_tai) FROM dpdb_meta.release_activation))"
)
"""MJD TAI of the latest change an as-of answer can see: a visit ingest, a daytime relink or a release
activation. Every change is later than it (dpdb/prompt/order.py, dpdb/lifecycle/activate.py), so an
answer as of an instant up to it never changes."""


WRITER_LOCK = "dpdb.prompt.ingest"
"""Transaction advisory lock (``hashtext``) every prompt catalog change holds (dpdb/prompt/order.py)."""


def writers_lock_shared_statement(conn: psycopg.Connection) -> None:
    """Queue, in the caller's pipeline and transaction, :data:`WRITER_LOCK` taken shared until the
    transaction ends (a write in progress is waited for, none starts before the caller commits); the
    caller's next statement (a new snapshot) sees every write committed before."""
    conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext(%s))", (WRITER_LOCK,))


def latest_processing_time(conn: psycopg.Connection) -> float | None:
    """The latest committed change (:data:`LATEST_TIME_SQL`: visit ingest, daytime relink or release
    activation), MJD TAI; None before the first."""
    return queue_latest_processing_time(conn)()


def queue_latest_processing_time(conn: psycopg.Connection) -> Callable[[], float | None]:
    """:func:`latest_processing_time` queued in the caller's pipeline: the returned function gives it
    once the pipeline has synced."""
    cur = conn.execute(LATEST_TIME_SQL)

    def result() -> float | None:
        row = cur.fetchone()
        return float(row[0]) if row and row[0] is not None else None

    return result


def visit_totals(conn: psycopg.Connection) -> dict[str, int]:
    """Visits ingested and the DiaSources and forced measurements they added (exact, without a scan)."""
    row = conn.execute(
        "SELECT count(*), coalesce(sum(n_diasources), 0), coalesce(sum(n_forced), 0) "
        "FROM dpdb_meta.prompt_visit"
    ).fetchone()
    assert row is not None
    return {"visits": int(row[0]), "dia_sources": int(row[1]), "forced": int(row[2])}


def relink_count(conn: psycopg.Connection) -> int:
    """Daytime linkages applied."""
    row = conn.execute("SELECT count(*) FROM dpdb_meta.prompt_relink").fetchone()
    return int(row[0]) if row else 0


def newest_visit(conn: psycopg.Connection) -> dict[str, Any] | None:
    """The log entry of the visit processed last (its figures and timings), None before the first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT visit, midpoint_mjd_tai, processing_time_mjd_tai, ingested_at, n_diasources, "
            "n_associated, n_new_diaobjects, n_ss_attributed, n_forced, seconds "
            "FROM dpdb_meta.prompt_visit ORDER BY processing_time_mjd_tai DESC LIMIT 1"
        ).fetchone()


def processing_time_before_visit(conn: psycopg.Connection, visit: int) -> float | None:
    """The processing time of the last visit ingested with a number below ``visit``, MJD TAI."""
    row = conn.execute(
        "SELECT max(processing_time_mjd_tai) FROM dpdb_meta.prompt_visit WHERE visit < %s", (visit,)
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else None


def made_by(conn: psycopg.Connection, times: list[float], *, relinks_only: bool = False) -> dict[float, str]:
    """What ran at each processing time of ``times``: ``visit N`` or ``relink PATH`` (a visit first)."""
    if not times:
        return {}
    visit = (
        "NULL"
        if relinks_only
        else ("'visit ' || (SELECT min(visit) FROM dpdb_meta.prompt_visit WHERE processing_time_mjd_tai = t)")
    )
    rows = conn.execute(
        f"SELECT t, coalesce({visit}, 'relink ' || (SELECT min(path) FROM dpdb_meta.prompt_relink "
        "WHERE processing_time_mjd_tai = t)) FROM unnest(%s::float8[]) AS t",
        (list(times),),
    ).fetchall()
    return {float(t): what for t, what in rows if what is not None}


def visit_ingested_in(cur: adbc.Cursor, visit: int) -> bool:
    """Whether ``visit`` is already in the prompt catalog (in the cursor's transaction)."""
    cur.execute("SELECT 1 FROM dpdb_meta.prompt_visit WHERE visit = $1", parameters=(visit,))
    return bool(cur.fetchall())


def relink_applied_in(cur: adbc.Cursor, sha256: str) -> bool:
    """Whether the linkage whose SSSource file has this SHA-256 was already applied."""
    cur.execute("SELECT 1 FROM dpdb_meta.prompt_relink WHERE sha256 = $1", parameters=(sha256,))
    return bool(cur.fetchall())


def latest_midpoint_in(cur: adbc.Cursor) -> float | None:
    """The latest visit midpoint ingested, MJD TAI."""
    cur.execute("SELECT max(midpoint_mjd_tai) FROM dpdb_meta.prompt_visit")
    rows = cur.fetchall()
    return float(rows[0][0]) if rows and rows[0][0] is not None else None
