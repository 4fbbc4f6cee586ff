"""The TAP service's asynchronous jobs (``dpdb_meta.tap_job``, IVOA UWS 1.1): parameters, phase,
times and where the result file is. The service (:mod:`dpdb.tap.uws`) runs them; this module is
the only one that reads or writes their rows.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = ["TapJob", "insert_job", "get_job", "list_jobs", "update_job", "delete_job", "reap_jobs",
           "requeue_jobs"]  # fmt: skip

_COLUMNS = (
    "job_id, owner, phase, run_id, parameters, created_at, started_at, ended_at, destruction_at, "
    "execution_duration, result_path, result_type, result_rows, error"
)
_UPDATABLE = {
    "phase", "parameters", "started_at", "ended_at", "destruction_at", "execution_duration", "result_path",
    "result_type", "result_rows", "error",
}  # fmt: skip


@dataclass
class TapJob:
    """One row of ``dpdb_meta.tap_job``."""

    job_id: str
    owner: str | None
    phase: str
    run_id: str | None
    parameters: dict[str, str]
    created_at: dt.datetime
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    destruction_at: dt.datetime
    execution_duration: int
    result_path: str | None
    result_type: str | None
    result_rows: int | None
    error: str | None


def _job(row: tuple[Any, ...]) -> TapJob:
    values = list(row)
    values[4] = json.loads(values[4])
    return TapJob(*values)


def insert_job(
    conn: psycopg.Connection,
    job_id: str,
    owner: str | None,
    parameters: dict[str, str],
    destruction_at: dt.datetime,
    execution_duration: int,
) -> None:
    """A new job in phase PENDING."""
    conn.execute(
        "INSERT INTO dpdb_meta.tap_job (job_id, owner, phase, run_id, parameters, created_at, "
        "destruction_at, execution_duration) VALUES (%s, %s, 'PENDING', %s, %s, now(), %s, %s)",
        (job_id, owner, parameters.get("RUNID"), json.dumps(parameters), destruction_at, execution_duration),
    )


def get_job(conn: psycopg.Connection, job_id: str) -> TapJob | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM dpdb_meta.tap_job WHERE job_id = %s", (job_id,)).fetchone()
    return _job(row) if row else None


def list_jobs(
    conn: psycopg.Connection,
    phases: list[str] | None = None,
    after: dt.datetime | None = None,
    last: int | None = None,
) -> list[TapJob]:
    """Jobs in creation order (all but ARCHIVED unless ``phases`` says), created after ``after``;
    with ``last``, the most recent ``last`` ones, newest first (UWS 1.1 job list filters)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM dpdb_meta.tap_job "
        "WHERE (CASE WHEN %(phases)s::text[] IS NULL THEN phase <> 'ARCHIVED' "
        "ELSE phase = ANY(%(phases)s) END) AND (%(after)s::timestamptz IS NULL OR created_at > %(after)s) "
        "ORDER BY CASE WHEN %(last)s::int IS NULL THEN 0 ELSE -extract(epoch FROM created_at) END, "
        "created_at "
        "LIMIT %(last)s",
        {"phases": phases, "after": after, "last": last},
    ).fetchall()
    return [_job(r) for r in rows]


def update_job(conn: psycopg.Connection, job_id: str, **values: Any) -> None:
    """Set columns of a job (phase, times, result, error, parameters as a dict)."""
    unknown = set(values) - _UPDATABLE
    if unknown:
        raise ValueError(f"not a job column: {', '.join(sorted(unknown))}")
    if "parameters" in values and isinstance(values["parameters"], dict):
        values["parameters"] = json.dumps(values["parameters"])
    assignments = psycopg.sql.SQL(", ").join(
        psycopg.sql.SQL("{} = %s").format(psycopg.sql.Identifier(k)) for k in values
    )
    conn.execute(
        psycopg.sql.SQL("UPDATE dpdb_meta.tap_job SET {} WHERE job_id = %s").format(assignments),
        [*values.values(), job_id],
    )


def delete_job(conn: psycopg.Connection, job_id: str) -> None:
    conn.execute("DELETE FROM dpdb_meta.tap_job WHERE job_id = %s", (job_id,))


def reap_jobs(conn: psycopg.Connection) -> list[str]:
    """Delete the jobs past their destruction time; their ids."""
    rows = conn.execute("DELETE FROM dpdb_meta.tap_job WHERE destruction_at <= now() RETURNING job_id")
    return [r[0] for r in rows.fetchall()]


def requeue_jobs(conn: psycopg.Connection) -> list[str]:
    """After a restart: jobs left QUEUED or EXECUTING go back to QUEUED; their ids, oldest first."""
    rows = conn.execute(
        "UPDATE dpdb_meta.tap_job SET phase = 'QUEUED', started_at = NULL "
        "WHERE phase IN ('QUEUED', 'EXECUTING') RETURNING job_id, created_at"
    ).fetchall()
    return [r[0] for r in sorted(rows, key=lambda r: r[1])]
