"""``dpdb demo``: the end-to-end demo on the embedded default database, with a printed report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console, JustifyMethod
from rich.table import Table

from ..demo import SCALES, DemoReport, Step, StepLog, build_report, run_demo
from ._common import console, settings

__all__ = ["demo"]


@click.command("demo")
@click.option(
    "--scale", type=click.Choice(list(SCALES)), default="small", show_default=True, help="Survey size."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for the survey, release files, plots and report.json [DPDB_HOME/demo].",
)
@click.option(
    "--keep/--fresh",
    default=True,
    show_default=True,
    help="Continue what the database and folder hold (a rerun finishes a broken demo), or drop both "
    "and start over (embedded server only).",
)
@click.pass_context
def demo(ctx: click.Context, scale: str, out: Path | None, keep: bool) -> None:
    """Simulate a survey, ingest it night by night, release dr1, run more nights, release dr2; report.

    Prints rows per table, association quality against the simulator's truth, the time of each
    step and five example queries with their results; writes plots and report.json to --out.
    """
    from ..locks import folder_lock

    cfg = settings(ctx)
    steps = _RichSteps(Console(stderr=True))
    t0 = time.perf_counter()
    with folder_lock(cfg.home, f"dpdb demo in {cfg.home.absolute()}"):  # one demo per home
        run = run_demo(cfg, scale, out, fresh=not keep, steps=steps)
        steps.start("report: examples and plots")
        start = time.perf_counter()
        report = build_report(cfg, run, steps.steps)  # the same list: the report step joins it below
        steps.finish(
            Step("report: examples and plots", time.perf_counter() - start, f"{len(report.plots)} plots")
        )
        report.write(run.out / "report.json")
    _print(report, time.perf_counter() - t0)


class _RichSteps(StepLog):
    """A spinner (or a bar, for counted steps) per step on a terminal; a line per finished step."""

    def __init__(self, err: Console) -> None:
        super().__init__()
        self.err = err
        self.bar: Any = None
        self.task: Any = None

    def start(self, title: str, total: int | None = None) -> None:
        if not self.err.is_terminal:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = [SpinnerColumn(), TextColumn("[bold]{task.fields[title]}")]
        if total is not None:
            columns += [BarColumn(), MofNCompleteColumn()]
        columns += [TextColumn("{task.description}"), TimeElapsedColumn()]
        self.bar = Progress(*columns, console=self.err, transient=True)
        self.bar.start()
        self.task = self.bar.add_task("", total=total, title=title)

    def advance(self, text: str = "") -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=text)

    def finish(self, step: Step) -> None:
        super().finish(step)
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        mark = "[dim]=[/dim]" if step.skipped else "[green]✓[/green]"
        self.err.print(f"{mark} {step.title}: {step.summary} [dim]({step.seconds:.1f} s)[/dim]")


def _print(report: DemoReport, seconds: float) -> None:
    console.rule(f"dpdb demo ({report.scale}): done in {seconds:.0f} s")
    steps = Table(title="steps")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("step", "left"), ("seconds", "right"), ("result", "left")
    )  # fmt: skip
    for head, justify in columns:
        steps.add_column(head, justify=justify)
    for s in report.steps:
        steps.add_row(s.title, f"{s.seconds:.1f}", s.summary)
    console.print(steps)

    catalogs = list(report.rows)
    rows = Table(title="rows per table")
    rows.add_column("table")
    for name in catalogs:
        rows.add_column(name, justify="right")
    tables = dict.fromkeys(t for c in catalogs for t in report.rows[c])
    for table in tables:
        rows.add_row(
            table, *(f"{report.rows[c][table]:,}" if table in report.rows[c] else "" for c in catalogs)
        )
    console.print(rows)

    a = report.association
    console.print(
        f"association against truth: {a['linked']:,} isolated detections, completeness "
        f"{a['completeness']:.2%}, purity {a['purity']:.2%}; known-asteroid detections attributed "
        f"{a['known_asteroids_attributed']:,}/{a['known_asteroid_detections']:,}"
    )
    for i, ex in enumerate(report.examples, 1):
        console.rule(f"{i}. {ex.title}", align="left")
        console.print(f"[dim]$ {ex.command}[/dim]", highlight=False)
        shown = Table(show_edge=False)
        for col in ex.columns:
            shown.add_column(col, justify="right")
        for r in ex.rows:
            shown.add_row(*(_cell(v) for v in r))
        console.print(shown)
        more = f", first {len(ex.rows)} shown" if ex.row_count > len(ex.rows) else ""
        console.print(f"({ex.row_count} rows{more})" + (f" {ex.note}" if ex.note else ""))
    console.rule()
    for p in report.plots:
        console.print(f"plot: {p}")
    console.print(f"report: {Path(report.out) / 'report.json'}")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e5 else f"{value:.6f}"
    return str(value)
