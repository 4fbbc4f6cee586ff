"""``dpdb plot``: light curves, sky density maps and DiaObject histories as PNG files."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import DpdbGroup, archive

__all__ = ["plot"]

_OUTPUT = click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
    help="PNG file to write (atomically: complete or not at all).",
)  # fmt: skip


@click.group(cls=DpdbGroup)
def plot() -> None:
    """Plots of the catalog as PNG: light curves, sky density, DiaObject history."""


@plot.command("lightcurve")
@click.argument("object_id", metavar="ID", type=int)
@_OUTPUT
@click.option(
    "--as-of", "as_of", metavar="ISO|MJD",
    help="Read the prompt catalog as it was at this instant: an MJD (TAI), an ISO 8601 time in UTC or now "
    "(instants later than the latest processing time are refused: their answer could still change).",
)  # fmt: skip
@click.pass_context
def lightcurve_cmd(ctx: click.Context, object_id: int, output: Path | None, as_of: str | None) -> None:
    """Light curve of object ID: per-band psfFlux over time.

    Written to lightcurve_ID.png unless -o. The ID's origin picks the
    catalog: a prompt DiaObject (its DiaSources and DiaForcedSources not
    withdrawn, or as of --as-of), or an Object (Source, ForcedSource) or
    DiaObject of a loaded release. Detections are filled, forced photometry
    open markers.
    """
    arch = archive(ctx)
    resolved = arch.resolve_as_of(as_of) if as_of is not None else None
    if resolved is not None and (resolved.now or not resolved.repeatable):
        click.echo(resolved.label(), err=True)  # the instant used, and that the answer may still change
    plots = arch.plot
    curve = plots.lightcurve_data(object_id, as_of=resolved)
    out = plots.draw(curve, output or Path(f"lightcurve_{object_id}.png"))
    click.echo(f"wrote {out} ({curve.summary}, {curve.catalog_label})")


@plot.command("sky")
@click.option(
    "--release", default="current", show_default=True, metavar="NAME",
    help="Catalog: current, previous, a release name (dr1) or prompt (current DiaObject versions).",
)  # fmt: skip
@click.option("--table", help="Object or DiaObject (default: Object for a release, DiaObject for prompt).")
@click.option("--order", type=int, help="HEALPix order of the map (default: chosen from the footprint).")
@_OUTPUT
@click.pass_context
def sky_cmd(
    ctx: click.Context, release: str, table: str | None, order: int | None, output: Path | None
) -> None:
    """Sky density map: objects per HEALPix pixel.

    Written to sky_RELEASE_TABLE.png unless -o. The HEALPix order is the finest
    at which the occupied pixels number at most 3000 and hold 3 objects on
    average, unless --order.
    """
    plots = archive(ctx).plot
    sky = plots.sky_data(release=release, table=table, order=order)
    out = plots.draw(sky, output or Path(f"sky_{release}_{sky.table}.png"))
    click.echo(
        f"wrote {out} ({sky.total} {sky.table} rows of {sky.catalog} in {len(sky.pixels)} "
        f"HEALPix pixels at order {sky.order})"
    )


@plot.command("history")
@click.argument("dia_object_id", metavar="ID", type=int)
@_OUTPUT
@click.pass_context
def history_cmd(ctx: click.Context, dia_object_id: int, output: Path | None) -> None:
    """Versions of prompt DiaObject ID over processing time.

    nDiaSources and the per-band weighted mean psfFlux of each version; a
    DiaObject deleted by a daytime relink (closed without successor) is marked.
    Written to history_ID.png unless -o.
    """
    plots = archive(ctx).plot
    history = plots.history_data(dia_object_id)
    out = plots.draw(history, output or Path(f"history_{dia_object_id}.png"))
    state = "deleted" if history.deleted else "current version open"
    plural = "" if history.versions == 1 else "s"
    click.echo(f"wrote {out} ({history.versions} version{plural}, {state})")
