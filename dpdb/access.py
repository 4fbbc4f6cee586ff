"""Access control: the roles of sql/access.sql, per-release loader rights, reader logins.

Readers (``dpdb_reader``) read current, previous, samples and prompt; loaders
(``dpdb_loader``) also load into the prompt catalog and into releases that are
not frozen yet; admins (``dpdb_admin``) run the lifecycle. Logins authenticate
with scram-sha-256 over TCP (the embedded server's pg_hba.conf).
"""

from __future__ import annotations

import re
import secrets

import psycopg
from psycopg import sql

from .config import Settings, get_settings
from .errors import DpdbError

__all__ = ["grant_loader", "revoke_loader", "publish", "create_reader", "READER_ROLE"]

READER_ROLE = "dpdb_reader"
_LOGIN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def grant_loader(conn: psycopg.Connection, schema: str) -> None:
    """Let ``dpdb_loader`` load into release ``schema`` (while it is not frozen)."""
    s = sql.Identifier(schema)
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO dpdb_loader, dpdb_admin").format(s))
    conn.execute(sql.SQL("GRANT SELECT, INSERT, DELETE ON ALL TABLES IN SCHEMA {} TO dpdb_loader").format(s))
    conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA {} TO dpdb_admin").format(s))
    # Plots and provenance read a release before it is activated (dpdb/readers.py).
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO dpdb_inspector").format(s))
    conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO dpdb_inspector").format(s))
    from .registry.releases import find_release

    found = find_release(conn, schema)
    if found is not None and found.activated_at is not None:  # restored: as-of queries read it again
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
    connection limit; :func:`dpdb.readers.apply_limits`), and is refused when the
    readers' connection budget is spent. The password is sent to the server as a
    SCRAM verifier computed here, so its clear text is never in a statement the server could log.
    """
    if not _LOGIN.match(name) or name.startswith(("pg_", "dpdb_")):
        raise DpdbError(f"invalid login name {name!r} (lower-case letters, digits and _, not pg_* or dpdb_*)")
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
        raise DpdbError(f"role {name} already exists")
    from .readers import apply_limits, check_budget

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
