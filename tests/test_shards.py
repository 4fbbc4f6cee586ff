"""Releases sharded over two local shard servers (postgres_fdw foreign partitions).

The shards are embedded servers under the session server's home
(``DPDB_HOME/shards/shard1..2``, started once for this module); each test gets a
fresh coordinator database and databases of the same name on the shards.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from conftest import DPDB, drop_database, new_database, release_env
from psycopg import sql

import dpdb
from dpdb.cli import cli
from dpdb.config import Settings
from dpdb.errors import QueryError, ShardError
from dpdb.healpix import partition_bounds
from dpdb.model.layout import RELEASE_TABLES
from dpdb.pg import conninfo
from dpdb.processing.release import produce
from dpdb.server import EmbeddedServer
from dpdb.shards.placement import assign
from dpdb.shards.servers import ShardServer, embedded_shards, shards_home

ORDER = 0  # 12 partitions; the field is centred where 4 of them meet, so both shards hold some of it
CENTER = (135.0, 1.0)
SHARDS = ("shard1", "shard2")


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sharded")
    return {
        name: produce(root / name, name, seed=n, objects=1200, nights=2, partition_order=ORDER, center=CENTER)
        and root / name
        for n, name in enumerate(("dr1", "dr2", "dr3"), start=1)
    }


@pytest.fixture(scope="module")
def shard_servers(pg_home: Path) -> Iterator[list[ShardServer]]:
    """The two shard servers, stopped when the module is done."""
    yield []
    for server in embedded_shards(Settings(home=pg_home)):
        server.down()


def _drop_on_shards(settings: Settings) -> None:
    for server in embedded_shards(settings):
        if server.running():
            with psycopg.connect(server.conninfo("postgres"), autocommit=True) as conn:
                drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                conn.execute(drop.format(sql.Identifier(settings.database)))


@pytest.fixture
def sharded(
    pg_home: Path, template_db: str, shard_servers: list, tmp_path: Path
) -> Iterator[dpdb.Archive]:
    """A fresh coordinator database with two registered local shards (``dpdb db up --shards 2``)."""
    name = new_database(pg_home, template_db)
    settings = Settings(home=pg_home, database=name, partition_order=ORDER, archive_dir=tmp_path / "archive")
    archive = dpdb.Archive(settings=settings)
    archive.up(shards=2)
    yield archive
    drop_database(pg_home, name)
    _drop_on_shards(settings)


@pytest.fixture
def single(pg_home: Path, template_db: str, tmp_path: Path) -> Iterator[dpdb.Archive]:
    """A fresh database without shards (the single-node reference)."""
    name = new_database(pg_home, template_db)
    settings = Settings(home=pg_home, database=name, partition_order=ORDER, archive_dir=tmp_path / "single")
    yield dpdb.Archive(settings=settings)
    drop_database(pg_home, name)


def _ready(archive: dpdb.Archive, name: str, directory: Path) -> None:
    archive.releases.create(name, balance_from=directory)
    archive.releases.load(name, directory)
    report = archive.releases.validate(name)
    assert report.ok, [(c.name, c.figure) for c in report.checks if not c.ok]


def _checksums(archive: dpdb.Archive, schema: str) -> dict[str, tuple]:
    """Rows and md5 of every table of ``schema`` in key order."""
    from dpdb.etl.export import select_sql
    from dpdb.etl.validate import target_table
    from dpdb.model.felis import latest_version

    out = {}
    with psycopg.connect(conninfo(archive.settings)) as conn:
        for table in RELEASE_TABLES:
            inner = select_sql(target_table(schema, latest_version(), "release", table)).as_string(conn)
            out[table] = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|'), '')) FROM ({inner}) t"
            ).fetchone()
    return out


EXAMPLES = {
    "cone": "SELECT objectId, coord_ra, coord_dec, nanojanskyToAbMag(r_psfFlux) AS r_mag FROM current.Object "
    "WHERE q3c_radial_query(coord_ra, coord_dec, 135.2, 1.1, 0.5) ORDER BY objectId",
    "count": "SELECT count(*) AS n, sum(nDiaSources) AS s FROM current.DiaObject",
    "per pixel": "SELECT _healpix_29 >> 46 AS pixel, count(*) AS n, avg(psfFlux) AS flux FROM current.Source "
    "GROUP BY 1 ORDER BY 1",
    "object and sources": "SELECT o.objectId, s.sourceId, s.psfFlux FROM current.Object o "
    "JOIN current.Source s USING (objectId) WHERE o.objectId = (SELECT min(objectId) FROM current.Object) "
    "ORDER BY s.sourceId",
    "match": "SELECT count(*) AS n FROM current.DiaObject d JOIN current.Object o "
    "ON q3c_join(d.ra, d.dec, o.coord_ra, o.coord_dec, 1.0 / 3600)",
}


def test_sharded_release_equals_single_node(
    sharded: dpdb.Archive, single: dpdb.Archive, produced: dict[str, Path]
) -> None:
    """The same files, loaded single-node and over two shards: the same rows, the same answers."""
    for archive in (single, sharded):
        _ready(archive, "dr1", produced["dr1"])
        archive.releases.activate("dr1")
    placement = sharded.shards.placement("dr1")
    assert set(placement) == set(SHARDS)  # balanced by rows: both shards hold some of the sky
    counts = {}
    for shard in SHARDS:
        info = _shard_info(sharded, shard)
        with psycopg.connect(info) as remote:
            counts[shard] = remote.execute("SELECT count(*) FROM dr1.object").fetchone()[0]
    assert all(counts.values()) and sum(counts.values()) == 1200
    with psycopg.connect(conninfo(sharded.settings)) as conn:  # nothing of the big tables on the coordinator
        local = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'dr1' AND c.relname LIKE 'object\\_hpx%' AND c.relkind = 'r'"
        ).fetchone()
        assert local == (0,)
    assert _checksums(sharded, "dr1") == _checksums(single, "dr1")
    for label, query in EXAMPLES.items():
        a, b = single.query(query), sharded.query(query)
        assert len(a) > 0, label
        assert a.to_pandas().equals(b.to_pandas()), label
    # A reader login (what TAP uses) reads the sharded release through the views, as their owner.
    password = sharded.grant_reader("shard_reader")
    reader = psycopg.conninfo.make_conninfo(
        host="127.0.0.1", port=EmbeddedServer(sharded.settings.home).port, dbname=sharded.settings.database,
        user="shard_reader", password=password,
    )  # fmt: skip
    with psycopg.connect(reader) as conn:
        assert conn.execute("SELECT count(*) FROM current.Object").fetchone() == (1200,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM dr1.object")
    # Time travel: current as of now, and the cone facade.
    assert len(sharded.query("SELECT * FROM Object", release="current", as_of="now")) == 1200
    cones = [
        a.cone("Object", 135.2, 1.1, 0.5).to_pandas().sort_values("objectId", ignore_index=True)
        for a in (single, sharded)
    ]
    assert len(cones[0]) > 0 and cones[0].equals(cones[1])


def _shard_info(archive: dpdb.Archive, shard: str) -> str:
    from dpdb.shards.registry import shard_conninfo

    with psycopg.connect(conninfo(archive.settings)) as conn:
        return shard_conninfo(conn, shard)


def test_explain_pushdown_and_pruning(sharded: dpdb.Archive, produced: dict[str, Path]) -> None:
    """EXPLAIN VERBOSE: the cone's q3c call and the aggregates run on the shards; pixel ranges prune."""
    _ready(sharded, "dr1", produced["dr1"])
    sharded.releases.activate("dr1")
    with psycopg.connect(conninfo(sharded.settings)) as conn:

        def plan(query: str) -> str:
            return "\n".join(r[0] for r in conn.execute(f"EXPLAIN (VERBOSE, COSTS OFF) {query}"))

        near = "q3c_radial_query(coord_ra, coord_dec, 136.2, 1.1, 0.01)"
        cone = plan(f"SELECT objectid FROM current.object WHERE {near}")
        # q3c_radial_query is an inlined SQL function: its distance test and index ranges go to the shards
        remote = [line for line in cone.splitlines() if "Remote SQL" in line]
        assert remote and all("q3c_sindist(coord_ra, coord_dec, 136.2" in line for line in remote), cone
        assert all("q3c_ang2ipix(coord_ra, coord_dec) >=" in line for line in remote), cone
        # With the cone's pixel range (what Archive.cone adds) only the partitions it touches are scanned.
        import healpy

        base = int(healpy.ang2pix(1, 136.2, 1.1, nest=True, lonlat=True))  # the cone's partition at order 0
        _, lo, hi = partition_bounds(0)[base]
        pruned = plan(
            f"SELECT objectid FROM current.object WHERE {near} AND _healpix_29 >= {lo} AND _healpix_29 < {hi}"
        )
        assert pruned.count("Foreign Scan on") == 1, pruned
        assert f"Scan on dr1.object_hpx0_{base:02d}" in pruned, pruned
        assert "_healpix_29 >=" in pruned.split("Remote SQL")[1], pruned  # the range goes along
        # Partition-wise aggregation: grouped by the partition key, the aggregates run on the shards
        # (all at once: async) and only one row per pixel comes back.
        agg = plan("SELECT _healpix_29, count(*), avg(psfflux) FROM current.source GROUP BY _healpix_29")
        assert "Remote SQL: SELECT _healpix_29, count(*), avg(psfflux) FROM dr1.source_hpx0_" in agg, agg
        assert "GROUP BY 1" in agg and "Async Foreign Scan" in agg, agg
        # An Object with its Sources (same pixel): partition-wise, the join itself runs on the shards ...
        join = (
            "SELECT o.objectid, s.sourceid FROM current.object o JOIN current.source s "
            "ON s.objectid = o.objectid AND s._healpix_29 = o._healpix_29 WHERE o.objectid = 42"
        )
        joined = plan(join)
        assert f"INNER JOIN dr1.source_hpx0_{base:02d}" in joined and "Async Foreign Scan" in joined, joined
        # ... and with the object's pixel, only its own partitions on its shard are read, by key.
        pruned = plan(f"{join} AND o._healpix_29 = {lo}")
        remote = [line for line in pruned.splitlines() if "Remote SQL" in line]
        assert len(remote) in (1, 2), pruned
        assert all(f"_hpx0_{base:02d}" in r and "objectid = 42" in r for r in remote), pruned


