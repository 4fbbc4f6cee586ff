"""The fault soak of benchmarks/soak_faults.py, bounded: three real kill -9 per CI run, rotating.

Each round kills (SIGKILL) either the command or the PostgreSQL postmaster in the middle of an
operation, reruns it (after ``dpdb db up`` when the server was killed), and checks row counts,
checksums, keys and the registry against a fault-free run; any violation fails the test.

The bounded test runs three rounds of one operation with small inputs (the preparation of an
operation's database and its fault-free reference is most of the cost, so the rounds share
one): killed at 30 %, 45 % and 60 % of the fault-free duration, the command, the postmaster and
the command again (or the other way round). The operation rotates through load, prompt visit,
activate, archive and restore with the UTC date, and the order of the targets flips every five
days, so consecutive CI runs inject faults into every kind of operation, each target at every
moment. ``DPDB_SOAK_OP`` picks the operation by hand. The long version (every operation, random
targets and moments) is marked ``slow``: ``pytest --slow tests/test_soak.py`` (the full soak,
50 rounds at default sizes, is ``python benchmarks/soak_faults.py``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPS = ("load", "visit", "activate", "archive", "restore")


def _soak(*args: str, timeout: float) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak_faults.py"), "--small", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    out = proc.stdout
    assert re.search(r"^rounds: \d+", out, re.M), out + proc.stderr[-3000:]
    violations = int(re.search(r"invariant violations: (\d+)", out)[1])  # type: ignore[index]
    assert violations == 0, out
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def rotation(day: dt.date) -> tuple[str, str]:
    """The operation of the bounded soak on ``day`` (UTC) and the order of its kill targets."""
    n = day.toordinal()
    return OPS[n % len(OPS)], ("alternate", "alternate-postmaster")[(n // len(OPS)) % 2]


def test_rotation_covers_every_operation_and_target() -> None:
    start = dt.date(2026, 11, 30)
    seen = {rotation(start + dt.timedelta(days=d)) for d in range(10)}
    assert seen == {(op, t) for op in OPS for t in ("alternate", "alternate-postmaster")}


def test_bounded_fault_soak_has_no_violations() -> None:
    op, targets = rotation(dt.datetime.now(dt.UTC).date())
    op = os.environ.get("DPDB_SOAK_OP", op)
    # killed within the operation (after the executable's start-up), three moments, both targets
    out = _soak("--rounds", "3", "--ops", op, "--target", targets, "--kill-at", "0.3,0.45,0.6", timeout=900)
    assert re.search(rf"faults injected: 3 \(.*{op} 3.*postmaster [12], command [12]\)", out), out


@pytest.mark.slow
def test_long_fault_soak_has_no_violations() -> None:
    out = _soak("--rounds", "8", "--seed", "7", "--max-delay", "0.8", timeout=3600)
    injected = int(re.search(r"faults injected: (\d+)", out)[1])  # type: ignore[index]
    assert injected >= 5, out
