"""File loads straight into the partitions, the loader writing the key map (etl/partitions.py), and
one ADBC type catalog per process (dpdb/pg.py): issue 16, loads at raw COPY speed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dpdb import pg
from dpdb.config import Settings
from dpdb.db import conninfo
from dpdb.errors import ValidationError
from dpdb.etl.load import load
from dpdb.healpix import pixels
from dpdb.processing.synthetic import synthetic_table

DPDB = str(Path(sys.executable).with_name("dpdb"))

CONTENT = (
    "SELECT count(*), count(DISTINCT (diasourceid, timeprocessedmjdtai)), "
    "coalesce(sum(diasourceid::numeric * 7 + _healpix_29::numeric % 1000003), 0), "
    "(SELECT count(*) FROM prompt._keys_diasource), "
    "(SELECT coalesce(sum(diasourceid::numeric * 7 + _healpix_29::numeric % 1000003), 0) "
    " FROM prompt._keys_diasource) FROM prompt.diasource"
)
"""Rows, distinct keys, a checksum of keys and pixels, and the same of the key map."""


def _write(path: Path, rows: int, seed: int, first_id: int = 1) -> pa.Table:
    # spread over the whole sky: every one of the 12 partitions gets rows
    data = synthetic_table(
        "DiaSource", rows, seed=seed, first_id=first_id, ra_range=(0.0, 360.0), dec_range=(-80.0, 80.0)
    )
    pq.write_table(data, path, row_group_size=700)
    return data


def _content(settings: Settings) -> tuple:
    with psycopg.connect(conninfo(settings)) as conn:
        return tuple(conn.execute(CONTENT).fetchone())  # type: ignore[arg-type]


def test_direct_load_equals_parent_load(settings: Settings, tmp_path: Path) -> None:
    """Partition by partition, keys written by the loader: the same rows and key map as a COPY into the
    partitioned table through its trigger, in every partition."""
    path = tmp_path / "dias.parquet"
    _write(path, 3000, seed=11)
    direct = load(settings, "DiaSource", [path])
    assert direct.files[0].status == "loaded" and direct.rows == 3000
    assert direct.keymap_seconds > 0  # the loader wrote the keys itself
    got = _content(settings)
    assert got[0] == got[1] == got[3] == 3000 and got[2] == got[4]
    with psycopg.connect(conninfo(settings)) as conn:
        parts = conn.execute(
            "SELECT count(DISTINCT tableoid) FROM prompt.diasource"
        ).fetchone()[0]  # type: ignore[index]
        assert parts == 12
        conn.execute("TRUNCATE prompt.diasource, dpdb_meta.load_manifest")
        conn.commit()
    parent = load(settings, "DiaSource", [path], direct=False)
    assert parent.keymap_seconds == 0  # the trigger kept the map
    assert _content(settings) == got


def test_key_held_in_another_partition_refused(settings: Settings, tmp_path: Path) -> None:
    """A key already loaded, now at a position in another partition, refuses the whole file."""
    first = tmp_path / "a.parquet"
    data = _write(first, 500, seed=12)
    load(settings, "DiaSource", [first])
    before = _content(settings)
    again = _write(tmp_path / "b.parquet", 400, seed=13, first_id=10_000)
    moved = data.slice(7, 1)
    home = pixels(data["ra"].to_numpy()[7:8], data["dec"].to_numpy()[7:8])[0] >> 58  # its partition
    elsewhere = [(r, d) for r, d in ((200.0, -60.0), (20.0, 60.0)) if pixels([r], [d])[0] >> 58 != home]
    ra, dec = elsewhere[0]
    for col, value in (("ra", ra), ("dec", dec)):
        moved = moved.set_column(moved.schema.get_field_index(col), col, pa.array([value], moved[col].type))
    second = tmp_path / "b.parquet"
    pq.write_table(pa.concat_tables([again, moved.cast(again.schema)]), second)
    key = data["diaSourceId"][7].as_py()
    with pytest.raises(ValidationError, match=rf"duplicate primary key \(diaSourceId={key}, .*a\.parquet"):
        load(settings, "DiaSource", [second])
    assert _content(settings) == before
    with psycopg.connect(conninfo(settings)) as conn:
        assert conn.execute("SELECT count(*) FROM dpdb_meta.load_manifest").fetchone()[0] == 1  # type: ignore[index]


def test_kill_direct_load_then_rerun(settings: Settings, env: dict[str, str], tmp_path: Path) -> None:
    """kill -9 while the partitions' COPYs run: nothing of the file stays; the rerun loads it once."""
    path = tmp_path / "big.parquet"
    _write(path, 150_000, seed=14)
    args = [DPDB, "load", "DiaSource", str(path), "-q"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    copying = (
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() "
        "AND query LIKE 'COPY %diasource_hpx%'"
    )
    deadline = time.monotonic() + 300
    killed = False
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        while proc.poll() is None and time.monotonic() < deadline:
            if conn.execute(copying).fetchone()[0]:  # type: ignore[index]
                proc.kill()
                killed = True
                break
            time.sleep(0.005)
    proc.wait()
    assert killed, f"the load ended before the fault: {proc.stderr.read()!r}"  # type: ignore[union-attr]
    deadline = time.monotonic() + 60  # the server ends the killed client's session and its transaction
    while time.monotonic() < deadline and _content(settings)[0]:
        time.sleep(0.2)
    assert _content(settings)[0] == 0 and _content(settings)[3] == 0
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    got = _content(settings)
    assert got[0] == got[1] == got[3] == 150_000 and got[2] == got[4]
    again = subprocess.run(args, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and _content(settings) == got


def test_one_type_catalog_per_process(settings: Settings) -> None:
    """Connections to one URI share the ADBC database whose opening read the server's type catalog."""
    uri = pg.adbc_uri(settings)
    pg.close_idle_adbc(uri)
    with pg.adbc_connection(settings) as a, pg.adbc_connection(settings) as b:
        assert a is not b
        shared = pg._adbc_databases[uri]
        assert shared is not None and a._db is shared and b._db is shared
        for conn in (a, b):
            with conn.cursor() as cur:
                cur.execute("SELECT 41 + 1 AS x")
                assert cur.fetch_arrow_table()["x"].to_pylist() == [42]
    with pg.adbc_connection_to(uri, autocommit=True) as c:
        assert c._db is shared
        with c.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
    pg.close_idle_adbc(uri)
    assert uri not in pg._adbc_databases
    started = time.perf_counter()
    thread = pg.warm_adbc(settings)
    assert time.perf_counter() - started < 1  # the catalog is read in the background
    thread.join()
    assert pg._adbc_databases[uri] is not None
    pg.close_idle_adbc(uri)


def test_pixels_as_healpy() -> None:
    """dpdb's pixels (cdshealpix) are healpy's ang2pix at order 29, poles, RA wrap and edges included."""
    import healpy
    import numpy as np

    from dpdb.healpix import pixels

    rng = np.random.default_rng(3)
    ra = np.concatenate([rng.uniform(-720, 720, 20_000), [0, 360, 359.9999999999, 45, 90, 180, 270, 0, 0]])
    dec = np.concatenate([
        np.degrees(np.arcsin(rng.uniform(-1, 1, 20_000))), [90, -90, 0, 41.8103148957786, -41.8103148957786,
                                                             90, -90, 1e-12, -1e-12],
    ])  # fmt: skip
    expected = healpy.ang2pix(1 << 29, ra, dec, nest=True, lonlat=True)
    assert np.array_equal(pixels(ra, dec), expected)
    one = pixels(ra[0], dec[0])  # a scalar position: a scalar pixel, as healpy gives
    assert np.ndim(one) == 0
    assert int(one) == int(healpy.ang2pix(1 << 29, ra[0], dec[0], nest=True, lonlat=True))
    with pytest.raises(ValueError):
        pixels([10.0], [np.nan])  # refused as healpy refuses it
