"""The lifecycle under load and faults: activation while clients query, and kill -9 mid-way then rerun."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from conftest import release_env
from test_release import ready, table_checksums

from dpdb.config import Settings
from dpdb.etl import release_dir
from dpdb.lifecycle.activate import activate_release, retain
from dpdb.lifecycle.load import load_release, restore_release
from dpdb.model.felis import latest_version
from dpdb.pg import conninfo
from dpdb.processing.release import produce
from dpdb.registry.releases import create_release, get_release

DPDB = str(Path(sys.executable).with_name("dpdb"))


def _scalar(settings: Settings, query: str) -> object:
    with psycopg.connect(conninfo(settings)) as conn:
        return conn.execute(query).fetchone()[0]  # type: ignore[index]


def kill_when(args: list[str], settings: Settings, condition: Callable[[], bool]) -> None:
    """Run ``dpdb ARGS`` and SIGKILL it as soon as ``condition`` holds (it must not finish first)."""
    proc = subprocess.Popen(
        [DPDB, *args], env=release_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if condition():
            proc.kill()
            proc.wait()
            return
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"dpdb {' '.join(args)} ended before the fault could be injected: {proc.stderr.read()!r}")  # type: ignore[union-attr]


def test_kill_load_archive_restore_then_rerun(rsettings: Settings, tmp_path: Path) -> None:
    """A load, a retirement and a restore killed mid-way each finish on a rerun with the same rows."""
    big = produce(tmp_path / "dr1", "dr1", objects=4000, nights=2, partition_order=3)
    files = sum(len(f) for f in big.tables.values())
    produce(tmp_path / "dr2", "dr2", objects=400, nights=2)
    produce(tmp_path / "dr3", "dr3", objects=400, nights=2)
    # Reference: an uninterrupted load of the same directory in another database.
    from conftest import drop_database, new_database

    ref = rsettings.model_copy(update={"database": new_database(rsettings.home, "dpdb_test_template")})
    try:
        with psycopg.connect(conninfo(ref)) as conn:
            create_release(conn, "dr1", latest_version(), 0)
        load_release(ref, "dr1", tmp_path / "dr1")
        expected = table_checksums(ref, "dr1")
    finally:
        drop_database(rsettings.home, ref.database)

    # 1. Load killed after a few files, then rerun.
    with psycopg.connect(conninfo(rsettings)) as conn:
        create_release(conn, "dr1", latest_version(), 0)
    loaded = "SELECT count(*) FROM dpdb_meta.load_manifest WHERE target = 'dr1'"
    kill_when(
        ["release", "load", "dr1", str(tmp_path / "dr1")], rsettings, lambda: _scalar(rsettings, loaded) >= 3
    )
    assert 3 <= _scalar(rsettings, loaded) < files  # type: ignore[operator]
    assert _scalar(rsettings, "SELECT state FROM dpdb_meta.release WHERE name = 'dr1'") == "created"
    load_release(rsettings, "dr1", tmp_path / "dr1")
    assert table_checksums(rsettings, "dr1") == expected
    assert validate_ok(rsettings, "dr1")

    # 2. Retirement (archive) killed while it writes the files, then `release retain`.
    activate_release(rsettings, "dr1")
    for name in ("dr2", "dr3"):
        ready(rsettings, name, tmp_path / name)
    activate_release(rsettings, "dr2")
    archive = rsettings.archive_root() / "dr1"
    kill_when(["release", "activate", "dr3"], rsettings, lambda: _files(archive, "*.parquet") >= 3)
    with psycopg.connect(conninfo(rsettings)) as conn:
        assert get_release(conn, "dr3").state == "active"  # the swap had committed
        assert get_release(conn, "dr1").state == "superseded"  # the retirement had not
    assert not (archive / release_dir.MANIFEST).exists()
    assert retain(rsettings) == ["dr1"]
    with psycopg.connect(conninfo(rsettings)) as conn:
        assert get_release(conn, "dr1").state == "archived"
    assert release_dir.verify(archive).total_rows == big.total_rows

    # 3. Restore killed after a few files, then rerun.
    restored = "SELECT count(*) FROM dpdb_meta.load_manifest WHERE target = 'dr1'"
    kill_when(["release", "restore", "dr1"], rsettings, lambda: _scalar(rsettings, restored) >= 3)
    assert _scalar(rsettings, "SELECT state FROM dpdb_meta.release WHERE name = 'dr1'") == "restoring"
    restore_release(rsettings, "dr1")
    assert table_checksums(rsettings, "dr1") == expected


def validate_ok(settings: Settings, name: str) -> bool:
    from dpdb.lifecycle.validate import validate_release

    return validate_release(settings, name).ok


def test_tampered_archive_is_refused(rsettings: Settings, tmp_path: Path) -> None:
    for name in ("dr1", "dr2", "dr3"):
        produce(tmp_path / name, name, objects=400, nights=2)
        ready(rsettings, name, tmp_path / name)
        activate_release(rsettings, name)
    archive = rsettings.archive_root() / "dr1"
    victim = next(archive.glob("Object/**/*.parquet"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = subprocess.run(
        [DPDB, "release", "restore", "dr1"], env=release_env(rsettings), capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {victim}: checksum mismatch")
    assert _scalar(rsettings, "SELECT state FROM dpdb_meta.release WHERE name = 'dr1'") == "archived"
    assert _scalar(rsettings, "SELECT to_regnamespace('dr1')") is None  # nothing half-written


READER = r"""
import json, sys, time, psycopg
info, out, stop = sys.argv[1:]
query = ("SELECT min(o.objectid >> 58), max(o.objectid >> 58), min(s.sourceid >> 58), max(s.sourceid >> 58), "
         "count(*) FROM current.object o JOIN current.source s USING (objectid) WHERE o.coord_dec < 2")
