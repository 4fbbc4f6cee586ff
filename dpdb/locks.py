"""One writer at a time: a folder being produced, a demo home, a release in a lifecycle step.

A second invocation does not wait and does not interleave: it fails at once
with one line, ``busy: <what> (pid N)``, naming the process that holds the lock.

* Folders and homes: an ``fcntl`` lock on a ``.dpdb.lock`` file that holds the
  holder's pid. The kernel releases it when the holder dies (even by SIGKILL),
  so a stale file never blocks anyone.
* Releases: a session advisory lock in the database (so it also works when
  several machines share a ``DPDB_DSN`` server), taken on a connection whose
  ``application_name`` carries the holder's pid; the server releases it when
  that connection ends, including when the holder is killed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg

from .config import Settings
from .errors import ConfigError, DpdbError
from .pg import conninfo, ensure_server, raw_connect

__all__ = ["BusyError", "LOCK_FILE", "folder_lock", "release_lock"]

LOCK_FILE = ".dpdb.lock"


class BusyError(DpdbError):
    """Another dpdb process holds the lock of the folder, home or release."""


_held: set[Path] = set()


@contextlib.contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold ``folder``'s lock for the block; :class:`BusyError` at once if another process holds it.

    Reentrant within a process (the demo holds its home's lock around its steps and its report).
    """
    folder = Path(folder).absolute()
    if folder in _held:  # this process holds it already (an outer step): reentrant
        yield
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(f"{folder}: cannot use as a folder: {e.strerror or e}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise BusyError(f"busy: {what} is in progress in another process (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held.add(folder)
        try:
            yield
        finally:
            _held.discard(folder)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


_APP = "dpdb {action} pid={pid}"


@contextlib.contextmanager
def release_lock(settings: Settings, name: str, action: str) -> Iterator[None]:
    """Hold release ``name``'s lifecycle lock for the block (one lifecycle step per release at a time)."""
    key = f"dpdb.release {name}"
    ensure_server(settings)  # server and database only: locks sit below the bootstrap (dpdb/pg.py)
    app = _APP.format(action=action, pid=os.getpid())[:63]
    info = psycopg.conninfo.make_conninfo(conninfo(settings), application_name=app)
    conn = raw_connect(info, autocommit=True)
    try:
        got = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()
        if not got or not got[0]:
            raise BusyError(f"busy: release {name}: {_holder(conn, key)}")
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
    finally:
        conn.close()


def _holder(conn: psycopg.Connection, key: str) -> str:
    """``<action> in progress (pid N)`` of the session holding ``key``'s advisory lock."""
    row = conn.execute(
        "SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND (l.classid::bigint << 32 | l.objid::bigint) = hashtextextended(%s, 0) LIMIT 1",
        (key,),
    ).fetchone()
    if row is None:
        return "another lifecycle step is in progress (pid unknown)"
    app, backend = row
    found = re.match(r"dpdb (\S+) pid=(\d+)", app or "")
    if found:
        return f"{found.group(1)} in progress in another process (pid {found.group(2)})"
    return f"locked by server process {backend} (pid {backend})"