def test_cone_pixel_ranges() -> None:
    """The pixel ranges Archive.cone adds cover the cone (so pruning never loses a row)."""
    import healpy
    import numpy as np

    from dpdb.archive import cone_pixel_ranges

    rng = np.random.default_rng(5)
    for ra, dec, radius in ((136.2, 1.1, 10 / 3600), (135.0, 0.0, 0.5), (10.0, 89.9, 0.3), (0.01, -30, 2.0)):
        ranges = np.array(cone_pixel_ranges(ra, dec, radius))
        assert len(ranges) and (ranges[:, 0] < ranges[:, 1]).all()
        # random points inside the cone: each in some range
        r = radius * np.sqrt(rng.uniform(0, 1, 2000)) * 0.999
        theta = rng.uniform(0, 2 * np.pi, 2000)
        d = np.clip(dec + r * np.sin(theta), -90, 90)
        a = (ra + r * np.cos(theta) / max(np.cos(np.radians(d)).min(), 1e-3)) % 360
        inside = np.degrees(np.arccos(np.clip(
            np.sin(np.radians(d)) * np.sin(np.radians(dec))
            + np.cos(np.radians(d)) * np.cos(np.radians(dec)) * np.cos(np.radians(a - ra)), -1, 1))) < radius
        pix = healpy.ang2pix(1 << 29, a[inside], d[inside], nest=True, lonlat=True)
        i = np.searchsorted(ranges[:, 0], pix, side="right") - 1
        assert ((i >= 0) & (pix < ranges[np.clip(i, 0, None), 1])).all()


