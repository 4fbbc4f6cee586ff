"""The embedded server is never lost: pid file garbage, foreign pids, ports kept, bad homes, down mid-load.

Each case reproduces a failure of issue 19 (item 5 and the DPDB_HOME parts of item 6) through the
real `dpdb` executable, on a cluster of its own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import make_home

from dpdb.cli import cli
from dpdb.processing.synthetic import synthetic_table
from dpdb.server import EmbeddedServer, shared_buffers_mb

DPDB = str(Path(sys.executable).with_name("dpdb"))


def run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DPDB, *args], capture_output=True, text=True, env=env, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single `error:` line of a failed command (no traceback, nothing else on stderr)."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def own() -> Iterator[tuple[Path, dict[str, str]]]:
    """A cluster of its own, driven through the CLI."""
    home = make_home("dpdb-life-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPDB_")}
    env.update(DPDB_HOME=str(home), DPDB_PARTITION_ORDER="0")
    up = run(["db", "up"], env)
    assert up.returncode == 0, up.stderr
    yield home, env
    run(["db", "down"], env)
    shutil.rmtree(home, ignore_errors=True)


def postgres_processes(data_dir: Path) -> list[int]:
    """Every postgres process whose working directory is ``data_dir`` (as ps would show)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd")) == data_dir.resolve():
                    out.append(int(entry.name))
    return out


def write_pid_file(home: Path, text: str) -> None:
    pid_file = home / "data" / "postmaster.pid"
    pid_file.write_text(text)
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(pid_file, pg.pw_uid, pg.pw_gid)


def test_garbage_pid_file_on_a_running_server(own: tuple[Path, dict[str, str]]) -> None:
    home, env = own
    assert run(["db", "up"], env).returncode == 0
    pid = EmbeddedServer(home).status().pid
    assert pid is not None
    write_pid_file(home, "garbage\n\x00\x01 not a pid\n")
    status = run(["db", "status"], env)
    assert status.returncode == 0 and f"running (pid {pid})" in status.stdout, status.stdout
    again = run(["db", "up"], env)
    assert again.returncode == 0 and "already running" in again.stdout, again.stderr
    assert EmbeddedServer(home).status().pid == pid  # no second postmaster on the same data
    down = run(["db", "down"], env)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
    assert postgres_processes(home / "data") == []  # really stopped, children too
    assert "stopped" in run(["db", "status"], env).stdout
    up = run(["db", "up"], env)
    assert up.returncode == 0 and "started" in up.stdout, up.stderr


def test_stale_and_foreign_pids_in_the_pid_file(own: tuple[Path, dict[str, str]], pg_home: Path) -> None:
    home, env = own
    assert run(["db", "down"], env).returncode == 0
    other = EmbeddedServer(pg_home).status().pid  # the test session's server: another live postgres
    assert other is not None
    for text in (f"{other}\n{pg_home / 'data'}\n", "999999999\n", ""):
        write_pid_file(home, text)
        up = run(["db", "up"], env)
        assert up.returncode == 0 and "started" in up.stdout, (text, up.stderr)
        assert EmbeddedServer(pg_home).status().pid == other  # the other cluster was left alone
        down = run(["db", "down"], env)
        assert down.returncode == 0 and "stopped" in down.stdout, (text, down.stderr)
    assert psycopg.connect(EmbeddedServer(pg_home).conninfo("postgres")).close() is None


def test_restart_keeps_the_port_and_readers_connection_strings(own: tuple[Path, dict[str, str]]) -> None:
    home, env = own
    assert run(["db", "up"], env).returncode == 0
    secret = home.parent / f"{home.name}.pw"
    secret.write_text("reader-secret-1\n")
    try:
        granted = run(["db", "grant-reader", "ops_reader", "--password-file", str(secret)], env)
    finally:
        secret.unlink()
    assert granted.returncode == 0, granted.stderr
    port = int((home / "port").read_text())
    dsn = f"host=127.0.0.1 port={port} dbname=dpdb user=ops_reader password=reader-secret-1"
    held = psycopg.connect(dsn)  # open over TCP while the server stops: its socket lingers in TIME_WAIT
    assert held.execute("SELECT 1").fetchone() == (1,)
    for _ in range(2):
        assert run(["db", "down"], env).returncode == 0
        up = run(["db", "up"], env)
        assert up.returncode == 0, up.stderr
        assert int((home / "port").read_text()) == port
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM prompt.diasource").fetchone() == (0,)
    held.close()


