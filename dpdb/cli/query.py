"""``dpdb query``: one read-only SQL statement, at present or as of an instant, printed or written."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..asof import AsOf
from ..errors import QueryError
from ..query_output import FILE_FORMATS, FORMATS, write_result
from ._common import archive

__all__ = ["query"]


@click.command("query")
@click.argument("sql_text", metavar="SQL")
@click.option(
    "--as-of",
    "as_of",
    metavar="ISO|MJD",
    help="Read the prompt catalog as it was at this instant: an MJD (TAI) or an ISO 8601 time in UTC.",
)
@click.option(
    "--release",
    metavar="NAME",
    help="Resolve unqualified table names in this catalog: a release (dr1, ...), current, previous "
    "or prompt. With --as-of, current/previous are the releases they named then.",
)
@click.option(
    "--provisional",
    is_flag=True,
    help="Evaluate an --as-of instant later than the latest processing time (refused otherwise: its "
    "answer could still change); the answer is labelled not yet repeatable.",
)
@click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True, help="Output format."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to this file (atomically: complete or not at all). Needed for parquet and votable.",
)
@click.pass_context
def query(
    ctx: click.Context,
    sql_text: str,
    as_of: str | None,
    release: str | None,
    provisional: bool,
    fmt: str,
    output: Path | None,
) -> None:
    """Run one read-only SQL statement (SQL; - reads it from standard input) and print or write the result.

    The statement runs in a READ ONLY transaction that is rolled back: it can
    never change the database. Column names of schema columns come back in
    their canonical camelCase spelling (diaObjectId, psfFlux, ...).

    \b
    Time travel (--as-of): the query sees the prompt tables (DiaObject,
    SSObject, DiaSource, DiaForcedSource, SSSource, Visit, CcdVisit) as they
    were at the instant, through the views of schema prompt_as_of:
      - unqualified names resolve there first (search_path prompt_as_of[, NAME], public);
      - schema-qualified references prompt.<table> are rewritten to prompt_as_of.<table>
        (an unquoted `prompt`, any case; not inside string constants, quoted
        identifiers or comments; prompt_as_of.x, myprompt.x and functions such as
        prompt.DiaObject_as_of(t) are left alone);
      - other prompt tables (e.g. DiaObjectLast, which holds only the present) are refused.
    The same answer comes back forever after.

    \b
    Formats: table (text, with the row count), csv (NULL empty, NaN "nan"),
    json (one JSON array of objects, one row per line; NaN/inf are null,
    times ISO 8601), parquet and votable (need -o; VOTable with units and UCDs).

    \b
    Examples:
      dpdb query "SELECT diaObjectId, ra, dec FROM prompt.DiaObject WHERE validityEndMjdTai IS NULL LIMIT 5"
      dpdb query --as-of 2026-03-01T12:00:00 "SELECT count(*) FROM DiaObject"
      dpdb query --release dr1 --format parquet -o objects.parquet "SELECT * FROM Object"
    """
    if sql_text == "-":
        sql_text = sys.stdin.read()
    if fmt in FILE_FORMATS and output is None:
        raise QueryError(f"format {fmt} needs an output file (-o FILE)")
    result = archive(ctx).query_arrow(sql_text, as_of=as_of, release=release, provisional=provisional)
    write_result(result, fmt, output)
    resolved = AsOf.from_metadata(result.schema.metadata)
    label = resolved.label() if resolved is not None else None
    if resolved is not None and (resolved.now or not resolved.repeatable):
        click.echo(label, err=True)  # the resolved instant, on stderr: stdout is the result
    if output is not None:
        n = result.num_rows
        click.echo(f"{n} row{'' if n == 1 else 's'} written to {output}" + (f" ({label})" if label else ""))