def test_shard_down_named_error(sharded: dpdb.Archive, produced: dict[str, Path]) -> None:
    """A stopped shard: a query that needs it fails naming it; one that does not still answers."""
    _ready(sharded, "dr1", produced["dr1"])
    sharded.releases.activate("dr1")
    placement = sharded.shards.placement("dr1")
    down = ShardServer(shards_home(sharded.settings) / "shard2")
    lo, hi = placement["shard1"][0]
    try:
        assert down.down()
        with pytest.raises(QueryError, match=r"^query failed: shard shard2 is unreachable"):
            sharded.query("SELECT count(*) FROM current.Object")
        kept = sharded.query(
            f"SELECT count(*) AS n FROM current.Object WHERE _healpix_29 >= {lo} AND _healpix_29 < {hi}"
        )
        assert kept["n"][0] > 0
        assert len(sharded.query("SELECT * FROM current.Visit")) > 0  # coordinator tables
        status = sharded.status()
        assert status["shard shard2"].startswith("DOWN") and status["shard shard1"].startswith("up")
        proc = subprocess.run(
            [DPDB, "query", "SELECT count(*) FROM current.Source"], env=release_env(sharded.settings),
            capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert "shard shard2 is unreachable" in proc.stderr
    finally:
        sharded.up(shards=2)  # `dpdb db up --shards 2` starts it again
    assert sharded.query("SELECT count(*) AS n FROM current.Object")["n"][0] == 1200


def test_lifecycle_archive_restore(sharded: dpdb.Archive, produced: dict[str, Path]) -> None:
    """activate, supersede, archive (shards' schemas dropped), restore (distributed again)."""
    _ready(sharded, "dr1", produced["dr1"])
    sharded.releases.activate("dr1")
    before = _checksums(sharded, "dr1")
    for name in ("dr2", "dr3"):  # not validated (forced): this test is about archive and restore
        sharded.releases.create(name, balance_from=produced[name])
        sharded.releases.load(name, produced[name])
        activation = sharded.releases.activate(name, force=True)
    assert activation.archived == ["dr1"]  # retention archives dr1
    for shard in SHARDS:
        with psycopg.connect(_shard_info(sharded, shard)) as remote:
            assert remote.execute("SELECT to_regnamespace('dr1')").fetchone() == (None,)
    sharded.releases.restore("dr1")
    assert set(sharded.shards.placement("dr1")) == set(SHARDS)
    assert _checksums(sharded, "dr1") == before


def test_rerun_and_interrupted_commit(sharded: dpdb.Archive, produced: dict[str, Path]) -> None:
    """A prepared shard transaction left by a crashed load is settled; a rerun loads nothing twice."""
    from dpdb.shards.commit import gid_for

    sharded.releases.create("dr1", balance_from=produced["dr1"])
    # A crash after PREPARE on a shard and before the coordinator's commit leaves this behind:
    info = _shard_info(sharded, "shard1")
    with psycopg.connect(info, autocommit=True) as remote:
        remote.execute("BEGIN")
        remote.execute("DELETE FROM dr1.object")  # takes a lock, as a load's COPY would
        gid = gid_for(sharded.settings.database, 999_999, "a" * 64)
        remote.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))
    first = sharded.releases.load("dr1", produced["dr1"])
    assert sum(first.rows.values()) > 0
    with psycopg.connect(info) as remote:
        assert remote.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone() == (0,)
    again = sharded.releases.load("dr1", produced["dr1"])
    assert sum(again.rows.values()) == 0 and again.skipped_files > 0
    report = sharded.releases.validate("dr1")
    assert report.ok, [(c.name, c.figure) for c in report.checks if not c.ok]


