"""mypy passes on the package: normal checking everywhere, strict on the core, registry and table model
(the configuration is ``[tool.mypy]`` in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The folders that the wheel maps into the dpdb package (pyproject.toml, [tool.setuptools.package-dir]).
MAPPED = {"etl": "etl", "processing": "processing", "migrations": "migrations"}


def _package_tree(base: Path) -> Path:
    """A tree of links laid out as the installed package (mypy cannot follow the editable install's
    import hook), so that ``dpdb.etl`` is etl/ and ``dpdb.processing`` is processing/."""
    tree = base / "dpdb"
    tree.mkdir(parents=True)
    for child in (ROOT / "dpdb").iterdir():
        if child.name != "__pycache__":
            (tree / child.name).symlink_to(child)
    for name, folder in MAPPED.items():
        (tree / name).symlink_to(ROOT / folder)
    return base


def test_mypy_passes(tmp_path: Path) -> None:
    src = _package_tree(tmp_path / "src")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "-p", "dpdb", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(ROOT / ".mypy_cache")],
        cwd=src, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success" in proc.stdout


def test_every_type_ignore_says_why() -> None:
    """A ``type: ignore`` names its error code and has a reason on its line or the line above."""
    bare = []
    for folder in ("dpdb", "etl", "processing", "migrations"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            lines = path.read_text().splitlines()
            for i, line in enumerate(lines):
                if "type: ignore" not in line:
                    continue
                coded = "type: ignore[" in line
                before = lines[i - 1].strip() if i else ""
                reason = line.split("type: ignore", 1)[0].count("#") > 0 or before.startswith("#")
                if not (coded and reason):
                    bare.append(f"{path.relative_to(ROOT)}:{i + 1}")
    assert bare == []
