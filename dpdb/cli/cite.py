"""``dpdb cite``: citable query results (make, resolve, show, list), over :attr:`dpdb.Archive.citations`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..registry.citations import rows
from ._common import DpdbGroup, archive, console

__all__ = ["cite"]

_SUFFIX_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".xml": "votable", ".vot": "votable",
                   ".votable": "votable", ".csv": "csv", ".json": "json", ".txt": "table"}  # fmt: skip


class _CiteGroup(DpdbGroup):
    """``dpdb cite SQL`` is ``dpdb cite query SQL``: anything that is not a subcommand is a query."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["query", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_CiteGroup)
def cite() -> None:
    """Citable query results: an identifier per query and instant, verifiable forever.

    \b
    dpdb cite "SQL" [--as-of T] [--release R] [--title ... --creator ...]
    dpdb cite resolve ID [-o FILE]
    dpdb cite show ID [--format json|datacite|bibtex]
    dpdb cite list
    """


@cite.command("query")
@click.argument("sql_text", metavar="SQL")
@click.option(
    "--as-of",
    "as_of",
    metavar="ISO|MJD",
    help="Evaluate the query at this past instant (MJD TAI or ISO 8601 UTC). Default: the present, "
    "pinned to the newest processing time the prompt catalog holds.",
)
@click.option(
    "--release",
    metavar="NAME",
    help="Resolve unqualified table names in this catalog (as dpdb query); current/previous are "
    "replaced by the releases they name.",
)
@click.option("--title", help="Title of the cited result (default: generated from catalogs and instant).")
@click.option("--creator", help="Who to credit (default: your user name).")
@click.option("--json", "as_json", is_flag=True, help="Print the citation as JSON.")
@click.pass_context
def query_cmd(
    ctx: click.Context, sql_text: str, as_of: str | None, release: str | None, title: str | None,
    creator: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Cite the result of one query (SQL; - reads it from standard input): print its identifier.

    The query runs once, pinned to an instant; its row count and result hash
    are stored with the normalized text. The same query at the same instant
    always gets the same identifier.
    """
    from ..citations import citation_line, render
    from ..timeutil import parse_instant

    if sql_text == "-":
        sql_text = sys.stdin.read()
    instant = parse_instant(as_of) if as_of is not None else None
    arch = archive(ctx)
    made = arch.citations.cite(sql_text, as_of=instant, release=release, title=title, creator=creator)
    c = made.citation
    for warning in made.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(render(c, arch.settings, "json"), nl=False)
        return
    click.echo(c.handle)
    click.echo(citation_line(c, arch.settings))
    state = f"already cited on {c.created_at:%Y-%m-%d %H:%M:%S %Z}" if made.existing else "new"
    click.echo(
        f"{rows(c.row_count)}, sha256 {c.result_sha256}; as of MJD {c.as_of_mjd_tai!r} TAI "
        f"({c.as_of_utc} UTC); reads {', '.join(c.catalogs) or 'no catalog'}; {state}"
    )


@cite.command("resolve")
@click.argument("reference", metavar="ID", required=False)
@click.option(
    "--all", "every", is_flag=True,
    help="Resolve every citation (e.g. after a migration or a restore): one line each, exit 1 if any fails.",
)  # fmt: skip
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
    help="Write the verified rows to this file, with the citation in its metadata.",
)  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(("parquet", "votable", "csv", "json", "table")),
    help="Format of -o (default: from its suffix, else parquet).",
)  # fmt: skip
@click.pass_context
def resolve_cmd(
    ctx: click.Context, reference: str | None, every: bool, output: Path | None, fmt: str | None
) -> None:
    """Re-run citation ID as of its instant and verify row count and hash (exit 1 when they differ).

    ID is the short identifier, the handle (prefix/dpdb.ID), a doi.org URL or
    the landing-page URL. A citation of a release archived since is read from
    the release's kept sample when the query lies inside it; otherwise the
    error names the release to restore.
    """
    arch = archive(ctx)
    if every or reference is None:
        if not every or reference is not None or output is not None:
            raise click.UsageError("give one citation ID (with -o if you like), or --all alone")
        _resolve_all(ctx, arch)
        return
    resolution = arch.citations.resolve(reference)
    c = resolution.citation
    click.echo(f"{c.handle}: {rows(c.row_count)} as of {c.as_of_utc} UTC, sha256 {c.result_sha256}")
    for line in resolution.lines():
        click.echo(line)
    if not resolution.verified:
        if output is not None:
            click.echo(f"nothing written to {output}: the rows are not the cited ones", err=True)
        ctx.exit(1)
    if output is not None:
        fmt = fmt or _SUFFIX_FORMATS.get(output.suffix.lower(), "parquet")
        arch.citations.write(resolution, output, fmt)
        click.echo(f"{resolution.rows} row{'' if resolution.rows == 1 else 's'} written to {output} ({fmt})")


def _resolve_all(ctx: click.Context, arch: Any) -> None:
    from ..citations import CitationError

    failed = 0
    citations = arch.citations.list()
    for c in citations:
        try:
            resolution = arch.citations.resolve(c.citation_id)
            line = (
                resolution.lines()[0]
                if resolution.verified
                else "differs: " + "; ".join(resolution.differences)
            )
            failed += not resolution.verified
        except CitationError as e:
            line, failed = f"unavailable: {e}", failed + 1
        click.echo(f"{c.citation_id} {line}")
    click.echo(f"{len(citations) - failed} of {len(citations)} citations verified")
    if failed:
        ctx.exit(1)


@cite.command("show")
@click.argument("reference", metavar="ID")
@click.option(
    "--format", "fmt", type=click.Choice(("json", "datacite", "bibtex")), default="json", show_default=True,
    help="json: everything stored; datacite: DataCite REST API JSON (schema 4.5); bibtex: a @misc entry.",
)  # fmt: skip
@click.pass_context
def show_cmd(ctx: click.Context, reference: str, fmt: str) -> None:
    """Print citation ID's metadata (nothing is re-run)."""
    click.echo(archive(ctx).citations.show(reference, fmt), nl=False)


@cite.command("list")
@click.option("--release", metavar="NAME", help="Only the citations that read this catalog.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_cmd(ctx: click.Context, release: str | None, as_json: bool) -> None:
    """Every citation: identifier, when, instant, rows, catalogs read, title."""
    arch = archive(ctx)
    rows = arch.citations.dependents(release) if release else arch.citations.list()
    if as_json:
        click.echo(json.dumps([c.to_json(arch.settings) for c in rows], indent=1))
        return
    table = Table(title="citations")
    for head in ("id", "created", "as of (UTC)", "rows", "reads", "title"):
        table.add_column(head)
    for c in rows:
        table.add_row(
            c.citation_id, f"{c.created_at:%Y-%m-%d %H:%M}", c.as_of_utc, str(c.row_count),
            ", ".join(c.catalogs), c.title,
        )  # fmt: skip
    console.print(table)
