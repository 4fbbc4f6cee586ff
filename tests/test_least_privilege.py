"""Least privilege: user SQL runs as a login that can only read; reader logins have limits.

The probe list of issue 19 (a hostile reader) goes through ``dpdb query``, the
Python API and a reader login over TCP; every probe is refused and leaves no
trace (no file, no killed session, no changed row).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import make_conninfo

import dpdb
from dpdb.access import QUERY_LOGIN, apply_limits, create_reader, reader_limits, secure
from dpdb.cli import cli
from dpdb.config import Settings
from dpdb.errors import DpdbError, QueryError
from dpdb.pg import conninfo
from dpdb.readers import reader_conninfo
from dpdb.server import EmbeddedServer

DPDB = str(Path(sys.executable).with_name("dpdb"))


def _probes(victim_pid: int, marker: Path) -> list[str]:
    return [
        f"COPY (SELECT 1) TO PROGRAM 'id > {marker}'",
        f"COPY (SELECT 1) TO '{marker}'",
        "SELECT pg_read_file('/etc/passwd')",
        f"SELECT pg_terminate_backend({victim_pid})",
        "SELECT lo_import('/etc/passwd')",
        "SELECT set_config('role', 'postgres', false)",
        "SELECT dblink_connect('dbname=postgres')",
        "SET SESSION AUTHORIZATION postgres",
        "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE TEMP TABLE t (x int)",
        "SELECT pg_advisory_lock(42)",
        "SELECT * FROM dpdb_meta.audit_log",
        "SELECT count(*) FROM dpdb_meta.release",
        "DELETE FROM prompt.DiaObject",
    ]


def _tcp(settings: Settings, user: str, password: str, dbname: str | None = None) -> str:
    port = EmbeddedServer(settings.home).port
    return make_conninfo(
        host="127.0.0.1", port=port, dbname=dbname or settings.database, user=user, password=password
    )


@pytest.fixture
def reader(settings: Settings) -> Iterator[tuple[str, str]]:
    """A reader login (dropped afterwards: logins are cluster-wide and budgeted)."""
    name = f"probe_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        password = create_reader(conn, name, None, settings)
    yield name, password
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_probes_are_refused_everywhere(settings: Settings, reader: tuple[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    os.chmod(tmp_path, 0o777)  # so that a probe that did run as the server could write here
    env = {**os.environ, "DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database}
    archive = dpdb.Archive(home=settings.home, database=settings.database)
    with psycopg.connect(conninfo(settings), autocommit=True) as victim:
        pid = victim.info.backend_pid
        probes = _probes(pid, marker)
        for i, probe in enumerate(probes):
            if i == 0:  # one through a real process: exit code and stderr
                result = subprocess.run([DPDB, "query", probe], env=env, capture_output=True, text=True)
                code, out, err = result.returncode, result.stdout, result.stderr
            else:
                run = CliRunner().invoke(cli, ["query", probe], env=env)
                code, out, err = run.exit_code, "", run.output
            assert code == 1 and out == "", (probe, out)
            assert err.startswith("error: ") and err.count("\n") == 1, err
            with pytest.raises(QueryError):
                archive.query(probe)
        with psycopg.connect(_tcp(settings, *reader), autocommit=True) as login:
            for probe in probes:
                with pytest.raises(psycopg.Error):
                    login.execute(probe)
            # Outside dpdb's read-only transaction: no temporary objects either (no TEMP right).
            for temp in probes[8:10]:
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="temporary"):
                    login.execute(temp)
        assert victim.execute("SELECT pg_backend_pid()").fetchone() == (pid,)  # never terminated
    assert not marker.exists()


def test_queries_run_as_the_query_login(settings: Settings) -> None:
    archive = dpdb.Archive(home=settings.home, database=settings.database)
    row = archive.query(
        "SELECT current_user AS u, session_user AS s, "
        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS su"
    ).as_array()[0]
    assert tuple(row) == (QUERY_LOGIN, QUERY_LOGIN, False)
    # Readers see the registry through the read-only views.
    assert archive.query("SELECT count(*) AS n FROM dpdb_registry.catalog")["n"][0] >= 1
    with pytest.raises(QueryError, match="permission denied"):
        archive.query("SELECT * FROM dpdb_meta.load_manifest")


def test_readers_cannot_reach_other_databases(settings: Settings, reader: tuple[str, str]) -> None:
    for other in ("postgres", "template1"):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(_tcp(settings, *reader, dbname=other))


def test_reader_limits(settings: Settings, reader: tuple[str, str]) -> None:
    limits = reader_limits(settings)
    with psycopg.connect(_tcp(settings, *reader), autocommit=True) as login:
        shown = {k: login.execute(f"SELECT current_setting('{k}')").fetchone()[0] for k in limits}  # type: ignore[index]
        assert shown == {
            "statement_timeout": "5min",
            "idle_in_transaction_session_timeout": "1min",
            "temp_file_limit": "4GB",
            "client_connection_check_interval": "5s",
        }
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            login.execute("SET temp_file_limit = -1")  # superuser-only: a reader cannot lift it
    # The per-login connection limit.
    extra = [psycopg.connect(_tcp(settings, *reader)) for _ in range(settings.reader_login_connections)]
    try:
        with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
            psycopg.connect(_tcp(settings, *reader))
    finally:
        for c in extra:
            c.close()


def test_statement_timeout_applies_to_queries(settings: Settings) -> None:
    quick = settings.model_copy(update={"reader_statement_timeout": 0.5})
    start = time.monotonic()
    with pytest.raises(QueryError, match="statement timeout"):
        dpdb.Archive(settings=quick).query("SELECT pg_sleep(20)")
    assert time.monotonic() - start < 10


def test_abandoned_query_dies(settings: Settings, reader: tuple[str, str]) -> None:
    info = _tcp(settings, *reader)
    script = f"import psycopg; psycopg.connect({info!r}).execute('SELECT pg_sleep(120)')"
    client = subprocess.Popen([sys.executable, "-c", script])
    with psycopg.connect(conninfo(settings), autocommit=True) as admin:
        count = "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND query LIKE '%%pg_sleep(120)%%'"
        for _ in range(100):
            if admin.execute(count, (reader[0],)).fetchone() == (1,):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the reader's query did not start")
        client.kill()
        client.wait()
        for _ in range(150):  # client_connection_check_interval is 5 s
            if admin.execute(count, (reader[0],)).fetchone() == (0,):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the abandoned query kept running")


def test_connection_budget_of_all_readers(settings: Settings) -> None:
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        used = conn.execute(
            "SELECT coalesce(sum(rolconnlimit), 0) FROM pg_roles WHERE rolcanlogin AND NOT rolsuper "
            "AND pg_has_role(oid, 'dpdb_reader', 'MEMBER')"
        ).fetchone()[0]  # type: ignore[index]
        tight = settings.model_copy(
            update={"reader_role_connections": used + settings.reader_login_connections}
        )
        name = f"budget_{uuid.uuid4().hex[:8]}"
        try:
            create_reader(conn, name, None, tight)
            with pytest.raises(DpdbError, match="reader connection budget exhausted"):
                create_reader(conn, f"{name}_2", None, tight)
        finally:
            conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_superuser_dsn_is_refused_for_user_sql(settings: Settings) -> None:
    superuser = conninfo(settings)
    result = CliRunner().invoke(cli, ["query", "SELECT 1"], env={"DPDB_DSN": superuser})
    assert result.exit_code == 1
    assert (
        "error: the reader login postgres is a superuser" in result.output
        and "DPDB_READER_DSN" in result.output
    )


def test_limits_follow_the_settings(settings: Settings) -> None:
    changed = settings.model_copy(update={"reader_statement_timeout": 7.0, "database": settings.database})
    secure(changed)
    try:
        with psycopg.connect(conninfo(settings), autocommit=True) as conn:
            config = conn.execute(
                "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                "WHERE r.rolname = %s AND s.setdatabase = 0",
                (QUERY_LOGIN,),
            ).fetchone()[0]  # type: ignore[index]
        assert "statement_timeout=7000ms" in config
    finally:
        secure(settings)


def _sessions(admin: psycopg.Connection, login: str) -> list[str]:
    return [
        r[0]
        for r in admin.execute(
            "SELECT state FROM pg_stat_activity WHERE usename = %s AND datname = current_database() "
            "AND pid <> pg_backend_pid()",
            (login,),
        )
    ]


def test_query_login_has_an_idle_in_transaction_timeout(settings: Settings) -> None:
    """dpdb_query gets the readers' idle-in-transaction timeout; dpdb's own pooled connections hold no
    transaction while idle (so they survive it), and an abandoned open transaction is ended."""
    archive = dpdb.Archive(home=settings.home, database=settings.database)
    assert archive.query("SELECT 1 AS x")["x"][0] == 1  # leaves a pooled ADBC connection behind
    info = reader_conninfo(settings)
    with psycopg.connect(info, autocommit=True) as login:
        assert login.execute("SELECT current_user").fetchone() == (QUERY_LOGIN,)
        shown = login.execute("SELECT current_setting('idle_in_transaction_session_timeout')").fetchone()
        assert shown == ("1min",)
    quick = settings.model_copy(update={"reader_idle_timeout": 1.0})
    with psycopg.connect(conninfo(settings), autocommit=True) as admin:
        states = _sessions(admin, QUERY_LOGIN)
        assert states and "idle in transaction" not in states, states  # the pool holds no transaction
        apply_limits(admin, QUERY_LOGIN, quick)
        try:
            abandoned = psycopg.connect(info)  # not autocommit: the first statement opens a transaction
            abandoned.execute("SELECT count(*) FROM dpdb_registry.catalog").fetchone()
            pid = abandoned.info.backend_pid
            assert admin.execute(
                "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone() == ("idle in transaction",)
            time.sleep(2.5)
            with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
                abandoned.execute("SELECT 1")  # the server ended the session
            abandoned.close()
            gone = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            assert gone == (0,)
            # The pooled connection, idle (not in a transaction) for longer than the timeout, still works.
            pooled = [p for (p,) in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE usename = %s AND datname = current_database()",
                (QUERY_LOGIN,),
            )]  # fmt: skip
            row = archive.query("SELECT pg_backend_pid() AS pid, 2 AS x").as_array()[0]
            assert row["x"] == 2 and row["pid"] in pooled
        finally:
            apply_limits(admin, QUERY_LOGIN, settings)
    log = EmbeddedServer(settings.home).log_dir / "server.log"
    assert "idle-in-transaction timeout" in log.read_text(errors="replace")


def test_temp_file_limit_stops_a_spilling_reader(settings: Settings) -> None:
    """A reader's sort that spills more than its temp file limit fails; the limit is the role's."""
    small = settings.model_copy(update={"reader_temp_file_limit_mb": 1})
    with psycopg.connect(conninfo(settings), autocommit=True) as admin:
        apply_limits(admin, QUERY_LOGIN, small)
        try:
            with psycopg.connect(reader_conninfo(settings), autocommit=True) as login:
                login.execute("SET work_mem = '64kB'")  # any session may; the sort spills to disk
                spill = "SELECT count(*) FROM (SELECT g FROM generate_series(1, 300000) g ORDER BY g DESC) s"
                with pytest.raises(psycopg.errors.ConfigurationLimitExceeded, match="temp_file_limit"):
                    login.execute(spill)
        finally:
            apply_limits(admin, QUERY_LOGIN, settings)
        with psycopg.connect(reader_conninfo(settings), autocommit=True) as login:
            login.execute("SET work_mem = '64kB'")
            assert login.execute(spill).fetchone() == (300000,)  # the default limit (4 GiB) lets it through


def test_provenance_and_object_lookups_read_as_the_inspector(settings: Settings) -> None:
    """Archive.provenance, .lookup and .lightcurve (the portal's object pages) read through kept
    snapshots, plots through read_snapshot: all as the inspector login, which can only read."""
    from dpdb.access import INSPECT_LOGIN
    from dpdb.errors import ProvenanceError
    from dpdb.ids import ORIGIN_SHIFT, PROMPT_ORIGIN
    from dpdb.lookup import snapshot

    archive = dpdb.Archive(home=settings.home, database=settings.database)
    unknown = (PROMPT_ORIGIN << ORIGIN_SHIFT) + 7  # a prompt ID that a fresh database does not hold
    for call in (archive.provenance, archive.lookup, archive.lightcurve):
        with pytest.raises((ProvenanceError, DpdbError)):
            call(unknown)
    with snapshot(settings) as conn:  # the kept connection those calls used
        user, su = conn.execute(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()  # type: ignore[misc]
        assert (user, su) == (INSPECT_LOGIN, False)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pg_read_file('/etc/passwd')")
    from dpdb.readers import read_snapshot

    with read_snapshot(settings) as conn:  # what plots, provenance reports and alerts read through
        assert conn.execute("SELECT current_user").fetchone() == (INSPECT_LOGIN,)
    with psycopg.connect(conninfo(settings), autocommit=True) as admin:
        kept = admin.execute(
            "SELECT usename FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchall()
    assert kept and {u for (u,) in kept} <= {INSPECT_LOGIN}, kept
