"""The embedded server through the real `dpdb` executable: up, status, url, down, and failures."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_home

from dpdb.cli import cli
from dpdb.model.felis import latest_version, versions

DPDB = str(Path(sys.executable).with_name("dpdb"))


def run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DPDB, *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def own_home() -> Iterator[tuple[Path, dict[str, str]]]:
    """A separate embedded cluster driven only through the CLI."""
    home = make_home("dpdb-cli-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPDB_")}
    env.update(DPDB_HOME=str(home), DPDB_PARTITION_ORDER="0")
    yield home, env
    run(["db", "down"], env)
    shutil.rmtree(home, ignore_errors=True)


def test_up_status_url_down_up(own_home: tuple[Path, dict[str, str]]) -> None:
    home, env = own_home
    first = run(["db", "up"], env)
    assert first.returncode == 0, first.stderr
    assert "started" in first.stdout and f"schema version {latest_version()}" in first.stdout

    status = run(["db", "status"], env)
    assert status.returncode == 0, status.stderr
    for word in (
        "running",
        "q3c",
        "pg_sphere",
        "schema version",
        f"prompt (prompt, v{latest_version()})",
        str(home / "data"),
    ):
        assert word in status.stdout, word

    url = run(["db", "url"], env).stdout.strip()
    assert url.startswith("postgresql://")
    described = subprocess.run(
        ["psql", url, "-X", "-c", r"\d+ prompt.DiaSource"], capture_output=True, text=True, check=True
    ).stdout
    assert "Partition key: RANGE (_healpix_29)" in described
    assert 'q3c_ang2ipix(ra, "dec")' in described
    assert "diasource_hpx0_00" in described
    count = subprocess.run(
        ["psql", url, "-X", "-At", "-c", "SELECT count(diaObjectId) FROM prompt.DiaObject"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert count == "0"

    again = run(["db", "up"], env)
    assert again.returncode == 0 and "already running" in again.stdout

    down = run(["db", "down"], env)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert "stopped" in run(["db", "status"], env).stdout

    start = time.monotonic()
    up = run(["db", "up"], env)
    assert up.returncode == 0, up.stderr
    assert time.monotonic() - start < 30


def test_stale_pid_file_and_busy_port_are_handled(own_home: tuple[Path, dict[str, str]]) -> None:
    home, env = own_home
    assert run(["db", "up"], env).returncode == 0
    assert run(["db", "down"], env).returncode == 0
    # A pid file left by a crash whose pid now belongs to another program (this test process).
    pid_file = home / "data" / "postmaster.pid"
    pid_file.write_text(f"{os.getpid()}\n{home / 'data'}\n")
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(pid_file, pg.pw_uid, pg.pw_gid)
    # Somebody else listens on our port meanwhile.
    old_port = int((home / "port").read_text())
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", old_port))
        blocker.listen()
        up = run(["db", "up"], env)
        assert up.returncode == 0, up.stderr
        assert int((home / "port").read_text()) != old_port
        assert run(["db", "status"], env).returncode == 0


def test_external_dsn_that_does_not_connect() -> None:
    env = {**os.environ, "DPDB_DSN": "host=127.0.0.1 port=1 dbname=nope user=nobody"}
    proc = run(["db", "status"], env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot connect to PostgreSQL") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_missing_server_binaries_name_the_packages(tmp_path: Path) -> None:
    env = {**os.environ, "DPDB_HOME": str(tmp_path / "h"), "DPDB_PG_BINDIR": str(tmp_path / "nobin")}
    env.pop("DPDB_DSN", None)
    proc = run(["db", "up"], env)
    assert proc.returncode == 1
    assert "postgresql-15 postgresql-15-q3c postgresql-15-pgsphere" in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a directory owned by someone else")
def test_data_directory_owned_by_someone_else() -> None:
    home = make_home("dpdb-owner-")
    try:
        data = home / "data"
        data.mkdir()
        (data / "PG_VERSION").write_text("15\n")
        nobody = pwd.getpwnam("nobody")
        os.chown(data, nobody.pw_uid, nobody.pw_gid)
        proc = run(["db", "up"], {**os.environ, "DPDB_HOME": str(home)})
        assert proc.returncode == 1
        assert f"data directory {data} is owned by user nobody" in proc.stderr
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_migrate_to_unknown_version(env: dict[str, str]) -> None:
    unknown = latest_version() + 1
    result = CliRunner().invoke(cli, ["db", "migrate", "--to", str(unknown)], env=env)
    assert result.exit_code == 1
    known = ", ".join(map(str, versions()))
    assert f"error: unknown schema version {unknown} (known: {known})" in result.output


def test_schema_validate_corrupted_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: broken\ntables:\n  - name: T\n    columns: [{name: a, datatype: quaternion}]\n")
    result = CliRunner().invoke(cli, ["schema", "validate", str(bad)])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {bad}: invalid felis schema")


def test_schema_show_and_ddl_dry_run() -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["schema", "show"])
    assert shown.exit_code == 0 and "DiaSource" in shown.output and "_healpix_29" in shown.output
    ddl = runner.invoke(cli, ["schema", "show", "--ddl", "--partition-order", "0"])
    assert ddl.exit_code == 0
    assert "PARTITION BY RANGE (_healpix_29)" in ddl.output
    assert ddl.output.count("PARTITION OF prompt.diasource ") == 12
    table = runner.invoke(cli, ["schema", "show", "--table", "diaobject"])
    assert table.exit_code == 0 and "validityStartMjdTai" in table.output
