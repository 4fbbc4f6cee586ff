"""The data-release lifecycle: produce, create, load, validate, activate, retain/archive, restore, drop."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import release_env

from dpdb import Archive
from dpdb.cli import cli
from dpdb.config import Settings
from dpdb.db import prepare
from dpdb.errors import ReleaseStateError, ValidationError
from dpdb.etl import release_dir
from dpdb.ids import origin_of
from dpdb.lifecycle.activate import activate_release
from dpdb.lifecycle.archive import drop_release
from dpdb.lifecycle.load import load_release, restore_release
from dpdb.lifecycle.validate import validate_release
from dpdb.model.felis import latest_version
from dpdb.model.layout import RELEASE_TABLES
from dpdb.pg import conninfo
from dpdb.processing.release import produce
from dpdb.registry.releases import create_release, get_release

OBJECTS = {"dr1": 1500, "dr2": 1800, "dr3": 2100}


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three produced releases (static sky over 2 nights of visits), each a release directory."""
    root = tmp_path_factory.mktemp("releases")
    return {
        name: produce(root / name, name, seed=number, objects=OBJECTS[name], nights=2) and root / name
        for number, name in enumerate(OBJECTS, start=1)
    }


def table_checksums(settings: Settings, schema: str) -> dict[str, tuple[int, str]]:
    """(rows, md5 of all canonical columns in key order) of each table of a release schema."""
    from dpdb.etl.export import select_sql
    from dpdb.etl.validate import target_table

    out = {}
    with psycopg.connect(conninfo(settings)) as conn:
        for table in RELEASE_TABLES:
            target = target_table(schema, latest_version(), "release", table)
            inner = select_sql(target).as_string(conn)
            out[table] = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|'), '')) FROM ({inner}) t"
            ).fetchone()
    return out


def ready(settings: Settings, name: str, directory: Path) -> None:
    """create + load + validate."""
    with psycopg.connect(conninfo(settings)) as conn:
        create_release(conn, name, latest_version(), settings.partition_order)
    load_release(settings, name, directory)
    report = validate_release(settings, name)
    assert report.ok, [(c.name, c.figure) for c in report.checks if not c.ok]


def test_produced_layout(produced: dict[str, Path]) -> None:
    manifest = release_dir.verify(produced["dr2"])
    assert manifest.name == "dr2" and manifest.origin == 3 and manifest.partition_order == 1
    assert manifest.rows("Object") == OBJECTS["dr2"]
    assert manifest.rows("ForcedSource") > manifest.rows("Source") > 0 and manifest.rows("DiaSource") > 0
    for entry in manifest.tables["Source"]:  # split by HEALPix pixel, in the HATS layout
        assert "/Norder=1/Dir=0/Npix=" in entry.path
        data = pq.read_table(produced["dr2"] / entry.path, columns=["sourceId", "objectId"])
        assert {origin_of(i) for i in data["sourceId"].to_pylist() + data["objectId"].to_pylist()} == {3}
        assert data.num_rows == entry.rows


