"""``dpdb hats``: catalogs as HATS collections for LSDB (export, and a check of an export)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._common import DpdbGroup, archive, console

__all__ = ["hats"]


@click.group(cls=DpdbGroup)
def hats() -> None:
    """HATS catalogs for LSDB: releases, archives and as-of snapshots of the prompt catalog."""


@hats.command("export")
@click.argument("catalog")
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder to write: one HATS collection per table.",
)
@click.option(
    "--tables",
    "tables",
    metavar="T[,T...]",
    help="Tables to export, comma-separated (default all, plus ObjectNested/DiaObjectNested).",
)
@click.option(
    "--as-of",
    "as_of",
    metavar="ISO|MJD",
    help="An instant (MJD TAI or ISO 8601 UTC): the prompt catalog, or current/previous, as then.",
)
@click.option(
    "--margin",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    metavar="ARCSEC",
    help="Width of the margin catalogs in arcseconds (0: none).",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Parallel worker processes (1: work in this process).",
)
@click.option(
    "--partition-mb",
    type=click.FloatRange(0.01),
    default=256,
    show_default=True,
    help="Largest HATS partition in memory (MiB); bounds the memory a worker needs.",
)
@click.option(
    "--zstd-level",
    type=click.IntRange(1, 22),
    default=3,
    show_default=True,
    help="Parquet zstd compression level (hats' default: 15, a little smaller and many times slower).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars of each stage (default: when standard error is a terminal).",
)
@click.pass_context
def export_cmd(
    ctx: click.Context, catalog: str, out: Path, tables: str | None, as_of: str | None, margin: float,
    jobs: int, partition_mb: float, zstd_level: int, progress: bool | None,
) -> None:  # fmt: skip
    """Export CATALOG (a release, current, previous or prompt) as HATS collections in --out.

    A rerun into the same folder keeps what is complete and finishes the rest.
    """
    wanted = [t.strip() for t in tables.split(",") if t.strip()] if tables else None

    def done(c) -> None:  # noqa: ANN001
        what = "kept" if c.reused else "written"
        margin_text = f", margin {c.margin} {c.margin_rows:,} rows" if c.margin else ""
        console.print(f"{c.name}: {c.rows:,} rows{margin_text} ({what}, {c.seconds:.1f} s)")

    result = archive(ctx).export_hats(
        catalog, out, tables=wanted, as_of=as_of, margin=margin, jobs=jobs, partition_mb=partition_mb,
        zstd_level=zstd_level, progress=sys.stderr.isatty() if progress is None else progress,
        on_catalog=done,
    )  # fmt: skip
    console.print(result.line())
