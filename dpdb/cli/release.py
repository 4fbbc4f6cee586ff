"""``dpdb release``: the data-release lifecycle (produce, create, load, validate, activate, retain,
restore, list, drop). Every action is written to the audit log."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from ._common import DpdbGroup, archive, console

if TYPE_CHECKING:
    from ..lifecycle.load import LoadResult

__all__ = ["release"]


@click.group(cls=DpdbGroup)
def release() -> None:
    """Data releases: produce, create, load, validate, activate, retain, restore, list, drop."""


@release.command("produce")
@click.argument("name")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Directory to write.")
@click.option("--from-prompt", is_flag=True, help="Reprocess the prompt catalog's visits and DIA tables.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed of the static sky.")
@click.option("--number", type=int, help="Release number (default: from a drN name); sets the ID origin.")
@click.option(
    "--objects", type=click.IntRange(1), default=20_000, show_default=True, help="Static-sky objects."
)
@click.option(
    "--nights",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Nights of visits (without --from-prompt).",
)
@click.pass_context
def produce_cmd(
    ctx: click.Context, name: str, out: Path, from_prompt: bool, seed: int, number: int | None, objects: int,
    nights: int,
) -> None:  # fmt: skip
    """Write release NAME's Parquet files (by HEALPix pixel) and its manifest to --out."""
    manifest = archive(ctx).releases.produce(
        name, out, from_prompt=from_prompt, number=number, seed=seed, objects=objects, nights=nights
    )
    rows = ", ".join(f"{t} {manifest.rows(t):,}" for t in manifest.tables)
    console.print(f"release {name} (ID origin {manifest.origin}) written to {out}: {rows}")


@release.command("create")
@click.argument("name")
@click.option("--number", type=int, help="Release number (default: from a drN name); sets the ID origin.")
@click.option(
    "--balance-from", type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="With shards: balance the partitions over them by the rows of this release directory's files.",
)  # fmt: skip
@click.pass_context
def create_cmd(ctx: click.Context, name: str, number: int | None, balance_from: Path | None) -> None:
    """Create release NAME: a new schema at the current schema version (state created)."""
    rel = archive(ctx).releases.create(name, number=number, balance_from=balance_from)
    console.print(f"release {name} created (schema v{rel.schema_version}, ID origin {rel.origin})")


@release.command("load")
@click.argument("name")
@click.argument("directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option(
    "--legacy-load",
    is_flag=True,
    help="Keep the indexes during the load (the older, slower path) instead of building them afterwards.",
)
@click.pass_context
def load_cmd(ctx: click.Context, name: str, directory: Path, jobs: int, legacy_load: bool) -> None:
    """Load a produced release DIRECTORY into release NAME (state loaded); rerun to finish a broken load."""
    _print_load(archive(ctx).releases.load(name, directory, jobs=jobs, legacy=legacy_load))


def _print_load(result: LoadResult) -> None:
    total = sum(result.rows.values())
    rate = total / result.seconds if result.seconds else 0
    skipped = f", {result.skipped_files} files already loaded" if result.skipped_files else ""
    console.print(
        f"release {result.name}: {total:,} rows loaded in {result.seconds:.1f} s "
        f"({rate:,.0f} rows/s){skipped}"
    )


@release.command("validate")
@click.argument("name")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write the JSON report here.")
@click.pass_context
def validate_cmd(ctx: click.Context, name: str, report_path: Path | None) -> None:
    """Check release NAME; print the report; state validated, or failed (exit 1)."""
    report = archive(ctx).releases.validate(name)
    table = Table(
        title=f"validation of {name}"
        + (f" (compared with {report.compared_with})" if report.compared_with else "")
    )
    for head in ("check", "result", "figure"):
        table.add_column(head)
    for c in report.checks:
        table.add_row(
            c.name,
            "[green]ok[/green]" if c.ok else "[red]FAIL[/red]",
            c.figure + (f" ({c.detail})" if c.detail else ""),
        )
    console.print(table)
    if report_path:
        report_path.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    total = sum(report.rows.values())
    console.print(
        f"{name} {'validated' if report.ok else 'FAILED'}: {total:,} rows checked in {report.seconds:.1f} s"
    )
    if not report.ok:
        ctx.exit(1)


@release.command("activate")
@click.argument("name")
@click.option("--force", is_flag=True, help="Activate a release that is not validated (audited).")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option(
    "--at", "at", metavar="ISO|MJD",
    help="The activation's instant (default now; not in the future; later than every change so far), "
    "to replay a survey's history.",
)  # fmt: skip
@click.pass_context
def activate_cmd(ctx: click.Context, name: str, force: bool, dry_run: bool, at: str | None) -> None:
    """Make NAME current (the active release previous) in one transaction, then apply retention."""
    a = archive(ctx)
    result = a.releases.activate(name, force=force, dry_run=dry_run, at=at)
    prefix = "dry run, nothing changed: would " if dry_run else ""
    if result.swapped:
        timing = (
            f" (swap {result.swap_seconds * 1000:.0f} ms, readers held {result.lock_seconds * 1000:.0f} ms)"
        )
        console.print(
            f"{prefix}point current at {name} and previous at {result.previous or 'nothing'}"
            + ("" if dry_run else timing)
        )
    else:
        console.print(f"{name} is already active")
    for old in result.archived:
        console.print(f"{prefix}archive {old} to {a.settings.archive_root() / old} and drop its tables")


@release.command("retain")
@click.option("--dry-run", is_flag=True, help="Print what would be archived; change nothing.")
@click.pass_context
def retain_cmd(ctx: click.Context, dry_run: bool) -> None:
    """Archive the releases beyond the active and penultimate; finishes an interrupted retirement."""
    names = archive(ctx).releases.retain(dry_run=dry_run)
    verb = "would archive" if dry_run else "archived"
    console.print(f"{verb}: {', '.join(names)}" if names else "nothing to archive")


@release.command("restore")
@click.argument("name")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=2, show_default=True)
@click.pass_context
def restore_cmd(ctx: click.Context, name: str, jobs: int) -> None:
    """Re-load archived release NAME from its files after verifying their checksums (state loaded)."""
    _print_load(archive(ctx).releases.restore(name, jobs=jobs))


@release.command("drop")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Print what would be dropped; change nothing.")
@click.pass_context
def drop_cmd(ctx: click.Context, name: str, dry_run: bool) -> None:
    """Drop release NAME's tables and samples for good (not the active or penultimate release)."""
    actions = archive(ctx).releases.drop(name, dry_run=dry_run)
    for a in actions:  # the last may be a warning about citations that read the release
        console.print(a if a.startswith("warning: ") else ("would " if dry_run else "") + a)


@release.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """Every release: state, schema version, rows per table, size, lifecycle times."""
    rows = archive(ctx).releases.list()
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=1, default=str))
        return
    table = Table(title="data releases")
    for head in ("release", "state", "schema", "rows", "size", "created", "activated", "archived"):
        table.add_column(head)
    for r in rows:
        table.add_row(
            r.name, r.state, f"v{r.schema_version}" if r.schema_version else "", r.rows_text(),
            r.size_text(), _time(r.created_at), _time(r.activated_at), _time(r.archived_at),
        )  # fmt: skip
    console.print(table)


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""
