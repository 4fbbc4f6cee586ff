"""Test fixtures: one real PostgreSQL (with q3c and pg_sphere) per session (each xdist worker is one),
a fresh database per test.

The server is dpdb's own embedded server in a throwaway DPDB_HOME, so the
tests exercise the same mechanism users run. Fresh databases are cloned from a
template database that was migrated once to the newest schema.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dpdb.config import Settings
from dpdb.db import prepare
from dpdb.pg import conninfo
from dpdb.server import EmbeddedServer


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (long soaks)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a long run (soak); skipped unless pytest --slow")


LONGEST_FIRST = ("test_readme.py", "test_no_traceback.py")
"""Files whose tests take minutes: collected first, so that with two workers (pyproject.toml) one
starts them at once while the other works through the rest, instead of one of them ending the run."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)  # stable: otherwise as collected
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with pytest --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


TEMPLATE_DB = "dpdb_test_template"
DPDB = str(Path(sys.executable).with_name("dpdb"))


def make_home(prefix: str = "dpdb-test-") -> Path:
    """A temporary DPDB_HOME that the postgres OS user can reach when we are root."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(home, 0o755)
    return home


@pytest.fixture(scope="session")
def pg_home() -> Iterator[Path]:
    home = make_home()
    server = EmbeddedServer(home, wal_archive=False)  # the backup tests archive on clusters of their own
    server.up()
    try:
        yield home
    finally:
        server.down()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _no_reader_connections_kept_across_modules() -> Iterator[None]:
    """Each test module ends by closing the reader connections this process keeps (ADBC's idle ones,
    the TAP service's threaded pool). They count against the reader login's connection limit on the
    session's shared servers, and which modules a worker ran before (pytest-xdist schedules files as
    workers free up) must not decide whether a module's own pools find that limit reached."""
    yield
    from dpdb.pg import close_idle_adbc
    from dpdb.tap.engine import close_pools

    close_idle_adbc()
    close_pools()


def _admin(home: Path) -> psycopg.Connection:
    return psycopg.connect(EmbeddedServer(home).conninfo("postgres"), autocommit=True)


@pytest.fixture(scope="session")
def template_db(pg_home: Path) -> str:
    """A database at the newest schema, cloned for each test."""
    prepare(Settings(home=pg_home, database=TEMPLATE_DB, partition_order=0))
    with _admin(pg_home) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH is_template true").format(sql.Identifier(TEMPLATE_DB)))
    return TEMPLATE_DB


def new_database(home: Path, template: str | None = None) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with _admin(home) as conn:
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        conn.execute(stmt)
    return name


def drop_database(home: Path, name: str) -> None:
    with _admin(home) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def settings(pg_home: Path, template_db: str) -> Iterator[Settings]:
    """Settings of a fresh database at the newest schema (partition order 0: 12 partitions)."""
    name = new_database(pg_home, template_db)
    yield Settings(home=pg_home, database=name, partition_order=0)
    drop_database(pg_home, name)


@pytest.fixture
def empty_settings(pg_home: Path) -> Iterator[Settings]:
    """Settings of a fresh, empty database (no dpdb schema yet)."""
    name = new_database(pg_home)
    yield Settings(home=pg_home, database=name, partition_order=0)
    drop_database(pg_home, name)


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(conninfo(settings)) as c:
        yield c


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """Environment for CLI runs against the test database."""
    return {**os.environ, "DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database}


@pytest.fixture
def rsettings(settings: Settings, tmp_path: Path) -> Settings:
    """``settings`` with a private archive directory (data-release tests)."""
    return settings.model_copy(update={"archive_dir": tmp_path / "archive"})


def release_env(settings: Settings) -> dict[str, str]:
    """Environment for CLI runs against ``settings``' database and archive directory."""
    return {**os.environ, "DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database,
            "DPDB_ARCHIVE_DIR": str(settings.archive_root())}  # fmt: skip


def demo_env() -> dict[str, str]:
    """The environment of a newcomer: no DPDB_* settings, so the home is ./.dpdb."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DPDB_")}


@dataclass
class DemoRun:
    settings: Settings  # the demo's database: <folder>/.dpdb, the embedded default
    report: dict
    output: str  # what the finishing run printed


@pytest.fixture(scope="session")
def demo_run() -> Iterator[DemoRun]:
    """`dpdb demo --scale small` in a fresh folder with the default home, killed (SIGKILL) right
    after it produced dr1, then run again (`dpdb demo`) to the end."""
    folder = make_home("dpdb-demo-")
    env = demo_env()
    try:
        first = subprocess.Popen(
            [DPDB, "demo", "--scale", "small"], env=env, cwd=folder, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert first.stderr is not None
        for line in first.stderr:
            if line.startswith("✓ produce dr1"):
                first.send_signal(signal.SIGKILL)
                break
        first.wait(timeout=600)
        assert first.returncode == -signal.SIGKILL, "the first run ended before it could be killed"
        done = subprocess.run(
            [DPDB, "demo"], env=env, cwd=folder, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, done.stderr[-3000:]
        home = folder / ".dpdb"
        report = json.loads((home / "demo" / "report.json").read_text())
        yield DemoRun(Settings(home=home), report, done.stdout + done.stderr)
    finally:
        EmbeddedServer(folder / ".dpdb").down()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def demo_copy(demo_run: DemoRun, prefix: str, archive_dir: Path | None = None) -> Iterator[Settings]:
    """A throwaway copy of the demo's database (CREATE DATABASE ... TEMPLATE), for tests that change it."""
    from dpdb.pg import close_idle_adbc

    home = demo_run.settings.home
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    create = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
        sql.Identifier(name), sql.Identifier(demo_run.settings.database)
    )
    close_idle_adbc()
    with psycopg.connect(EmbeddedServer(home).conninfo("postgres"), autocommit=True) as conn:
        for attempt in range(5):
            # A template must have no other sessions: earlier tests' pooled connections (ADBC, the
            # portal's snapshots) are ended; the pools replace a dead connection on its next use.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (demo_run.settings.database,),
            )
            try:
                conn.execute(create)
                break
            except psycopg.errors.ObjectInUse:
                if attempt == 4:
                    raise
                time.sleep(1)
    try:
        yield Settings(home=home, database=name, archive_dir=archive_dir)  # None: DPDB_HOME/archive
    finally:
        with psycopg.connect(EmbeddedServer(home).conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
