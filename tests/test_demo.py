"""`dpdb demo --scale small` end to end, on its own embedded default database, as a newcomer runs it
(the ``demo_run`` fixture in conftest: killed once after producing dr1, then run again to the end).

The report's numbers are checked against the database and the files the demo wrote
(no duplicates: every count equals its source).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import DPDB, DemoRun, demo_env
from psycopg import sql

from dpdb.config import Settings
from dpdb.db import connect
from dpdb.etl import release_dir
from dpdb.processing.quality import association_quality
from dpdb.prompt.staging import find_visits
from dpdb.query import run_query


@pytest.fixture(scope="module")
def demo(demo_run: DemoRun) -> tuple[Settings, dict, str]:
    return demo_run.settings, demo_run.report, demo_run.output


def count(settings: Settings, schema: str, table: str, where: str = "true") -> int:
    with connect(settings) as conn:
        query = sql.SQL("SELECT count(*) FROM {}.{} WHERE " + where).format(
            sql.Identifier(schema), sql.Identifier(table.lower())
        )
        return conn.execute(query).fetchone()[0]  # type: ignore[index]


def plain(value: object) -> object:
    """A value as report.json holds it (NaN as null)."""
    return None if isinstance(value, float) and math.isnan(value) else value


def test_second_run_finished_the_first(demo: tuple[Settings, dict, str]) -> None:
    _, report, output = demo
    titles = [s["title"] for s in report["steps"]]
    assert titles[:3] == ["simulate nights 1-3", "ingest nights 1-3", "produce dr1 from the prompt catalog"]
    skipped = {s["title"] for s in report["steps"] if s["skipped"]}
    # the killed run had ingested nights 1-3 and produced dr1; the rerun did the rest
    assert {"ingest nights 1-3", "produce dr1 from the prompt catalog"} <= skipped
    assert not skipped & {"load dr1", "validate dr1", "activate dr1", "ingest nights 4-5", "load dr2"}
    assert "rows per table" in output and "association against truth" in output


def test_rows_per_table_equal_the_database_and_the_files(demo: tuple[Settings, dict, str]) -> None:
    settings, report, _ = demo
    rows = report["rows"]
    assert set(rows) == {"prompt", "dr1", "dr2"}
    for catalog, tables in rows.items():
        for table, n in tables.items():
            if table == "DiaObject (current versions)":
                assert n == count(settings, "prompt", "DiaObject", "validityEndMjdTai IS NULL")
            else:
                assert n == count(settings, catalog, table), (catalog, table)
    # no duplicates: each release holds exactly its files' rows, the prompt catalog its visits' DiaSources
    out = Path(report["out"])
    for name in ("dr1", "dr2"):
        manifest = release_dir.read(out / name)
        assert rows[name] == {t: manifest.rows(t) for t in rows[name]}
    visits = find_visits([out / "survey"])
    assert len(visits) == rows["prompt"]["Visit"] == 30
    in_files = sum(pq.read_metadata(v / "DiaSource.parquet").num_rows for v in visits)
    assert count(settings, "prompt", "DiaSource", "timeWithdrawnMjdTai IS NULL") == in_files
    # dr2 is current and dr1 previous
    assert count(settings, "current", "Object") == rows["dr2"]["Object"]
    assert count(settings, "previous", "Object") == rows["dr1"]["Object"]


def test_association_quality_is_the_truth_comparison(demo: tuple[Settings, dict, str]) -> None:
    settings, report, _ = demo
    quality = association_quality(settings, find_visits([Path(report["out"]) / "survey"]))
    a = report["association"]
    assert a["linked"] == quality.linked > 1000
    assert a["completeness"] == quality.completeness >= 0.99
    assert a["purity"] == quality.purity >= 0.99
    assert a["known_asteroids_attributed"] == a["known_asteroid_detections"] > 0


def test_examples_give_what_the_database_gives(demo: tuple[Settings, dict, str]) -> None:
    settings, report, _ = demo
    examples = report["examples"]
    assert len(examples) == 6
    for ex in examples:
        again = run_query(settings, ex["sql"], as_of=ex["as_of"])
        assert again.num_rows == ex["row_count"], ex["title"]
        if "release" not in ex["title"]:  # the release list carries times, compared below
            head = [[plain(v) for v in r.values()] for r in again.slice(0, len(ex["rows"])).to_pylist()]
            assert head == ex["rows"], ex["title"]
    cone, light_curve, then, now, match, releases = examples
    oid = report["dia_object_id"]
    assert cone["row_count"] >= 1 and cone["rows"][0][-1] < 1.0  # the counterpart, within 1″
    assert light_curve["row_count"] == count(
        settings, "prompt", "DiaSource", f"diaObjectId = {oid} AND timeWithdrawnMjdTai IS NULL"
    )
    n_then, n_now = then["rows"][0][1], now["rows"][0][1]
    assert n_now == light_curve["row_count"] > n_then >= 1
    assert match["row_count"] == n_now  # every DiaSource of dr2's copy, each matched to one Object
    assert all(r[-1] < 1.0 for r in match["rows"])
    assert [(r[0], r[1]) for r in releases["rows"]] == [("dr1", "superseded"), ("dr2", "active")]


def test_plots_are_png_files(demo: tuple[Settings, dict, str]) -> None:
    import matplotlib.image

    _, report, _ = demo
    names = sorted(Path(p).name for p in report["plots"])
    oid = report["dia_object_id"]
    assert names == sorted([f"lightcurve_{oid}.png", "sky_current_Object.png", f"history_{oid}.png"])
    for p in report["plots"]:
        data = Path(p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(p)
        assert image.shape[0] > 200 and image.shape[1] > 200


def test_rerun_changes_nothing_and_scales_do_not_mix(demo: tuple[Settings, dict, str]) -> None:
    settings, report, _ = demo
    env, cwd = demo_env(), settings.home.parent
    again = subprocess.run([DPDB, "demo"], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    second = json.loads((Path(report["out"]) / "report.json").read_text())
    assert second["rows"] == report["rows"]
    assert all(s["skipped"] for s in second["steps"] if not s["title"].startswith(("simulate", "report")))
    other = subprocess.run(
        [DPDB, "demo", "--scale", "medium"], env=env, cwd=cwd, capture_output=True, text=True
    )
    assert other.returncode == 1
    assert other.stderr.strip().splitlines() == [
        f"error: {report['out']} holds a small demo; use --fresh to start a medium one"
    ]
    remote = subprocess.run(
        [DPDB, "demo", "--fresh"], env={**env, "DPDB_DSN": "host=127.0.0.1 dbname=nowhere"}, cwd=cwd,
        capture_output=True, text=True,
    )  # fmt: skip
    assert remote.returncode == 1 and "works only on the embedded server" in remote.stderr
