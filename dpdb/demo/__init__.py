"""The end-to-end demo: a simulated survey through prompt processing and two data releases."""

from .report import DemoReport, Example, build_report
from .run import SCALES, DemoRun, Scale, Step, StepLog, run_demo

__all__ = [
    "SCALES",
    "DemoReport",
    "DemoRun",
    "Example",
    "Scale",
    "Step",
    "StepLog",
    "build_report",
    "run_demo",
]
