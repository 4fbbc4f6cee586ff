"""Loads at COPY speed (issue 16): deferred-index release loads, streamed checksums, DiaObjectLast."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import drop_database, new_database, release_env
from test_release import table_checksums

from dpdb.config import Settings
from dpdb.db import conninfo
from dpdb.errors import ValidationError
from dpdb.etl import release_dir
from dpdb.etl.load import load, parent_pixel_query
from dpdb.etl.validate import target_table
from dpdb.healpix import pixels
from dpdb.lifecycle.load import load_release
from dpdb.lifecycle.validate import validate_release
from dpdb.model.felis import latest_version
from dpdb.processing.release import produce
from dpdb.processing.synthetic import synthetic_table
from dpdb.registry.releases import create_release, get_release

DPDB = str(Path(sys.executable).with_name("dpdb"))


def _scalar(settings: Settings, query: str) -> object:
    with psycopg.connect(conninfo(settings)) as conn:
        return conn.execute(query).fetchone()[0]  # type: ignore[index]


def index_defs(settings: Settings, schema: str) -> Counter[str]:
    """Every index of a schema's tables and partitions, name left out, schema written as S."""
    with psycopg.connect(conninfo(settings)) as conn:
        rows = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)).fetchall()
    out: Counter[str] = Counter()
    for (d,) in rows:
        d = re.sub(r"^CREATE (UNIQUE )?INDEX \S+ ON ", r"CREATE \1INDEX ON ", d)
        out[d.replace(f"{schema}.", "S.")] += 1
    return out


def reference(settings: Settings, name: str, directory: Path) -> dict[str, tuple[int, str]]:
    """Checksums of the directory loaded the old way (indexes kept) in a database of its own."""
    ref = settings.model_copy(update={"database": new_database(settings.home, "dpdb_test_template")})
    try:
        with psycopg.connect(conninfo(ref)) as conn:
            create_release(conn, name, latest_version(), settings.partition_order)
        load_release(ref, name, directory, legacy=True)
        return table_checksums(ref, name)
    finally:
        drop_database(settings.home, ref.database)


def assert_complete(settings: Settings, name: str) -> None:
    """Same indexes as a freshly created release, key maps full or deferred (empty: filled by the next
    write, test_deferred_key_maps_fill_on_the_next_write) and guarded, validation passes."""
    with psycopg.connect(conninfo(settings)) as conn:
        create_release(conn, "dr9", latest_version(), settings.partition_order)
    assert index_defs(settings, name) == index_defs(settings, "dr9")
    with psycopg.connect(conninfo(settings)) as conn:
        for table in ("object", "source", "forcedsource", "diaobject", "diasource", "diaforcedsource"):
            n, k = conn.execute(
                f"SELECT (SELECT count(*) FROM {name}.{table}), (SELECT count(*) FROM {name}._keys_{table})"
            ).fetchone()  # type: ignore[misc]
            assert k in (0, n) and n > 0, table
            enabled = conn.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND tgenabled = 'O' "
                "AND tgname LIKE 'dpdb_keys_%%'",
                (f"{name}.{table}",),
            ).fetchone()[0]  # type: ignore[index]
            assert enabled == 4, table
        assert get_release(conn, name).state == "loaded"
    report = validate_release(settings, name)
    assert report.ok, [(c.name, c.figure) for c in report.checks if not c.ok]


def test_deferred_load_equals_legacy(rsettings: Settings, tmp_path: Path) -> None:
    """Indexes deferred and built afterwards: the same rows, indexes, key maps and triggers."""
    produce(tmp_path / "dr1", "dr1", objects=600, nights=2, partition_order=0)
    expected = reference(rsettings, "dr1", tmp_path / "dr1")
    bulk = rsettings.model_copy(update={"release_bulk_rows": 0})
    with psycopg.connect(conninfo(bulk)) as conn:
        create_release(conn, "dr1", latest_version(), 0)
    load_release(bulk, "dr1", tmp_path / "dr1")
    assert table_checksums(bulk, "dr1") == expected
    # A rerun on the loaded release skips every file and keeps its indexes (nothing deferred).
    again = load_release(bulk, "dr1", tmp_path / "dr1")
    assert again.skipped_files > 0 and again.index_seconds == 0 and sum(again.rows.values()) == 0
    assert_complete(bulk, "dr1")


