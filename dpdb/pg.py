"""PostgreSQL connections below dpdb's bootstrap: where the server is (embedded or ``DPDB_DSN``),
connection strings, plain and pooled ADBC connections, starting the server and the version check.

:mod:`dpdb.db` builds on this module (it prepares the database: migration, least privilege); the
modules that bootstrap runs (migration, access control, audit, locks) use only this one
(docs/architecture.md, "Layout").
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias
from urllib.parse import quote

import adbc_driver_manager
import adbc_driver_manager.dbapi
import adbc_driver_postgresql.dbapi as adbc
import psycopg
from psycopg import sql
from psycopg.abc import Params

from dpdb.model.felis import latest_version

from ._version import code_version
from .config import Settings
from .errors import ServerError, VersionMismatchError, first_line
from .registry.versions import database_version
from .server import DEBIAN_PACKAGES, SUPERUSER, EmbeddedServer

__all__ = [
    "REQUIRED_EXTENSIONS",
    "missing_extensions",
    "server_for",
    "conninfo",
    "adbc_uri",
    "adbc_connection",
    "warm_adbc",
    "close_idle_adbc",
    "adbc_connection_to",
    "raw_connect",
    "ensure_server",
    "check_compatible",
    "Query",
    "fetch_row",
    "fetch_value",
]

log = logging.getLogger(__name__)

Query: TypeAlias = str | bytes | sql.SQL | sql.Composed
"""What psycopg executes: SQL text (bytes: a multi-statement script) or a composed statement."""

REQUIRED_EXTENSIONS = ("q3c", "pg_sphere")


def server_for(settings: Settings) -> EmbeddedServer | None:
    """The embedded server of these settings, or None when a DSN is configured."""
    if not settings.embedded():
        return None
    return EmbeddedServer(settings.home, settings.pg_bindir, wal_archive=settings.wal_archive)


def conninfo(settings: Settings, dbname: str | None = None) -> str:
    """libpq connection string of the dpdb database (or of ``dbname`` on the same server)."""
    server = server_for(settings)
    if server is not None:
        return server.conninfo(dbname or settings.database)
    assert settings.dsn is not None
    if dbname is None:
        return settings.dsn
    return psycopg.conninfo.make_conninfo(settings.dsn, dbname=dbname)


def adbc_uri(settings: Settings) -> str:
    """libpq URI of the database for ADBC (the bulk Arrow path)."""
    server = server_for(settings)
    if server is not None:
        return (
            f"postgresql://{SUPERUSER}@localhost:{server.port}/{settings.database}?host={server.socket_dir}"
        )
    assert settings.dsn is not None
    if settings.dsn.startswith(("postgresql://", "postgres://")):
        return settings.dsn
    params = psycopg.conninfo.conninfo_to_dict(settings.dsn)
    query = "&".join(f"{k}={quote(str(v), safe='/')}" for k, v in params.items())
    return f"postgresql:///?{query}"

_adbc_lock = threading.Lock()

_adbc_idle: dict[tuple[str, bool], list[adbc.Connection]] = {}

_adbc_databases: dict[str, Any] = {}
"""Per URI, the ADBC database (it holds the driver's type catalog) that every connection to the URI
shares (:func:`_open_adbc`)."""

_adbc_db_locks: dict[str, threading.Lock] = {}


@contextmanager
def adbc_connection(settings: Settings) -> Iterator[adbc.Connection]:
    """An ADBC connection as the owner (not autocommit), kept for reuse within this process
    (:func:`adbc_connection_to`)."""
    with adbc_connection_to(adbc_uri(settings)) as conn:
        yield conn


def warm_adbc(settings: Settings) -> threading.Thread:
    """Read the driver's type catalog for the owner's URI in a thread now (a load calls this first,
    so the read overlaps its checksum verification and set-up), unless this process has it."""
    uri = adbc_uri(settings)
    thread = threading.Thread(target=_warm, args=(uri,), name="dpdb-adbc-warm", daemon=True)
    thread.start()
    return thread


def _warm(uri: str) -> None:
    with contextlib.suppress(Exception):  # the load that needs the connection reports the error
        _shared_database(uri)


def _shared_database(uri: str) -> Any:
    """The process's ADBC database of ``uri`` (adbc_driver_manager's shared-database holder), opened
    once; None when the installed adbc_driver_manager does not have the layout this expects."""
    with _adbc_lock:
        lock = _adbc_db_locks.setdefault(uri, threading.Lock())
    with lock:  # one thread reads the type catalog; the others wait for it instead of reading it too
        with _adbc_lock:
            if uri in _adbc_databases:
                return _adbc_databases[uri]
        first = adbc.connect(uri, autocommit=True)
        holder = getattr(first, "_db", None)
        shared = holder.clone() if holder is not None and hasattr(holder, "_db") else None
        first.close()  # the session; the database stays open while ``shared`` holds it
        with _adbc_lock:
            _adbc_databases[uri] = shared
        return shared


def _open_adbc(uri: str, autocommit: bool) -> adbc.Connection:
    """A new ADBC connection to ``uri`` sharing the process's ADBC database of that URI.

    The PostgreSQL driver reads the server's whole type catalog (every pg_type row and all of
    pg_attribute: over a second once a few releases' partitions exist) when it opens a database,
    not a connection. ``adbc.connect`` opens both each time; a connection on the kept database
    takes milliseconds, so a process pays for the catalog once per URI.
    """
    shared = _shared_database(uri)
    if shared is None:
        return adbc.connect(uri, autocommit=autocommit)
    conn = adbc_driver_manager.AdbcConnection(shared._db)
    try:
        return adbc_driver_manager.dbapi.Connection(shared, conn, autocommit=autocommit)
    except BaseException:
        conn.close()
        raise


@contextmanager
def adbc_connection_to(uri: str, *, autocommit: bool = False) -> Iterator[adbc.Connection]:
    """An ADBC connection to ``uri``, kept for reuse within this process.

    Its type catalog is read once per process and URI (:func:`_open_adbc`), and connections go
    back to an idle list; one whose clean-up fails is closed instead.

    Not autocommit (the default): ADBC opens the next transaction as soon as one ends, so an
    idle connection sits "idle in transaction". ``autocommit``: the caller opens its own
    transaction (``BEGIN``) and the pool ends it with ``ROLLBACK``, so the idle connection holds
    no transaction and a server-side idle-in-transaction timeout never ends it.
    """
    key = (uri, autocommit)
    with _adbc_lock:
        idle = _adbc_idle.setdefault(key, [])
        conn = idle.pop() if idle else None
    if conn is None:
        conn = _open_adbc(uri, autocommit)
    try:
        yield conn
    finally:
        try:
            if autocommit:
                with conn.cursor() as cur:
                    cur.execute("ROLLBACK")  # a WARNING, not an error, when no transaction is open
            else:
                conn.rollback()
        except adbc_driver_manager.Error:
            with contextlib.suppress(adbc_driver_manager.Error):
                conn.close()
        else:
            with _adbc_lock:
                _adbc_idle.setdefault(key, []).append(conn)


def close_idle_adbc(uri: str | None = None) -> None:
    """Close this process's idle pooled ADBC connections and kept ADBC databases (of ``uri``, or
    all): before copying or dropping a database, whose types the kept catalog would describe."""
    with _adbc_lock:
        keys = [k for k in _adbc_idle if uri is None or k[0] == uri]
        conns = [c for k in keys for c in _adbc_idle.pop(k, [])]
        shared = [_adbc_databases.pop(u) for u in list(_adbc_databases) if uri is None or u == uri]
    for conn in conns:
        with contextlib.suppress(adbc_driver_manager.Error):
            conn.close()
    for db in shared:  # closes when no connection shares it any more
        if db is not None:
            with contextlib.suppress(adbc_driver_manager.Error):
                db.close()

atexit.register(close_idle_adbc)
def raw_connect(info: str, *, autocommit: bool = False) -> psycopg.Connection:
    try:
        return psycopg.connect(info, connect_timeout=10, autocommit=autocommit)
    except psycopg.OperationalError as e:
        raise ServerError(f"cannot connect to PostgreSQL ({_redact(info)}): {first_line(e)}") from e


def _redact(info: str) -> str:
    """A conninfo without its password, for error messages."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(info)
    except psycopg.ProgrammingError:
        return "invalid DSN"
    params.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in params.items())


