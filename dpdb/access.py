"""Access control: the roles of sql/access.sql, per-release loader rights, reader logins.

Readers (``dpdb_reader``) read current, previous, samples and prompt; loaders
(``dpdb_loader``) also load into the prompt catalog and into releases that are
not frozen yet; admins (``dpdb_admin``) run the lifecycle. Logins authenticate
with scram-sha-256 over TCP (the embedded server's pg_hba.conf).
"""

from __future__ import annotations

import logging
import re
import secrets

import psycopg
from psycopg import sql

from .config import Settings, get_settings
from .errors import DpdbError
from .keymap import ensure_keymaps
from .migrate import install_sql
from .pg import conninfo, fetch_value, raw_connect, server_for
from .registry.catalogs import all_catalogs

__all__ = [
    "READER_ROLE",
    "INSPECTOR_ROLE",
    "PUBLISHED_ROLE",
    "QUERY_LOGIN",
    "INSPECT_LOGIN",
    "grant_loader",
    "revoke_loader",
    "publish",
    "create_reader",
    "reader_limits",
    "apply_limits",
    "reader_logins",
    "check_budget",
    "secure",
]

log = logging.getLogger(__name__)

READER_ROLE = "dpdb_reader"
INSPECTOR_ROLE = "dpdb_inspector"
PUBLISHED_ROLE = "dpdb_published"
# The embedded server's two reader logins (dpdb/readers.py connects as them).
QUERY_LOGIN = "dpdb_query"
INSPECT_LOGIN = "dpdb_inspect"
_LOGIN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def grant_loader(conn: psycopg.Connection, schema: str, *, published: bool = False) -> None:
    """Let ``dpdb_loader`` load into release ``schema`` (while it is not frozen).

    ``published``: the release was activated before (a restore), so as-of queries read it again.
    """
    s = sql.Identifier(schema)
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO dpdb_loader, dpdb_admin").format(s))
    conn.execute(sql.SQL("GRANT SELECT, INSERT, DELETE ON ALL TABLES IN SCHEMA {} TO dpdb_loader").format(s))
    conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA {} TO dpdb_admin").format(s))
    # Plots and provenance read a release before it is activated (dpdb/readers.py).
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO dpdb_inspector").format(s))
    conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO dpdb_inspector").format(s))
    if published:
        publish(conn, schema)


def publish(conn: psycopg.Connection, schema: str) -> None:
    """Let user SQL (``dpdb_published``, e.g. login ``dpdb_query``) read release ``schema``: validated
    or activated, so as-of queries reach it; reader logins still see only current and previous."""
    s = sql.Identifier(schema)
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO dpdb_published").format(s))
    conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO dpdb_published").format(s))


def revoke_loader(conn: psycopg.Connection, schema: str) -> None:
    """Freeze release ``schema`` for loaders (validated, active and later releases); publish it."""
    conn.execute(
        sql.SQL("REVOKE INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} FROM dpdb_loader").format(
            sql.Identifier(schema)
        )
    )
    publish(conn, schema)


def create_reader(
    conn: psycopg.Connection, name: str, password: str | None = None, settings: Settings | None = None
) -> str:
    """Create login ``name`` in ``dpdb_reader`` with ``password`` (generated if None); return the password.

    The login gets the reader limits of ``settings`` (timeouts, temp file limit,
    connection limit; :func:`apply_limits`), and is refused when the
    readers' connection budget is spent. The password is sent to the server as a
    SCRAM verifier computed here, so its clear text is never in a statement the server could log.
    """
    if not _LOGIN.match(name) or name.startswith(("pg_", "dpdb_")):
        raise DpdbError(f"invalid login name {name!r} (lower-case letters, digits and _, not pg_* or dpdb_*)")
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
        raise DpdbError(f"role {name} already exists")
    settings = settings or get_settings()
    check_budget(conn, settings, adding=name)
    password = password if password is not None else secrets.token_urlsafe(18)
    if len(password) < 8:
        raise DpdbError("password too short (at least 8 characters)")
    verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256")
    conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
            sql.Identifier(name), sql.Literal(verifier.decode()), sql.Identifier(READER_ROLE)
        )
    )
    apply_limits(conn, name, settings)
    return password


# -- reader limits and the database's lock-down (superuser side) ------------------------------


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
    """(login, connection limit) of every reader login: a member of ``dpdb_reader`` that is not a loader
    (loaders and admins are readers too, through their roles, but get no reader limits)."""
    return [
        (r[0], int(r[1]))
        for r in conn.execute(
            "SELECT r.rolname, r.rolconnlimit FROM pg_roles r WHERE r.rolcanlogin AND NOT r.rolsuper "
            "AND to_regrole('dpdb_reader') IS NOT NULL AND pg_has_role(r.oid, 'dpdb_reader', 'MEMBER') "
            "AND NOT (to_regrole('dpdb_loader') IS NOT NULL AND pg_has_role(r.oid, 'dpdb_loader', 'MEMBER')) "
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
        with raw_connect(conninfo(settings)) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('dpdb.secure'))")
            if fetch_value(conn, "SELECT to_regclass('dpdb_meta.schema_version') IS NULL"):
                return  # no dpdb schema yet: migrate installs the roles, the next prepare comes back
            if fetch_value(
                conn,
                "SELECT to_regrole('dpdb_published') IS NULL OR to_regnamespace('dpdb_registry') IS NULL "
                "OR (to_regnamespace('tap_schema') IS NOT NULL "
                "AND NOT has_schema_privilege('dpdb_reader', 'tap_schema', 'USAGE'))",
            ):
                install_sql(conn)  # a database set up by older code: roles and views
            # catalogs made before key maps existed
            ensure_keymaps(conn, [(c.name, str(c.kind), c.schema_version) for c in all_catalogs(conn)])
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
    with raw_connect(conninfo(settings, "postgres")) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('dpdb.secure'))")
        for template in ("postgres", "template1"):
            if _public_can(conn, template):
                revoke = sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC")
                conn.execute(revoke.format(sql.Identifier(template)))
        for login, role in ((QUERY_LOGIN, PUBLISHED_ROLE), (INSPECT_LOGIN, INSPECTOR_ROLE)):
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(login)))
            if not fetch_value(conn, "SELECT pg_has_role(%s, %s, 'MEMBER')", (login, role)):
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(login)))
        for login, _ in reader_logins(conn):
            apply_limits(conn, login, settings)
        conn.commit()
