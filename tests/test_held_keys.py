"""Release key maps built from the keys the loader held (etl/heldkeys.py, dpdb/lifecycle/bulk.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
import pytest
from test_bulk_load import assert_complete

from dpdb.config import Settings
from dpdb.db import conninfo
from dpdb.etl import heldkeys
from dpdb.etl.heldkeys import first_repeat, sorted_by_key
from dpdb.keymap import fill_statement
from dpdb.lifecycle.load import load_release
from dpdb.model.felis import latest_version
from dpdb.processing.release import produce
from dpdb.registry.releases import create_release

MAPS = {
    "object": ["objectid"],
    "source": ["sourceid"],
    "forcedsource": ["objectid", "ccdvisitid"],
    "diaobject": ["diaobjectid", "validitystartmjdtai"],
    "diasource": ["diasourceid", "timeprocessedmjdtai"],
    "diaforcedsource": ["diaforcedsourceid", "timeprocessedmjdtai"],
}


def maps_equal_tables(conn: psycopg.Connection, name: str) -> None:
    """Each key map holds exactly its table's keys and pixels."""
    for table, keys in MAPS.items():
        cols = ", ".join([*keys, "_healpix_29"])
        differ = conn.execute(
            f"SELECT count(*) FROM ((SELECT {cols} FROM {name}.{table} EXCEPT ALL "
            f"SELECT {cols} FROM {name}._keys_{table}) UNION ALL (SELECT {cols} FROM {name}._keys_{table} "
            f"EXCEPT ALL SELECT {cols} FROM {name}.{table})) d"
        ).fetchone()[0]  # type: ignore[index]
        assert differ == 0, table


def bulk_load(rsettings: Settings, root: Path) -> Settings:
    bulk = rsettings.model_copy(update={"release_bulk_rows": 0})
    with psycopg.connect(conninfo(bulk)) as conn:
        create_release(conn, "dr1", latest_version(), rsettings.partition_order)
    return bulk


def test_held_keys_are_checked_and_the_maps_deferred(rsettings: Settings, tmp_path: Path) -> None:
    """Every file's keys held: checked in memory, each map left empty until a write fills it whole."""
    root = tmp_path / "dr1"
    produce(root, "dr1", objects=800, nights=2, partition_order=3)
    bulk = bulk_load(rsettings, root)
    result = load_release(bulk, "dr1", root)
    assert result.keymap_seconds > 0 and result.keymap_load_seconds == 0  # every file's keys held
    assert_complete(bulk, "dr1")
    with psycopg.connect(conninfo(bulk), autocommit=True) as conn:
        for table, keys in MAPS.items():
            assert conn.execute(f"SELECT count(*) FROM dr1._keys_{table}").fetchone() == (0,), table
            filled = conn.execute(fill_statement("dr1", table, keys)).fetchone()
            assert filled == (True,), table
            assert conn.execute(fill_statement("dr1", table, keys)).fetchone() == (False,), table  # once
        maps_equal_tables(conn, "dr1")


def test_keys_without_room_are_copied_by_their_files(
    rsettings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond the memory bound, a file COPYs its keys into the map itself; both kinds fill one map."""
    root = tmp_path / "dr1"
    manifest = produce(root, "dr1", objects=800, nights=2, partition_order=3)
    assert len(manifest.tables["Object"]) > 1
    monkeypatch.setattr(heldkeys, "HELD_KEY_BYTES", 8_000)  # room for a few small files only
    bulk = bulk_load(rsettings, root)
    result = load_release(bulk, "dr1", root)
    assert result.keymap_load_seconds > 0
    assert_complete(bulk, "dr1")
    with psycopg.connect(conninfo(bulk)) as conn:
        # a table with a file that spilled has its map filled and keyed; the others' maps are deferred
        filled = {t: conn.execute(fill_statement("dr1", t, keys)).fetchone()[0] for t, keys in MAPS.items()}
        assert 0 < sum(filled.values()) < len(MAPS), filled  # type: ignore[arg-type]
        maps_equal_tables(conn, "dr1")


def test_interrupted_key_map_build_is_resumed(rsettings: Settings, tmp_path: Path) -> None:
    """The attach committed, a key map's build did not (a kill): the rerun rebuilds, complete."""
    root = tmp_path / "dr1"
    produce(root, "dr1", objects=600, nights=1, partition_order=3)
    bulk = bulk_load(rsettings, root)
    load_release(bulk, "dr1", root)
    with psycopg.connect(conninfo(bulk)) as conn:  # what a kill during the map's unit leaves
        conn.execute("ALTER TABLE dr1._keys_source DROP CONSTRAINT _keys_source_pkey")
        conn.execute("TRUNCATE dr1._keys_source")
        conn.execute("UPDATE dpdb_meta.release SET state = 'created' WHERE name = 'dr1'")
    again = load_release(bulk, "dr1", root)
    assert again.index_seconds > 0 and sum(again.rows.values()) == 0  # resumed: built, nothing reloaded
    assert_complete(bulk, "dr1")
    with psycopg.connect(conninfo(bulk)) as conn:
        maps_equal_tables(conn, "dr1")


def test_sorted_by_key() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 50, 5000)
    b = rng.random(5000)
    pix = rng.integers(0, 1 << 60, 5000)
    out = sorted_by_key([a, b, pix])
    order = np.lexsort((b, a))
    for got, want in zip(out, (a[order], b[order], pix[order]), strict=True):
        assert np.array_equal(got, want)
    # already in key order (ties on the first key broken by the second): returned as they are
    assert all(x is y for x, y in zip(sorted_by_key(out), out, strict=True))
    # concatenated sorted runs (two files) come back merged
    runs = [np.concatenate([np.arange(0, 10, 2), np.arange(1, 10, 2)]), np.arange(10)]
    assert np.array_equal(sorted_by_key(runs)[0], np.arange(10))


def test_first_repeat() -> None:
    keys = np.array([1, 2, 2, 3, 3]), np.array([0.5, 0.5, 0.75, 0.25, 0.25])
    pix = np.arange(5)
    assert first_repeat([*keys, pix]) == (3, 0.25)  # (2, 0.5) and (2, 0.75) differ on the second key
    assert first_repeat([keys[0][:3], pix[:3]]) == (2,)
    assert first_repeat([np.arange(4), pix[:4]]) is None
    assert first_repeat([np.arange(1), pix[:1]]) is None
