"""``dpdb prompt alert``: regenerate the alert a DiaSource triggered (DPDD §3.5.1), as Avro or JSON."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .atomic import atomic_file
from .cli import _settings
from .cli_prompt import prompt
from .errors import ConfigError
from .timeutil import iso_utc, now_mjd_tai, parse_instant

__all__ = ["alert_cmd"]


@prompt.command("alert")
@click.argument("dia_source_id", type=int)
@click.option(
    "--as-of",
    "as_of",
    help="Instant to read the catalog at (ISO UTC, MJD TAI, or 'now'). "
    "Default: when the alert was issued, which reproduces it byte for byte.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["avro", "json"]),
    default="avro",
    show_default=True,
    help="avro: Rubin's wire format (magic byte 0, schema ID, Avro datum); json: the same content.",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="File to write [stdout]."
)
@click.pass_context
def alert_cmd(
    ctx: click.Context, dia_source_id: int, as_of: str | None, fmt: str, output: Path | None
) -> None:
    """Regenerate the alert of DIASOURCEID as the prompt catalog held it (schema lsst.v11_1.alert)."""
    from .prompt.alert import alert_avro, alert_json, alert_record

    t = None if as_of is None else now_mjd_tai() if as_of.strip().lower() == "now" else parse_instant(as_of)
    if output is None and fmt == "avro" and sys.stdout.isatty():
        raise click.UsageError("refusing to write binary Avro to a terminal; use -o FILE or --format json")
    record = alert_record(_settings(ctx), dia_source_id, t)
    data = alert_avro(record) if fmt == "avro" else (alert_json(record) + "\n").encode()
    if output is None:
        click.echo(data, nl=False)  # bytes go to the binary stdout
        return
    _write_atomically(output, data)
    when = "as issued" if t is None else f"as of {iso_utc(t)}"
    click.echo(f"alert {dia_source_id} ({when}, {fmt}, {len(data):,} bytes) written to {output}")


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, complete or not at all."""
    try:
        with atomic_file(path) as f:
            f.write(data)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write: {e.strerror or e}") from e
