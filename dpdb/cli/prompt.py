"""``dpdb prompt``: simulate a survey, ingest visits, run nights (simulate + ingest), relink, alerts."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from ..archive import Archive
from ..errors import QueryError
from ..prompt import STEPS, RelinkResult, VisitResult
from ._common import DpdbGroup, archive, console

__all__ = ["prompt"]


@click.group(cls=DpdbGroup)
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


@prompt.command("simulate")
@click.option("--nights", type=click.IntRange(1), required=True, help="Nights to simulate.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option(
    "--first-night", type=click.IntRange(0), default=0, show_default=True, help="Index of the first night."
)
@_survey_options
@click.pass_context
def simulate_cmd(ctx: click.Context, nights: int, out: Path, first_night: int, **options: object) -> None:
    """Write simulated visits (Visit, CcdVisit, DiaSource, DiaForcedSource, SSEphemeris, truth) as Parquet."""
    dirs = archive(ctx).prompt.simulate(out, nights, first_night=first_night, **options)
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
    a = archive(ctx)
    results = _ingest(a, list(paths), processing_time)
    _report(a, results, list(paths))


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
    a = archive(ctx)
    out = out or a.settings.home / "survey"
    first_night = a.prompt.next_night()
    dirs = a.prompt.simulate(out, nights, first_night=first_night, **options)
    console.print(f"simulated nights {first_night}..{first_night + nights - 1}: {len(dirs)} visits in {out}")
    results = _ingest(a, dirs, processing_time)
    _report(a, results, dirs)


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
    _print_relink(archive(ctx).prompt.relink(linkage, processing_time=processing_time))


@prompt.command("alert")
@click.argument("dia_source_id", type=int)
@click.option(
    "--as-of",
    "as_of",
    help="Instant to read the catalog at (ISO UTC, MJD TAI, or 'now'). "
    "Default: when the alert was issued, which reproduces it byte for byte.",
)
@click.option(
    "--provisional", is_flag=True,
    help="Accept an --as-of instant later than the latest processing time (labelled not yet repeatable).",
)  # fmt: skip
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["avro", "json"]),
    default="avro",
    show_default=True,
    help="avro: Rubin's wire format (magic byte 0, schema ID, Avro datum); json: the same content.",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="File to write [stdout]."
)
@click.pass_context
def alert_cmd(
    ctx: click.Context,
    dia_source_id: int,
    as_of: str | None,
    provisional: bool,
    fmt: str,
    output: Path | None,
) -> None:
    """Regenerate the alert of DIASOURCEID as the prompt catalog held it (schema lsst.v11_1.alert)."""
    from ..atomic import atomic_file
    from ..prompt.alert import alert_avro, alert_json
    from ..timeutil import iso_utc

    if output is None and fmt == "avro" and sys.stdout.isatty():
        raise click.UsageError("refusing to write binary Avro to a terminal; use -o FILE or --format json")
    arch = archive(ctx)
    resolved = arch.resolve_as_of(as_of, provisional=provisional) if as_of is not None else None
    if resolved is not None and (resolved.now or not resolved.repeatable):
        click.echo(resolved.label(), err=True)  # the instant used, and that the answer may still change
    t = resolved.mjd_tai if resolved is not None else None
    record = arch.prompt.alert(dia_source_id, as_of=resolved)
    data = alert_avro(record) if fmt == "avro" else (alert_json(record) + "\n").encode()
    if output is None:
        click.echo(data, nl=False)  # bytes go to the binary stdout
        return
    try:
        with atomic_file(output) as f:
            f.write(data)
    except OSError as e:
        raise QueryError(f"{output}: cannot write: {e.strerror or e}") from e
    when = "as issued" if t is None else f"as of {iso_utc(t)}"
    click.echo(f"alert {dia_source_id} ({when}, {fmt}, {len(data):,} bytes) written to {output}")


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


def _ingest(a: Archive, paths: list[Path], processing_time: str | None) -> list[VisitResult]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..prompt.staging import find_visits

    err = Console(stderr=True)
    if not err.is_terminal:
        return a.prompt.ingest(paths, processing_time=processing_time, on_relink=_print_relink)
    bar = Progress(
        TextColumn("[bold]ingest[/bold]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(), console=err, transient=True,
    )  # fmt: skip
    with bar:
        task = bar.add_task("", total=len(find_visits(paths)))

        def advance(r: VisitResult) -> None:
            bar.update(task, advance=1, description=f"visit {r.visit} {r.status} ({r.seconds:.2f} s)")

        return a.prompt.ingest(
            paths, processing_time=processing_time, progress=advance, on_relink=_print_relink
        )


def _report(a: Archive, results: list[VisitResult], paths: list[Path]) -> None:
    """Totals, seconds per visit and per step, and association quality where truth files exist."""
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
    quality = a.prompt.association_quality(paths)
    if quality.linked or quality.known_asteroid_detections:
        console.print("association against truth:")
        for line in quality.lines():
            console.print(f"  {line}")
