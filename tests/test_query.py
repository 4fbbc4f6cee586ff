"""``dpdb query``: read-only statements, canonical names, output formats, releases and time travel."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io.votable import parse_single_table
from astropy.time import Time
from click.testing import CliRunner
from conftest import drop_database, new_database

from dpdb.as_of_rewrite import rewrite_as_of
from dpdb.cli import cli
from dpdb.config import Settings
from dpdb.errors import QueryError, ReleaseStateError
from dpdb.healpix import pixels
from dpdb.pg import conninfo
from dpdb.query import queue_query_facts, run_query
from dpdb.query_output import write_result

DPDB = str(Path(sys.executable).with_name("dpdb"))

# Three versions of DiaObject 11 (its position moves) and DiaObject 12, which appears at T2.
T1, T2, T3 = 61001.0, 61002.0, 61003.0
VERSIONS = [  # diaObjectId, validityStart, validityEnd, ra, dec, nDiaSources
    (11, T1, T2, 150.0, 2.0, 1),
    (11, T2, T3, 150.0001, 2.0, 2),
    (11, T3, None, 150.0002, 2.0, 3),
    (12, T2, None, 151.0, -1.5, 1),
]
BANDS = "ugrizy"


@pytest.fixture(scope="module")
def diaobjects(pg_home: Path, template_db: str) -> Iterator[Settings]:
    """A database with the DiaObject versions above in prompt.DiaObject, shared by the module's tests
    (queries cannot change it: that is what they test)."""
    name = new_database(pg_home, template_db)
    settings = Settings(home=pg_home, database=name, partition_order=0)
    ndata = ", ".join(f"{b}_psfFluxNdata" for b in BANDS)
    with psycopg.connect(conninfo(settings)) as conn:
        for oid, start, end, ra, dec, n in VERSIONS:
            conn.execute(
                "INSERT INTO prompt.DiaObject (diaObjectId, validityStartMjdTai, validityEndMjdTai, ra, "
                f"dec, _healpix_29, nDiaSources, {ndata}) "
                f"VALUES (%s, %s, %s, %s, %s, %s, %s{', 0' * len(BANDS)})",
                (oid, start, end, ra, dec, int(pixels(ra, dec)), n),
            )
    yield settings
    drop_database(pg_home, name)


@pytest.fixture(scope="module")
def env(diaobjects: Settings) -> dict[str, str]:
    """Environment for CLI runs against the module's database."""
    return {**os.environ, "DPDB_HOME": str(diaobjects.home), "DPDB_DATABASE": diaobjects.database}


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["query", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


# -- results ----------------------------------------------------------------------------------------


def test_columns_get_their_canonical_names(diaobjects: Settings) -> None:
    table = run_query(
        diaobjects,
        "SELECT diaObjectId, validityStartMjdTai, ra AS myRa, nDiaSources AS total, "
        'count(*) OVER () AS "nRows" FROM prompt.DiaObject ORDER BY 1, 2',
    )
    assert table.column_names == ["diaObjectId", "validityStartMjdTai", "myra", "total", "nRows"]
    assert table.schema.field("diaObjectId").type == pa.int64()
    assert table.schema.field("validityStartMjdTai").type == pa.float64()
    assert table["diaObjectId"].to_pylist() == [11, 11, 11, 12]
    star = run_query(diaobjects, "SELECT * FROM prompt.DiaObject LIMIT 1")
    assert {"diaObjectId", "u_psfFluxNdata", "pmRa_pmDec_Cov", "_healpix_29"} <= set(star.column_names)


def test_types_come_back_as_arrow(diaobjects: Settings) -> None:
    table = run_query(
        diaobjects,
        "SELECT 1.5::real AS r, avg(2) AS mean, sum(3::bigint) AS total, true AS b, 'x'::text AS s, "
        "NULL::int AS n, ARRAY[1, 2]::real[] AS a, timestamptz '2026-03-01 12:00Z' AS t;",
    )
    assert [f.type for f in table.schema] == [
        pa.float32(), pa.float64(), pa.float64(), pa.bool_(), pa.string(), pa.int32(),
        pa.list_(pa.float32()), pa.timestamp("us", tz="UTC"),
    ]  # fmt: skip
    assert table.to_pylist()[0]["mean"] == 2.0 and table["a"].to_pylist() == [[1.0, 2.0]]
    # What ADBC cannot fetch (SHOW, EXPLAIN, types without binary output) comes through psycopg.
    assert run_query(diaobjects, "SHOW transaction_read_only").to_pylist() == [
        {"transaction_read_only": "on"}
    ]
    assert run_query(diaobjects, "SELECT spoint(0, 0) AS p, 2 AS x").to_pylist() == [{"p": "(0 , 0)", "x": 2}]
    plan = run_query(diaobjects, "EXPLAIN SELECT * FROM prompt.DiaObject WHERE diaObjectId = 1")
    assert plan.column_names == ["QUERY PLAN"] and plan.num_rows > 1


# -- time travel ----------------------------------------------------------------------------------------


def _versions(table: pa.Table) -> list[tuple[int, float]]:
    return [(r["diaObjectId"], r["validityStartMjdTai"]) for r in table.to_pylist()]


def test_as_of_returns_the_version_valid_at_the_instant(diaobjects: Settings) -> None:
    query = "SELECT diaObjectId, validityStartMjdTai, nDiaSources FROM prompt.DiaObject ORDER BY 1"
    assert _versions(run_query(diaobjects, query)) == [(11, T1), (11, T2), (11, T3), (12, T2)]
    assert _versions(run_query(diaobjects, query, as_of=T1 - 0.5)) == []
    assert _versions(run_query(diaobjects, query, as_of=T1)) == [(11, T1)]
    assert _versions(run_query(diaobjects, query, as_of=T2 + 0.5)) == [(11, T2), (12, T2)]
    assert _versions(run_query(diaobjects, query, as_of=T3 + 100)) == [(11, T3), (12, T2)]
    # Unqualified names resolve to the as-of views; literals, comments and other schemas stay as written.
    mixed = run_query(
        diaobjects,
        "SELECT o.diaObjectId, 'prompt.DiaObject' AS s, (SELECT count(*) FROM PROMPT . diaobject) AS n, "
        "(SELECT count(*) FROM prompt.diaobject_as_of(61000.0)) AS before "
        "FROM DiaObject o /* prompt.DiaObject */ WHERE o.diaObjectId = 11 -- prompt.DiaObject",
        as_of=T1 + 0.5,
    )
    assert mixed.to_pylist() == [{"diaObjectId": 11, "s": "prompt.DiaObject", "n": 1, "before": 0}]


def test_facts_read_by_the_caller_are_used_not_read_again(diaobjects: Settings) -> None:
    """A caller that read the rewriting's facts (a citation, with its bookkeeping) hands them over: the
    answer is the same, and what the facts say is what the query uses (it does not read them again)."""
    query = "SELECT diaObjectId, validityStartMjdTai FROM prompt.DiaObject ORDER BY 1, 2"
    with psycopg.connect(conninfo(diaobjects), autocommit=True) as owner, owner.pipeline():
        collect = queue_query_facts(owner)
    facts = collect()
    assert any(schema == "prompt_as_of" for schema, _ in facts.relations) and facts.catalogs
    plain = run_query(diaobjects, query, as_of=T2 + 0.5, provisional=True)
    given = run_query(diaobjects, query, as_of=T2 + 0.5, provisional=True, facts=lambda: facts)
    assert given.equals(plain) and _versions(given) == [(11, T2), (12, T2)]
    assert given.schema.metadata == plain.schema.metadata
    # the latest change given is the one the answer is labelled with
    earlier = dataclasses.replace(facts, latest=T1)
    labelled = run_query(diaobjects, query, as_of=T2 + 0.5, provisional=True, facts=lambda: earlier)
    assert labelled.schema.metadata[b"dpdb.latest_processing_mjd_tai"] == repr(T1).encode()
    assert labelled.schema.metadata[b"dpdb.as_of_repeatable"] == b"false"
    # the relations given decide the rewriting: without the as-of views there is no time travel
    no_views = dataclasses.replace(facts, relations=[r for r in facts.relations if r[0] == "prompt"])
    with pytest.raises(QueryError, match="no time travel views"):
        run_query(diaobjects, query, as_of=T2, facts=lambda: no_views)


def test_cli_as_of_with_mjd_and_iso_utc(diaobjects: Settings, env: dict[str, str]) -> None:
    query = "SELECT diaObjectId, validityStartMjdTai, nDiaSources FROM prompt.DiaObject ORDER BY 1"
    code, out, err = invoke(env, "--as-of", str(T2 + 0.25), "--format", "json", query)
    assert code == 0, err
    assert json.loads(out) == [
        {"diaObjectId": 11, "validityStartMjdTai": T2, "nDiaSources": 2},
        {"diaObjectId": 12, "validityStartMjdTai": T2, "nDiaSources": 1},
    ]
    # 30 s before T3 on a clock that ignores leap seconds is 7 s after T3 in TAI (TAI - UTC = 37 s).
    iso = Time(T3 - 30 / 86400, format="mjd", scale="utc").isot
    code, out, err = invoke(env, "--as-of", iso, "--format", "csv", query)
    assert code == 0, err
    [row] = [r for r in csv.DictReader(io.StringIO(out)) if r["diaObjectId"] == "11"]
    assert float(row["validityStartMjdTai"]) == T3 and row["nDiaSources"] == "3"
    code, out, err = invoke(env, "--as-of", "61000.5", "SELECT count(*) FROM prompt.DiaObjectLast")
    assert code == 1 and err.startswith("error: prompt.diaobjectlast cannot be read as of")


def test_rewrite_as_of_touches_only_schema_references() -> None:
    tables = {"diaobject", "diasource"}
    text = (
        "SELECT 'prompt.diaobject', E'it\\'s prompt.diaobject', $$prompt.diaobject$$, "
        "$x$ prompt.DiaSource $x$, "
        '"prompt".diaobject, prompt_as_of.diaobject, myprompt.diaobject, prompt.diaobject_as_of(1.0), '
        "prompt.visit /* prompt.diaobject /* nested */ prompt.diaobject */ -- prompt.diaobject\n"
        'FROM Prompt.DiaObject JOIN prompt . diasource USING (diaobjectid), prompt."diaobject"'
    )
    assert rewrite_as_of(text, tables) == text.replace(
        "FROM Prompt.DiaObject JOIN prompt . diasource",
        "FROM prompt_as_of.DiaObject JOIN prompt_as_of . diasource",
    ).replace('prompt."diaobject"', 'prompt_as_of."diaobject"')


# -- releases -----------------------------------------------------------------------------------------


def test_release_sets_the_search_path_and_unknown_ones_are_refused(diaobjects: Settings) -> None:
    assert run_query(diaobjects, "SELECT count(*) AS n FROM DiaObject", release="prompt").to_pylist() == [
        {"n": 4}
    ]
    both = run_query(
        diaobjects, "SELECT count(*) AS n, current_setting('search_path') AS p FROM DiaObject",
        release="prompt", as_of=T1,
    )  # fmt: skip
    assert both.to_pylist() == [{"n": 1, "p": '"prompt_as_of", "prompt", "public"'}]
    shown = run_query(diaobjects, "SHOW search_path", release="prompt", as_of=T1)  # through psycopg
    assert shown.to_pylist() == [{"search_path": '"prompt_as_of", "prompt", "public"'}]
    for name in ("dr9", "dpdb_meta", 'prompt"; DROP SCHEMA prompt; --'):
        with pytest.raises(ReleaseStateError, match=r"unknown release .* \(catalogs: prompt\)"):
            run_query(diaobjects, "SELECT 1", release=name)
    with pytest.raises(ReleaseStateError, match="no release is current yet"):
        run_query(diaobjects, "SELECT 1", release="current")


def test_cli_unknown_release(env: dict[str, str]) -> None:
    code, out, err = invoke(env, "--release", "dr9", "SELECT 1")
    assert (code, out) == (1, "") and err == "error: unknown release 'dr9' (catalogs: prompt)\n"


# -- read only and errors -----------------------------------------------------------------------------


WRITES = [
    "INSERT INTO prompt.Visit (visit) VALUES (1)",
    "DELETE FROM prompt.DiaObject",
    "CREATE TABLE public.t (x int)",
    "UPDATE prompt.DiaObject SET ra = 0 RETURNING diaObjectId",
    "SELECT nextval(pg_get_serial_sequence('dpdb_meta.load_manifest', 'load_id'))",
    "SELECT 1; DELETE FROM prompt.DiaObject",
]


def test_writes_are_refused(diaobjects: Settings, env: dict[str, str]) -> None:
    for statement in WRITES:
        code, out, err = invoke(env, statement)
        assert code == 1 and out == "", statement
        assert err.startswith("error: query failed: ") and err.count("\n") == 1, err
        assert any(why in err for why in ("read-only transaction", "runs one", "permission denied")), err
    with psycopg.connect(conninfo(diaobjects)) as conn:
        assert conn.execute("SELECT count(*) FROM prompt.DiaObject").fetchone() == (4,)
        assert conn.execute("SELECT to_regclass('public.t')").fetchone() == (None,)


def test_bad_sql_writes_no_file(env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    code, out, err = invoke(
        env, "--format", "parquet", "-o", str(target), "SELECT nosuch FROM prompt.DiaObject"
    )
    assert code == 1 and err == 'error: query failed: column "nosuch" does not exist\n'
    assert list(tmp_path.iterdir()) == []
    target.write_text("old")
    code, _, err = invoke(env, "--format", "csv", "-o", str(target), "SELECT 1/0")
    assert code == 1 and err == "error: query failed: division by zero\n"
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    code, _, err = invoke(env, "--format", "votable", "SELECT 1")
    assert code == 1 and err == "error: format votable needs an output file (-o FILE)\n"
    with pytest.raises(QueryError, match="no SQL statement"):
        run_query(diaobjects, " ;\n")


def test_subprocess_exit_code_and_stderr(env: dict[str, str]) -> None:
    bad = subprocess.run(
        [DPDB, "query", "--format", "csv", "DROP TABLE prompt.Visit"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr == "error: query failed: cannot execute DROP TABLE in a read-only transaction\n"


# -- formats --------------------------------------------------------------------------------------------

FORMAT_QUERY = (
    "SELECT diaObjectId, validityStartMjdTai, validityEndMjdTai, ra, nDiaSources, "
    "(diaObjectId = 12) AS flag, 'a,\"b\"' || diaObjectId AS label, 1.25::real AS r "
    "FROM prompt.DiaObject ORDER BY 1, 2"
)


def _read_back(path: Path, fmt: str) -> list[dict[str, object]]:
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    if fmt == "json":
        return json.loads(path.read_text())
    if fmt == "csv":
        typed = {"diaObjectId": int, "nDiaSources": int, "flag": lambda s: s == "true", "label": str}
        return [
            {k: None if v == "" else typed.get(k, float)(v) for k, v in row.items()}  # type: ignore[operator]
            for row in csv.DictReader(io.StringIO(path.read_text()))
        ]
    table = parse_single_table(str(path)).to_table()
    assert table["ra"].unit == "deg" and table["validityStartMjdTai"].unit == "d"
    return [
        {c: (None if np.ma.is_masked(row[c]) else row[c].item() if hasattr(row[c], "item") else row[c])
         for c in table.colnames}
        for row in table
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "votable"])
def test_formats_round_trip(diaobjects: Settings, env: dict[str, str], tmp_path: Path, fmt: str) -> None:
    expected = run_query(diaobjects, FORMAT_QUERY).to_pylist()
    target = tmp_path / "sub" / f"result.{fmt}"
    target.parent.mkdir()  # -o never creates folders (issue 19): a typo is an error, not a new folder
    code, out, err = invoke(env, "--format", fmt, "-o", str(target), FORMAT_QUERY)
    assert code == 0, err
    assert out == f"4 rows written to {target}\n" and [p.name for p in target.parent.iterdir()] == [
        target.name
    ]
    got = _read_back(target, fmt)
    assert [list(r) for r in got] == [list(r) for r in expected]
    assert got == expected
    assert [r["validityEndMjdTai"] for r in got] == [T2, T3, None, None]


def test_json_and_table_output(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    query = "SELECT 'NaN'::float8 AS nan, 'Infinity'::real AS inf, ARRAY['NaN'::float8, 1] AS a, 'x' AS s"
    code, out, err = invoke(env, "--format", "json", query)
    assert code == 0, err
    assert json.loads(out) == [{"nan": None, "inf": None, "a": [None, 1.0], "s": "x"}]
    code, out, _ = invoke(
        env, "SELECT n AS diaobjectid, 'it''s [bold]' AS label, NULL AS x FROM generate_series(1, 3) n"
    )
    assert code == 0
    lines = out.splitlines()
    assert "diaObjectId" in lines[1] and "label" in lines[1]
    assert "it's [bold]" in out and "NULL" in out and lines[-1] == "(3 rows)"
    write_result(pa.table({"x": [math.pi]}), "csv")
    assert capsys.readouterr().out == f'"x"\n{math.pi!r}\n'


def test_partition_orders_refresh_opens_one_connection_at_a_time(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TAP fast path's catalog cache, expired under concurrent queries, is refreshed by one of them at
    a time: each refresh is a connection of the reader login, whose connection limit the service's pools
    already use up (8 clients got "too many connections for role" once a minute)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from dpdb import query as query_module

    real = query_module.reader_connect
    active, peak, lock = [0], [0], threading.Lock()

    class Counted:
        def __init__(self, s: Settings) -> None:
            self.cm = real(s)

        def __enter__(self):  # type: ignore[no-untyped-def]
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            return self.cm.__enter__()

        def __exit__(self, *exc: object) -> None:
            self.cm.__exit__(*exc)
            with lock:
                active[0] -= 1

    monkeypatch.setattr(query_module, "reader_connect", Counted)
    monkeypatch.setattr(query_module, "_CATALOGS_TTL", 0.0)  # every call finds it expired
    query_module._CATALOGS.clear()
    with ThreadPoolExecutor(16) as pool:
        orders = list(pool.map(lambda _: query_module.cached_partition_orders(settings, []), range(64)))
    assert len(orders) == 64 and peak[0] == 1
