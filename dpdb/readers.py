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
from psycopg import sql

from .config import Settings
from .db import _raw_connect, adbc_connection_to, check_compatible, conninfo, prepare, server_for
from .errors import ConfigError, DpdbError
from .keymap import ensure_keymaps

__all__ = [
    "QUERY_LOGIN",
    "INSPECT_LOGIN",
    "READER_ROLE",
    "INSPECTOR_ROLE",
    "reader_conninfo",
    "reader_connect",
    "reader_adbc_connection",
    "secure",
    "apply_limits",
    "reader_limits",
]

log = logging.getLogger(__name__)

READER_ROLE = "dpdb_reader"
INSPECTOR_ROLE = "dpdb_inspector"
PUBLISHED_ROLE = "dpdb_published"
QUERY_LOGIN = "dpdb_query"
INSPECT_LOGIN = "dpdb_inspect"

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


@contextlib.contextmanager
def reader_connect(settings: Settings, *, inspect: bool = False) -> Iterator[psycopg.Connection]:
    """A psycopg connection as the read-only login, schema version checked, in read-only transactions."""
    prepare(settings)
    info = reader_conninfo(settings, inspect=inspect)
    with _raw_connect(info) as conn:
        _check_reader(conn, info)
        check_compatible(conn)
        conn.rollback()
        conn.read_only = True
        yield conn


@contextlib.contextmanager
def reader_adbc_connection(settings: Settings) -> Iterator[adbc.Connection]:
    """A pooled ADBC connection as the query login (see :func:`dpdb.db.adbc_connection_to`)."""
    prepare(settings)
    info = reader_conninfo(settings)
    if info not in _checked:
        with _raw_connect(info) as conn:
            _check_reader(conn, info)
    with adbc_connection_to(_adbc_uri(info)) as aconn:
        yield aconn


# -- set-up (superuser side) -----------------------------------------------------------------------


def reader_limits(settings: Settings) -> dict[str, str]:
    """The session settings every reader login gets (``ALTER ROLE ... SET``)."""
    return {
        "statement_timeout": f"{int(settings.reader_statement_timeout * 1000)}ms",
        "idle_in_transaction_session_timeout": f"{int(settings.reader_idle_timeout * 1000)}ms",
        "temp_file_limit": f"{int(settings.reader_temp_file_limit_mb) * 1024}kB"
        if settings.reader_temp_file_limit_mb >= 0
        else "-1",
        "client_connection_check_interval": f"{int(settings.reader_connection_check_interval * 1000)}ms",
    }


def apply_limits(conn: psycopg.Connection, login: str, settings: Settings) -> None:
    """Give ``login`` the reader limits (only what differs, so concurrent runs rarely touch the catalog)."""
    current = {}
    row = conn.execute(
        "SELECT s.setconfig, r.rolconnlimit FROM pg_roles r LEFT JOIN pg_db_role_setting s "
        "ON s.setrole = r.oid AND s.setdatabase = 0 WHERE r.rolname = %s",
        (login,),
    ).fetchone()
    if row is None:
        return
    for item in row[0] or []:
        key, _, value = item.partition("=")
        current[key] = value
    limits = reader_limits(settings)
    if login == QUERY_LOGIN:
        # dpdb's own pool keeps this login's ADBC connections between queries, and ADBC opens the next
        # transaction (BEGIN, no snapshot yet) at once; each query is one statement, rolled back.
        limits["idle_in_transaction_session_timeout"] = "0"
    for key, value in limits.items():
        if current.get(key) != value:
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    sql.Identifier(login), sql.Identifier(key), sql.Literal(value)
                )
            )
    if row[1] != settings.reader_login_connections:
        conn.execute(
            sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(
                sql.Identifier(login), sql.Literal(settings.reader_login_connections)
            )
        )


def reader_logins(conn: psycopg.Connection) -> list[tuple[str, int]]:
    """(login, connection limit) of every login that is a member of ``dpdb_reader``."""
    return [
        (r[0], int(r[1]))
        for r in conn.execute(
            "SELECT r.rolname, r.rolconnlimit FROM pg_roles r WHERE r.rolcanlogin AND NOT r.rolsuper "
            "AND to_regrole('dpdb_reader') IS NOT NULL AND pg_has_role(r.oid, 'dpdb_reader', 'MEMBER') "
            "ORDER BY 1"
        )
    ]