CRASH_AFTER_COORDINATOR_COMMIT = """
import os, sys
from pathlib import Path
import dpdb
from dpdb.config import Settings
from dpdb.shards.commit import ShardTransaction

def crash(self):  # the process dies after the coordinator committed, before the shards commit
    os._exit(9)

ShardTransaction.commit = crash
settings = Settings(home=Path(sys.argv[1]), database=sys.argv[2], partition_order=0)
dpdb.Archive(settings=settings).releases.load("dr1", sys.argv[3], jobs=1)
"""


def test_crash_between_commits(
    sharded: dpdb.Archive, single: dpdb.Archive, produced: dict[str, Path]
) -> None:
    """Killed after the coordinator committed a file and before its shards did: the rerun commits the
    shards' prepared transactions (the manifest says the file is loaded) and loads the rest."""
    import sys

    for archive in (single, sharded):
        archive.releases.create("dr1", balance_from=produced["dr1"])
    single.releases.load("dr1", produced["dr1"])
    s = sharded.settings
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_COORDINATOR_COMMIT, str(s.home), s.database, str(produced["dr1"])],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert crashed.returncode == 9, crashed.stderr[-2000:]
    prepared = 0
    for shard in SHARDS:
        with psycopg.connect(_shard_info(sharded, shard)) as remote:
            prepared += remote.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone()[0]
    assert prepared == 1  # the first file's rows wait on one shard, invisible
    rerun = sharded.releases.load("dr1", produced["dr1"])
    assert rerun.skipped_files == 3  # Visit and CcdVisit (coordinator tables), and that first Object file
    for shard in SHARDS:
        with psycopg.connect(_shard_info(sharded, shard)) as remote:
            assert remote.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone() == (0,)
    assert _checksums(sharded, "dr1") == _checksums(single, "dr1")


