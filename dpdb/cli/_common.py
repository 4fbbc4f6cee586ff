"""What every command module shares: the error-handling group, the console, the Archive of a context.

Command modules import from here, never from ``root`` (which imports them).
"""

from __future__ import annotations

import sys
from typing import Any

import adbc_driver_manager
import click
import psycopg
import sqlalchemy.exc
from rich.console import Console
from rich.table import Table

from ..archive import Archive
from ..config import Settings
from ..errors import DpdbError, first_line

__all__ = ["DpdbGroup", "database_message", "console", "archive", "settings", "print_kv", "instant_option"]

# Wide when piped, so tables of long column names are not truncated in files and tests.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


class DpdbGroup(click.Group):
    """Click group with the one top-level error handler: ``error: <one line>``, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DpdbError as e:
            self._fail(ctx, str(e), e)
        except (psycopg.Error, sqlalchemy.exc.DBAPIError, adbc_driver_manager.Error) as e:
            self._fail(ctx, database_message(e), e)

    @staticmethod
    def _fail(ctx: click.Context, message: str, exc: BaseException) -> None:
        if ctx.find_root().params.get("debug"):
            raise exc
        click.echo(f"error: {message}", err=True)
        ctx.exit(1)


_LOST = ("server closed the connection", "terminating connection", "connection to server", "no connection")


def database_message(exc: BaseException) -> str:
    """One line for a database error; a lost connection (server stopped or crashed) says so.

    The earliest database error of the chain is the cause (a failed rollback after a lost
    connection only repeats it).
    """
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    errors: list[BaseException] = []
    for e in chain:
        orig = e.orig if isinstance(e, sqlalchemy.exc.DBAPIError) else None
        cause = orig if isinstance(orig, BaseException) else e
        if isinstance(cause, (psycopg.Error, adbc_driver_manager.Error)):
            errors.append(cause)
    cause = errors[-1] if errors else exc
    if any(marker in str(e) for e in errors for marker in _LOST):
        return (
            f"lost the connection to the database server ({first_line(cause)}); the unfinished transaction "
            "was rolled back: check `dpdb db status`, then rerun"
        )
    return f"database error: {first_line(cause)}"


def settings(ctx: click.Context) -> Settings:
    """The settings the root command read (environment and options)."""
    found = ctx.find_object(Settings)
    assert found is not None, "the root command stores the settings"
    return found


def archive(ctx: click.Context) -> Archive:
    """The :class:`~dpdb.Archive` every command works through."""
    return Archive(settings=settings(ctx))


def print_kv(rows: list[tuple[str, str]]) -> None:
    table = Table(show_header=False, box=None)
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", value)
    console.print(table)


def instant_option(help_text: str) -> Any:
    return click.option("--as-of", "as_of", metavar="ISO|MJD|now", help=help_text)
