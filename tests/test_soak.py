"""The bounded fault soak: a few rounds of benchmarks/soak_faults.py (the full one runs 50 and more).

Each round kills (SIGKILL) either the command or the PostgreSQL postmaster in the middle of an
operation, reruns it, and checks row counts, checksums, keys and the registry against a
fault-free run. Any violation fails the test.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bounded_fault_soak_has_no_violations() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak_faults.py"), "--rounds", "3", "--small",
         "--ops", "load,visit,activate", "--seed", "7", "--max-delay", "0.6"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = proc.stdout
    assert "rounds: 3" in out, out + proc.stderr[-3000:]
    violations = int(re.search(r"invariant violations: (\d+)", out)[1])  # type: ignore[index]
    injected = int(re.search(r"faults injected: (\d+)", out)[1])  # type: ignore[index]
    assert violations == 0, out
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert injected >= 1, out  # the kills land within 60% of a fault-free run's duration