def test_shard_cli(sharded: dpdb.Archive, produced: dict[str, Path]) -> None:
    env = release_env(sharded.settings)
    runner = CliRunner()
    listed = runner.invoke(cli, ["shard", "list"], env=env)
    assert listed.exit_code == 0 and "shard1" in listed.output and "shard2" in listed.output, listed.output
    status = runner.invoke(cli, ["db", "status"], env=env)
    assert "shard shard1" in status.output and "up at 127.0.0.1:" in status.output, status.output
    sharded.releases.create("dr1", balance_from=produced["dr1"])
    refused = runner.invoke(cli, ["shard", "remove", "shard1"], env=env)
    assert refused.exit_code == 1
    assert "error: shard shard1 holds partitions of release(s) dr1" in refused.output
    bad = runner.invoke(cli, ["shard", "add", "far", "host=127.0.0.1 port=1 dbname=x user=x"], env=env)
    assert bad.exit_code == 1 and "error: shard far is unreachable" in bad.output, bad.output
    # Any server by DSN: here another database of shard1's server, with its login in the DSN.
    server = ShardServer(shards_home(sharded.settings) / "shard1")
    other = f"{sharded.settings.database}_x"
    with psycopg.connect(server.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(other)))
    try:
        added = runner.invoke(cli, ["shard", "add", "extra", server.dsn(other)], env=env)
        assert added.exit_code == 0, added.output
        assert f"shard extra registered (127.0.0.1:{server.port}/{other})" in added.output
        assert [s.name for s in sharded.shards.list()] == ["extra", "shard1", "shard2"]
        assert "password" not in runner.invoke(cli, ["shard", "list"], env=env).output
        assert runner.invoke(cli, ["shard", "remove", "extra"], env=env).exit_code == 0
    finally:
        with psycopg.connect(server.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(other)))
    sharded.releases.drop("dr1")
    for shard in SHARDS:
        with psycopg.connect(_shard_info(sharded, shard)) as remote:
            assert remote.execute("SELECT to_regnamespace('dr1')").fetchone() == (None,)
    removed = runner.invoke(cli, ["shard", "remove", "shard2"], env=env)
    assert removed.exit_code == 0, removed.output
    assert [s.name for s in sharded.shards.list()] == ["shard1"]
    with pytest.raises(ShardError, match="unknown shard shard2"):
        sharded.shards.remove("shard2")


def test_assign_balanced_contiguous() -> None:
    weights = [0.0] * 48
    weights[24:28] = [10, 30, 30, 10]
    ranges = assign(["a", "b"], 1, weights)
    assert ranges == {"a": range(0, 26), "b": range(26, 48)}
    equal = assign(["a", "b", "c"], 0)
    assert [len(r) for r in equal.values()] == [4, 4, 4]


