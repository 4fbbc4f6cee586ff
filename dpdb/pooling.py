"""Kept connections: telling whether one is still usable before handing it out again."""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections.abc import Callable, Iterator

import psycopg

from .config import Settings

__all__ = ["alive", "KeptConnections"]

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


class KeptConnections:
    """Connections kept for reuse within this process, up to ``size`` per database.

    ``opened`` makes a new connection for ``settings``; ``finish`` ends what a user
    left open (commit or roll back) before the connection is kept again. One found
    dead (:func:`alive`) is replaced; one that fails to finish is closed.
    """

    def __init__(
        self,
        size: int,
        opened: Callable[[Settings], psycopg.Connection],
        finish: Callable[[psycopg.Connection], None],
    ) -> None:
        self._size, self._opened, self._finish = size, opened, finish
        self._kept: dict[str, list[tuple[psycopg.Connection, float]]] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def connection(self, settings: Settings) -> Iterator[psycopg.Connection]:
        """A kept connection for ``settings`` (or a new one), kept again afterwards."""
        key = f"{settings.home.absolute()}|{settings.dsn}|{settings.database}"
        with self._lock:
            idle = self._kept.setdefault(key, [])
            conn, since = idle.pop() if idle else (None, 0.0)
        if conn is not None and not alive(conn, since):  # ended by a restart or by an administrator
            conn.close()
            conn = None
        if conn is None or conn.closed:
            conn = self._opened(settings)
        try:
            yield conn
        finally:
            try:
                self._finish(conn)
                usable = not conn.closed
            except psycopg.Error:
                usable = False
            with self._lock:
                if usable and len(self._kept[key]) < self._size:
                    self._kept[key].append((conn, time.monotonic()))
                    conn = None
            if conn is not None:
                conn.close()
