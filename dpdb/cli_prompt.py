"""``dpdb prompt``: simulate a survey, ingest visits, run nights (simulate + ingest), relink."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from .cli import DpdbGroup, _settings, cli, console
from .config import Settings
from .db import connect
from .prompt import STEPS, RelinkResult, VisitResult, ingest, relink
from .registry import prompt_log
from .timeutil import parse_instant

__all__ = ["prompt"]


@cli.group(cls=DpdbGroup)
def prompt() -> None:
    """The living prompt catalog: simulate, ingest, run."""


def _survey_options(f):  # noqa: ANN001, ANN202
    for option in reversed(
        [
            click.option("--seed", type=int, help="Random seed of the simulated sky [1]."),
            click.option("--visits-per-night", type=click.IntRange(1, 999), help="Visits per night [10]."),
            click.option(
                "--sources-per-visit",
                type=click.IntRange(1),
                help="About this many DiaSources per visit [1000].",
            ),
            click.option(
                "--area", type=click.FloatRange(min=0, min_open=True), help="Survey area [deg², 30]."
            ),
        ]
    ):
        f = option(f)
    return f


def _config(out: Path, **given: object):  # noqa: ANN202
    """Survey configuration: the one already in ``out`` (if any), with the options given on top."""
    from .processing.simulator import SurveyConfig

    values: dict[str, Any] = {}
    stored = out / "survey.json"
    if stored.is_file():
        known = {f.name for f in fields(SurveyConfig)}
        values = {k: v for k, v in json.loads(stored.read_text())["config"].items() if k in known}
        values["center"] = tuple(values["center"])
    for option, value in given.items():
        if value is not None:
            values["area_deg2" if option == "area" else option] = value
    return SurveyConfig(**values)


@prompt.command("simulate")
@click.option("--nights", type=click.IntRange(1), required=True, help="Nights to simulate.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option(
    "--first-night", type=click.IntRange(0), default=0, show_default=True, help="Index of the first night."
)
@_survey_options
def simulate_cmd(nights: int, out: Path, first_night: int, **options: object) -> None:
    """Write simulated visits (Visit, CcdVisit, DiaSource, DiaForcedSource, SSEphemeris, truth) as Parquet."""
    from .processing.simulator import simulate

    dirs = simulate(out, nights, _config(out, **options), first_night=first_night)
    console.print(f"{len(dirs)} visits of nights {first_night}..{first_night + nights - 1} written to {out}")


@prompt.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--processing-time",
    help="Processing time of the first visit (ISO UTC or MJD TAI); later visits follow at their "
    "observation spacing. Default: the wall-clock time of each visit's ingest.",
)
@click.pass_context
def ingest_cmd(ctx: click.Context, paths: tuple[Path, ...], processing_time: str | None) -> None:
    """Ingest visit directories (or trees of them): attribute, associate, aggregate, one transaction each."""
    settings = _settings(ctx)
    results = _ingest(settings, list(paths), processing_time)
    _report(settings, results, list(paths))


@prompt.command("run")
@click.option("--nights", type=click.IntRange(1), required=True, help="Nights to add to the survey.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Directory of the simulated survey [DPDB_HOME/survey].",
)
@click.option("--processing-time", help="Processing time of the first new visit (ISO UTC or MJD TAI).")
@_survey_options
@click.pass_context
def run_cmd(
    ctx: click.Context, nights: int, out: Path | None, processing_time: str | None, **options: object
) -> None:
    """Simulate the next N nights of the survey and ingest them (continues after the last night held)."""
    from .processing.simulator import next_night, simulate

    settings = _settings(ctx)
    out = out or settings.home / "survey"
    with connect(settings) as conn:
        first_night = next_night(prompt_log.last_visit(conn))
    dirs = simulate(out, nights, _config(out, **options), first_night=first_night)
    console.print(f"simulated nights {first_night}..{first_night + nights - 1}: {len(dirs)} visits in {out}")
    results = _ingest(settings, dirs, processing_time)
    _report(settings, results, dirs)


@prompt.command("relink")
@click.argument("linkage", type=click.Path(path_type=Path))
@click.option("--processing-time", help="Processing time (ISO UTC or MJD TAI). Default: now.")
@click.pass_context
def relink_cmd(ctx: click.Context, linkage: Path, processing_time: str | None) -> None:
    """Apply a daytime orbit linkage: move its DiaSources (SSSource.parquet) to their SSObjects.

    LINKAGE is a directory with SSSource.parquet (diaSourceId, ssObjectId, ...) and optionally
    SSObject.parquet (new or updated orbits). The DiaSources' old rows are withdrawn, not overwritten,
    so queries as of earlier instants keep their answers; DiaObjects left empty are deleted the same way.
    """
    t = parse_instant(processing_time) if processing_time else None
    _print_relink(relink(_settings(ctx), linkage, processing_time=t))


def _print_relink(r: RelinkResult) -> None:
    if r.status == "skipped":
        console.print(f"linkage {r.path}: already applied (skipped)")
        return
    c = r.counts
    console.print(
        f"linkage {r.path}: {c['diasources']} DiaSources moved to SSObjects ({c['ssobjects']} SSObject "
        f"versions), {c['diaobjects_deleted']} DiaObjects deleted, {c['diaobjects_updated']} re-aggregated "
        f"({r.seconds:.2f} s)"
    )


def _ingest(settings: Settings, paths: list[Path], processing_time: str | None) -> list[VisitResult]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .prompt.staging import find_visits

    t = parse_instant(processing_time) if processing_time else None
    err = Console(stderr=True)
    if not err.is_terminal:
        return ingest(settings, paths, processing_time=t, on_relink=_print_relink)
    bar = Progress(
        TextColumn("[bold]ingest[/bold]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(), console=err, transient=True,
    )  # fmt: skip
    with bar:
        task = bar.add_task("", total=len(find_visits(paths)))

        def advance(r: VisitResult) -> None:
            bar.update(task, advance=1, description=f"visit {r.visit} {r.status} ({r.seconds:.2f} s)")

        return ingest(settings, paths, processing_time=t, progress=advance, on_relink=_print_relink)


def _report(settings: Settings, results: list[VisitResult], paths: list[Path]) -> None:
    """Totals, seconds per visit and per step, and association quality where truth files exist."""
    from .processing.simulator import association_quality
    from .prompt.staging import find_visits

    done = [r for r in results if r.status == "ingested"]
    skipped = len(results) - len(done)
    console.print(f"{len(done)} visits ingested, {skipped} already in the catalog (skipped)")
    if done:
        table = Table(title="prompt ingest", show_header=True)
        for col in (
            "DiaSources",
            "SSObject",
            "associated",
            "new DiaObjects",
            "forced",
            "p50 s/visit",
            "p95 s/visit",
        ):
            table.add_column(col, justify="right")
        total = {k: sum(r.counts[k] for r in done) for k in done[0].counts}
        seconds = np.array([r.seconds for r in done])
        table.add_row(
            f"{total['diasources']:,}", f"{total['ss_attributed']:,}", f"{total['associated']:,}",
            f"{total['new_diaobjects']:,}", f"{total['forced']:,}",
            f"{np.percentile(seconds, 50):.3f}", f"{np.percentile(seconds, 95):.3f}",
        )  # fmt: skip
        console.print(table)
        steps = ", ".join(f"{s} {np.mean([r.steps[s] for r in done]):.3f}" for s in STEPS)
        console.print(f"mean seconds per step: {steps}")
    quality = association_quality(settings, find_visits(paths))
    if quality.linked or quality.known_asteroid_detections:
        console.print("association against truth:")
        for line in quality.lines():
            console.print(f"  {line}")
