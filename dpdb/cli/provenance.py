"""``dpdb provenance``: where an Object or DiaObject lives, its visits, load-manifest entries and alerts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from ..provenance import Alert, DiaObjectVersion, LoadEntry, Provenance, VisitContribution
from ._common import archive, console

__all__ = ["provenance_cmd"]


@click.command("provenance")
@click.argument("object_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--limit",
    type=click.IntRange(0),
    default=20,
    show_default=True,
    help="Rows shown per list (versions, visits, files, alerts); 0 shows all.",
)
@click.pass_context
def provenance_cmd(ctx: click.Context, object_id: int, as_json: bool, limit: int) -> None:
    """Provenance of a data-release Object or DiaObject, or a prompt DiaObject, by ID.

    \b
    Reports the catalog the ID's origin names (the prompt catalog or a release:
    its state, schema version, source, lifecycle times, current/previous), the
    visits of the object's measurements, the load-manifest entries (file,
    SHA-256, software and schema version) its rows came from, and for a
    DiaObject its versions and the alerts issued (with the command that
    regenerates each); a release DiaObject is linked to its prompt counterpart.
    """
    prov = archive(ctx).provenance(object_id)
    if as_json:
        click.echo(json.dumps(prov.to_json(), indent=1))
        return
    _print(prov, limit)


def _time(value: datetime | None) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if value is not None else ""


def _print(prov: Provenance, limit: int, heading: str | None = None) -> None:
    place = prov.place
    where = "the prompt catalog" if place.kind == "prompt" else f"release {place.name}"
    console.rule(heading or f"{prov.kind or 'ID'} {prov.object_id} in {where}")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    for key, value in _facts(prov):
        facts.add_row(key, value)
    console.print(facts)
    if prov.versions:
        heads = ["valid from (UTC)", "valid to (UTC)", "nDiaSources", "made by", "ended by"]
        _list("versions", heads, [_version_row(v) for v in prov.versions], limit)
    if prov.visits:
        tables = list(prov.visits[0].rows)
        title = f"visits: {len(prov.contributing_visits)} contributed, {prov.ccd_visit_count} CcdVisits"
        heads = ["visit", "band", "midpoint (MJD)", "CcdVisits", *tables, "withdrawn"]
        _list(title, heads, [_visit_row(v, tables) for v in prov.visits], limit)
    if prov.loads:
        heads = ["load", "table", "rows of it", "file rows", "file", "SHA-256", "schema", "dpdb", "loaded"]
        _list(f"load manifest: {len(prov.loads)} files", heads, [_load_row(e) for e in prov.loads], limit)
    if prov.alerts and prov.counterpart is None:
        heads = ["alert ID", "issued (UTC)", "MJD TAI", "visit", "status", "regenerate"]
        _list(f"alerts: {len(prov.alerts)}", heads, [_alert_row(a) for a in prov.alerts], limit)
    for note in prov.notes:
        console.print(f"note: {note}")
    if prov.counterpart is not None:
        console.print()
        _print(prov.counterpart, limit, f"prompt counterpart: DiaObject {prov.counterpart.object_id}")


def _version_row(v: DiaObjectVersion) -> list[str]:
    valid_to = v.valid_to_utc or "(current)"
    return [v.valid_from_utc, valid_to, str(v.n_dia_sources), v.made_by or "", v.ended_by or ""]


def _visit_row(v: VisitContribution, tables: list[str]) -> list[str]:
    midpoint = f"{v.midpoint_mjd:.5f}" if v.midpoint_mjd is not None else ""
    counts = [str(v.rows[t]) for t in tables]
    return [
        str(v.visit),
        v.band or "",
        midpoint,
        str(len(v.ccd_visits)),
        *counts,
        str(sum(v.withdrawn.values()) or ""),
    ]


def _load_row(e: LoadEntry) -> list[str]:
    sha = f"{e.sha256[:16]}…" if e.sha256 else ""
    return [
        str(e.load_id), e.table_name or "?", ", ".join(map(str, e.rows.values())),
        "" if e.row_count is None else str(e.row_count), e.path or "(entry missing)", sha,
        f"v{e.schema_version}" if e.schema_version else "", e.software_version or "", _time(e.loaded_at),
    ]  # fmt: skip


def _alert_row(a: Alert) -> list[str]:
    status = f"withdrawn: moved to {a.destination}" if a.withdrawn_mjd_tai is not None else ""
    return [str(a.alert_id), a.issued_utc, f"{a.issued_mjd_tai:.6f}", str(a.visit or ""), status, a.command]


def _facts(prov: Provenance) -> list[tuple[str, str]]:
    place = prov.place
    out = []
    if place.kind == "prompt":
        created = _time(place.times.get("created"))
        out.append(("catalog", f"prompt (ID origin {place.origin}), schema v{place.schema_version}, "
                               f"partition order {place.partition_order}, created {created}"))  # fmt: skip
    else:
        roles = f" ({' and '.join(place.roles)})" if place.roles else ""
        out.append(("catalog", f"release {place.name} (ID origin {place.origin}): {place.state}{roles}, "
                               f"schema v{place.schema_version}"))  # fmt: skip
        if place.source:
            out.append(("loaded from", place.source))
        if place.archive_path:
            out.append(("archive", place.archive_path))
        out.append(("lifecycle", ", ".join(f"{k} {_time(v)}" for k, v in place.times.items())))
        for a in place.activations:
            forced = " (forced)" if a["forced"] else ""
            if a["made"] == "current":
                what = f"made current{forced}, previous: {a['other'] or 'none'}"
            else:
                what = f"made previous when {a['other']} was made current{forced}"
            out.append(("activation", f"{_time(a['at'])}: {what}"))
    out.append(("database", f"schema v{prov.database_schema_version} (applied by dpdb "
                            f"{prov.database_code_version}); this dpdb {prov.software_version}"))  # fmt: skip
    out.append(("status", prov.status))
    if prov.position is not None:
        out.append(("position", f"ra {prov.position[0]:.6f}, dec {prov.position[1]:.6f} deg"))
    versions = sorted({e.software_version for e in prov.loads if e.software_version})
    if versions:
        out.append(("loaded by", "dpdb " + ", ".join(versions)))
    for name, oid in prov.in_releases.items():
        out.append(("in release", f"{name} as DiaObject {oid}"))
    if prov.counterpart_id is not None and prov.counterpart is None:
        out.append(("prompt counterpart", f"{prov.counterpart_id} (not in the prompt catalog)"))
    if prov.alerts:
        out.append(("alerts", f"{len(prov.alerts)} issued (one per DiaSource)"))
    return out


def _list(title: str, heads: Sequence[str], rows: list[list[Any]], limit: int) -> None:
    """A table of at most ``limit`` rows (0: all), with a count of those left out."""
    table = Table(title=title, title_justify="left")
    for head in heads:
        table.add_column(head)
    shown = rows if not limit else rows[:limit]
    for row in shown:
        table.add_row(*row)
    console.print(table)
    if len(shown) < len(rows):
        console.print(f"  … and {len(rows) - len(shown)} more (--limit 0 shows all)")
