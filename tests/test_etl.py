"""`dpdb load`: validation before any row is written, atomic files, idempotent reloads, round trip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from dpdb.cli import cli
from dpdb.config import Settings
from dpdb.etl.load import load
from dpdb.healpix import pixels
from dpdb.model.felis import latest_version
from dpdb.pg import conninfo
from dpdb.processing.synthetic import synthetic_table
from dpdb.registry.releases import create_release

DPDB = str(Path(sys.executable).with_name("dpdb"))


def write(table: pa.Table, path: Path, row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def count(conn: psycopg.Connection, table: str = "prompt.diasource") -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]


def manifest(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT path, size, sha256, table_name, target, row_count, schema_version "
        "FROM dpdb_meta.load_manifest"
    ).fetchall()


def cli_load(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["load", *args], env=env)
    return result.exit_code, result.output


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    return write(synthetic_table("DiaSource", 2000, seed=3), tmp_path / "visit1" / "DiaSource.parquet")


def test_load_records_manifest_provenance_and_pixels(
    settings: Settings, conn: psycopg.Connection, tmp_path: Path
) -> None:
    objects = synthetic_table("DiaObject", 300, seed=1, first_id=10_000)
    write(objects, tmp_path / "DiaObject.parquet")
    load(settings, "DiaObject", [tmp_path / "DiaObject.parquet"])
    src = synthetic_table("DiaSource", 1000, seed=2, parent_ids=np.arange(10_000, 10_300))
    path = write(src, tmp_path / "DiaSource.parquet")
    summary = load(settings, "DiaSource", [path])
    assert summary.rows == 1000 and summary.files[0].status == "loaded"
    assert count(conn) == 1000
    entry = conn.execute(
        "SELECT load_id, path, size, table_name, target, row_count, schema_version, software_version "
        "FROM dpdb_meta.load_manifest WHERE table_name = 'DiaSource'"
    ).fetchone()
    assert (
        entry[1:7] == (str(path), path.stat().st_size, "DiaSource", "prompt", 1000, latest_version())
        and entry[7]
    )
    # every row traces back to its manifest entry
    assert (
        conn.execute("SELECT count(*) FROM prompt.diasource WHERE _load_id = %s", (entry[0],)).fetchone()[0]
        == 1000
    )
    # measurements take their DiaObject's pixel, objects their own
    mismatched = conn.execute(
        """SELECT count(*) FROM prompt.diasource s JOIN prompt.diaobject o USING (diaobjectid)
           WHERE s._healpix_29 <> o._healpix_29"""
    ).fetchone()[0]
    assert mismatched == 0
    ra, dec, pix = (
        np.array(c)
        for c in zip(*conn.execute("SELECT ra, dec, _healpix_29 FROM prompt.diaobject"), strict=True)
    )
    assert (pixels(ra, dec) == pix).all()


def test_reload_is_a_noop_and_changed_file_needs_replace(
    settings: Settings, conn: psycopg.Connection, env: dict[str, str], sources: Path
) -> None:
    code, out = cli_load(env, "DiaSource", str(sources))
    assert code == 0, out
    assert "1 loaded" in out and "2000 rows" in out and "rows/s" in out
    code, out = cli_load(env, "DiaSource", str(sources))
    assert code == 0 and "already loaded" in out and "1 skipped" in out
    assert count(conn) == 2000 and len(manifest(conn)) == 1

    write(synthetic_table("DiaSource", 500, seed=9, first_id=50_000), sources)
    code, out = cli_load(env, "DiaSource", str(sources))
    assert code == 1 and "use --replace" in out and str(sources) in out
    assert count(conn) == 2000
    code, out = cli_load(env, "DiaSource", str(sources), "--replace")
    assert code == 0 and "1 replaced" in out
    ids = conn.execute("SELECT min(diasourceid), max(diasourceid), count(*) FROM prompt.diasource").fetchone()
    assert ids == (50_000, 50_499, 500)
    assert [m[5] for m in manifest(conn)] == [500]


def test_round_trip_parquet_load_export(settings: Settings, tmp_path: Path, env: dict[str, str]) -> None:
    original = synthetic_table("DiaSource", 777, seed=5)
    path = write(original, tmp_path / "in.parquet")
    assert cli_load(env, "DiaSource", str(path))[0] == 0
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(cli, ["export", "DiaSource", "-o", str(out)], env=env)
    assert result.exit_code == 0, result.output
    back = pq.read_table(out)
    assert back.schema.names == original.schema.names  # canonical camelCase names
    assert back.equals(original.sort_by("diaSourceId"))


def test_case_insensitive_names_and_ignore_extra(
    settings: Settings, conn: psycopg.Connection, tmp_path: Path
) -> None:
    data = synthetic_table("DiaSource", 100, seed=6)
    data = data.rename_columns([n.upper() if i % 2 else n.lower() for i, n in enumerate(data.column_names)])
    data = data.append_column("someExtraColumn", pa.array(np.zeros(100)))
    path = write(data, tmp_path / "rubin_style.parquet")
    code, out = cli_load(
        {**os.environ, "DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database},
        "DiaSource",
        str(path),
    )
    assert code == 1 and "unknown column someExtraColumn" in out and "--ignore-extra" in out
    assert count(conn) == 0
    load(settings, "DiaSource", [path], ignore_extra=True)
    assert count(conn) == 100


def test_dry_run_writes_nothing(
    settings: Settings, conn: psycopg.Connection, env: dict[str, str], sources: Path
) -> None:
    code, out = cli_load(env, "DiaSource", str(sources), "--dry-run")
    assert code == 0 and "dry run, nothing written" in out and "1 validated" in out
    assert count(conn) == 0 and manifest(conn) == []


def test_directories_and_hats_layout_with_jobs(
    settings: Settings, conn: psycopg.Connection, tmp_path: Path
) -> None:
    root = tmp_path / "hats"
    for n in range(4):
        part = synthetic_table("DiaSource", 300, seed=n, first_id=1 + n * 1000)
        write(part, root / "Norder=0" / "Dir=0" / f"Npix={n}.parquet")
    (root / "README.txt").write_text("not parquet, not picked up")
    summary = load(settings, "DiaSource", [root], jobs=2)
    assert [f.status for f in summary.files] == ["loaded"] * 4
    assert count(conn) == 1200


# -- bad input: one-line error naming file/column/row, non-zero exit, nothing loaded ------------------
def _bad_cases(tmp_path: Path) -> list[tuple[str, list[str], str]]:
    good = synthetic_table("DiaSource", 200, seed=7)
    cases: list[tuple[str, list[str], str]] = []

    corrupt = write(good, tmp_path / "corrupt.parquet")
    raw = corrupt.read_bytes()
    corrupt.write_bytes(raw[: len(raw) // 2])
    cases.append(("truncated", ["DiaSource", str(corrupt)], f"{corrupt}: not a readable Parquet file"))

    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    cases.append(("empty", ["DiaSource", str(empty)], f"{empty}: empty file"))

    text = tmp_path / "notes.parquet"
    text.write_text("ra,dec\n1,2\n")
    cases.append(("not parquet", ["DiaSource", str(text)], f"{text}: not a readable Parquet file"))

    ok = write(good, tmp_path / "ok.parquet")
    cases.append(("unknown table", ["DiaSauce", str(ok)], "unknown table DiaSauce"))

    missing = write(good.drop_columns(["midpointMjdTai"]), tmp_path / "missing.parquet")
    cases.append(
        ("missing column", ["DiaSource", str(missing)], f"{missing}: missing required column midpointMjdTai")
    )

    wrong = good.set_column(good.schema.get_field_index("ra"), "ra", pa.array([str(v) for v in range(200)]))
    wrong_path = write(wrong, tmp_path / "wrongtype.parquet")
    cases.append(("wrong type", ["DiaSource", str(wrong_path)], f"{wrong_path}: column ra has type string"))

    dec = good["dec"].to_numpy().copy()
    dec[150] = np.nan
    nan_path = write(
        good.set_column(good.schema.get_field_index("dec"), "dec", pa.array(dec)),
        tmp_path / "nan.parquet",
        row_group_size=64,
    )
    cases.append(
        (
            "NaN",
            ["DiaSource", str(nan_path)],
            f"{nan_path}: column dec, row 150: NaN in a non-nullable column",
        )
    )

    ids, tp = good["diaSourceId"].to_numpy().copy(), good["timeProcessedMjdTai"].to_numpy().copy()
    ids[120], tp[120] = ids[5], tp[5]  # the same primary key (diaSourceId, timeProcessedMjdTai) twice
    dup = good.set_column(0, "diaSourceId", pa.array(ids))
    dup = dup.set_column(
        dup.schema.get_field_index("timeProcessedMjdTai"), "timeProcessedMjdTai", pa.array(tp)
    )
    dup_path = write(dup, tmp_path / "dup.parquet", row_group_size=64)
    cases.append(
        ("duplicate key", ["DiaSource", str(dup_path)], f"{dup_path}: duplicate primary key (diaSourceId=6")
    )

    dec = good["dec"].to_numpy().copy()
    dec[42] = 91.5
    range_path = write(
        good.set_column(good.schema.get_field_index("dec"), "dec", pa.array(dec)), tmp_path / "range.parquet"
    )
    cases.append(
        ("out of range", ["DiaSource", str(range_path)], f"{range_path}: column dec, row 42: 91.5 outside")
    )

    cases.append(("no release", ["DiaSource", str(ok), "--into", "dr9"], "target dr9 does not exist"))
    return cases


def test_bad_input_is_rejected_and_nothing_loaded(
    settings: Settings, conn: psycopg.Connection, env: dict[str, str], tmp_path: Path
) -> None:
    for name, args, message in _bad_cases(tmp_path):
        proc = subprocess.run([DPDB, "load", *args], capture_output=True, text=True, env=env)
        assert proc.returncode == 1, (name, proc.stdout, proc.stderr)
        assert proc.stderr.startswith(f"error: {message}"), (name, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, name
        assert count(conn) == 0 and manifest(conn) == [], name


def test_duplicate_key_against_loaded_rows(
    settings: Settings, conn: psycopg.Connection, env: dict[str, str], tmp_path: Path
) -> None:
    first = write(synthetic_table("DiaSource", 100, seed=1), tmp_path / "a.parquet")
    assert cli_load(env, "DiaSource", str(first))[0] == 0
    overlap = synthetic_table("DiaSource", 100, seed=1).slice(90)  # same rows 91..100, other file
    second = write(overlap, tmp_path / "b.parquet", row_group_size=5)
    code, out = cli_load(env, "DiaSource", str(second))
    assert code == 1 and f"{second}: duplicate primary key (diaSourceId=" in out and "already loaded" in out
    assert count(conn) == 100 and len(manifest(conn)) == 1


def test_release_targets_must_exist_and_be_writable(
    settings: Settings, conn: psycopg.Connection, tmp_path: Path
) -> None:
    create_release(conn, "dr1", 2, 0)
    conn.commit()
    path = write(synthetic_table("Object", 50, seed=1), tmp_path / "Object.parquet")
    assert load(settings, "Object", [path], into="dr1").rows == 50
    conn.execute("UPDATE dpdb_meta.release SET state = 'active' WHERE name = 'dr1'")
    conn.commit()
    more = write(synthetic_table("Object", 50, seed=2, first_id=1000), tmp_path / "Object2.parquet")
    result = CliRunner().invoke(
        cli,
        ["load", "Object", str(more), "--into", "dr1"],
        env={"DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database},
    )
    assert result.exit_code == 1 and "release dr1 is active" in result.output
    assert count(conn, "dr1.object") == 50
    result = CliRunner().invoke(
        cli,
        ["load", "Object", str(more)],
        env={"DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database},
    )
    assert result.exit_code == 1 and "table Object is not part of a prompt catalog" in result.output


def test_killed_load_leaves_nothing_and_rerun_completes(
    settings: Settings, conn: psycopg.Connection, env: dict[str, str], tmp_path: Path
) -> None:
    big = write(
        synthetic_table("DiaSource", 150_000, seed=11), tmp_path / "big.parquet", row_group_size=20_000
    )
    small = write(synthetic_table("DiaSource", 100, seed=12, first_id=900_000), tmp_path / "a_small.parquet")
    proc = subprocess.Popen(
        [DPDB, "load", "DiaSource", str(small), str(big)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    copying = False
    with psycopg.connect(conninfo(settings), autocommit=True) as watch:
        while time.monotonic() < deadline and proc.poll() is None:
            row = watch.execute(
                "SELECT tuples_processed FROM pg_stat_progress_copy p JOIN pg_stat_activity a USING (pid) "
                "WHERE a.datname = current_database()"
            ).fetchone()
            if row and row[0] > 20_000:
                copying = True
                break
            time.sleep(0.02)
    assert copying, "the load finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # the server notices the lost connection and rolls back
    assert count(conn) == 100  # the small file committed, nothing of the big one
    assert [m[5] for m in manifest(conn)] == [100]
    rerun = subprocess.run(
        [DPDB, "load", "DiaSource", str(small), str(big)], env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "1 skipped" in rerun.stdout and "1 loaded" in rerun.stdout
    total, distinct = conn.execute(
        "SELECT count(*), count(DISTINCT diasourceid) FROM prompt.diasource"
    ).fetchone()
    assert total == distinct == 150_100
