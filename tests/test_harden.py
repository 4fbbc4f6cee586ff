"""`dpdb db harden`: the server requirements of least privilege, checked and (where allowed) applied.

The embedded server meets them after `dpdb db up`. With `DPDB_DSN` dpdb leaves cluster-wide
objects alone; the check names each unmet requirement with its SQL, `--apply` runs what the
configured login may, and a login without the rights gets the SQL for the server's superuser.
"""

from __future__ import annotations

import os
import uuid

import psycopg
from click.testing import CliRunner
from psycopg.conninfo import make_conninfo

import dpdb
from dpdb.access import QUERY_LOGIN, apply_limits
from dpdb.cli import cli
from dpdb.config import Settings
from dpdb.pg import conninfo
from dpdb.readers import reader_conninfo


def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["db", "harden", *args], env=env)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def test_embedded_server_is_hardened_by_db_up(settings: Settings) -> None:
    env = {"DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database}
    code, out = _run(env)
    assert code == 0, out
    assert "all requirements met" in out and "MISSING" not in out
    names = [c.name for c in dpdb.Archive(settings=settings).harden()]
    assert "no CONNECT for PUBLIC on database postgres" in names
    assert f"reader login {QUERY_LOGIN} has the reader limits" in names


def test_external_server_missing_hardening_is_reported_and_applied(settings: Settings) -> None:
    """DPDB_DSN as a superuser: each weakened requirement is reported with its SQL, --apply fixes it."""
    loose = f"loose_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(conninfo(settings), autocommit=True)
    try:
        admin.execute("GRANT CONNECT ON DATABASE template1 TO PUBLIC")
        admin.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {settings.database} TO PUBLIC")
        admin.execute(f"ALTER ROLE {QUERY_LOGIN} RESET idle_in_transaction_session_timeout")
        admin.execute(f'CREATE ROLE "{loose}" LOGIN IN ROLE dpdb_reader')  # no limits at all
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("DPDB_")},
               "DPDB_DSN": conninfo(settings), "DPDB_READER_DSN": reader_conninfo(settings)}  # fmt: skip
        code, out = _run(env)
        assert code == 1, out
        for line in (
            "MISSING  no CONNECT for PUBLIC on database template1",
            'REVOKE CONNECT ON DATABASE "template1" FROM PUBLIC;',
            f"MISSING  reader login {QUERY_LOGIN} has the reader limits: "
            "idle_in_transaction_session_timeout is the server default, not 60000ms",
            f"MISSING  reader login {loose} has the reader limits",
            f'ALTER ROLE "{loose}" CONNECTION LIMIT 8;',
            "3 requirement(s) missing (`dpdb db harden --apply` runs what this login may)",
        ):
            assert line in out, out
        code, out = _run(env, "--apply")
        assert code == 0, out
        # The database's own privileges are dpdb's to keep (every command re-applies them, as the owner).
        assert f"ok  only dpdb roles may connect to database {settings.database}" in out
        assert "fixed  no CONNECT for PUBLIC on database template1" in out and "all requirements met" in out
        # and the server now says so itself
        row = admin.execute(
            "SELECT has_database_privilege('public', 'template1', 'CONNECT'), rolconnlimit, "
            "(SELECT setconfig FROM pg_db_role_setting WHERE setrole = r.oid AND setdatabase = 0) "
            "FROM pg_roles r WHERE rolname = %s",
            (loose,),
        ).fetchone()
        assert row is not None and row[0] is False and row[1] == 8
        assert "statement_timeout=300000ms" in row[2] and "temp_file_limit=4194304kB" in row[2]
        with psycopg.connect(reader_conninfo(settings)) as login:
            shown = login.execute("SELECT current_setting('idle_in_transaction_session_timeout')").fetchone()
            assert shown == ("1min",)
    finally:
        admin.execute("REVOKE CONNECT ON DATABASE template1 FROM PUBLIC")
        admin.execute(f"REVOKE ALL ON DATABASE {settings.database} FROM PUBLIC")
        apply_limits(admin, QUERY_LOGIN, settings)
        admin.execute(f'DROP ROLE IF EXISTS "{loose}"')
        admin.close()


def test_external_server_without_rights_gets_the_sql_for_its_superuser(settings: Settings) -> None:
    """A DPDB_DSN login that owns nothing cluster-wide: --apply changes nothing and prints the SQL."""
    owner = f"owner_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(conninfo(settings), autocommit=True)
    try:
        admin.execute(f'CREATE ROLE "{owner}" LOGIN IN ROLE dpdb_admin')
        admin.execute("GRANT CONNECT ON DATABASE postgres TO PUBLIC")
        dsn = make_conninfo(conninfo(settings), user=owner)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("DPDB_")},
               "DPDB_DSN": dsn, "DPDB_READER_DSN": reader_conninfo(settings)}  # fmt: skip
        code, out = _run(env, "--apply")
        assert code == 1, out
        assert "MISSING  no CONNECT for PUBLIC on database postgres" in out, out
        assert (
            "not applied (this login may not: the server changed nothing); the server's superuser runs:"
            in out
        ), out
        assert 'REVOKE CONNECT ON DATABASE "postgres" FROM PUBLIC;' in out
        still = admin.execute("SELECT has_database_privilege('public', 'postgres', 'CONNECT')").fetchone()
        assert still == (True,)
        # A superuser as the reader login is refused.
        env["DPDB_READER_DSN"] = conninfo(settings)
        code, out = _run(env)
        assert (
            code == 1
            and "MISSING  user SQL runs as a login that can only read: the reader login "
            "postgres is a superuser"
            in out
        ), out
    finally:
        admin.execute("REVOKE CONNECT ON DATABASE postgres FROM PUBLIC")
        admin.execute(f'DROP ROLE IF EXISTS "{owner}"')
        admin.close()
