"""``dpdb db backup|backups|restore``: base backups and point-in-time recovery (pgBackRest)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from ._common import archive, console
from .db import db

__all__ = ["backup_cmd", "backups_cmd", "restore_cmd"]


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


@db.command("backup")
@click.option(
    "--type", "kind", type=click.Choice(["full", "diff", "incr"]), default="full", show_default=True,
    help="full, differential (since the last full) or incremental (since the last backup).",
)  # fmt: skip
@click.pass_context
def backup_cmd(ctx: click.Context, kind: str) -> None:
    """Take a base backup of the embedded server (its WAL is archived continuously)."""
    info = archive(ctx).backups.take(kind)
    console.print(
        f"backup {info.label} ({info.kind}) taken: {_mib(info.size)} of cluster, {_mib(info.stored)} stored, "
        f"{info.start:%Y-%m-%dT%H:%M:%SZ} .. {info.stop:%Y-%m-%dT%H:%M:%SZ}"
    )


@db.command("backups")
@click.pass_context
def backups_cmd(ctx: click.Context) -> None:
    """List the base backups; `db restore --to` accepts any instant after the first one ended."""
    a = archive(ctx)
    rows = a.backups.list()
    wal = a.backups.wal()
    console.print(
        f"WAL archive: {'on' if wal.archiving else 'off'}"
        + (f", segments {wal.first}..{wal.last}" if wal.first else ", empty")
    )
    if not rows:
        console.print("no backups yet; take one with `dpdb db backup`")
        return
    table = Table()
    for head in ("label", "type", "started (UTC)", "ended (UTC)", "cluster", "stored", "WAL"):
        table.add_column(head)
    for b in rows:
        table.add_row(
            b.label, b.kind, f"{b.start:%Y-%m-%d %H:%M:%S}", f"{b.stop:%Y-%m-%d %H:%M:%S}", _mib(b.size),
            _mib(b.stored), f"{b.wal_start}..{b.wal_stop}",
        )  # fmt: skip
    console.print(table)


@db.command("restore")
@click.option(
    "--to", "to", required=True, metavar="ISO|MJD|now",
    help="Recover the database as it was at this instant: an ISO 8601 time in UTC, an MJD (TAI) or now.",
)  # fmt: skip
@click.option(
    "--into", "into", required=True, type=click.Path(path_type=Path),
    help="New (or empty) directory: the recovered copy becomes a dpdb home there and is left running.",
)  # fmt: skip
@click.pass_context
def restore_cmd(ctx: click.Context, to: str, into: Path) -> None:
    """Point-in-time recovery: a copy of the database as of an instant, in a new dpdb home.

    The running server is not touched. Inspect the copy with DPDB_HOME=DIR (e.g.
    `DPDB_HOME=DIR dpdb release list`), stop it with `DPDB_HOME=DIR dpdb db down`.
    """
    result = archive(ctx).backups.restore(to, into)
    home = result.home
    console.print(
        f"restored as of {result.target:%Y-%m-%dT%H:%M:%S.%fZ} from backup {result.backup} into {home} "
        f"(running on port {result.port}; {result.stopped_at})"
    )
    console.print(f"use it with: DPDB_HOME={home} dpdb ...; stop it with: DPDB_HOME={home} dpdb db down")
