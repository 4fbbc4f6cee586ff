"""Safe by construction (issue 19): keys unique across whole tables, values that do not fit refused,
as-of instants that could still change refused, one writer per folder, home and release."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import dpdb
from dpdb.asof import MJD_MAX
from dpdb.cli import cli
from dpdb.config import Settings
from dpdb.errors import ValidationError
from dpdb.etl.load import load
from dpdb.lifecycle.validate import validate_release
from dpdb.locks import LOCK_FILE, BusyError, folder_lock, release_lock
from dpdb.model.felis import latest_version
from dpdb.pg import conninfo
from dpdb.processing.synthetic import synthetic_table
from dpdb.registry.releases import create_release, set_state
from dpdb.timeutil import iso_utc

DPDB = str(Path(sys.executable).with_name("dpdb"))


def write(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def count(settings: Settings, table: str) -> int:
    with psycopg.connect(conninfo(settings)) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]


def moved(table: pa.Table, ra0: float) -> pa.Table:
    """The same rows (same keys) elsewhere on the sky: other HEALPix partitions."""
    for name in ("ra", "coord_ra"):
        if name in table.column_names:
            ra = pa.array(table[name].to_numpy() - 10.0 + ra0)
            table = table.set_column(table.schema.get_field_index(name), name, ra)
    return table


def env_of(settings: Settings) -> dict[str, str]:
    return {**os.environ, "DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database}


# -- keys unique across the whole table --------------------------------------------------------------


def test_prompt_key_at_another_position_is_refused(settings: Settings, tmp_path: Path) -> None:
    first = write(synthetic_table("DiaSource", 200, seed=1), tmp_path / "a" / "DiaSource.parquet")
    again = write(
        moved(synthetic_table("DiaSource", 200, seed=1), 200.0), tmp_path / "b" / "DiaSource.parquet"
    )
    result = CliRunner().invoke(cli, ["load", "DiaSource", str(first)], env=env_of(settings))
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["load", "DiaSource", str(again)], env=env_of(settings))
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith(f"error: {again}: duplicate primary key (diaSourceId=")
    assert f"already loaded in prompt.DiaSource from {first.absolute()}" in line
    assert count(settings, "prompt.diasource") == 200


def test_release_objects_repeated_in_three_files(settings: Settings, tmp_path: Path) -> None:
    with psycopg.connect(conninfo(settings)) as conn:
        create_release(conn, "dr1", latest_version(), 0)
    objects = synthetic_table("Object", 300, seed=4)
    files = [
        write(objects, tmp_path / "same" / "Object.parquet"),
        write(moved(objects, 100.0), tmp_path / "moved" / "Object.parquet"),
        write(objects.slice(100), tmp_path / "part" / "Object.parquet"),
    ]
    assert load(settings, "Object", [files[0]], into="dr1").rows == 300
    for path in files[1:]:
        with pytest.raises(ValidationError, match=f"{path}: duplicate primary key \\(objectId="):
            load(settings, "Object", [path], into="dr1")
    assert count(settings, "dr1.object") == 300


def test_concurrent_loads_of_one_key_let_one_in(settings: Settings, tmp_path: Path) -> None:
    """Two files with the same keys at different positions, loaded in parallel: the key lock lets one in."""
    data = synthetic_table("DiaSource", 3000, seed=2)
    files = [
        write(data, tmp_path / "x" / "DiaSource.parquet"),
        write(moved(data, 250.0), tmp_path / "y" / "DiaSource.parquet"),
    ]
    with pytest.raises(ValidationError, match="duplicate primary key"):
        load(settings, "DiaSource", files, jobs=2)
    assert count(settings, "prompt.diasource") == 3000
    with psycopg.connect(conninfo(settings)) as conn:
        assert conn.execute(
            "SELECT count(DISTINCT (diasourceid, timeprocessedmjdtai)) FROM prompt.diasource"
        ).fetchone() == (3000,)


def test_release_validation_checks_keys_across_partitions(settings: Settings, tmp_path: Path) -> None:
    with psycopg.connect(conninfo(settings)) as conn:
        create_release(conn, "dr1", latest_version(), 0)
    load(
        settings,
        "Object",
        [write(synthetic_table("Object", 100, seed=5), tmp_path / "Object.parquet")],
        into="dr1",
    )
    with psycopg.connect(conninfo(settings)) as conn:
        # A repeated objectId in another partition: even a direct write is refused by the key map ...
        conn.execute("CREATE TEMP TABLE x AS SELECT * FROM dr1.object ORDER BY objectid LIMIT 1")
        conn.execute("UPDATE x SET _healpix_29 = _healpix_29 # (1::bigint << 58)")  # another base pixel
        conn.commit()
        with pytest.raises(psycopg.errors.UniqueViolation, match="_keys_object_pkey"):
            conn.execute("INSERT INTO dr1.object SELECT * FROM x")
        conn.rollback()
        # ... so, as if written by older code, without it: validation finds the repeat.
        conn.execute("ALTER TABLE dr1.object DISABLE TRIGGER dpdb_keys_insert")
        conn.execute("INSERT INTO dr1.object SELECT * FROM x")
        set_state(conn, "dr1", "loaded")
    report = validate_release(settings, "dr1")
    keys = next(c for c in report.checks if c.name == "keys: Object")
    assert not keys.ok and keys.figure.startswith("1 repeated")


# -- values that do not fit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("raErr", 1e40, "column raErr, row 7: value 1e+40 out of range for raErr (REAL"),
        ("raErr", -3.5e38, "column raErr, row 7: value -3.5e+38 out of range for raErr (REAL"),
        ("psfNdata", 2**31, "column psfNdata, row 7: value 2147483648 out of range for psfNdata (int32)"),
        ("detector", -40000, "column detector, row 7: value -40000 out of range for detector (int16)"),
        ("band", "rr", "column band, row 7: value longer than 1 characters"),
    ],
)
def test_values_that_do_not_fit_are_refused(
    settings: Settings, tmp_path: Path, column: str, value: object, message: str
) -> None:
    table = synthetic_table("DiaSource", 20, seed=6)
    i = table.schema.get_field_index(column)
    values = table[column].to_pylist()
    values[7] = value
    wide = {"raErr": pa.float64(), "psfNdata": pa.int64(), "detector": pa.int32(), "band": pa.string()}[
        column
    ]
    path = write(table.set_column(i, column, pa.array(values, wide)), tmp_path / "bad.parquet")
    result = subprocess.run(
        [DPDB, "load", "DiaSource", str(path)], env=env_of(settings), capture_output=True, text=True
    )
    assert result.returncode == 1 and result.stderr.startswith(f"error: {path}: {message}"), result.stderr
    assert result.stderr.count("\n") == 1
    assert count(settings, "prompt.diasource") == 0


# -- as-of instants ------------------------------------------------------------------------------------


def _processed(settings: Settings, t: float) -> None:
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute(
            "INSERT INTO dpdb_meta.prompt_visit (visit, processing_time_mjd_tai, midpoint_mjd_tai, "
            "ingested_at, n_diasources, n_ss_attributed, n_associated, n_new_diaobjects, n_forced, "
            "n_forced_unlinked, seconds) VALUES (1, %s, %s, now(), 0, 0, 0, 0, 0, 0, 0)",
            (t, t - 0.01),
        )


def test_as_of_later_than_the_latest_processing_time(settings: Settings) -> None:
    latest = 61000.5
    _processed(settings, latest)
    env = env_of(settings)
    query = "SELECT count(*) AS n FROM DiaObject"
    ok = CliRunner().invoke(cli, ["query", "--as-of", str(latest), query], env=env)
    assert ok.exit_code == 0 and ok.stderr == "", ok.output
    late = CliRunner().invoke(cli, ["query", "--as-of", "2099-01-01", query], env=env)
    assert late.exit_code == 1 and late.stderr.count("\n") == 1
    assert late.stderr.startswith("error: as-of instant 2099-01-01T00:00:00.000 UTC") and (
        f"later than the latest processing time {iso_utc(latest)} UTC" in late.stderr
    )
    # Asked for explicitly: evaluated, labelled not yet repeatable, the instant recorded.
    flagged = CliRunner().invoke(
        cli, ["query", "--as-of", "2099-01-01", "--provisional", "--format", "csv", query], env=env
    )
    assert flagged.exit_code == 0, flagged.output
    assert flagged.stdout.splitlines()[-1] == "0"
    assert flagged.stderr.startswith("as of 2099-01-01T00:00:00.000 UTC (MJD TAI ")
    assert "not yet repeatable" in flagged.stderr
    # now: the current instant, resolved once and recorded, everywhere.
    now = CliRunner().invoke(cli, ["query", "--as-of", "now", "--format", "csv", query], env=env)
    assert now.exit_code == 0 and now.stderr.startswith("as of 20") and "not yet repeatable" in now.stderr
    archive = dpdb.Archive(settings=settings)
    table = archive.query(query, as_of="now")
    assert table.meta["as_of_repeatable"] is False and table.meta["as_of_mjd_tai"] > latest
    assert archive.query(query, as_of=latest).meta["as_of_repeatable"] is True
    with pytest.raises(ValidationError, match="later than the latest processing time"):
        archive.query(query, as_of=latest + 1)
    out = Path(settings.home).parent / f"{settings.database}.parquet"
    try:
        written = CliRunner().invoke(
            cli, ["query", "--as-of", str(latest), "--format", "parquet", "-o", str(out), query], env=env
        )
        assert written.exit_code == 0 and f"(as of {iso_utc(latest)} UTC" in written.output
        meta = pq.read_schema(out).metadata
        assert (
            meta[b"dpdb.as_of_mjd_tai"] == repr(latest).encode() and meta[b"dpdb.as_of_repeatable"] == b"true"
        )
    finally:
        out.unlink(missing_ok=True)


@pytest.mark.parametrize("instant", ["1e308", "-5", "nan", "inf", "10000-01-01", "tomorrow"])
def test_out_of_range_instants_are_one_line_errors(settings: Settings, instant: str) -> None:
    for args in (
        ["query", "--as-of", instant, "SELECT 1"],
        ["plot", "lightcurve", "1", "--as-of", instant],
        ["prompt", "alert", "1", "--as-of", instant, "--format", "json"],
    ):
        result = CliRunner().invoke(cli, args, env=env_of(settings))
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, (args, result.output)
        assert result.stderr.startswith("error: ") and (
            "out of range" in result.stderr or "invalid time" in result.stderr
        ), result.stderr
    assert MJD_MAX > 2_900_000


# -- one writer at a time ------------------------------------------------------------------------------


def test_folder_lock_names_the_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from dpdb.locks import folder_lock\n"
            f"with folder_lock({str(tmp_path)!r}, 'x'):\n    print('in', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "in\n"
        with pytest.raises(
            BusyError,
            match=f"^busy: release produce into {tmp_path} is in progress in "
            f"another process \\(pid {holder.pid}\\)$",
        ):
            with folder_lock(tmp_path, f"release produce into {tmp_path}"):
                pass
        result = subprocess.run(
            [DPDB, "release", "produce", "dr1", "--out", str(tmp_path), "--objects", "50", "--nights", "1"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 1 and result.stderr == (
            f"error: busy: release produce into {tmp_path} is in progress in another process "
            f"(pid {holder.pid})\n"
        )
    finally:
        holder.kill()
        holder.wait()
    # Killed: the kernel dropped its lock; the next producer goes ahead.
    with folder_lock(tmp_path, "x"):
        pass


def test_concurrent_produce_into_one_folder(tmp_path: Path) -> None:
    folder = tmp_path / "dr1"
    args = [DPDB, "release", "produce", "dr1", "--out", str(folder), "--objects", "3000", "--nights", "1"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = folder / LOCK_FILE
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
        assert first.poll() is None and time.monotonic() < deadline, "the first produce never took the lock"
        time.sleep(0.005)
    first.send_signal(signal.SIGSTOP)  # it holds the folder while the second starts, however loaded the
    try:  # machine is (started together, a slow start could come after the other had finished)
        second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        second.wait(timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    runs = [first, second]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in runs]  # type: ignore[union-attr]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    [(_, _, err)] = [r for r in results if r[0] == 1]
    assert err.startswith("error: busy: release produce into") and err.count("\n") == 1
    from dpdb.etl import release_dir

    release_dir.verify(folder)  # complete, every checksum right
    assert not list(folder.rglob("*.tmp"))


def test_release_steps_take_the_release_lock(settings: Settings) -> None:
    with psycopg.connect(conninfo(settings)) as conn:
        create_release(conn, "dr1", latest_version(), 0)
    entered = threading.Event()
    leave = threading.Event()

    def hold() -> None:
        with release_lock(settings, "dr1", "release.load"):
            entered.set()
            leave.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert entered.wait(30)
        result = CliRunner().invoke(cli, ["release", "validate", "dr1"], env=env_of(settings))
        assert result.exit_code == 1
        assert result.stderr == (
            f"error: busy: release dr1: release.load in progress in another process (pid {os.getpid()})\n"
        )
        other = CliRunner().invoke(cli, ["release", "create", "dr2"], env=env_of(settings))
        assert other.exit_code == 0, other.output  # another release is not locked
    finally:
        leave.set()
        thread.join()
    start = time.monotonic()
    with release_lock(settings, "dr1", "release.validate"):
        assert time.monotonic() - start < 5
    assert np.isfinite(start)


def test_a_second_demo_on_one_home_is_busy(tmp_path: Path) -> None:
    home = tmp_path / ".dpdb"
    with folder_lock(home, f"dpdb demo in {home}"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("DPDB_")}
        result = subprocess.run([DPDB, "demo"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    assert (
        result.stderr
        == f"error: busy: dpdb demo in {home} is in progress in another process (pid {os.getpid()})\n"
    )
    assert not (home / "data").exists()  # nothing started