def _map_counts(conn: psycopg.Connection, table: str) -> tuple[int, int]:
    row = conn.execute(f"SELECT (SELECT count(*) FROM dr1.{table}), (SELECT count(*) FROM dr1._keys_{table})")
    return row.fetchone()  # type: ignore[return-value]


def test_deferred_key_maps_fill_on_the_next_write(rsettings: Settings, tmp_path: Path) -> None:
    """A fresh release's keys are checked in memory and its maps left empty; the first later write (raw
    SQL through the triggers, or a file load writing the map itself) fills a map from its table first,
    so a key repeated in another partition is refused as ever, and concurrent first writers both land."""
    root = tmp_path / "dr1"
    manifest = produce(root, "dr1", objects=600, nights=1, partition_order=0)
    bulk = rsettings.model_copy(update={"release_bulk_rows": 0})
    with psycopg.connect(conninfo(bulk)) as conn:
        create_release(conn, "dr1", latest_version(), 0)
    assert load_release(bulk, "dr1", root).index_seconds > 0  # the deferred path
    with psycopg.connect(conninfo(bulk)) as conn:
        for table in ("object", "source", "diasource"):
            n, k = _map_counts(conn, table)
            assert n > 0 and k == 0, table  # deferred
        # Raw SQL: a copy of an object in another base pixel; the trigger fills the map, which refuses it.
        conn.execute("CREATE TEMP TABLE x AS SELECT * FROM dr1.object ORDER BY objectid LIMIT 1")
        conn.execute("UPDATE x SET _healpix_29 = _healpix_29 # (1::bigint << 58)")
        with pytest.raises(psycopg.errors.UniqueViolation, match="_keys_object_pkey"):
            conn.execute("INSERT INTO dr1.object SELECT * FROM x")
        conn.rollback()
        assert _map_counts(conn, "object")[1] == 0  # rolled back with the statement: still deferred
    # Two new objects inserted by two transactions at once: the first fills the map (holding its lock
    # to its commit), the second waits, then finds the map filled and adds its key.
    with psycopg.connect(conninfo(bulk)) as a, psycopg.connect(conninfo(bulk)) as b:
        for offset, c in ((3, a), (4, b)):
            one = f"SELECT * FROM dr1.object ORDER BY objectid OFFSET {offset} LIMIT 1"
            c.execute(f"CREATE TEMP TABLE y AS {one}")
            c.execute("UPDATE y SET objectid = objectid + 10000000000")
        a.execute("INSERT INTO dr1.object SELECT * FROM y")
        waiter = threading.Thread(target=lambda: b.execute("INSERT INTO dr1.object SELECT * FROM y"))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive()  # queued on the map's lock
        a.commit()
        waiter.join(30)
        b.commit()
    with psycopg.connect(conninfo(bulk)) as conn:
        assert _map_counts(conn, "object") == (602, 602)
    # A file load into the loaded release writes the map itself: it fills the deferred map before the
    # file's rows go in (else the file's own keys would collide), then a repeat of the file is refused.
    first = pq.read_table(root / manifest.tables["DiaSource"][0].path).slice(0, 5)
    col = first.schema.get_field_index("diaSourceId")
    fresh = first.set_column(col, "diaSourceId", pa.compute.add(first["diaSourceId"], 10_000_000_000))
    pq.write_table(fresh, tmp_path / "new.parquet")
    summary = load(bulk, "DiaSource", [tmp_path / "new.parquet"], into="dr1")
    assert summary.keymap_seconds > 0  # the loader wrote the keys itself
    with psycopg.connect(conninfo(bulk)) as conn:
        n, k = _map_counts(conn, "diasource")
        assert n == k and n > 5
    pq.write_table(fresh.slice(0, 1), tmp_path / "again.parquet")
    with pytest.raises(ValidationError, match="duplicate primary key"):
        load(bulk, "DiaSource", [tmp_path / "again.parquet"], into="dr1")


