"""Every command and SQL example of README.md, run in document order against the demo's database.

The reader's situation: the demo has run in the clone (``./.dpdb``), `.venv/bin` is on
the PATH. Each ```bash block runs in bash with ``set -euo pipefail``; each ```python block
runs in the virtualenv's Python; each ```sql block's statements run in one transaction, and
every SELECT must return rows. The first block
(the two commands) is checked against what CI and the ``demo_run`` fixture run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import psycopg
from conftest import DemoRun, demo_env

from dpdb.cli import cli
from dpdb.pg import conninfo

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = [(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```", README, re.S | re.M)]


def test_the_two_commands_are_what_ci_and_the_demo_test_run() -> None:
    lang, first = BLOCKS[0]
    assert lang == "bash"
    commands = [line for line in first.splitlines() if line and not line.startswith("#")]
    assert commands == [
        "bash scripts/setup.sh && .venv/bin/dpdb demo",  # conftest.demo_run runs `dpdb demo`
        "bash scripts/setup.sh && .venv/bin/python -m pytest",
    ]
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == commands[1]


def test_cli_reference_lists_every_command() -> None:
    rows = [line for line in README.splitlines() if line.startswith("| `dpdb ")]
    for group, name in _commands(cli):
        if group:
            assert any(f"`dpdb {group} " in r and re.search(rf"\b{name}\b", r) for r in rows), (group, name)
        else:
            assert any(r.startswith(f"| `dpdb {name}") for r in rows), name


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += _commands(command, name)
        else:
            out.append((prefix, name))
    return out


def test_readme_blocks_run_in_order(demo_run: DemoRun) -> None:
    folder = demo_run.settings.home.parent
    if not (folder / "schema").exists():
        (folder / "schema").symlink_to(ROOT / "schema")  # as in the clone
    env = {**demo_env(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    ran = {"bash": 0, "sql": 0, "python": 0}
    for i, (lang, body) in enumerate(BLOCKS[1:], start=2):
        where = f"README block {i} ({lang}):\n{body}"
        if lang == "bash":
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", body], cwd=folder, env=env, capture_output=True, text=True,
                timeout=600,
            )  # fmt: skip
            assert result.returncode == 0, f"{where}\nstderr: {result.stderr[-3000:]}"
        elif lang == "python":
            result = subprocess.run(
                [sys.executable, "-c", body], cwd=folder, env=env, capture_output=True, text=True, timeout=600
            )
            assert result.returncode == 0, f"{where}\nstderr: {result.stderr[-3000:]}"
        elif lang == "sql":
            _run_sql(demo_run, body, where)
        else:
            continue
        ran[lang] += 1
    assert ran["bash"] >= 12 and ran["sql"] >= 3 and ran["python"] >= 1, ran


def _run_sql(demo_run: DemoRun, body: str, where: str) -> None:
    text = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--"))
    statements = [s.strip() for s in text.split(";") if s.strip()]
    with psycopg.connect(conninfo(demo_run.settings)) as conn:
        for statement in statements:
            cur = conn.execute(statement)  # type: ignore[arg-type]
            if statement.upper().startswith("SELECT"):
                assert cur.fetchall(), f"{where}\nno rows from: {statement}"
        conn.rollback()
