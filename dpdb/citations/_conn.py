"""Kept connections for citing and resolving: the bookkeeping of a citation costs a few index probes,
not a connection set-up (a new session, its version check and cold catalog caches cost more than a
small query; benchmarks/README.md, bench_cite.py)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import psycopg

from dpdb.config import Settings
from dpdb.db import connect
from dpdb.pooling import alive

__all__ = ["owner_connection", "close_kept"]

_KEPT: dict[str, list[tuple[psycopg.Connection, float]]] = {}
_LOCK = threading.Lock()
_KEEP = 4


def _key(settings: Settings) -> str:
    return f"{settings.home.absolute()}|{settings.dsn}|{settings.database}"


@contextlib.contextmanager
def owner_connection(settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection as the database owner (it writes the registry), kept for reuse in this process.

    The caller commits what it wrote; whatever is still open on exit is rolled back.
    """
    key = _key(settings)
    with _LOCK:
        idle = _KEPT.setdefault(key, [])
        conn, since = idle.pop() if idle else (None, 0.0)
    if conn is not None and not alive(conn, since):  # ended by a restart or by an administrator
        conn.close()
        conn = None
    if conn is None or conn.closed:
        conn = connect(settings)  # checks the schema version once per connection
        conn.commit()
    try:
        yield conn
    finally:
        try:
            conn.rollback()
            usable = not conn.closed
        except psycopg.Error:
            usable = False
        with _LOCK:
            if usable and len(_KEPT[key]) < _KEEP:
                _KEPT[key].append((conn, time.monotonic()))
                conn = None
        if conn is not None:
            conn.close()


def close_kept() -> None:
    """Close the kept connections (before a database is dropped or copied)."""
    with _LOCK:
        conns = [c for kept in _KEPT.values() for c, _ in kept]
        _KEPT.clear()
    for conn in conns:
        with contextlib.suppress(psycopg.Error):
            conn.close()