def test_lifecycle_swap_retention_archive_restore(rsettings: Settings, produced: dict[str, Path]) -> None:
    env = release_env(rsettings)
    runner = CliRunner()
    for name in ("dr1", "dr2", "dr3"):
        for args in (["create", name], ["load", name, str(produced[name])], ["validate", name]):
            result = runner.invoke(cli, ["release", *args], env=env)
            assert result.exit_code == 0, result.output
        if name == "dr1":
            before = table_checksums(rsettings, "dr1")
        dry = runner.invoke(cli, ["release", "activate", name, "--dry-run"], env=env)
        assert "dry run, nothing changed" in dry.output
        if name == "dr3":
            assert "would archive dr1" in dry.output
            with psycopg.connect(conninfo(rsettings)) as conn:
                assert get_release(conn, "dr1").state == "superseded"  # the dry run changed nothing
        result = runner.invoke(cli, ["release", "activate", name], env=env)
        assert result.exit_code == 0, result.output
    with psycopg.connect(conninfo(rsettings)) as conn:
        states = dict(conn.execute("SELECT name, state FROM dpdb_meta.release").fetchall())
        assert states == {"dr1": "archived", "dr2": "superseded", "dr3": "active"}
        assert conn.execute("SELECT count(*) FROM current.Object").fetchone() == (OBJECTS["dr3"],)
        assert conn.execute("SELECT count(*) FROM previous.Object").fetchone() == (OBJECTS["dr2"],)
        assert conn.execute("SELECT to_regnamespace('dr1')").fetchone() == (None,)  # tables dropped
        # The sample of every release stays, over the same region: a few % of the release.
        for name, n in OBJECTS.items():
            sample = conn.execute(f"SELECT count(*) FROM samples.{name}_object").fetchone()[0]
            assert 0.01 * n <= sample <= 0.05 * n, (name, sample)
            orphans = conn.execute(
                f"SELECT count(*) FROM samples.{name}_source s "
                f"WHERE NOT EXISTS (SELECT 1 FROM samples.{name}_object o WHERE o.objectid = s.objectid)"
            ).fetchone()
            assert orphans == (0,)
        history = conn.execute(
            "SELECT name, previous FROM dpdb_meta.release_activation ORDER BY 1"
        ).fetchall()
        assert history == [("dr1", None), ("dr2", "dr1"), ("dr3", "dr2")]
        actions = [
            r[0] for r in conn.execute("SELECT action FROM dpdb_meta.audit_log WHERE action LIKE 'release.%'")
        ]
        assert actions.count("release.activate") == 6 and actions.count("release.load") == 3
    archive = release_dir.verify(rsettings.archive_root() / "dr1")
    assert archive.purpose == "archive" and archive.rows("Object") == OBJECTS["dr1"]
    listing = json.loads(runner.invoke(cli, ["release", "list", "--json"], env=env).output)
    dr1 = next(r for r in listing if r["name"] == "dr1")
    assert dr1["state"] == "archived" and dr1["rows"]["Object"] == OBJECTS["dr1"] and dr1["bytes"] > 0
    # Time travel across releases: current as of an instant is the release active then.
    with psycopg.connect(conninfo(rsettings)) as conn:
        at = [
            r[0]
            for r in conn.execute("SELECT activated_mjd_tai FROM dpdb_meta.release_activation ORDER BY 1")
        ]
    count = [
        "query",
        "--format",
        "csv",
        "--release",
        "current",
        "SELECT count(*) AS n FROM Object",
        "--as-of",
    ]
    between = {name: repr((at[i] + at[i + 1]) / 2) for i, name in enumerate(("dr1", "dr2"))}
    result = runner.invoke(cli, [*count, between["dr2"]], env=env)
    assert result.exit_code == 0 and result.output.splitlines()[-1] == str(OBJECTS["dr2"]), result.output
    result = runner.invoke(cli, [*count, between["dr1"]], env=env)
    assert result.exit_code == 1 and "release dr1, current at MJD" in result.output  # archived
    # Restore: the same rows, loaded but not active.
    result = runner.invoke(cli, ["release", "restore", "dr1"], env=env)
    assert result.exit_code == 0, result.output
    assert table_checksums(rsettings, "dr1") == before
    with psycopg.connect(conninfo(rsettings)) as conn:
        assert get_release(conn, "dr1").state == "loaded"
        assert conn.execute("SELECT count(*) FROM current.Object").fetchone() == (OBJECTS["dr3"],)
    result = runner.invoke(cli, [*count, between["dr1"]], env=env)
    assert result.exit_code == 0 and result.output.splitlines()[-1] == str(OBJECTS["dr1"]), result.output


