"""The ``dpdb`` command line: thin commands that parse, call the library, print."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click
import psycopg
import sqlalchemy.exc
from rich.console import Console
from rich.progress import ProgressColumn, Task
from rich.table import Table
from rich.text import Text

from dpdb.model.ddl import catalog_ddl, meta_ddl
from dpdb.model.felis import latest_version, load_felis, load_felis_file, position_columns, versions
from dpdb.model.layout import LAYOUTS, tables_for

from . import __version__
from .config import Settings, get_settings
from .db import connect, describe, prepare, server_for
from .errors import DpdbError, ServerError, first_line
from .migrate import migrate

__all__ = ["cli", "main"]

# Wide when piped, so tables of long column names are not truncated in files and tests.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


class DpdbGroup(click.Group):
    """Click group with the one top-level error handler: ``error: <one line>``, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DpdbError as e:
            self._fail(ctx, str(e), e)
        except (psycopg.Error, sqlalchemy.exc.DBAPIError) as e:
            cause: BaseException = e
            if isinstance(e, sqlalchemy.exc.DBAPIError) and e.orig is not None:
                cause = e.orig
            self._fail(ctx, f"database error: {first_line(cause)}", cause)

    @staticmethod
    def _fail(ctx: click.Context, message: str, exc: BaseException) -> None:
        if ctx.find_root().params.get("debug"):
            raise exc
        click.echo(f"error: {message}", err=True)
        ctx.exit(1)


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    assert settings is not None  # the root group stores the settings before any command runs
    return settings


@click.group(cls=DpdbGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dsn", envvar="DPDB_DSN", help=Settings.model_fields["dsn"].description)
@click.option("--home", type=click.Path(path_type=Path), help=Settings.model_fields["home"].description)
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress messages.")
@click.version_option(__version__, prog_name="dpdb")
@click.pass_context
def cli(ctx: click.Context, dsn: str | None, home: Path | None, debug: bool, verbose: bool) -> None:
    """dpdb: LSST/Rubin-style survey catalogs on PostgreSQL."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        ctx.obj = get_settings(dsn=dsn, home=home)
    except Exception as e:  # pydantic validation of DPDB_* variables
        raise click.UsageError(f"invalid configuration: {first_line(e)}") from e


# -- db ----------------------------------------------------------------------------
@cli.group(cls=DpdbGroup)
def db() -> None:
    """The database server: up, down, status, url, psql, migrate."""


@db.command()
@click.pass_context
def up(ctx: click.Context) -> None:
    """Create (first time) and start the embedded server; set up the database."""
    settings = _settings(ctx)
    server = server_for(settings)
    was_running = server is None or (server.initialized() and server.running())
    prepare(settings)
    with connect(settings, check=False) as conn:
        info = describe(conn)
    state = "already running" if was_running else "started"
    where = f"embedded server {state} in {server.home}" if server else "server at DPDB_DSN"
    console.print(f"dpdb database ready ({where}), schema version {info.schema_version}")


@db.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop the embedded server."""
    server = server_for(_settings(ctx))
    if server is None:
        raise ServerError("DPDB_DSN points at an external server; dpdb does not stop it")
    console.print("stopped" if server.down() else "not running")


@db.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show the server, its version, the extensions and the schema version."""
    settings = _settings(ctx)
    server = server_for(settings)
    rows: list[tuple[str, str]] = []
    if server is not None:
        st = server.status()
        rows += [
            (
                "server",
                f"embedded, {'running' if st.running else 'stopped'}"
                + (f" (pid {st.pid})" if st.pid else ""),
            ),
            ("data directory", str(st.data_dir)),
            ("socket", f"{st.socket_dir} port {st.port}"),
            ("binaries", str(st.bindir) if st.bindir else "not found"),
        ]
        if not st.running:
            _print_kv(rows)
            return
    else:
        rows.append(("server", "external (DPDB_DSN)"))
    with connect(settings, check=False) as conn:
        info = describe(conn)
    rows += [
        ("PostgreSQL", info.server_version),
        ("extensions", ", ".join(f"{k} {v}" for k, v in info.extensions.items()) or "none"),
        ("schema version", f"{info.schema_version} (this dpdb knows up to {latest_version()})"),
        ("catalogs", ", ".join(f"{n} ({k}, v{v})" for n, k, v in info.catalogs) or "none"),
    ]
    _print_kv(rows)


def _print_kv(rows: list[tuple[str, str]]) -> None:
    table = Table(show_header=False, box=None)
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", value)
    console.print(table)


@db.command()
@click.pass_context
def url(ctx: click.Context) -> None:
    """Print the connection URL (starting the embedded server if needed)."""
    settings = _settings(ctx)
    prepare(settings)
    server = server_for(settings)
    click.echo(server.url(settings.database) if server else settings.dsn)


@db.command(context_settings={"ignore_unknown_options": True})
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def psql(ctx: click.Context, psql_args: tuple[str, ...]) -> None:
    """Open psql on the database (extra arguments go to psql)."""
    settings = _settings(ctx)
    prepare(settings)
    server = server_for(settings)
    target = server.url(settings.database) if server else settings.dsn
    exe = shutil.which("psql")
    if exe is None:
        raise ServerError("psql not found; install the Debian package postgresql-client-15")
    os.execv(exe, [exe, str(target), *psql_args])


@db.command("migrate")
@click.option("--to", "to", type=int, help="Schema version to migrate to (default: the newest).")
@click.pass_context
def migrate_cmd(ctx: click.Context, to: int | None) -> None:
    """Upgrade the database schema (append-only; never down)."""
    before, after = migrate(_settings(ctx), to)
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
    from .access import create_reader
    from .registry.audit import audited

    settings = _settings(ctx)
    prepare(settings)
    given = password_file.readline().rstrip("\r\n") if password_file else None
    with audited(settings, "db.grant-reader", name=name) as audit:
        with connect(settings) as conn:
            password = create_reader(conn, name, given)
        audit.outcome = "ok"
    server = server_for(settings)
    where = f"host=localhost port={server.port} dbname={settings.database}" if server else "the server"
    console.print(
        f"login {name} created in role dpdb_reader (scram-sha-256); connect with {where} user={name}"
    )
    if given is None:
        click.echo(f"password: {password}")


# -- schema --------------------------------------------------------------------------
@cli.group(cls=DpdbGroup)
def schema() -> None:
    """The versioned table definitions."""


@schema.command("show")
@click.option("--version", "version", type=int, help="Schema version (default: the newest).")
@click.option("--table", "table_name", help="Show the columns of one table.")
@click.option("--ddl", is_flag=True, help="Print the DDL a new catalog gets (dry run; nothing is executed).")
@click.option("--kind", type=click.Choice(["prompt", "release"]), default="prompt", show_default=True)
@click.option("--partition-order", type=int, default=None, help="Partition order for --ddl.")
@click.pass_context
def schema_show(
    ctx: click.Context,
    version: int | None,
    table_name: str | None,
    ddl: bool,
    kind: str,
    partition_order: int | None,
) -> None:
    """List the tables of a schema version, one table's columns, or the DDL."""
    version = version or latest_version()
    fschema = load_felis(version)
    if ddl:
        order = partition_order if partition_order is not None else _settings(ctx).partition_order
        name = "prompt" if kind == "prompt" else "dr1"
        for stmt in meta_ddl(version) + catalog_ddl(name, version, kind, order):
            click.echo(stmt.rstrip() + ";")
        return
    tables = {t.name.lower(): t for t in fschema.tables}
    if table_name:
        ftable = tables.get(table_name.lower())
        if ftable is None:
            names = ", ".join(t.name for t in fschema.tables)
            raise DpdbError(f"unknown table {table_name} in schema v{version} (tables: {names})")
        out = Table(title=f"{ftable.name} (schema v{version})")
        for head in ("column", "type", "null", "unit", "UCD", "description"):
            out.add_column(head)
        for c in ftable.columns:
            out.add_row(
                c.name,
                c.postgresql_datatype or c.datatype.value,
                "" if c.nullable else "not null",
                c.fits_tunit or "",
                c.ivoa_ucd or "",
                (c.description or "").strip()[:60],
            )
        console.print(out)
        return
    out = Table(title=f"dpdb schema v{version} (versions shipped: {', '.join(map(str, versions()))})")
    for head in ("table", "columns", "catalogs", "partitioned on", "position"):
        out.add_column(head)
    for t in fschema.tables:
        lay = LAYOUTS[t.name]
        kinds = [k for k in ("prompt", "release") if t.name in tables_for(k)]
        part = (f"_healpix_29 (of {lay.parent})" if lay.parent else "_healpix_29") if lay.partitioned else ""
        pos = position_columns(t)
        out.add_row(t.name, str(len(t.columns)), ", ".join(kinds), part, ", ".join(pos) if pos else "")
    console.print(out)


@schema.command("validate")
@click.argument("path", type=click.Path(path_type=Path))
def schema_validate(path: Path) -> None:
    """Validate a felis schema file (as `felis validate` does), one-line error if not."""
    fschema = load_felis_file(path)
    console.print(f"{path}: valid felis schema {fschema.name} ({len(fschema.tables)} tables)")


# -- load / export ---------------------------------------------------------------------
class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} rows/s" if task.speed else "")


