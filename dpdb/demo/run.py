"""The end-to-end demo (``dpdb demo``): a small survey through prompt processing and two data releases.

Every step is the same library call an operator's command makes (each visit is
processed a minute after its exposure, each release activated an hour after the
last visit before it, all on the survey's simulated clock), and every step can be repeated: ingested
visits are skipped, a release is produced, loaded, validated and activated only as
far as its registry state says it has not been. So a demo killed mid-way is
finished by running it again, without duplicates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from dpdb.model.felis import latest_version

from ..config import Settings
from ..db import connect, prepare, reset_database
from ..errors import ConfigError, ReleaseStateError
from ..locks import folder_lock
from ..registry import prompt_log
from ..registry.audit import audited
from ..registry.releases import create_release, find_release

__all__ = ["SCALES", "Scale", "Step", "StepLog", "DemoRun", "run_demo"]

log = logging.getLogger(__name__)


# Each visit is processed this long after its exposure (MJD days), as if live: the demo's processing
# times follow its observation times, so the same demo gives the same catalog, instant for instant.
LATENCY = 60 / 86400
# A release is activated this long after the last change before it (MJD days), on the same simulated
# clock: activations and prompt writes share one timeline (docs/architecture.md, decision 14).
ACTIVATION_DELAY = 1 / 24


@dataclass(frozen=True)
class Scale:
    """How big the demo survey is: nights before dr1, nights between dr1 and dr2, sizes."""

    nights_dr1: int
    nights_dr2: int
    visits_per_night: int
    sources_per_visit: int
    objects: int  # static-sky Objects of each release, besides the DiaObjects' counterparts


SCALES = {
    "small": Scale(nights_dr1=3, nights_dr2=2, visits_per_night=6, sources_per_visit=400, objects=4_000),
    "medium": Scale(nights_dr1=4, nights_dr2=3, visits_per_night=10, sources_per_visit=1_000, objects=20_000),
}


@dataclass
class Step:
    title: str
    seconds: float
    summary: str
    skipped: bool = False  # already done by an earlier run


class StepLog:
    """Where the demo says what it is doing; this base class is silent (the CLI shows progress)."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def start(self, title: str, total: int | None = None) -> None:
        """A step begins; ``total`` items (visits, files) if it counts them."""

    def advance(self, text: str = "") -> None:
        """One item of the running step is done."""

    def finish(self, step: Step) -> None:
        self.steps.append(step)


@dataclass
class DemoRun:
    scale: str
    out: Path
    survey: Path
    visit_dirs: list[Path] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)


def run_demo(
    settings: Settings, scale: str = "small", out: Path | None = None, *, fresh: bool = False,
    steps: StepLog | None = None,
) -> DemoRun:  # fmt: skip
    """Simulate, ingest and release: nights, dr1, more nights, dr2 (dr1 becomes previous).

    Parameters
    ----------
    settings
        The database (the embedded default one unless ``DPDB_DSN`` is set).
    scale
        A key of :data:`SCALES`.
    out
        Folder for the simulated survey, the release directories, plots and report
        (default ``DPDB_HOME/demo``).
    fresh
        Drop the database and the folder first (embedded server only); otherwise continue
        what is there.
    steps
        Receives progress and the timed steps.
    """
    if scale not in SCALES:
        raise ConfigError(f"unknown demo scale {scale!r}; choose one of {', '.join(SCALES)}")
    # One demo per home at a time: a second fails at once with busy ... (pid N).
    with folder_lock(settings.home, f"dpdb demo in {settings.home.absolute()}"):
        return _run_demo(settings, scale, out, fresh=fresh, steps=steps)


def _run_demo(
    settings: Settings, scale: str, out: Path | None, *, fresh: bool, steps: StepLog | None
) -> DemoRun:
    size = SCALES[scale]
    steps = steps if steps is not None else StepLog()
    out = (Path(out) if out is not None else settings.home / "demo").absolute()
    if fresh:
        _start_over(settings, out)
    _check_scale(out, scale)
    run = DemoRun(scale, out, out / "survey")
    prepare(settings)
    first = 0
    for name, nights in (("dr1", size.nights_dr1), ("dr2", size.nights_dr2)):
        _survey(settings, run, size, first, nights, steps)
        _release(settings, run, name, size, steps)
        first += nights
    return run


def _start_over(settings: Settings, out: Path) -> None:
    if not settings.embedded():
        raise ConfigError("--fresh drops the database; it works only on the embedded server (unset DPDB_DSN)")
    import shutil

    reset_database(settings)
    for folder in (out, settings.archive_root()):
        shutil.rmtree(folder, ignore_errors=True)