with psycopg.connect(info, autocommit=True) as conn, open(out, "w") as fh:
    while True:
        try:
            fh.write(json.dumps(list(conn.execute(query).fetchone())) + "\n")
        except psycopg.Error as e:
            fh.write(json.dumps({"error": str(e)}) + "\n")
        fh.flush()
        import os
        if os.path.exists(stop):
            break
"""


def test_activation_under_concurrent_queries(rsettings: Settings, tmp_path: Path) -> None:
    """4 client processes query current in a loop while it is swapped back and forth: no failed query,
    and every result comes wholly from one release."""
    expected = {}
    for number, name in ((1, "dr1"), (2, "dr2")):
        produce(tmp_path / name, name, objects=800 * number, nights=2)
        ready(rsettings, name, tmp_path / name)
        activate_release(rsettings, name)
        with psycopg.connect(conninfo(rsettings)) as conn:
            expected[number + 1] = conn.execute(
                f"SELECT count(*) FROM {name}.object o JOIN {name}.source s USING (objectid) "
                "WHERE o.coord_dec < 2"
            ).fetchone()[0]
    stop = tmp_path / "stop"
    outs = [tmp_path / f"reader{i}.jsonl" for i in range(4)]
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, conninfo(rsettings), str(out), str(stop)])
        for out in outs
    ]
    try:
        time.sleep(1.0)
        swaps = 0
        for name in ("dr1", "dr2") * 4:
            result = activate_release(rsettings, name)
            # Readers wait only for the view swap; the transaction also refreshes TAP_SCHEMA (felis),
            # which takes seconds on a loaded machine but holds no lock readers need.
            assert result.swapped and result.lock_seconds < 1.0 and result.swap_seconds < 60
            swaps += 1
            time.sleep(0.2)
    finally:
        stop.touch()
        for r in readers:
            r.wait(timeout=60)
    results = [json.loads(line) for out in outs for line in out.read_text().splitlines()]
    errors = [r["error"] for r in results if isinstance(r, dict)]
    assert errors == []
    seen = set()
    for o_min, o_max, s_min, s_max, count in results:
        assert o_min == o_max == s_min == s_max, "a result mixed two releases"
        assert count == expected[o_min]
        seen.add(o_min)
    assert seen == {2, 3} and len(results) > 4 * swaps  # both releases were read, during the swaps


def _files(folder: Path, pattern: str) -> int:
    """Files matching ``pattern`` under ``folder`` now; the archive writer's temporary folders come and
    go while it works, so a walk that meets a vanished one counts as not there yet."""
    try:
        return sum(1 for _ in folder.rglob(pattern))
    except FileNotFoundError:
        return 0
