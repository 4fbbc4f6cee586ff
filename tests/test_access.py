"""Access control: reader logins over TCP with scram-sha-256; what readers and loaders can and cannot do."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import errors
from test_release import ready

from dpdb.cli import cli
from dpdb.config import Settings
from dpdb.lifecycle.activate import activate_release
from dpdb.model.felis import latest_version
from dpdb.pg import conninfo
from dpdb.processing.release import produce
from dpdb.registry.releases import create_release
from dpdb.server import EmbeddedServer


def _tcp(settings: Settings, user: str, password: str) -> str:
    port = EmbeddedServer(settings.home).port
    from psycopg.conninfo import make_conninfo

    return make_conninfo(host="127.0.0.1", port=port, dbname=settings.database, user=user, password=password)


def test_reader_reads_releases_and_prompt_but_nothing_else(rsettings: Settings, tmp_path: Path) -> None:
    settings = rsettings
    produce(tmp_path / "dr1", "dr1", objects=300, nights=1)
    ready(rsettings, "dr1", tmp_path / "dr1")
    activate_release(rsettings, "dr1")
    env = {"DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database}
    name = f"reader_{uuid.uuid4().hex[:8]}"
    secret = tmp_path / "password"
    secret.write_text("correct horse battery staple\n")
    result = CliRunner().invoke(cli, ["db", "grant-reader", name, "--password-file", str(secret)], env=env)
    assert result.exit_code == 0, result.output
    assert "correct horse" not in result.output and "scram-sha-256" in result.output
    info = _tcp(settings, name, "correct horse battery staple")

    with psycopg.connect(info, autocommit=True) as reader:
        assert reader.execute("SELECT count(*) FROM current.Object").fetchone() == (300,)
        assert reader.execute("SELECT count(*) FROM samples.dr1_object").fetchone()[0] > 0
        assert reader.execute("SELECT count(*) FROM prompt.DiaObject").fetchone() == (0,)
        assert reader.execute("SELECT count(*) FROM prompt.diaobject_as_of('2026-01-01')").fetchone() == (0,)
        forbidden = [
            (
                "INSERT INTO prompt.visit (visit, band, ra, dec) VALUES (1, 'r', 1, 1)",
                errors.InsufficientPrivilege,
            ),
            ("DELETE FROM current.object", errors.InsufficientPrivilege),
            ("DROP VIEW current.object", errors.InsufficientPrivilege),
            ("DROP SCHEMA dr1 CASCADE", errors.InsufficientPrivilege),
            ("CREATE TABLE current.mine (x int)", errors.InsufficientPrivilege),
            ("CREATE TABLE public.mine (x int)", errors.InsufficientPrivilege),
            ("SELECT * FROM dr1.object LIMIT 1", errors.InsufficientPrivilege),
            ("SELECT * FROM dpdb_meta.audit_log", errors.InsufficientPrivilege),
            ("SELECT * FROM dpdb_meta.release", errors.InsufficientPrivilege),
            ("SELECT * FROM dpdb_meta.load_manifest", errors.InsufficientPrivilege),
        ]
        for statement, error in forbidden:
            with pytest.raises(error):
                reader.execute(statement)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_tcp(settings, name, "wrong password"))
    # dpdb query works for a reader, through DPDB_DSN.
    query = CliRunner().invoke(
        cli, ["query", "--format", "csv", "SELECT count(*) AS n FROM current.Object"], env={"DPDB_DSN": info}
    )
    assert query.exit_code == 0, query.output
    assert query.output.splitlines()[-1] == "300"


def test_generated_password_is_printed_once(settings: Settings) -> None:
    env = {"DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database}
    name = f"reader_{uuid.uuid4().hex[:8]}"
    result = CliRunner().invoke(cli, ["db", "grant-reader", name], env=env)
    assert result.exit_code == 0, result.output
    password = result.output.split("password: ")[1].strip()
    with psycopg.connect(_tcp(settings, name, password)) as reader:
        assert reader.execute("SELECT current_user").fetchone() == (name,)
    again = CliRunner().invoke(cli, ["db", "grant-reader", name], env=env)
    assert again.exit_code == 1 and f"role {name} already exists" in again.output


def test_loader_loads_only_releases_not_frozen(settings: Settings) -> None:
    with psycopg.connect(conninfo(settings)) as conn:
        for name in ("dr1", "dr2"):
            create_release(conn, name, latest_version(), 0)
        conn.execute("UPDATE dpdb_meta.release SET state = 'validated' WHERE name = 'dr1'")
        from dpdb.access import revoke_loader

        revoke_loader(conn, "dr1")
    insert = "INSERT INTO {}.visit (visit, band, ra, dec, expmidptmjd) VALUES (1, 'r', 1, 1, 60000)"
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        conn.execute("SET ROLE dpdb_loader")
        conn.execute(insert.format("dr2"))
        conn.execute(insert.format("prompt"))
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(insert.format("dr1"))
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM dpdb_meta.audit_log")


def test_socket_directory_is_private(settings: Settings) -> None:
    mode = EmbeddedServer(settings.home).socket_dir.stat().st_mode
    assert stat.S_IMODE(mode) == 0o700
