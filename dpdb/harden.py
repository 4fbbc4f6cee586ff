"""Server hardening check: what least privilege needs from the PostgreSQL server, and what is missing.

On the embedded server ``dpdb db up`` does all of it (:func:`dpdb.readers.secure`). On an
operator's server (``DPDB_DSN``) dpdb does only what the configured login may and never
touches other databases or logins on its own; ``dpdb db harden`` lists every requirement with
its state and the SQL that fixes it, and ``--apply`` runs that SQL where this login has the
right (the rest is for the server's superuser; docs/architecture.md, access control).

The requirements (each one a :class:`Check`):

- PUBLIC may not connect to ``postgres`` and ``template1``, and holds no privilege on the
  dpdb database (CONNECT for ``dpdb_reader``, TEMPORARY for ``dpdb_loader`` only), nor CREATE on
  its schema ``public``;
- user SQL has a reader login (``DPDB_READER_DSN`` with ``DPDB_DSN``) that is no superuser, may
  not create roles or databases, bypasses no row security and holds no writing or server-file role;
- every reader login has the reader limits of the settings (statement and idle-in-transaction
  timeouts, temp file limit, client connection checks: ``ALTER ROLE ... SET``) and a connection
  limit, and their limits add up to at most the readers' budget;
- readers may use no foreign-data wrapper (``postgres_fdw``, ``dblink``) and no untrusted
  ``dblink`` connection function;
- the server stores passwords as SCRAM verifiers (``password_encryption``).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from .access import INSPECT_LOGIN, QUERY_LOGIN, READER_ROLE, reader_limits, reader_logins
from .config import Settings
from .db import prepare
from .errors import ConfigError, DpdbError
from .pg import conninfo, fetch_value, raw_connect, server_for
from .readers import _WRITERS, reader_conninfo

__all__ = ["Check", "check", "harden"]


@dataclass
class Check:
    """One requirement: its name, whether the server meets it, what is wrong, the SQL that fixes it."""

    name: str
    ok: bool
    detail: str = ""
    fix: list[str] | None = None  # statements, run by --apply (None: nothing dpdb can run)
    applied: bool = False
    needs: str = ""  # why --apply could not fix it (e.g. not a superuser)


def _q(conn: psycopg.Connection, composed: sql.Composable) -> str:
    return composed.as_string(conn)


def _public_privileges(conn: psycopg.Connection, database: str) -> list[str]:
    rows = conn.execute(
        "SELECT a.privilege_type FROM pg_database d, "
        "aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a "
        "WHERE d.datname = %s AND a.grantee = 0 ORDER BY 1",
        (database,),
    ).fetchall()
    return [r[0] for r in rows]


def _databases(conn: psycopg.Connection, dpdb_db: str) -> list[Check]:
    out = []
    for other in ("postgres", "template1"):
        if other == dpdb_db:
            continue
        public = _public_privileges(conn, other)
        ok = "CONNECT" not in public
        out.append(Check(
            f"no CONNECT for PUBLIC on database {other}", ok,
            "" if ok else f"PUBLIC may connect to {other}: readers can wander to it",
            None if ok else [_q(conn, sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(other)))],
        ))  # fmt: skip
    public = _public_privileges(conn, dpdb_db)
    db = sql.Identifier(dpdb_db)
    ok = not public and bool(
        fetch_value(conn, "SELECT has_database_privilege(%s, %s, 'CONNECT')", (READER_ROLE, dpdb_db))
    )
    out.append(Check(
        f"only dpdb roles may connect to database {dpdb_db}", ok,
        "" if ok else f"PUBLIC holds {', '.join(public) or 'nothing'} on {dpdb_db}; "
        "dpdb_reader needs CONNECT (and only loaders TEMPORARY: no temporary objects for readers)",
        None if ok else [_q(conn, s.format(db)) for s in (
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC"),
            sql.SQL("GRANT CONNECT ON DATABASE {} TO dpdb_reader"),
            sql.SQL("GRANT TEMPORARY ON DATABASE {} TO dpdb_loader"),
        )],
    ))  # fmt: skip
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace n, "
        "aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a "
        "WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE')"
    ).fetchone()
    ok = not (row and row[0])
    out.append(Check(
        "no CREATE for PUBLIC on schema public", ok,
        "" if ok else "PUBLIC may create objects in schema public of the dpdb database",
        None if ok else ["REVOKE CREATE ON SCHEMA public FROM PUBLIC"],
    ))  # fmt: skip
    return out


def _reader_login(settings: Settings) -> Check:
    name = "user SQL runs as a login that can only read"
    if server_for(settings) is None and not settings.reader_dsn:
        return Check(name, False, "DPDB_READER_DSN is not set: with DPDB_DSN, user SQL needs a reader login; "
                     "make one with `dpdb db grant-reader NAME` and set DPDB_READER_DSN to it")  # fmt: skip
    info = reader_conninfo(settings)
    try:
        with raw_connect(info) as conn:
            row = conn.execute(
                "SELECT current_user, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls, "
                "pg_has_role(current_user, %s, 'MEMBER'), "
                "array(SELECT w FROM unnest(%s::text[]) w WHERE to_regrole(w) IS NOT NULL "
                "      AND pg_has_role(current_user, w, 'MEMBER')) "
                "FROM pg_roles r WHERE r.rolname = current_user",
                (READER_ROLE, list(_WRITERS)),
            ).fetchone()
    except DpdbError as e:
        return Check(name, False, f"the reader login cannot connect: {e}")
    assert row is not None
    user, superuser, createrole, createdb, bypassrls, reader, writers = row
    wrong = [w for w, bad in (("a superuser", superuser), ("may create roles", createrole),
                              ("may create databases", createdb), ("bypasses row security", bypassrls))
             if bad] + [f"a member of {w}" for w in writers]  # fmt: skip
    if not reader:
        wrong.append(f"not a member of {READER_ROLE}")
    if wrong:
        return Check(name, False, f"the reader login {user} is {', '.join(wrong)}; set DPDB_READER_DSN to a "
                     "login made with `dpdb db grant-reader NAME`")  # fmt: skip
    return Check(name, True, f"login {user}")


def _limits(conn: psycopg.Connection, settings: Settings) -> list[Check]:
    want = reader_limits(settings)
    out = []
    logins = reader_logins(conn)
    if server_for(settings) is not None:  # dpdb's own logins exist on the embedded server
        for own in (QUERY_LOGIN, INSPECT_LOGIN):
            if own not in [name for name, _ in logins]:
                out.append(Check(f"login {own} exists", False, "run `dpdb db up`"))
    for login, limit in logins:
        row = conn.execute(
            "SELECT s.setconfig FROM pg_roles r LEFT JOIN pg_db_role_setting s "
            "ON s.setrole = r.oid AND s.setdatabase = 0 WHERE r.rolname = %s",
            (login,),
        ).fetchone()
        current: dict[str, str] = {}
        for item in row[0] if row and row[0] else []:
            key, _, value = item.partition("=")
            current[key] = value
        wrong = {k: v for k, v in want.items() if current.get(k) != v}
        fix = [
            _q(conn, sql.SQL("ALTER ROLE {} SET {} = {}").format(
                sql.Identifier(login), sql.Identifier(k), sql.Literal(v)))
            for k, v in wrong.items()
        ]  # fmt: skip
        detail = [f"{k} is {current.get(k, 'the server default')}, not {v}" for k, v in wrong.items()]
        per_login = settings.reader_login_connections
        if limit < 0 or limit > per_login:
            detail.append(f"connection limit {'none' if limit < 0 else limit}, not {per_login}")
            fix.append(_q(conn, sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(
                sql.Identifier(login), sql.Literal(per_login))))  # fmt: skip
        name = f"reader login {login} has the reader limits"
        out.append(Check(name, not fix, "; ".join(detail), fix or None))
    used = sum(settings.reader_login_connections if limit < 0 else limit for _, limit in logins)
    budget = settings.reader_role_connections
    ok = used <= budget
    out.append(Check(
        "reader logins' connection limits within the readers' budget", ok,
        f"{len(logins)} reader logins may hold {used} connections (budget {budget}, "
        "DPDB_READER_ROLE_CONNECTIONS)" + ("" if ok else ": drop logins or lower their CONNECTION LIMIT"),
    ))  # fmt: skip
    return out


def _foreign(conn: psycopg.Connection) -> list[Check]:
    out = []
    usable = [r[0] for r in conn.execute(
        "SELECT fdwname FROM pg_foreign_data_wrapper "
        "WHERE has_foreign_data_wrapper_privilege(%s, oid, 'USAGE')",
        (READER_ROLE,),
    )] + [r[0] for r in conn.execute(
        "SELECT srvname FROM pg_foreign_server WHERE has_server_privilege(%s, oid, 'USAGE')", (READER_ROLE,)
    )]  # fmt: skip
    out.append(Check(
        "readers may use no foreign-data wrapper or foreign server", not usable,
        "" if not usable else f"dpdb_reader may use {', '.join(usable)} (a way out of the database)",
        None if not usable else [
            _q(conn, sql.SQL("REVOKE USAGE ON FOREIGN {} {} FROM PUBLIC, dpdb_reader").format(
                sql.SQL("DATA WRAPPER" if kind == "w" else "SERVER"), sql.Identifier(name)))
            for kind, name in conn.execute(
                "SELECT 'w', fdwname FROM pg_foreign_data_wrapper "
                "WHERE has_foreign_data_wrapper_privilege(%(r)s, oid, 'USAGE') UNION ALL "
                "SELECT 's', srvname FROM pg_foreign_server WHERE has_server_privilege(%(r)s, oid, 'USAGE')",
                {"r": READER_ROLE},
            )
        ],
    ))  # fmt: skip
    dblink = [r[0] for r in conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.proname IN "
        "('dblink_connect_u', 'dblink_exec', 'dblink_connect', 'dblink') "
        "AND has_function_privilege(%s, p.oid, 'EXECUTE')",
        (READER_ROLE,),
    )]  # fmt: skip
    out.append(Check(
        "readers may not call dblink", not dblink,
        "" if not dblink else f"dpdb_reader may execute {', '.join(dblink)}",
        None if not dblink else [f"REVOKE EXECUTE ON FUNCTION {f} FROM PUBLIC" for f in dblink],
    ))  # fmt: skip
    return out


def _server(conn: psycopg.Connection) -> list[Check]:
    value = fetch_value(conn, "SELECT current_setting('password_encryption')")
    ok = value == "scram-sha-256"
    return [Check(
        "passwords stored as SCRAM verifiers", ok, "" if ok else f"password_encryption is {value}",
        None if ok else ["ALTER SYSTEM SET password_encryption = 'scram-sha-256'", "SELECT pg_reload_conf()"],
    )]  # fmt: skip


def check(settings: Settings) -> list[Check]:
    """Every hardening requirement and whether the server meets it (changes nothing)."""
    prepare(settings)
    with raw_connect(conninfo(settings), autocommit=True) as conn:
        if fetch_value(conn, "SELECT to_regrole(%s) IS NULL", (READER_ROLE,)):
            raise ConfigError(f"no role {READER_ROLE} on this server: run `dpdb db up` first")
        checks = _databases(conn, conn.info.dbname)
        checks.append(_reader_login(settings))
        checks += _limits(conn, settings)
        checks += _foreign(conn)
        checks += _server(conn)
    return checks


def harden(settings: Settings) -> list[Check]:
    """Run the fix of every unmet requirement that this login may run; return the checks, marked.

    A statement refused for want of a right (e.g. ``REVOKE CONNECT ON DATABASE postgres`` by a
    login that does not own it) leaves its check unmet with ``needs`` saying so: the server's
    superuser runs it (``dpdb db harden`` prints the SQL).
    """
    checks = check(settings)
    with raw_connect(conninfo(settings), autocommit=True) as conn:
        for c in checks:
            if c.ok or not c.fix:
                continue
            try:  # one statement at a time (ALTER SYSTEM runs outside transactions); each is idempotent
                for statement in c.fix:
                    conn.execute(statement.encode())
            except psycopg.Error as e:  # e.g. not the owner of database postgres, not a superuser
                c.needs = (e.diag.message_primary or str(e)).splitlines()[0]
            else:
                c.applied = True
    after = {c.name: c for c in check(settings)}
    for c in checks:
        if c.applied:
            c.ok = after[c.name].ok if c.name in after else True
            if not c.ok:  # GRANT/REVOKE by a login without the grant option only warn
                c.applied = False
                c.needs = "this login may not: the server changed nothing"
    return checks