@cli.command("load")
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

    from .etl.files import discover, open_parquet
    from .etl.load import load

    run = functools.partial(
        load, _settings(ctx), table, list(paths), into=into, dry_run=dry_run, jobs=jobs,
        ignore_extra=ignore_extra, replace=replace,
    )  # fmt: skip
    err_console = Console(stderr=True)
    if not quiet and err_console.is_terminal:
        total = sum(open_parquet(p).metadata.num_rows for p in discover(list(paths)))
        bar = Progress(
            TextColumn(f"[bold]{table}[/bold]"), BarColumn(), MofNCompleteColumn(), _RowsPerSecond(),
            TimeElapsedColumn(), console=err_console, transient=True,
        )  # fmt: skip
        with bar:
            task = bar.add_task("load", total=total)
            summary = run(progress=lambda n: bar.advance(task, n))
    else:
        summary = run()
    if not quiet:
        for f in summary.files:
            if f.status == "skipped":
                click.echo(f"{f.path}: already loaded (load {f.load_id}), nothing to do")
        click.echo(("dry run, nothing written: " if dry_run else "") + summary.line())


@cli.command("export")
@click.argument("table")
@click.option("--from", "catalog", default="prompt", show_default=True, help="Catalog to read.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Parquet file to write.")
@click.pass_context
def export_cmd(ctx: click.Context, table: str, catalog: str, output: Path) -> None:
    """Export a table to Parquet with its canonical column names."""
    from .etl.export import export_table

    rows = export_table(_settings(ctx), table, catalog, output)
    click.echo(f"{rows} rows of {catalog}.{table} written to {output}")


# Command groups in their own modules register themselves on `cli` when imported.
from . import cli_alert, cli_demo, cli_plot, cli_prompt, cli_provenance, cli_query, cli_release  # noqa: E402, F401


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="dpdb", standalone_mode=True))


if __name__ == "__main__":
    main()