def _check_scale(out: Path, scale: str) -> None:
    """A demo folder belongs to one scale: continuing it at another would mix two surveys."""
    marker = out / "scale"
    if marker.is_file() and marker.read_text().strip() != scale:
        raise ConfigError(
            f"{out} holds a {marker.read_text().strip()} demo; use --fresh to start a {scale} one"
        )
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(scale + "\n")


def _survey(settings: Settings, run: DemoRun, size: Scale, first: int, nights: int, steps: StepLog) -> None:
    from ..processing.simulator import SurveyConfig, simulate
    from ..prompt import ingest

    label = f"nights {first + 1}-{first + nights}"
    config = SurveyConfig(visits_per_night=size.visits_per_night, sources_per_visit=size.sources_per_visit)
    steps.start(f"simulate {label}")
    t0 = time.perf_counter()
    dirs = simulate(run.survey, nights, config, first_night=first)
    steps.finish(Step(f"simulate {label}", time.perf_counter() - t0, f"{len(dirs)} visits of ~9.6 deg²"))
    run.visit_dirs += dirs

    steps.start(f"ingest {label}", total=len(dirs))
    t0 = time.perf_counter()
    first_visit = pq.read_table(dirs[0] / "Visit.parquet", columns=["expMidptMJD"])
    results = ingest(
        settings, dirs, processing_time=first_visit["expMidptMJD"][0].as_py() + LATENCY,
        progress=lambda r: steps.advance(f"visit {r.visit} {r.status} ({r.seconds:.2f} s)"),
    )  # fmt: skip
    done = [r for r in results if r.status == "ingested"]
    sources = sum(r.counts["diasources"] for r in done)
    summary = f"{len(done)} visits, {sources:,} DiaSources associated in SQL"
    if len(done) < len(results):
        summary += f" ({len(results) - len(done)} visits done by an earlier run)"
    steps.finish(Step(f"ingest {label}", time.perf_counter() - t0, summary, skipped=not done))


def _release(settings: Settings, run: DemoRun, name: str, size: Scale, steps: StepLog) -> None:
    """Produce, create and load, validate, activate ``name``, each only if not done before."""
    from ..lifecycle.activate import activate_release
    from ..lifecycle.load import load_release
    from ..lifecycle.validate import validate_release
    from ..processing.simulator import produce

    run.releases.append(name)
    directory = run.out / name
    state = _state(settings, name)

    def step(title: str, action: Callable[[], str], needed: bool) -> None:
        steps.start(title)
        t0 = time.perf_counter()
        summary = action() if needed else "done by an earlier run"
        steps.finish(Step(title, time.perf_counter() - t0, summary, skipped=not needed))

    def do_produce() -> str:
        manifest = produce(directory, name, objects=size.objects, settings=settings)
        return f"{sum(manifest.rows(t) for t in manifest.tables):,} rows in {directory}"

    def do_load() -> str:
        if state is None:
            with audited(settings, "release.create", name=name), connect(settings) as conn:
                create_release(conn, name, latest_version(), settings.partition_order, None)
        with audited(settings, "release.load", name=name, directory=str(directory)) as audit:
            result = load_release(settings, name, directory)
            audit.outcome = f"ok: {sum(result.rows.values())} rows"
        return f"{sum(result.rows.values()):,} rows"

    def do_validate() -> str:
        with audited(settings, "release.validate", name=name) as audit:
            report = validate_release(settings, name)
            audit.outcome = "validated" if report.ok else "failed"
        if not report.ok:
            bad = ", ".join(c.name for c in report.checks if not c.ok)
            raise ReleaseStateError(f"release {name} failed validation ({bad}); see `dpdb release list`")
        return f"{len(report.checks)} checks passed"

    def do_activate() -> str:
        with connect(settings) as conn:
            at = prompt_log.latest_processing_time(conn)
        at = at + ACTIVATION_DELAY if at is not None else None
        with audited(settings, "release.activate", name=name, at=at) as audit:
            result = activate_release(settings, name, at=at)
            audit.outcome = f"ok: previous {result.previous}"
        return (
            f"current -> {name}, previous -> {result.previous or 'nothing'} "
            f"(swap {result.swap_seconds * 1000:.0f} ms)"
        )

    fresh_release = state in (None, "created")
    have_files = (directory / "release.json").is_file()
    step(f"produce {name} from the prompt catalog", do_produce, fresh_release and not have_files)
    step(f"load {name}", do_load, fresh_release)
    state = _state(settings, name)
    step(f"validate {name}", do_validate, state in ("loaded", "failed"))
    state = _state(settings, name)
    step(f"activate {name}", do_activate, state == "validated")


def _state(settings: Settings, name: str) -> str | None:
    with connect(settings) as conn:
        found = find_release(conn, name)
    return str(found.state) if found else None
