"""``dpdb schema``: the versioned table definitions (felis YAML) and the DDL made from them."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from dpdb.model.ddl import catalog_ddl, meta_ddl
from dpdb.model.felis import latest_version, load_felis, load_felis_file, position_columns, versions
from dpdb.model.layout import LAYOUTS, tables_for

from ..errors import DpdbError
from ._common import DpdbGroup, console, settings

__all__ = ["schema"]


@click.group(cls=DpdbGroup)
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
        order = partition_order if partition_order is not None else settings(ctx).partition_order
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