AGGREGATES = {
    "count": "SELECT count(*) FROM current.Object",
    "several": "SELECT count(*) AS n, sum(nDiaSources) AS s, min(ra) AS lo, max(dec) AS hi, "
    "avg(nDiaSources) AS mean, count(raErr) FROM current.DiaObject",
    "where": "SELECT count(*), avg(psfFlux) AS flux, sum(psfFlux) FROM current.Source "
    "WHERE psfFlux > 0",
    "unqualified": "SELECT count(*) AS n, max(objectId) FROM Object WHERE coord_dec > 1",
    "expression": "SELECT count(*) + 1 AS k, sum(psfFlux) / count(*) AS m, min(ccdVisitId) "
    "FROM current.Source",
    "none match": "SELECT count(*) AS n, sum(psfFlux), avg(psfFlux) FROM current.Source WHERE psfFlux > 1e30",
}
GROUPED = {  # ordered, so that every row can be compared
    "per region": "SELECT _healpix_29 >> 56 AS region, count(*), avg(psfFlux) AS flux FROM current.Source "
    "GROUP BY 1 ORDER BY 1",
    "by band": "SELECT band, count(*) AS N, min(psfFlux), max(ccdVisitId) FROM current.Source "
    "WHERE psfFlux > 0 GROUP BY band ORDER BY N DESC, band LIMIT 3",
    "expression of a group": "SELECT (_healpix_29 >> 58) + 1 AS k, sum(psfFlux) / count(*) AS m "
    "FROM current.Source GROUP BY _healpix_29 >> 58 ORDER BY _healpix_29 >> 58",
    "no aggregate": "SELECT band FROM current.Source GROUP BY band ORDER BY 1",
}


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, float) and isinstance(y, float):
            if abs(x - y) > 1e-9 * max(abs(x), abs(y), 1e-300):
                return False
        elif x != y or type(x) is not type(y):
            return False
    return True