def ensure_server(settings: Settings) -> None:
    """Start the embedded server if needed; create the database and the extensions."""
    server = server_for(settings)
    if server is not None:
        server.up()
        _ensure_database(settings)
    with raw_connect(conninfo(settings), autocommit=True) as conn:
        _ensure_extensions(conn)


def _ensure_database(settings: Settings) -> None:
    with raw_connect(conninfo(settings, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (settings.database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(settings.database)))


def missing_extensions(conn: psycopg.Connection) -> list[str]:
    """The required extensions that the server of ``conn`` does not have installed."""
    available = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM pg_available_extensions WHERE name = ANY(%s)", (list(REQUIRED_EXTENSIONS),)
        )
    }
    return [e for e in REQUIRED_EXTENSIONS if e not in available]


def _ensure_extensions(conn: psycopg.Connection) -> None:
    missing = missing_extensions(conn)
    if missing:
        raise ServerError(
            f"PostgreSQL extension(s) {', '.join(missing)} not installed on the server; "
            f"install the Debian packages: apt-get install {DEBIAN_PACKAGES}"
        )
    for ext in REQUIRED_EXTENSIONS:
        try:
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext)))
        except psycopg.Error as e:
            raise ServerError(f"cannot create extension {ext}: {first_line(e)}") from e


def check_compatible(conn: psycopg.Connection) -> int:
    """Refuse to work on a database this code cannot read or write; return its version."""
    version = database_version(conn)
    newest = latest_version()
    if version is None:
        raise VersionMismatchError("database has no dpdb schema; run `dpdb db up` (or `dpdb db migrate`)")
    if version > newest:
        raise VersionMismatchError(
            f"database schema version {version} is newer than this dpdb {code_version()} "
            f"(knows up to {newest}); upgrade dpdb"
        )
    if version < newest:
        raise VersionMismatchError(
            f"database schema version {version} is older than this dpdb's {newest}; run `dpdb db migrate`"
        )
    return version


def fetch_row(conn: psycopg.Connection, query: Query, params: Params | None = None) -> tuple[Any, ...]:
    """The one row of a query that always returns one (an aggregate, ``now()``, ``EXISTS``)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise RuntimeError(f"query returned no row: {query!r}")
    return tuple(row)


def fetch_value(conn: psycopg.Connection, query: Query, params: Params | None = None) -> Any:
    """The first value of the one row of a query that always returns one."""
    return fetch_row(conn, query, params)[0]