def test_duplicate_key_across_partitions_refused(rsettings: Settings, tmp_path: Path) -> None:
    """An objectId repeated in two partitions of a release is refused when the key map gets its key."""
    root = tmp_path / "dr1"
    manifest = produce(root, "dr1", objects=600, nights=1, partition_order=3)
    first, second = manifest.tables["Object"][:2]
    a = pq.read_table(root / first.path)
    b = pq.read_table(root / second.path)
    dup = a.slice(0, 1)
    for col, value in (("coord_ra", 330.0), ("coord_dec", -60.0)):  # another partition than a's copy
        dup = dup.set_column(dup.schema.get_field_index(col), col, pa.array([value], dup[col].type))
    assert pixels(dup["coord_ra"].to_numpy(), dup["coord_dec"].to_numpy())[0] >> 58 != (
        pixels(a["coord_ra"].to_numpy()[:1], a["coord_dec"].to_numpy()[:1])[0] >> 58
    )
    merged = pa.concat_tables([b, dup.cast(b.schema)])
    pq.write_table(merged, root / second.path)
    entries = manifest.tables["Object"]
    entries[1] = release_dir.entry_for(root, root / second.path, merged.num_rows)
    (root / release_dir.MANIFEST).unlink()
    manifest.write(root)
    bulk = rsettings.model_copy(update={"release_bulk_rows": 0})
    with psycopg.connect(conninfo(bulk)) as conn:
        create_release(conn, "dr1", latest_version(), 0)
    refused = r"duplicate primary key of object \(objectid=\d+\) \(in .*Npix="
    with pytest.raises(ValidationError, match=refused):
        load_release(bulk, "dr1", root)
    with psycopg.connect(conninfo(bulk)) as conn:
        assert get_release(conn, "dr1").state == "created"
    # The old path refuses it too (its key map's trigger), one file rolled back.
    ref = rsettings.model_copy(update={"database": new_database(rsettings.home, "dpdb_test_template")})
    try:
        with psycopg.connect(conninfo(ref)) as conn:
            create_release(conn, "dr1", latest_version(), 0)
        with pytest.raises(ValidationError, match="duplicate primary key"):
            load_release(ref, "dr1", root, legacy=True)
    finally:
        drop_database(rsettings.home, ref.database)


