"""benchmarks/bench_prompt.py at tiny sizes: the steady-state warm-up and its kept template.

The warm-up (``--warmup-nights``) ingests the survey's earlier nights before the measured
visits; the aggregates of the last visit must still equal numpy over their windows, and a
second run with the same ``--home`` must copy the kept template instead of warming up again.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_home

from dpdb.server import EmbeddedServer

ROOT = Path(__file__).resolve().parents[1]


def _bench(home: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_prompt.py"), "--objects", "3000",
         "--visits", "6", "--sources-per-visit", "300", "--home", str(home), *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture
def home() -> Iterator[Path]:
    path = make_home("dpdb-bench-prompt-")  # the postgres OS user must reach it
    try:
        yield path
    finally:
        EmbeddedServer(path / "home").down()
        shutil.rmtree(path, ignore_errors=True)


def test_warmup_prefill_is_consistent_and_kept(home: Path) -> None:
    first = _bench(home, "--warmup-nights", "2")
    assert "simulated 20 warm-up and 6 measured visits" in first
    assert re.search(r"^warm-up: 20 visits", first, re.M), first
    checked = re.search(r"equal numpy over their windows \(rtol 1e-6\): ([\d,]+)", first)
    assert checked and int(checked[1].replace(",", "")) > 0, first
    # the measured visits found the warmed-up DiaObjects: some of their DiaSources associated
    associated = re.search(r"associated ([\d,]+) of", first)
    assert associated and int(associated[1].replace(",", "")) > 0, first
    again = _bench(home, "--warmup-nights", "2", "--monitor")
    assert "copied from the kept template bench_prefill_3000_1_20" in again
    assert "warm-up:" not in again
    assert "equal numpy over their windows" in again
    # the server's counters by groups of visits: the 6 visits are one group, and they wrote WAL
    group = re.search(r"^\s+1-6 .* WAL\s+([\d.]+) MB", again, re.M)
    assert group and float(group[1]) > 0, again
