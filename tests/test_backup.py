"""Backups and point-in-time recovery (pgBackRest), and kill -9 of the postmaster mid-visit.

On a cluster of its own that archives its WAL: a release dropped by mistake comes back from a
PITR restore with identical checksums; a postmaster killed in the middle of a prompt visit, then
`db up` and a rerun, gives the same catalog as an uninterrupted run.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import make_home
from test_prompt import _table_digest
from test_release import ready, table_checksums

from dpdb.backup import pgbackrest
from dpdb.config import Settings
from dpdb.etl import release_dir
from dpdb.lifecycle.activate import activate_release
from dpdb.lifecycle.load import restore_release
from dpdb.pg import conninfo
from dpdb.processing.release import produce
from dpdb.processing.survey import SurveyConfig, simulate
from dpdb.prompt import ingest
from dpdb.registry.releases import get_release
from dpdb.server import EmbeddedServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from soak_faults import copy_database  # noqa: E402 - the soak's way to copy a prepared database

DPDB = str(Path(sys.executable).with_name("dpdb"))

pytestmark = pytest.mark.skipif(
    pgbackrest() is None and not os.environ.get("CI"), reason="pgbackrest not installed (scripts/setup.sh)"
)


def run(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DPDB, *args], capture_output=True, text=True, env=env, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def assert_server_gone(line: str) -> None:
    """The one error line of a command whose server was killed under it: a lost connection, or, when
    the kill lands while the command opens a new connection, a refused one (both name the cause)."""
    gone = ("lost the connection to the database server", "cannot connect to PostgreSQL")
    assert any(cause in line for cause in gone), line


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict[str, str]]]:
    """A cluster of its own with WAL archiving (the default), its settings and CLI environment."""
    home = make_home("dpdb-pitr-")
    archive = tmp_path_factory.mktemp("archive")
    settings = Settings(home=home, partition_order=0, archive_dir=archive)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPDB_")}
    env.update(DPDB_HOME=str(home), DPDB_PARTITION_ORDER="0", DPDB_ARCHIVE_DIR=str(archive))
    up = run(["db", "up"], env)
    assert up.returncode == 0, up.stderr
    yield settings, env
    EmbeddedServer(home).down()
    shutil.rmtree(home, ignore_errors=True)


def _iso(instant: dt.datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%S.%f")


def test_dropped_release_comes_back_from_a_pitr_restore(
    cluster: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, env = cluster
    produce(tmp_path / "dr1", "dr1", seed=5, objects=800, nights=1)
    ready(settings, "dr1", tmp_path / "dr1")
    before = table_checksums(settings, "dr1")
    assert before["Object"][0] == 800

    taken = run(["db", "backup"], env)
    assert taken.returncode == 0 and "taken" in taken.stdout, taken.stderr
    listed = run(["db", "backups"], env)
    assert listed.returncode == 0 and "full" in listed.stdout, listed.stderr

    time.sleep(1.2)
    instant = dt.datetime.now(dt.UTC)  # after the release was loaded, before it was dropped
    time.sleep(1.2)
    dropped = run(["release", "drop", "dr1"], env)
    assert dropped.returncode == 0, dropped.stderr
    with psycopg.connect(conninfo(settings)) as conn:
        assert conn.execute("SELECT to_regclass('dr1.object')").fetchone() == (None,)

    copy_home = make_home("dpdb-recovered-") / "copy"  # the postgres OS user must reach it
    try:
        restored = run(["db", "restore", "--to", _iso(instant), "--into", str(copy_home)], env)
        assert restored.returncode == 0, restored.stderr
        assert "recovery stopping before commit" in restored.stdout, restored.stdout
        copy = settings.model_copy(update={"home": copy_home})
        assert table_checksums(copy, "dr1") == before  # identical rows, every table
        listing = run(["release", "list"], {**env, "DPDB_HOME": str(copy_home)})
        assert listing.returncode == 0 and "dr1" in listing.stdout, listing.stderr
        # the copy is a server of its own: its own port, and the source still has no dr1
        assert (copy_home / "port").read_text() != (settings.home / "port").read_text()
        with psycopg.connect(conninfo(settings)) as conn:
            assert conn.execute("SELECT to_regclass('dr1.object')").fetchone() == (None,)
    finally:
        EmbeddedServer(copy_home).down()
        shutil.rmtree(copy_home.parent, ignore_errors=True)

    # refusals, each one line
    future = _iso(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    assert "in the future" in one_error_line(
        run(["db", "restore", "--to", future, "--into", str(tmp_path / "f")], env)
    )
    assert "new or empty directory" in one_error_line(
        run(["db", "restore", "--to", _iso(instant), "--into", str(tmp_path / "dr1")], env)
    )
    assert "the source's own DPDB_HOME" in one_error_line(
        run(["db", "restore", "--to", _iso(instant), "--into", str(settings.home)], env)
    )
    assert "postgres OS user cannot reach" in one_error_line(
        run(["db", "restore", "--to", _iso(instant), "--into", str(tmp_path / "private")], env)
    )
    assert "no backup ends before" in one_error_line(
        run(["db", "restore", "--to", "2020-01-01T00:00:00", "--into", str(tmp_path / "old")], env)
    )
    assert "invalid time" in one_error_line(
        run(["db", "restore", "--to", "yesterday", "--into", str(tmp_path / "y")], env)
    )


CONFIG = SurveyConfig(seed=11, visits_per_night=4, sources_per_visit=250, area_deg2=10.0)
T0 = 61000.9


def test_kill_9_of_the_postmaster_mid_visit_then_up_and_rerun(
    cluster: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, env = cluster
    survey = tmp_path / "survey"
    visits = simulate(survey, 2, CONFIG)
    reference = settings.model_copy(update={"database": "uninterrupted"})
    ingest(reference, [survey], processing_time=T0)

    victim = settings.model_copy(update={"database": "killed"})
    venv = {**env, "DPDB_DATABASE": "killed"}
    assert run(["db", "up"], venv).returncode == 0
    args = ["prompt", "ingest", str(survey), "--processing-time", str(T0)]
    proc = subprocess.Popen(
        [DPDB, *args], env=venv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    server = EmbeddedServer(settings.home)
    killed_after = None
    deadline = time.monotonic() + 300
    with psycopg.connect(conninfo(victim), autocommit=True) as watch:
        while time.monotonic() < deadline and proc.poll() is None:
            done = watch.execute("SELECT count(*) FROM dpdb_meta.prompt_visit").fetchone()[0]  # type: ignore[index]
            # in the last visit: the rerun computes it in a new session (other plans, and the
            # sums' rows where the killed visit left dead tuples), yet to the same last bit
            if done >= len(visits) - 1:
                killed_after = done
                os.kill(server.status().pid, signal.SIGKILL)  # type: ignore[arg-type]
                break
            time.sleep(0.02)
    assert killed_after is not None and killed_after < len(visits), "the ingest ended before the kill"
    out, err = proc.communicate(timeout=120)
    line = one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    assert_server_gone(line)
    up = run(["db", "up"], venv)
    assert up.returncode == 0 and "started" in up.stdout, up.stderr
    rerun = run(args, venv)
    assert rerun.returncode == 0, rerun.stderr
    assert _table_digest(victim) == _table_digest(reference)


def test_kill_9_of_the_postmaster_mid_restore_then_up_and_rerun(
    cluster: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    """The soak's open violation, deterministically: files of a restore committed, postmaster killed.

    The database is a copy of a prepared one, as each soak round is (benchmarks/soak_faults.py,
    ``copy_database``): with PostgreSQL's default copy (WAL_LOG) the copy's sequences handed out
    values that a crash took back, and the rerun reused a ``load_id`` (``load_manifest_pkey``).
    The rerun must finish the restore with the rows of an uninterrupted one, no duplicate, and
    every sequence ahead of the ids its table holds.
    """
    settings, env = cluster
    source = settings.model_copy(update={"database": "restore_src", "archive_dir": tmp_path / "archive"})
    assert run(["db", "up"], {**env, "DPDB_DATABASE": "restore_src"}).returncode == 0
    for number, name in enumerate(("dr1", "dr2", "dr3"), start=1):
        produce(tmp_path / name, name, seed=number, objects=250, nights=1)
        ready(source, name, tmp_path / name)
        activate_release(source, name)  # dr3's activation retires dr1 into the archive
    with psycopg.connect(conninfo(source)) as conn:
        assert get_release(conn, "dr1").state == "archived"
    files = sum(len(f) for f in release_dir.verify(source.archive_root() / "dr1").tables.values())

    admin = EmbeddedServer(settings.home).conninfo("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(  # the API's kept connections would block the copies
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'restore_src' "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        time.sleep(0.5)
        copy_database(conn, "restore_src", "restore_ref")
        copy_database(conn, "restore_src", "restore_kill")
    reference = source.model_copy(update={"database": "restore_ref"})
    restore_release(reference, "dr1")
    expected = table_checksums(reference, "dr1")

    victim = source.model_copy(update={"database": "restore_kill"})
    venv = {**env, "DPDB_DATABASE": "restore_kill", "DPDB_ARCHIVE_DIR": str(source.archive_root())}
    args = ["release", "restore", "dr1"]
    proc = subprocess.Popen(
        [DPDB, *args], env=venv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    server = EmbeddedServer(settings.home)
    restored = "SELECT count(*) FROM dpdb_meta.load_manifest WHERE target = 'dr1'"
    killed_after = None
    deadline = time.monotonic() + 300
    with psycopg.connect(conninfo(victim), autocommit=True) as watch:
        while time.monotonic() < deadline and proc.poll() is None:
            done = watch.execute(restored).fetchone()[0]  # type: ignore[index]
            if done >= 2:  # files committed with sequence values, and files still to load
                killed_after = done
                os.kill(server.status().pid, signal.SIGKILL)  # type: ignore[arg-type]
                break
            time.sleep(0.01)
    out, err = proc.communicate(timeout=120)
    assert killed_after is not None and killed_after < files, ("the restore ended before the kill", err)
    line = one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    assert_server_gone(line)
    up = run(["db", "up"], venv)
    assert up.returncode == 0 and "started" in up.stdout, up.stderr
    with psycopg.connect(conninfo(victim)) as conn:
        assert conn.execute(restored).fetchone()[0] >= killed_after  # type: ignore[index]
        assert get_release(conn, "dr1").state == "restoring"
    rerun = run(args, venv)
    assert rerun.returncode == 0, rerun.stderr
    assert table_checksums(victim, "dr1") == expected  # same rows, no duplicate key
    with psycopg.connect(conninfo(victim)) as conn:
        assert get_release(conn, "dr1").state == "loaded"
        assert conn.execute(restored).fetchone()[0] == files  # type: ignore[index]
        for table, column in (("load_manifest", "load_id"), ("audit_log", "audit_id"),
                              ("release_activation", "activation_id")):  # fmt: skip
            seq = conn.execute(
                "SELECT pg_get_serial_sequence(%s, %s)", (f"dpdb_meta.{table}", column)
            ).fetchone()[0]  # type: ignore[index]
            last = conn.execute(f"SELECT last_value FROM {seq}").fetchone()[0]  # type: ignore[index]
            top = conn.execute(f"SELECT coalesce(max({column}), 0) FROM dpdb_meta.{table}").fetchone()[0]  # type: ignore[index]
            assert last >= top, f"{seq} is at {last}, behind the {column} {top} its table holds"