def test_aggregates_run_per_shard(
    sharded: dpdb.Archive, single: dpdb.Archive, produced: dict[str, Path]
) -> None:
    """count/sum/min/max/avg over a sharded table, grouped or not: one aggregate per shard (EXPLAIN), the
    single node's answers."""
    from dpdb.readers import reader_connect
    from dpdb.shards.aggregate import rewrite_aggregate

    for archive in (single, sharded):
        _ready(archive, "dr1", produced["dr1"])
        archive.releases.activate("dr1")
    for label, query in AGGREGATES.items():
        release = "current" if label == "unqualified" else None
        a = single.query_arrow(query, release=release)
        b = sharded.query_arrow(query, release=release)
        assert a.schema.names == b.schema.names, label
        assert [f.type for f in a.schema] == [f.type for f in b.schema], (label, a.schema, b.schema)
        assert _same(a.to_pylist()[0], b.to_pylist()[0]), (label, a.to_pylist(), b.to_pylist())
    for label, query in GROUPED.items():
        a, b = single.query_arrow(query), sharded.query_arrow(query)
        assert a.schema == b.schema, (label, a.schema, b.schema)
        rows = list(zip(a.to_pylist(), b.to_pylist(), strict=True))
        assert rows and all(_same(x, y) for x, y in rows), label
    with reader_connect(sharded.settings) as reader:
        rewritten = rewrite_aggregate(reader, AGGREGATES["where"], ["public"])
        assert rewritten is not None and '"current"."source@shard1"' in rewritten, rewritten
        unqualified = rewrite_aggregate(reader, AGGREGATES["unqualified"], ["current", "public"])
        assert unqualified is not None and '"current"."object@shard2"' in unqualified, unqualified
        for label, query in GROUPED.items():
            assert rewrite_aggregate(reader, query, ["public"]) is not None, label
        prompt = AGGREGATES["where"].replace("current.", "prompt.")
        assert rewrite_aggregate(reader, prompt, ["public"]) is None
        for kept in (
            "SELECT count(*) FROM current.Source GROUP BY ROLLUP (band)",
            "SELECT band, count(*) FROM current.Source GROUP BY band HAVING count(*) > 1",
            "SELECT band, count(*) FROM current.Source GROUP BY band ORDER BY count(*)",
            "SELECT band AS b, count(*) FROM current.Source GROUP BY b",
            "SELECT band, psfFlux, count(*) FROM current.Source GROUP BY band",
            "SELECT count(DISTINCT objectId) FROM current.Source",
            "SELECT count(*) FROM current.Source s JOIN current.Object o USING (objectId)",
            "SELECT objectId FROM current.Object",
            "SELECT count(*) FROM current.Visit",
        ):
            assert rewrite_aggregate(reader, kept, ["public"]) is None, kept
        # A WHERE clause that prunes to one shard's pixels reads only that shard.
        lo, hi = sharded.shards.placement("dr1")["shard1"][0]
        one = rewrite_aggregate(
            reader, f"SELECT count(*) FROM current.Object WHERE _healpix_29 >= {lo} AND _healpix_29 < {hi}",
            ["public"],
        )  # fmt: skip
        assert one is not None and "@shard1" in one and "@shard2" not in one, one
    with psycopg.connect(conninfo(sharded.settings)) as conn:
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (VERBOSE, COSTS OFF) {rewritten}"))
    remote = [line.strip() for line in plan.splitlines() if "Remote SQL" in line]
    # each shard computes the aggregates of its rows, with the WHERE clause; two rows cross the network
    assert len(remote) == 2, plan
    head = "Remote SQL: SELECT count(*), sum(psfflux), count(psfflux)"
    assert all(r.startswith(head) for r in remote), plan
    assert all("FROM dr1.source WHERE ((psfflux > " in r for r in remote), plan
    assert plan.count("Async Foreign Scan") == 2, plan
    # The unrewritten statement fetches every row: the case this exists for.
    with psycopg.connect(conninfo(sharded.settings)) as conn:
        plain = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (VERBOSE, COSTS OFF) {AGGREGATES['where']}"))
    assert "count(*)" not in "".join(line for line in plain.splitlines() if "Remote SQL" in line), plain
    # Grouped by a sky region: each shard groups its rows, one row per region and shard comes back.
    with reader_connect(sharded.settings) as reader:
        grouped = rewrite_aggregate(reader, GROUPED["per region"], ["public"])
    assert grouped is not None
    with psycopg.connect(conninfo(sharded.settings)) as conn:
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (VERBOSE, COSTS OFF) {grouped}"))
    remote = [line.strip() for line in plan.splitlines() if "Remote SQL" in line]
    assert len(remote) == 2 and all("GROUP BY" in r and "count(*)" in r for r in remote), plan


def test_migrate_reaches_every_shard(empty_settings: Settings, shard_servers: list) -> None:
    """`db migrate` of a release sharded at schema v1: the new columns on the shards too, then readable."""
    from dpdb.migrate import migrate
    from dpdb.registry.catalogs import create_catalog
    from dpdb.shards.servers import start_shards

    settings = empty_settings
    try:
        migrate(settings, to=1)
        with psycopg.connect(conninfo(settings)) as conn:
            start_shards(settings, 2, conn)
            conn.commit()
            create_catalog(conn, "dr1", "release", 1, 0)
            conn.execute(
                "INSERT INTO dr1.object (objectid, coord_ra, coord_dec, _healpix_29) VALUES (7, 1, 2, 3)"
            )
        archive = dpdb.Archive(settings=settings)
        assert archive.migrate()[0] == 1
        for shard in SHARDS:
            with psycopg.connect(_shard_info(archive, shard)) as remote:
                cols = {r[0] for r in remote.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'dr1' AND table_name = 'object'"
                )}  # fmt: skip
                assert {"photoz", "photoz_pest"} <= cols, shard
        with psycopg.connect(conninfo(settings)) as conn:
            assert conn.execute("SELECT objectid, photoz FROM dr1.object").fetchall() == [(7, None)]
            rows = conn.execute('SELECT count(photoz), count(*) FROM dr1."object@shard1"').fetchone()
            assert rows == (0, 1)
        again = archive.migrate()  # a rerun changes nothing
        assert again[0] == again[1]
    finally:
        _drop_on_shards(settings)


