"""The audit log (``dpdb_meta.audit_log``): who did which lifecycle action, when, how it ended.

The entry of an :func:`audited` action is written on its own connection after
the action, so it is kept whether the action committed or rolled back.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from dpdb.config import Settings
from dpdb.errors import first_line
from dpdb.pg import conninfo

__all__ = ["Audit", "audited", "record"]

log = logging.getLogger(__name__)


@dataclass
class Audit:
    """Filled in by the action: what happened (the outcome when it succeeds)."""

    outcome: str = "ok"


@contextmanager
def audited(settings: Settings, action: str, **arguments: object) -> Iterator[Audit]:
    """Record ``action`` with its ``arguments``; the outcome is ``audit.outcome`` or the error.

    A lifecycle step on one release (``release.*`` with a ``name``) holds that
    release's lock (:func:`dpdb.locks.release_lock`): a concurrent step on it fails
    at once with ``busy: ... (pid N)``.
    """
    from dpdb.locks import release_lock

    audit = Audit()
    start = time.monotonic()
    name = arguments.get("name")
    failed = False
    try:
        with contextlib.ExitStack() as stack:
            if action.startswith("release.") and isinstance(name, str):
                stack.enter_context(release_lock(settings, name, action))
            yield audit
    except BaseException as e:
        failed = True
        audit.outcome = f"error: {first_line(e)}"
        raise
    finally:
        try:
            with psycopg.connect(conninfo(settings), autocommit=True) as conn:
                record(conn, action, arguments, audit.outcome, time.monotonic() - start)
        except psycopg.Error as e:  # never hide the action's own error behind the audit's
            # an action that failed for the same reason (server gone) has said so in its own error line
            level = logging.INFO if failed and isinstance(e, psycopg.OperationalError) else logging.WARNING
            log.log(level, "could not write the audit log entry of %s: %s", action, first_line(e))


AUDIT_COLUMNS = "at, who, action, arguments, outcome, duration_s"
"""The columns an entry is written with (``at`` the database's ``now()``, then :func:`entry_values`)."""


def entry_values(
    action: str, arguments: Mapping[str, object], outcome: str, seconds: float
) -> tuple[str, str, str, str, float]:
    """An entry's values after ``at``: the OS user (``who`` gets ``/`` and the database user appended
    in SQL), action, arguments as JSON, outcome, duration."""
    return getpass.getuser(), action, json.dumps(arguments, default=str), outcome, seconds


def record(
    conn: psycopg.Connection, action: str, arguments: Mapping[str, object], outcome: str, seconds: float
) -> None:
    """Write one audit-log entry (in the caller's transaction)."""
    conn.execute(
        f"INSERT INTO dpdb_meta.audit_log ({AUDIT_COLUMNS}) "  # noqa: S608 - our own column list
        "VALUES (now(), %s || '/' || current_user, %s, %s, %s, %s)",
        entry_values(action, arguments, outcome, seconds),
    )
