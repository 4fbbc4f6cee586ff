"""The root ``dpdb`` command: global options, the command groups, the console-script entry point."""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import click

from ..config import Settings, get_settings
from ..errors import first_line
from ._common import DpdbGroup

__all__ = ["cli", "main"]


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from .._version import code_version

        click.echo(f"dpdb, version {code_version()}")
        ctx.exit()


_COMMANDS = {
    "db": ("db", "db"),
    "schema": ("schema", "schema"),
    "load": ("files", "load_cmd"),
    "export": ("files", "export_cmd"),
    "prompt": ("prompt", "prompt"),
    "query": ("query", "query"),
    "release": ("release", "release"),
    "plot": ("plot", "plot"),
    "provenance": ("provenance", "provenance_cmd"),
    "demo": ("demo", "demo"),
    "serve": ("serve", "serve"),
    "cite": ("cite", "cite"),
    "hats": ("hats", "hats"),
    "shard": ("shard", "shard"),
}
"""Command name -> (module of dpdb.cli, attribute)."""


class _RootGroup(DpdbGroup):
    """The root group: a command's module is imported when that command runs (or ``--help`` lists it),
    so ``dpdb release load`` does not pay for importing the portal, the plots or the demo."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module_name, attr = _COMMANDS[name]
        module = importlib.import_module(f"{__package__}.{module_name}")
        if module_name == "db":
            importlib.import_module(f"{__package__}.backup")  # adds its commands to the db group
        command: click.Command = getattr(module, attr)
        return command


@click.group(cls=_RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dsn", envvar="DPDB_DSN", help=Settings.model_fields["dsn"].description)
@click.option("--home", type=click.Path(path_type=Path), help=Settings.model_fields["home"].description)
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress messages.")
@click.option(
    "--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
    help="Show the version (it names the git commit) and exit.",
)  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, dsn: str | None, home: Path | None, debug: bool, verbose: bool) -> None:
    """dpdb: LSST/Rubin-style survey catalogs on PostgreSQL."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    # psycopg warns when the rollback after an error fails (the server is gone); the command's
    # own error line says so already
    logging.getLogger("psycopg").setLevel(logging.INFO if verbose else logging.ERROR)
    try:
        ctx.obj = get_settings(dsn=dsn, home=home)
    except Exception as e:  # pydantic validation of DPDB_* variables
        raise click.UsageError(f"invalid configuration: {first_line(e)}") from e


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="dpdb", standalone_mode=True))