def test_upkeep_mends_older_shards(sharded: dpdb.Archive, produced: dict[str, Path]) -> None:
    """A shard without the PUBLIC user mapping and a release without per-shard foreign tables (made by
    earlier versions) are mended by `db migrate`: reader logins reach the shards, aggregates run per shard."""
    _ready(sharded, "dr1", produced["dr1"])
    sharded.releases.activate("dr1")
    with psycopg.connect(conninfo(sharded.settings)) as conn:
        conn.execute("DROP USER MAPPING FOR PUBLIC SERVER dpdb_shard_shard1")
        conn.execute('DROP VIEW current."object@shard1", current."object@shard2"')
        conn.execute('DROP FOREIGN TABLE dr1."object@shard1", dr1."object@shard2"')
    def direct_read() -> int:  # as a role reading the release's tables itself (published releases)
        with psycopg.connect(conninfo(sharded.settings)) as conn:
            conn.execute("CREATE ROLE upkeep_probe")
            conn.execute("GRANT USAGE ON SCHEMA dr1 TO upkeep_probe")
            conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA dr1 TO upkeep_probe")
            conn.execute("SET ROLE upkeep_probe")
            try:
                return conn.execute("SELECT count(*) FROM dr1.object").fetchone()[0]
            finally:
                conn.rollback()

    with pytest.raises(psycopg.Error, match='user mapping not found for "upkeep_probe"'):
        direct_read()
    sharded.migrate()
    assert direct_read() == 1200
    assert sharded.query("SELECT count(*) AS n FROM current.Object")["n"][0] == 1200
    with psycopg.connect(conninfo(sharded.settings)) as conn:
        views = conn.execute(
            "SELECT count(*) FROM pg_views WHERE schemaname = 'current' AND viewname LIKE 'object@%'"
        ).fetchone()
        assert views == (2,)


def test_validation_per_shard(sharded: dpdb.Archive, single: dpdb.Archive, produced: dict[str, Path]) -> None:
    """Validation runs its scans on the shards and adds them up: the single node's figures; a key
    repeated on two shards (which no shard's own key can refuse) is found."""
    reports = {}
    for label, archive in (("single", single), ("sharded", sharded)):
        archive.releases.create("dr1", balance_from=produced["dr1"])
        archive.releases.load("dr1", produced["dr1"])
        reports[label] = archive.releases.validate("dr1")
    a, b = reports["single"], reports["sharded"]
    assert a.ok and b.ok, [(c.name, c.figure) for c in b.checks if not c.ok]
    assert [(c.name, c.figure) for c in a.checks] == [(c.name, c.figure) for c in b.checks]
    assert a.null_fractions == b.null_fractions and a.rows == b.rows
    # dr2, loaded over the shards, then an Object of shard1 copied into a partition of shard2
    sharded.releases.create("dr2", balance_from=produced["dr2"])
    sharded.releases.load("dr2", produced["dr2"])
    lo, _ = sharded.shards.placement("dr2")["shard2"][0]
    with psycopg.connect(_shard_info(sharded, "shard1")) as one:
        first = one.execute("SELECT objectid, coord_ra, coord_dec FROM dr2.object LIMIT 1").fetchone()
        objectid, ra, dec = first
    with psycopg.connect(_shard_info(sharded, "shard2")) as two:
        two.execute(
            "INSERT INTO dr2.object (objectid, coord_ra, coord_dec, _healpix_29) VALUES (%s, %s, %s, %s)",
            (objectid, ra, dec, lo),
        )
    report = sharded.releases.validate("dr2")
    failed = {c.name: c.figure for c in report.checks if not c.ok}
    assert failed.get("keys: Object") == "1 repeated (objectid)", failed
    assert "rows: Object" in failed and "partitions: Object" in failed, failed
