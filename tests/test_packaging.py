"""Packaging: the wheel carries schema/, sql/ and migrations/ and the `dpdb` console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from dpdb.model.felis import versions

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_schema_sql_and_migrations(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("dpdb-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for version in sorted(p.name for p in (ROOT / "schema").glob("v*")):
        assert f"dpdb/schemas/{version}/dpdb.yaml" in names
        assert f"dpdb/schemas/{version}/meta.yaml" in names
    assert "dpdb/schemas/DPDD_COVERAGE.md" in names
    assert "dpdb/sql/functions.sql" in names
    assert "dpdb/migrations/env.py" in names
    assert "dpdb/migrations/versions/v1_initial.py" in names
    assert "dpdb/migrations/versions/v2_object_photoz.py" in names
    for module in ("dpdb/cli/root.py", "dpdb/etl/__init__.py", "dpdb/processing/__init__.py"):
        assert module in names
    for data in ("dpdb/portal/templates/object.html", "dpdb/portal/static/portal.js"):  # the web portal
        assert data in names
    for init in (ROOT / "dpdb").rglob("__init__.py"):  # every subpackage, e.g. dpdb/plots
        assert init.relative_to(ROOT).as_posix() in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dpdb = dpdb.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_finds_its_schema(tmp_path: Path) -> None:
    """A non-editable install into a fresh target reads schema versions from inside the package."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--target",
            str(tmp_path / "site"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    code = "import dpdb.model.felis as s, dpdb; print(dpdb.__file__); print(s.versions())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.splitlines()
    assert out[0].startswith(str(tmp_path / "site"))
    assert out[1] == str(versions())
