"""``dpdb shard``: the PostgreSQL servers that hold partitions of data releases (add, list, remove)."""

from __future__ import annotations

import click
from rich.table import Table

from ._common import DpdbGroup, archive, console

__all__ = ["shard"]


@click.group(cls=DpdbGroup)
def shard() -> None:
    """Shards: servers holding release partitions (postgres_fdw foreign partitions)."""


@shard.command("add")
@click.argument("name")
@click.argument("dsn")
@click.pass_context
def add(ctx: click.Context, name: str, dsn: str) -> None:
    """Register shard NAME at DSN (libpq string or URL); new releases are distributed over the shards."""
    found = archive(ctx).shards.add(name, dsn)
    console.print(f"shard {found.name} registered ({found.where})")


@shard.command("list")
@click.pass_context
def list_cmd(ctx: click.Context) -> None:
    """Every shard: where it is, whether it answers, the releases it holds."""
    states = archive(ctx).shards.status()
    if not states:
        console.print("no shards (releases are not distributed)")
        return
    table = Table("shard", "where", "state", "detail")
    for s in states:
        table.add_row(
            s.name, s.where + (" (embedded)" if s.embedded else ""), "up" if s.up else "DOWN", s.detail
        )
    console.print(table)


@shard.command("remove")
@click.argument("name")
@click.pass_context
def remove(ctx: click.Context, name: str) -> None:
    """Unregister shard NAME (refused while it holds partitions of a release)."""
    archive(ctx).shards.remove(name)
    console.print(f"shard {name} removed")
