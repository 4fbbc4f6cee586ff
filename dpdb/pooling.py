"""Kept connections: telling whether one is still usable before handing it out again."""

from __future__ import annotations

import select
import time

import psycopg

__all__ = ["alive"]

_CHECK_AFTER = 30.0  # seconds idle after which a kept connection is also asked a question before use


def alive(conn: psycopg.Connection, since: float) -> bool:
    """Whether a kept connection is still usable. A session the server ended (a restart, a terminated
    backend) has left an error message or an end of file on the socket: readable while idle means
    dead, without a round trip. A connection idle for long is also asked ``SELECT 1``."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
        if readable or conn.closed:
            return False
        if time.monotonic() - since > _CHECK_AFTER:
            conn.execute("SELECT 1")
            conn.commit()
        return True
    except (psycopg.Error, OSError, ValueError):
        return False