def _bad_homes(tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """(case, DPDB_HOME, expected part of the message); read-only cases only where they can be made."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    yield "a file", a_file, "is not a directory"
    yield "under a file", a_file / "home", "cannot create DPDB_HOME"
    immutable = tmp_path / "immutable"
    immutable.mkdir()
    if subprocess.run(["chattr", "+i", str(immutable)], capture_output=True).returncode == 0:
        yield "immutable directory", immutable, "is not writable"
        yield "under an immutable directory", immutable / "home", "cannot create DPDB_HOME"
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(read_only)],
                      capture_output=True).returncode == 0:  # fmt: skip
        yield "read-only file system", read_only, "is not writable"
        yield "under a read-only file system", read_only / "home", "Read-only file system"
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        yield "no write permission", locked, "is not writable"


def test_bad_homes_are_one_line_errors(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPDB_")}
    runner = CliRunner()
    cases = 0
    try:
        for case, home, expected in _bad_homes(tmp_path):
            cases += 1
            commands = [["db", "up"], ["query", "SELECT 1"], ["db", "url"]]
            if expected == "is not a directory":
                commands += [["db", "status"], ["db", "down"]]
            for args in commands:
                result = runner.invoke(cli, args, env={"DPDB_HOME": str(home), "DPDB_DSN": None})
                assert result.exit_code == 1, (case, args, result.output)
                lines = result.stderr.splitlines()
                assert len(lines) == 1 and lines[0].startswith("error: "), (case, args, result.stderr)
                assert expected in lines[0] and str(home) in lines[0], (case, args, lines[0])
            if cases == 1:  # and once through the executable: no traceback on a real stderr
                line = one_error_line(run(["db", "up"], {**env, "DPDB_HOME": str(home)}))
                assert expected in line
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "immutable")], capture_output=True)
        subprocess.run(["umount", str(tmp_path / "read-only")], capture_output=True)
    assert cases >= 2


def test_db_down_during_a_load_is_one_error_line_and_a_rerun_completes(
    own: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    home, env = own
    assert run(["db", "up"], env).returncode == 0
    big = tmp_path / "big.parquet"
    pq.write_table(synthetic_table("DiaSource", 150_000, seed=21), big, row_group_size=20_000)
    load = subprocess.Popen(
        [DPDB, "load", "DiaSource", str(big)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    copying = False
    deadline = time.monotonic() + 120
    with psycopg.connect(EmbeddedServer(home).conninfo("dpdb"), autocommit=True) as watch:
        while time.monotonic() < deadline and load.poll() is None:
            row = watch.execute("SELECT tuples_processed FROM pg_stat_progress_copy").fetchone()
            if row and row[0] > 20_000:
                copying = True
                break
            time.sleep(0.02)
    assert copying, "the load finished before the server could be stopped"
    down = run(["db", "down"], env)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
    out, err = load.communicate(timeout=120)
    failed = subprocess.CompletedProcess(load.args, load.returncode, out, err)
    assert "lost the connection to the database server" in one_error_line(failed)
    assert run(["db", "up"], env).returncode == 0
    rerun = run(["load", "DiaSource", str(big)], env)
    assert rerun.returncode == 0 and "1 loaded" in rerun.stdout, rerun.stderr
    with psycopg.connect(EmbeddedServer(home).conninfo("dpdb")) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT diasourceid) FROM prompt.diasource"
        ).fetchone()  # type: ignore[misc]
    assert total == distinct == 150_000


def test_kill_9_of_the_postmaster_then_up(own: tuple[Path, dict[str, str]]) -> None:
    """Backends orphaned by a killed postmaster are waited for; `db up` then starts cleanly."""
    home, env = own
    assert run(["db", "up"], env).returncode == 0
    server = EmbeddedServer(home)
    busy = psycopg.connect(server.conninfo("dpdb"), autocommit=True)
    pid = server.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    up = run(["db", "up"], env)
    assert up.returncode == 0 and "started" in up.stdout, up.stderr
    assert server.status().pid not in (None, pid)
    with contextlib.suppress(psycopg.Error):
        busy.close()
    with psycopg.connect(server.conninfo("dpdb")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_shared_buffers_a_quarter_of_the_memory_within_bounds(conn: psycopg.Connection) -> None:
    gib = 1 << 30
    assert shared_buffers_mb(24 * gib) == 6 * 1024  # this machine and CI: 24 GiB
    assert shared_buffers_mb(1 * gib) == 512  # small machines keep the old 512 MB
    assert shared_buffers_mb(256 * gib) == 8 * 1024  # capped
    # the tests' own embedded server was initialized with them
    assert conn.execute("SHOW shared_buffers").fetchone() == (f"{shared_buffers_mb()}MB",)
    assert conn.execute("SHOW wal_compression").fetchone() == ("lz4",)
    assert conn.execute("SHOW max_wal_size").fetchone() == ("16GB",)
    assert conn.execute("SHOW autovacuum_naptime").fetchone() == ("10s",)