def test_activation_instants_share_one_timeline(rsettings: Settings, produced: dict[str, Path]) -> None:
    """``--at`` replays a survey's history: an activation may be dated in the past, but never in the
    future nor before a change already committed, so answers as of earlier instants never change."""
    env = release_env(rsettings)
    runner = CliRunner()
    for name in ("dr1", "dr2"):
        ready(rsettings, name, produced[name])

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, list(args), env=env)
        return result.exit_code, result.output

    def count_as_of(instant: float) -> tuple[int, str]:
        query = "SELECT count(*) AS n FROM Object"
        code, out = run("query", "--format", "csv", "--release", "current", query, "--as-of", repr(instant))
        return code, out.splitlines()[-1]

    code, out = run("release", "activate", "dr1", "--at", "2999-01-01T00:00:00")
    assert code == 1 and out.count("\n") == 1 and "is in the future" in out, out
    code, out = run("release", "activate", "dr1", "--at", "61000.5")
    assert code == 0, out
    code, out = run("release", "activate", "dr2", "--at", "61000.25")
    assert code == 1 and out.count("\n") == 1, out
    assert "is not later than" in out and "the latest change already committed" in out, out
    with psycopg.connect(conninfo(rsettings)) as conn:
        history = conn.execute("SELECT name, activated_mjd_tai FROM dpdb_meta.release_activation").fetchall()
        assert history == [("dr1", 61000.5)]
        assert str(get_release(conn, "dr1").activated_at.isoformat()).startswith("2025-11-21T11:59:2")
    # a citation pins a later instant (past, after the latest change): no activation may come before it
    cited = Archive(settings=rsettings).cite("SELECT count(*) AS n FROM current.Object", as_of=61000.7)
    assert cited.catalogs == ["dr1"] and cited.row_count == 1
    code, out = run("release", "activate", "dr2", "--at", "61000.6")
    assert code == 1 and "an instant a citation is pinned to" in out, out
    assert run("release", "activate", "dr2", "--at", "61000.75")[0] == 0
    assert Archive(settings=rsettings).citations.resolve(cited.citation_id).verified
    assert count_as_of(61000.6) == (0, str(OBJECTS["dr1"]))
    assert count_as_of(61000.75) == (0, str(OBJECTS["dr2"]))
    code, out = count_as_of(61000.9)  # after the latest change: its answer could still change
    assert code == 1 and "could still change" in out, out


def test_refusals(rsettings: Settings, produced: dict[str, Path], tmp_path: Path) -> None:
    with psycopg.connect(conninfo(rsettings)) as conn:
        create_release(conn, "dr1", latest_version(), 0)
        with pytest.raises(ReleaseStateError, match="ID origin 2 already belongs to release dr1"):
            create_release(conn, "first", latest_version(), 0, number=1)
        with pytest.raises(ReleaseStateError, match="reserved"):
            create_release(conn, "current", latest_version(), 0, number=5)
    with pytest.raises(ValidationError, match="holds release dr2's IDs"):
        load_release(rsettings, "dr1", produced["dr2"])
    with pytest.raises(ValidationError, match="no release.json"):
        load_release(rsettings, "dr1", tmp_path)
    with pytest.raises(ReleaseStateError, match="only loaded, validated, failed releases can be validated"):
        validate_release(rsettings, "dr1")
    load_release(rsettings, "dr1", produced["dr1"])
    with pytest.raises(ReleaseStateError, match="validate it first, or --force"):
        activate_release(rsettings, "dr1")
    forced = activate_release(rsettings, "dr1", force=True)  # audited as forced
    assert forced.swapped
    with psycopg.connect(conninfo(rsettings)) as conn:
        assert conn.execute("SELECT forced FROM dpdb_meta.release_activation").fetchall() == [(True,)]
    with pytest.raises(ReleaseStateError, match="dr1 is the active release"):
        drop_release(rsettings, "dr1")
    ready(rsettings, "dr2", produced["dr2"])
    activate_release(rsettings, "dr2")
    with pytest.raises(ReleaseStateError, match="dr1 is the penultimate release"):
        drop_release(rsettings, "dr1")
    with pytest.raises(ReleaseStateError, match="only superseded releases|only archived releases"):
        restore_release(rsettings, "dr2")


def test_drop_dry_run_then_drop(rsettings: Settings, produced: dict[str, Path]) -> None:
    ready(rsettings, "dr1", produced["dr1"])
    activate_release(rsettings, "dr1")
    ready(rsettings, "dr2", produced["dr2"])  # validated, never activated
    with psycopg.connect(conninfo(rsettings)) as conn:
        create_release(conn, "dr3", latest_version(), 0)
    plan = drop_release(rsettings, "dr3", dry_run=True)
    assert plan[0] == "drop schema dr3 and its load-manifest entries"
    with psycopg.connect(conninfo(rsettings)) as conn:
        assert conn.execute("SELECT to_regnamespace('dr3') IS NOT NULL").fetchone() == (True,)
    drop_release(rsettings, "dr3")
    with psycopg.connect(conninfo(rsettings)) as conn:
        assert conn.execute("SELECT to_regnamespace('dr3')").fetchone() == (None,)
        assert get_release(conn, "dr3").state == "dropped"
        # Its ID origin stays reserved: no new release may mint its IDs again.
        with pytest.raises(ReleaseStateError, match="already belongs to release dr3"):
            create_release(conn, "dr3b", latest_version(), 0, number=3)


