"""Least privilege for reading: user-written SQL, plots and provenance run as logins that can only read.

Two logins of the embedded server (docs/architecture.md, access control):

``dpdb_query``
    member of ``dpdb_published`` (a ``dpdb_reader``): what ``dpdb query``,
    :meth:`dpdb.Archive.query`, ``cone`` and the TAP service run user-written
    SQL as. It reads current, previous, samples and prompt (sql/access.sql),
    the releases that were validated or activated (as-of queries), and the
    registry through the read-only views of schema ``dpdb_registry``.
``dpdb_inspect``
    member of ``dpdb_inspector`` (a reader that may also read the loaded
    release schemas and the registry tables but the audit log): what plots and
    provenance read as, so an operator can inspect a release before it is
    activated. It runs only SQL written by dpdb.

Both connect over the private Unix socket (mode 0700). With ``DPDB_DSN`` the
operator gives ``DPDB_READER_DSN`` (a login made with ``dpdb db grant-reader``);
without it, ``DPDB_DSN`` itself is used only if its user cannot write.

Every reader login gets the limits of :class:`~dpdb.config.Settings` (statement
and idle-in-transaction timeouts, temp file limit, connection limit, client
connection checks) with ``ALTER ROLE``; PUBLIC loses CONNECT on ``postgres`` and
``template1`` and CONNECT/TEMPORARY on the dpdb database, so readers can neither
wander to other databases nor create temporary tables or functions (``pg_temp``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from urllib.parse import quote

import adbc_driver_postgresql.dbapi as adbc
import psycopg

from .access import INSPECT_LOGIN, QUERY_LOGIN
from .config import Settings
from .db import prepare
from .errors import ConfigError
from .pg import adbc_connection_to, check_compatible, raw_connect, server_for

__all__ = ["reader_conninfo", "open_reader", "reader_connect", "reader_adbc_connection", "read_snapshot"]

log = logging.getLogger(__name__)


# Rights that let a login write or leave the database: a reader login must have none of them.
_WRITERS = ("dpdb_loader", "pg_write_server_files", "pg_execute_server_program", "pg_read_server_files",
            "pg_write_all_data", "pg_signal_backend")  # fmt: skip


def reader_conninfo(settings: Settings, *, inspect: bool = False) -> str:
    """libpq connection string of the read-only login (``inspect``: the one plots and provenance use)."""
    if settings.reader_dsn:
        return settings.reader_dsn
    server = server_for(settings)
    if server is not None:
        return psycopg.conninfo.make_conninfo(
            server.conninfo(settings.database), user=INSPECT_LOGIN if inspect else QUERY_LOGIN
        )
    assert settings.dsn is not None
    return settings.dsn


def _adbc_uri(info: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(info)
    if info.startswith(("postgresql://", "postgres://")):
        return info
    query = "&".join(f"{k}={quote(str(v), safe='/')}" for k, v in params.items())
    return f"postgresql:///?{query}"


_checked: set[str] = set()


def _check_reader(conn: psycopg.Connection, info: str) -> None:
    """Refuse a login that could write: superuser, loader, or a holder of the server-file roles."""
    if info in _checked:
        return
    row = conn.execute(
        "SELECT current_user, r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolbypassrls, "
        "array(SELECT w FROM unnest(%s::text[]) w WHERE to_regrole(w) IS NOT NULL "
        "      AND pg_has_role(current_user, w, 'MEMBER')) "
        "FROM pg_roles r WHERE r.rolname = current_user",
        (list(_WRITERS),),
    ).fetchone()
    assert row is not None
    user, mighty, writes = row
    if mighty or writes:
        what = "is a superuser or may create roles/databases" if mighty else f"is a member of {writes[0]}"
        raise ConfigError(
            f"the reader login {user} {what}; user SQL never runs with write rights: set "
            "DPDB_READER_DSN to a login made with `dpdb db grant-reader NAME`"
        )
    _checked.add(info)


def open_reader(settings: Settings, *, inspect: bool = False) -> psycopg.Connection:
    """A new psycopg connection as the read-only login (``inspect``: the inspector's), checked,
    schema version checked, in read-only transactions; the caller closes it (or keeps it:
    the snapshots of dpdb/lookup.py)."""
    prepare(settings)
    info = reader_conninfo(settings, inspect=inspect)
    conn = raw_connect(info)
    try:
        _check_reader(conn, info)
        check_compatible(conn)
        conn.rollback()
        conn.read_only = True
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def reader_connect(settings: Settings, *, inspect: bool = False) -> Iterator[psycopg.Connection]:
    """A psycopg connection as the read-only login, schema version checked, in read-only transactions."""
    with open_reader(settings, inspect=inspect) as conn:
        yield conn


@contextlib.contextmanager
def reader_adbc_connection(settings: Settings) -> Iterator[adbc.Connection]:
    """A pooled ADBC connection as the query login, in autocommit mode: the caller opens its
    transaction (``BEGIN READ ONLY``), the pool rolls it back (see :func:`dpdb.pg.adbc_connection_to`);
    an idle pooled connection holds no transaction, so the login keeps its idle-in-transaction timeout."""
    prepare(settings)
    info = reader_conninfo(settings)
    if info not in _checked:
        with raw_connect(info) as conn:
            _check_reader(conn, info)
    with adbc_connection_to(_adbc_uri(info), autocommit=True) as aconn:
        yield aconn


@contextlib.contextmanager
def read_snapshot(settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection whose transactions are read-only snapshots (REPEATABLE READ): every read of one
    transaction sees the same committed state, and nothing can be written. Rolled back on exit.

    It connects as the read-only inspector login (plots, provenance, alerts: this module).
    """
    with reader_connect(settings, inspect=True) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        try:
            yield conn
        finally:
            conn.rollback()
