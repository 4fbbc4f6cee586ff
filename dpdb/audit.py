"""The audit log (``dpdb_meta.audit_log``): who did which lifecycle action, when, how it ended.

The entry is written on its own connection after the action, so it is kept
whether the action committed or rolled back.
"""

from __future__ import annotations

import getpass
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from .config import Settings
from .db import conninfo

__all__ = ["Audit", "audited"]

log = logging.getLogger(__name__)


@dataclass
class Audit:
    """Filled in by the action: what happened (the outcome when it succeeds)."""

    outcome: str = "ok"


@contextmanager
def audited(settings: Settings, action: str, **arguments: object) -> Iterator[Audit]:
    """Record ``action`` with its ``arguments``; the outcome is ``audit.outcome`` or the error."""
    audit = Audit()
    start = time.monotonic()
    try:
        yield audit
    except BaseException as e:
        audit.outcome = f"error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        raise
    finally:
        _write(settings, action, arguments, audit.outcome, time.monotonic() - start)


def _write(
    settings: Settings, action: str, arguments: dict[str, object], outcome: str, seconds: float
) -> None:
    try:
        with psycopg.connect(conninfo(settings), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO dpdb_meta.audit_log (at, who, action, arguments, outcome, duration_s) "
                "VALUES (now(), %s || '/' || current_user, %s, %s, %s, %s)",
                (getpass.getuser(), action, json.dumps(arguments, default=str), outcome, seconds),
            )
    except psycopg.Error as e:  # never hide the action's own error behind the audit's
        log.warning("could not write the audit log entry of %s: %s", action, e)
