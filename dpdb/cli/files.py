"""``dpdb load`` and ``dpdb export``: Parquet files in and out (the ETL is the one door in)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import ProgressColumn, Task
from rich.text import Text

from ._common import archive

if TYPE_CHECKING:
    from ..etl.load import LoadSummary

__all__ = ["load_cmd", "export_cmd"]


class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} rows/s" if task.speed else "")


@click.command("load")
@click.argument("table")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--into", default="prompt", show_default=True, help="Target catalog: prompt or a release name.")
@click.option("--dry-run", is_flag=True, help="Validate and report; write nothing.")
@click.option(
    "--jobs", "-j", type=click.IntRange(1, 64), default=1, show_default=True, help="Files loaded in parallel."
)
@click.option("--ignore-extra", is_flag=True, help="Skip columns the table does not have instead of failing.")
@click.option("--replace", is_flag=True, help="Reload files whose content changed since they were loaded.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line.")
@click.pass_context
def load_cmd(
    ctx: click.Context,
    table: str,
    paths: tuple[Path, ...],
    into: str,
    dry_run: bool,
    jobs: int,
    ignore_extra: bool,
    replace: bool,
    quiet: bool,
) -> None:
    """Validate and bulk-load Parquet files (or directories of them) into TABLE."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..etl.files import total_rows

    a = archive(ctx)

    def run(progress: Callable[[int], None] | None = None) -> LoadSummary:
        return a.load(
            table, paths, into=into, dry_run=dry_run, jobs=jobs, ignore_extra=ignore_extra, replace=replace,
            progress=progress,
        )  # fmt: skip

    err_console = Console(stderr=True)
    if not quiet and err_console.is_terminal:
        bar = Progress(
            TextColumn(f"[bold]{table}[/bold]"), BarColumn(), MofNCompleteColumn(), _RowsPerSecond(),
            TimeElapsedColumn(), console=err_console, transient=True,
        )  # fmt: skip
        with bar:
            task = bar.add_task("load", total=total_rows(list(paths)))
            summary = run(lambda n: bar.advance(task, n))
    else:
        summary = run()
    if not quiet:
        for path, names in summary.skipped_columns.items():
            what = f"{len(names)} columns {summary.table} does not hold"
            click.echo(f"{path}: skipped {what}: {', '.join(names)}")
        for path, names in summary.derived_columns.items():
            click.echo(f"{path}: derived {', '.join(names)} (schema/DPDD_COVERAGE.md)")
        for f in summary.files:
            if f.status == "skipped":
                click.echo(f"{f.path}: already loaded (load {f.load_id}), nothing to do")
        click.echo(("dry run, nothing written: " if dry_run else "") + summary.line())


@click.command("export")
@click.argument("table")
@click.option("--from", "catalog", default="prompt", show_default=True, help="Catalog to read.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Parquet file to write.")
@click.pass_context
def export_cmd(ctx: click.Context, table: str, catalog: str, output: Path) -> None:
    """Export a table to Parquet with its canonical column names."""
    rows = archive(ctx).export(table, output, catalog=catalog)
    click.echo(f"{rows} rows of {catalog}.{table} written to {output}")
