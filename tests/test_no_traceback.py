"""No traceback reaches a user: a table of bad invocations, each a real process, each one `error:` line.

The cases are those of issue 19 that concern queries, loads, as-of instants,
locks and reader logins, plus every bad file of the ETL tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pyarrow as pa
from test_etl import _bad_cases, write

from dpdb.config import Settings
from dpdb.locks import folder_lock
from dpdb.pg import conninfo
from dpdb.processing.synthetic import synthetic_table

DPDB = str(Path(sys.executable).with_name("dpdb"))


def _cases(settings: Settings, tmp_path: Path) -> list[tuple[str, list[str], dict[str, str], str]]:
    """(name, arguments, extra environment, expected start of the message after `error: `)."""
    cases: list[tuple[str, list[str], dict[str, str], str]] = []
    (tmp_path / "etl").mkdir()
    for name, args, message in _bad_cases(tmp_path / "etl"):
        cases.append((f"etl: {name}", ["load", *args], {}, message))
    good = synthetic_table("DiaSource", 30, seed=9)
    first = write(good, tmp_path / "keys" / "a.parquet")
    cases.append(("load once", ["load", "DiaSource", str(first)], {}, ""))  # succeeds: sets up the next
    ra = pa.array(good["ra"].to_numpy() + 180.0)
    moved = write(
        good.set_column(good.schema.get_field_index("ra"), "ra", ra), tmp_path / "keys" / "b.parquet"
    )
    cases.append(
        (
            "key loaded elsewhere",
            ["load", "DiaSource", str(moved)],
            {},
            f"{moved}: duplicate primary key (diaSourceId=",
        )
    )
    err = good["raErr"].to_pylist()
    err[3] = 1e40
    big = write(
        good.set_column(good.schema.get_field_index("raErr"), "raErr", pa.array(err, pa.float64())),
        tmp_path / "big.parquet",
    )
    cases.append(
        ("REAL overflow", ["load", "DiaSource", str(big)], {}, f"{big}: column raErr, row 3: value 1e+40")
    )
    probes = {
        "COPY TO PROGRAM": f"COPY (SELECT 1) TO PROGRAM 'id > {tmp_path}/x'",
        "COPY TO file": f"COPY (SELECT 1) TO '{tmp_path}/x'",
        "pg_read_file": "SELECT pg_read_file('/etc/passwd')",
        "pg_terminate_backend": "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        "lo_import": "SELECT lo_import('/etc/passwd')",
        "set role": "SELECT set_config('role', 'postgres', false)",
        "dblink": "SELECT dblink_connect('dbname=postgres')",
        "session authorization": "SET SESSION AUTHORIZATION postgres",
        "pg_temp function": "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "write": "DELETE FROM prompt.DiaSource",
        "two statements": "SELECT 1; SELECT 2",
        "empty": " ; ",
    }
    for name, probe in probes.items():
        cases.append((f"query: {name}", ["query", probe], {}, ""))
    for instant in ("2099-01-01", "1e308", "-1", "nan", "soon"):
        cases.append((f"as-of {instant}", ["query", "--as-of", instant, "SELECT 1"], {}, ""))
        cases.append(
            (
                f"alert as-of {instant}",
                ["prompt", "alert", "1", "--as-of", instant, "--format", "json"],
                {},
                "",
            )
        )
        cases.append((f"lightcurve as-of {instant}", ["plot", "lightcurve", "1", "--as-of", instant], {}, ""))
    cases.append(
        (
            "output into a missing folder",
            ["query", "-o", str(tmp_path / "nowhere" / "f.csv"), "--format", "csv", "SELECT 1"],
            {},
            f"cannot write {tmp_path / 'nowhere' / 'f.csv'}",
        )
    )
    cases.append(
        (
            "superuser DSN for user SQL",
            ["query", "SELECT 1"],
            {"DPDB_DSN": conninfo(settings)},
            "the reader login postgres is a superuser",
        )
    )
    cases.append(
        (
            "busy folder",
            [
                "release",
                "produce",
                "dr1",
                "--out",
                str(tmp_path / "busy"),
                "--objects",
                "10",
                "--nights",
                "1",
            ],
            {},
            "busy: release produce into",
        )
    )
    cases.append(("unknown release", ["query", "--release", "dr9", "SELECT 1"], {}, "unknown release 'dr9'"))
    return cases


def test_bad_invocations_give_one_error_line(settings: Settings, tmp_path: Path) -> None:
    env = {**os.environ, "DPDB_HOME": str(settings.home), "DPDB_DATABASE": settings.database}
    env.pop("DPDB_DSN", None)
    with psycopg.connect(conninfo(settings)) as conn:  # a processed visit: later instants are refused
        conn.execute(
            "INSERT INTO dpdb_meta.prompt_visit (visit, processing_time_mjd_tai, midpoint_mjd_tai, "
            "ingested_at, n_diasources, n_ss_attributed, n_associated, n_new_diaobjects, n_forced, "
            "n_forced_unlinked, seconds) VALUES (1, 61000.5, 61000.49, now(), 0, 0, 0, 0, 0, 0, 0)"
        )
    with folder_lock(tmp_path / "busy", f"release produce into {tmp_path / 'busy'}"):
        for name, args, extra, message in _cases(settings, tmp_path):
            result = subprocess.run([DPDB, *args], env={**env, **extra}, capture_output=True, text=True)
            if name == "load once":
                assert result.returncode == 0, result.stderr
                continue
            assert result.returncode != 0, (name, result.stdout)
            assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), (
                name,
                result.stderr,
            )
            assert "Traceback" not in result.stderr + result.stdout, name
            assert result.stderr.startswith(f"error: {message}"), (name, result.stderr)