def kill_when(args: list[str], env: dict[str, str], settings: Settings, query: str) -> None:
    proc = subprocess.Popen([DPDB, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if _scalar(settings, query):
            proc.kill()
            proc.wait()
            return
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"dpdb {' '.join(args)} ended before the fault: {proc.stderr.read()!r}")  # type: ignore[union-attr]


def test_kill_deferred_load_and_build_then_rerun(rsettings: Settings, tmp_path: Path) -> None:
    """Killed mid-load, then killed mid-build: the rerun finishes with the rows of an uninterrupted load."""
    root = tmp_path / "dr1"
    big = produce(root, "dr1", objects=3000, nights=2, partition_order=1)
    files = sum(len(f) for f in big.tables.values())
    expected = reference(rsettings, "dr1", root)
    with psycopg.connect(conninfo(rsettings)) as conn:
        create_release(conn, "dr1", latest_version(), 0)
    env = {**release_env(rsettings), "DPDB_RELEASE_BULK_ROWS": "0"}
    args = ["release", "load", "dr1", str(root)]
    loaded = "SELECT count(*) >= 3 FROM dpdb_meta.load_manifest WHERE target = 'dr1'"
    kill_when(args, env, rsettings, loaded)
    n = _scalar(rsettings, "SELECT count(*) FROM dpdb_meta.load_manifest WHERE target = 'dr1'")
    assert 3 <= n < files  # type: ignore[operator]
    building = (
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() "
        "AND (query LIKE 'CREATE %%INDEX%%' OR query LIKE 'INSERT INTO \"dr1\".\"_keys_%%')"
    ).replace("%%", "%")
    kill_when(args, env, rsettings, building)
    assert _scalar(rsettings, "SELECT state FROM dpdb_meta.release WHERE name = 'dr1'") == "created"
    load_release(rsettings.model_copy(update={"release_bulk_rows": 0}), "dr1", root)
    assert table_checksums(rsettings, "dr1") == expected
    assert_complete(rsettings, "dr1")


def test_parent_pixels_from_diaobjectlast(settings: Settings, conn: psycopg.Connection) -> None:
    """DiaSources take their DiaObject's pixel from DiaObjectLast: one index, no DiaObject partition."""
    target = target_table("prompt", latest_version(), "prompt", "DiaSource")
    conn.execute("SET enable_seqscan = off")
    query = parent_pixel_query(target, last=True).as_string(conn).replace("%s", "'{1,2,3}'::bigint[]")
    old = parent_pixel_query(target).as_string(conn).replace("%s", "'{1,2,3}'::bigint[]")
    relations = _relations(conn, query)
    assert relations in ([("diaobjectlast", "Index Scan")], [("diaobjectlast", "Bitmap Heap Scan")])
    assert len(_relations(conn, old)) == 12  # the old lookup probed every DiaObject partition
    conn.rollback()

    # A DiaObjectLast row whose pixel is not its position's: the DiaSource takes the kept pixel.
    kept = int(pixels(np.array([200.0]), np.array([-30.0]))[0])
    conn.execute(
        "INSERT INTO prompt.diaobjectlast (diaobjectid, validitystartmjdtai, ra, dec, ndiasources, "
        "firstdiasourcemjdtai, lastdiasourcemjdtai, healpix29) "
        "VALUES (777, 60000, 15, 0, 1, 60000, 60000, %s)",
        (kept,),
    )
    conn.commit()
    data = synthetic_table("DiaSource", 50, seed=3, parent_ids=np.full(50, 777, dtype=np.int64))
    path = Path(settings.home) / "dias.parquet"
    pq.write_table(data, path)
    load(settings, "DiaSource", [path])
    got = conn.execute("SELECT DISTINCT _healpix_29 FROM prompt.diasource WHERE diaobjectid = 777").fetchall()
    assert got == [(kept,)]


def _relations(conn: psycopg.Connection, query: str) -> list[tuple[str, str]]:
    plan = conn.execute(f"EXPLAIN (FORMAT JSON) {query}").fetchone()[0]  # type: ignore[index]
    out = []

    def walk(node: dict) -> None:
        if "Relation Name" in node:
            out.append((node["Relation Name"], node["Node Type"]))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return out


def test_streamed_checksum(settings: Settings, tmp_path: Path) -> None:
    """A new file is hashed while it streams: the manifest holds its SHA-256, and the same content
    under another path is skipped."""
    data = synthetic_table("DiaObject", 300, seed=5)
    first = tmp_path / "a.parquet"
    pq.write_table(data, first)
    second = tmp_path / "b.parquet"
    shutil.copy(first, second)
    assert load(settings, "DiaObject", [first]).files[0].status == "loaded"
    sha = hashlib.sha256(first.read_bytes()).hexdigest()
    assert _scalar(settings, "SELECT sha256 FROM dpdb_meta.load_manifest") == sha
    again = load(settings, "DiaObject", [second, first])
    assert [f.status for f in again.files] == ["skipped", "skipped"]
    assert _scalar(settings, "SELECT count(*) FROM prompt.diaobject") == 300
    assert json.dumps(_scalar(settings, "SELECT count(*) FROM dpdb_meta.load_manifest")) == "1"
