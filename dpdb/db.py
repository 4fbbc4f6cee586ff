"""Connections to a prepared dpdb database: bootstrap (server, schema, least privilege) on first use
and the version check. The primitives below bootstrap are in :mod:`dpdb.pg`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg import sql

from . import storage
from .access import secure
from .config import Settings
from .errors import ServerError
from .migrate import migrate
from .pg import (
    REQUIRED_EXTENSIONS,
    check_compatible,
    close_idle_adbc,
    conninfo,
    ensure_server,
    raw_connect,
    server_for,
)
from .registry.catalogs import all_catalogs
from .registry.versions import database_version

__all__ = ["prepare", "reset_database", "connect", "DatabaseInfo", "describe"]

log = logging.getLogger(__name__)


_prepared: set[str] = set()


def prepare(settings: Settings) -> None:
    """Make the database usable: server, database, extensions and, on an empty
    database, the newest schema. Idempotent; cheap after the first call in a process.
    """
    key = _prepared_key(settings)
    if key in _prepared:
        return
    ensure_server(settings)
    with raw_connect(conninfo(settings), autocommit=True) as conn:
        empty = database_version(conn) is None
    if empty:
        migrate(settings)
    with raw_connect(conninfo(settings), autocommit=True) as conn:
        storage.apply(conn)  # the prompt tables' autovacuum parameters; older databases get them too
    secure(settings)
    _prepared.add(key)


def _prepared_key(settings: Settings) -> str:
    return f"{settings.home.absolute()}|{settings.dsn}|{settings.database}"


def reset_database(settings: Settings) -> None:
    """Drop the embedded server's dpdb database (sessions on it are ended); ``prepare`` makes it anew."""
    server = server_for(settings)
    if server is None:
        raise ServerError("only the embedded server's database can be reset; DPDB_DSN is set")
    server.up()
    close_idle_adbc()  # the owner's and the readers' pooled connections
    with raw_connect(conninfo(settings, "postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(settings.database))
        )
    _prepared.discard(_prepared_key(settings))


def connect(settings: Settings, *, check: bool = True, autocommit: bool = False) -> psycopg.Connection:
    """A connection to the dpdb database, started and set up on demand.

    With ``check`` (the default) the database's schema version must be the one
    this code knows, so old code never writes into a newer layout.
    """
    prepare(settings)
    conn = raw_connect(conninfo(settings), autocommit=autocommit)
    if check:
        try:
            check_compatible(conn)
        except Exception:
            conn.close()
            raise
    return conn


@dataclass(frozen=True)
class DatabaseInfo:
    """What ``dpdb db status`` prints about the database."""

    server_version: str
    extensions: dict[str, str]
    schema_version: int | None
    catalogs: list[tuple[str, str, int]]


def describe(conn: psycopg.Connection) -> DatabaseInfo:
    """Server version, extensions, schema version and catalogs of the database."""
    row = conn.execute("SHOW server_version").fetchone()
    server_version = str(row[0]) if row else "?"
    extensions: dict[str, str] = dict(
        conn.execute(
            "SELECT extname, extversion FROM pg_extension WHERE extname = ANY(%s) ORDER BY 1",
            (list(REQUIRED_EXTENSIONS),),
        ).fetchall()
    )
    version = database_version(conn)
    catalogs: list[tuple[str, str, int]] = []
    if version is not None:
        catalogs = [(c.name, str(c.kind), c.schema_version) for c in all_catalogs(conn)]
    return DatabaseInfo(server_version, extensions, version, catalogs)