def test_validation_finds_broken_releases(rsettings: Settings, produced: dict[str, Path]) -> None:
    ready(rsettings, "dr1", produced["dr1"])
    activate_release(rsettings, "dr1")
    with psycopg.connect(conninfo(rsettings)) as conn:
        create_release(conn, "dr2", latest_version(), 0)
    load_release(rsettings, "dr2", produced["dr2"])
    with psycopg.connect(conninfo(rsettings)) as conn:
        conn.execute("DELETE FROM dr2.object WHERE coord_dec > 2.5")  # sky lost, and Sources orphaned
        lost = conn.execute(
            "SELECT count(*) FROM dr2.source s WHERE NOT EXISTS "
            "(SELECT 1 FROM dr2.object o WHERE o.objectid = s.objectid)"
        ).fetchone()[0]
        conn.execute("UPDATE dr2.visit SET ra = 400 WHERE visit = (SELECT min(visit) FROM dr2.visit)")
        conn.execute(  # one DiaObject with a prompt-catalog ID
            "UPDATE dr2.diaobject SET diaobjectid = diaobjectid & ((1::bigint << 58) - 1) | 1::bigint << 58 "
            "WHERE diaobjectid = (SELECT min(diaobjectid) FROM dr2.diaobject)"
        )
    report = validate_release(rsettings, "dr2")
    failed = {c.name: c.figure for c in report.checks if not c.ok}
    assert failed["rows: Object"].endswith(f"of {OBJECTS['dr2']} in the manifest")
    assert failed["references: Source -> Object"].startswith(f"{lost} without")
    assert failed["positions: Visit"] == "1 out of range"
    assert failed["ids: DiaObject"].startswith("1 rows with IDs of another origin")
    assert "of dr1's sky covered" in failed["coverage"]
    with psycopg.connect(conninfo(rsettings)) as conn:
        rel = get_release(conn, "dr2")
        assert rel.state == "failed" and rel.report is not None and not rel.report["ok"]


def test_release_from_prompt(rsettings: Settings, tmp_path: Path) -> None:
    """--from-prompt: the prompt's visits and DIA tables, re-aggregated over the whole history."""
    from dpdb.processing.survey import SurveyConfig, simulate
    from dpdb.prompt import ingest

    prepare(rsettings)
    dirs = simulate(tmp_path / "survey", 3, SurveyConfig(visits_per_night=4, sources_per_visit=300))
    ingest(rsettings, dirs)
    out = produce(tmp_path / "dr1", "dr1", objects=500, settings=rsettings)
    with psycopg.connect(conninfo(rsettings)) as conn:
        prompt_rows = dict(conn.execute(
            "SELECT 'DiaSource', count(*) FROM prompt.diasource WHERE timewithdrawnmjdtai IS NULL "
            "UNION ALL SELECT 'DiaObject', count(*) FROM prompt.diaobjectlast "
            "UNION ALL SELECT 'Visit', count(*) FROM prompt.visit"
        ).fetchall())  # fmt: skip
    assert {t: out.rows(t) for t in prompt_rows} == prompt_rows
    ready(rsettings, "dr1", tmp_path / "dr1")
    with psycopg.connect(conninfo(rsettings)) as conn:
        # Same local numbers, the release's origin; counts over the whole history.
        mismatch = conn.execute(
            "SELECT count(*) FROM dr1.diaobject r JOIN prompt.diaobjectlast p "
            "ON p.diaobjectid & ((1::bigint << 58) - 1) = r.diaobjectid & ((1::bigint << 58) - 1) "
            "WHERE r.diaobjectid >> 58 <> 2 OR r.ndiasources <> p.ndiasources"
        ).fetchone()
        assert mismatch == (0,)
