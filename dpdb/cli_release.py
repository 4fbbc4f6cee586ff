"""``dpdb release``: the data-release lifecycle (produce, create, load, validate, activate, retain,
restore, list, drop). Every action is written to the audit log."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from dpdb.model.felis import latest_version

from .cli import DpdbGroup, _settings, cli, console
from .db import connect, prepare
from .registry.audit import audited

if TYPE_CHECKING:
    from .lifecycle.load import LoadResult

__all__ = ["release"]


@cli.group(cls=DpdbGroup)
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
    from .processing.simulator import produce

    settings = _settings(ctx)
    if from_prompt:
        prepare(settings)
    manifest = produce(
        out, name, number=number, seed=seed, objects=objects, nights=nights,
        settings=settings if from_prompt else None,
    )  # fmt: skip
    rows = ", ".join(f"{t} {manifest.rows(t):,}" for t in manifest.tables)
    console.print(f"release {name} (ID origin {manifest.origin}) written to {out}: {rows}")


@release.command("create")
@click.argument("name")
@click.option("--number", type=int, help="Release number (default: from a drN name); sets the ID origin.")
@click.pass_context
def create_cmd(ctx: click.Context, name: str, number: int | None) -> None:
    """Create release NAME: a new schema at the current schema version (state created)."""
    from .registry.releases import create_release

    settings = _settings(ctx)
    prepare(settings)
    with audited(settings, "release.create", name=name, number=number):
        with connect(settings) as conn:
            rel = create_release(conn, name, latest_version(), settings.partition_order, number)
    console.print(f"release {name} created (schema v{rel.schema_version}, ID origin {rel.origin})")


@release.command("load")
@click.argument("name")
@click.argument("directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=2, show_default=True)
@click.pass_context
def load_cmd(ctx: click.Context, name: str, directory: Path, jobs: int) -> None:
    """Load a produced release DIRECTORY into release NAME (state loaded); rerun to finish a broken load."""
    from .lifecycle.load import load_release

    settings = _settings(ctx)
    with audited(settings, "release.load", name=name, directory=str(directory)) as audit:
        result = load_release(settings, name, directory, jobs=jobs)
        audit.outcome = f"ok: {sum(result.rows.values())} rows"
    _print_load(result)


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
    from .lifecycle.validate import validate_release

    settings = _settings(ctx)
    with audited(settings, "release.validate", name=name) as audit:
        report = validate_release(settings, name)
        audit.outcome = "validated" if report.ok else "failed"
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
@click.pass_context
def activate_cmd(ctx: click.Context, name: str, force: bool, dry_run: bool) -> None:
    """Make NAME current (the active release previous) in one transaction, then apply retention."""
    from .lifecycle.activate import activate_release

    settings = _settings(ctx)
    with audited(settings, "release.activate", name=name, force=force, dry_run=dry_run) as audit:
        result = activate_release(settings, name, force=force, dry_run=dry_run)
        audit.outcome = (
            "dry run" if dry_run else f"ok: previous {result.previous}, archived {result.archived}"
        )
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
        console.print(f"{prefix}archive {old} to {settings.archive_root() / old} and drop its tables")


@release.command("retain")
@click.option("--dry-run", is_flag=True, help="Print what would be archived; change nothing.")
@click.pass_context
def retain_cmd(ctx: click.Context, dry_run: bool) -> None:
    """Archive the releases beyond the active and penultimate; finishes an interrupted retirement."""
    from .lifecycle.activate import retain

    settings = _settings(ctx)
    with audited(settings, "release.retain", dry_run=dry_run) as audit:
        names = retain(settings, dry_run=dry_run)
        audit.outcome = f"{'dry run' if dry_run else 'ok'}: {names}"
    verb = "would archive" if dry_run else "archived"
    console.print(f"{verb}: {', '.join(names)}" if names else "nothing to archive")


@release.command("restore")
@click.argument("name")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=2, show_default=True)
@click.pass_context
def restore_cmd(ctx: click.Context, name: str, jobs: int) -> None:
    """Re-load archived release NAME from its files after verifying their checksums (state loaded)."""
    from .lifecycle.load import restore_release

    settings = _settings(ctx)
    with audited(settings, "release.restore", name=name) as audit:
        result = restore_release(settings, name, jobs=jobs)
        audit.outcome = f"ok: {sum(result.rows.values())} rows"
    _print_load(result)


@release.command("drop")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Print what would be dropped; change nothing.")
@click.pass_context
def drop_cmd(ctx: click.Context, name: str, dry_run: bool) -> None:
    """Drop release NAME's tables and samples for good (not the active or penultimate release)."""
    from .lifecycle.archive import drop_release

    settings = _settings(ctx)
    with audited(settings, "release.drop", name=name, dry_run=dry_run) as audit:
        actions = drop_release(settings, name, dry_run=dry_run)
        audit.outcome = "dry run" if dry_run else "ok"
    for a in actions:
        console.print(("would " if dry_run else "") + a)


@release.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """Every release: state, schema version, rows per table, size, lifecycle times."""
    from .lifecycle.listing import list_releases

    settings = _settings(ctx)
    prepare(settings)
    rows = list_releases(settings)
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