def check_budget(conn: psycopg.Connection, settings: Settings, adding: str | None = None) -> None:
    """Refuse a new reader login when the logins' connection limits would exceed the readers' budget.

    PostgreSQL limits connections per login, not per group role; keeping the sum
    of the reader logins' limits within ``reader_role_connections`` bounds what
    all readers together can take (the rest stays for loaders and the operator).
    """
    logins = [(name, limit) for name, limit in reader_logins(conn) if name != adding]
    per_login = settings.reader_login_connections
    used = sum(per_login if limit < 0 else limit for _, limit in logins)
    if adding is not None and used + per_login > settings.reader_role_connections:
        raise DpdbError(
            f"reader connection budget exhausted: {len(logins)} reader logins hold {used} of "
            f"{settings.reader_role_connections} connections (DPDB_READER_ROLE_CONNECTIONS); "
            f"a new login needs {per_login} (DPDB_READER_LOGIN_CONNECTIONS)"
        )


def _public_can(conn: psycopg.Connection, database: str) -> bool:
    """Whether PUBLIC holds any privilege on ``database`` (the default ACL gives it CONNECT and TEMP)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_database d, "
        "aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a WHERE d.datname = %s AND a.grantee = 0)",
        (database,),
    ).fetchone()
    return bool(row and row[0])


def _database_locked_down(conn: psycopg.Connection, database: str) -> bool:
    """No privilege for PUBLIC, CONNECT for readers and TEMPORARY for loaders already (nothing to do)."""
    if _public_can(conn, database):
        return False
    row = conn.execute(
        "SELECT has_database_privilege('dpdb_reader', %s, 'CONNECT') "
        "AND has_database_privilege('dpdb_loader', %s, 'TEMPORARY')",
        (database, database),
    ).fetchone()
    return bool(row and row[0])


def secure(settings: Settings) -> None:
    """Set up least privilege on the dpdb database (idempotent; called by :func:`dpdb.db.prepare`).

    On the embedded server also: the two reader logins, and no CONNECT for PUBLIC
    on ``postgres`` and ``template1``. With ``DPDB_DSN`` what the configured user
    may not do is skipped (logged).
    """
    embedded = server_for(settings) is not None
    try:
        with _raw_connect(conninfo(settings)) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('dpdb.secure'))")
            if conn.execute("SELECT to_regclass('dpdb_meta.schema_version') IS NULL").fetchone()[0]:  # type: ignore[index]
                return  # no dpdb schema yet: migrate installs the roles, the next prepare comes back
            if conn.execute(
                "SELECT to_regrole('dpdb_published') IS NULL OR to_regnamespace('dpdb_registry') IS NULL "
                "OR (to_regnamespace('tap_schema') IS NOT NULL "
                "AND NOT has_schema_privilege('dpdb_reader', 'tap_schema', 'USAGE'))"
            ).fetchone()[0]:  # type: ignore[index]
                from .migrate import install_sql  # a database set up by older code: roles and views

                install_sql(conn)
            ensure_keymaps(conn)  # catalogs made before key maps existed
            db = sql.Identifier(conn.info.dbname)
            if not _database_locked_down(conn, conn.info.dbname):
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
                conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO dpdb_reader").format(db))
                conn.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO dpdb_loader").format(db))
            conn.commit()
    except psycopg.errors.InsufficientPrivilege as e:
        log.info("not the owner of the database; database privileges left as they are (%s)", e)
        return
    if not embedded:
        return  # an operator's server: its logins and other databases are the operator's
    # Cluster-wide objects, serialized in database postgres (advisory locks are per database).
    with _raw_connect(conninfo(settings, "postgres")) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('dpdb.secure'))")
        for template in ("postgres", "template1"):
            if _public_can(conn, template):
                revoke = sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC")
                conn.execute(revoke.format(sql.Identifier(template)))
        for login, role in ((QUERY_LOGIN, PUBLISHED_ROLE), (INSPECT_LOGIN, INSPECTOR_ROLE)):
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(login)))
            if not conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (login, role)).fetchone()[0]:  # type: ignore[index]
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(login)))
        for login, _ in reader_logins(conn):
            apply_limits(conn, login, settings)
        conn.commit()
