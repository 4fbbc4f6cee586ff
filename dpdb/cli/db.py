"""``dpdb db``: the database server (up, down, status, url, psql, migrate, grant-reader, harden)."""

from __future__ import annotations

import os
import shutil
from typing import Any

import click

from ..errors import ServerError
from ._common import DpdbGroup, archive, console, print_kv

__all__ = ["db"]


@click.group(cls=DpdbGroup)
def db() -> None:
    """The database server: up, down, status, url, psql, migrate."""


@db.command()
@click.option(
    "--shards", type=click.IntRange(0, 64), default=0,
    help="Also start N local shard servers under DPDB_HOME/shards/ and register them.",
)  # fmt: skip
@click.pass_context
def up(ctx: click.Context, shards: int) -> None:
    """Create (first time) and start the embedded server; set up the database."""
    console.print(f"dpdb database ready ({archive(ctx).up(shards=shards)})")


@db.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop the embedded server."""
    console.print("stopped" if archive(ctx).down() else "not running")


@db.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show the server, its version, the extensions and the schema version."""
    print_kv(list(archive(ctx).status().items()))


@db.command()
@click.pass_context
def url(ctx: click.Context) -> None:
    """Print the connection URL (starting the embedded server if needed)."""
    click.echo(archive(ctx).url())


@db.command(context_settings={"ignore_unknown_options": True})
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def psql(ctx: click.Context, psql_args: tuple[str, ...]) -> None:
    """Open psql on the database (extra arguments go to psql)."""
    target = archive(ctx).url()
    exe = shutil.which("psql")
    if exe is None:
        raise ServerError("psql not found; install the Debian package postgresql-client-15")
    os.execv(exe, [exe, target, *psql_args])


@db.command("migrate")
@click.option("--to", "to", type=int, help="Schema version to migrate to (default: the newest).")
@click.pass_context
def migrate_cmd(ctx: click.Context, to: int | None) -> None:
    """Upgrade the database schema (append-only; never down)."""
    before, after = archive(ctx).migrate(to)
    if before == after:
        console.print(f"schema already at version {after}")
    else:
        console.print(f"schema migrated from version {before} to {after}")


@db.command("grant-reader")
@click.argument("name")
@click.option(
    "--password-file", type=click.File("r"), help="Read the password from this file (first line) instead of "
    "generating one.",
)  # fmt: skip
@click.pass_context
def grant_reader(ctx: click.Context, name: str, password_file: Any) -> None:
    """Create login NAME that can read current, previous, samples and prompt (and nothing else).

    The generated password is printed once; it is not stored anywhere.
    """
    a = archive(ctx)
    given = password_file.readline().rstrip("\r\n") if password_file else None
    password = a.grant_reader(name, given)
    console.print(
        f"login {name} created in role dpdb_reader (scram-sha-256); connect with {a.reader_conninfo(name)}"
    )
    if given is None:
        click.echo(f"password: {password}")


@db.command("harden")
@click.option(
    "--apply", "apply", is_flag=True,
    help="Run the SQL that fixes each unmet requirement where this login has the right.",
)  # fmt: skip
@click.pass_context
def harden_cmd(ctx: click.Context, apply: bool) -> None:
    """Check what least privilege needs from the server (and with --apply fix it).

    Lists each requirement (no CONNECT for PUBLIC on postgres/template1, a reader login for user
    SQL, reader limits on every reader login, no foreign-data wrappers for readers, ...) as ok or
    MISSING with the SQL that fixes it; exits 1 while anything is missing. The embedded server is
    hardened by `dpdb db up`; with DPDB_DSN the rest is for the server's superuser.
    """
    checks = archive(ctx).harden(apply=apply)
    missing = 0
    for c in checks:
        if c.ok:
            mark = "fixed" if c.applied else "ok"
            detail = f" ({c.detail})" if c.detail else ""
            console.print(f"[green]{mark:>7}[/green]  {c.name}{detail}", highlight=False)
            continue
        missing += 1
        console.print(f"[red]MISSING[/red]  {c.name}: {c.detail}", highlight=False)
        if c.needs:
            console.print(f"         not applied ({c.needs}); the server's superuser runs:", highlight=False)
        for statement in c.fix or []:
            click.echo(f"           {statement};")
    if missing:
        hint = "" if apply else " (`dpdb db harden --apply` runs what this login may)"
        console.print(f"{missing} requirement(s) missing{hint}", highlight=False)
        ctx.exit(1)
    console.print("all requirements met", highlight=False)
