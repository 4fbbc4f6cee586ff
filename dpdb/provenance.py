"""Provenance of an Object or DiaObject (``dpdb provenance``): where it lives and what made it.

An ID's origin bits (:mod:`dpdb.ids`) name its catalog: the prompt catalog or
the data release registered with that origin (``dpdb_meta.release``). The
report gathers, in one read-only snapshot:

- the catalog: kind, schema version, and for a release its state, source,
  lifecycle times, whether ``current``/``previous`` point at it and its
  activation history; an archived or dropped release is reported as such,
  with its archive directory (and the sample table holding the ID, if any);
- the visits of the object's measurements (Source/ForcedSource, or
  DiaSource/DiaForcedSource through ``ccdVisitId`` -> ``CcdVisit.visitId``),
  with their CcdVisits; withdrawn prompt rows are counted apart;
- the load-manifest entries (``_load_id``) of the object's rows and its
  measurements' rows: file, size, SHA-256, software and schema version;
- for a DiaObject, its versions and the alerts issued (one per DiaSource, at
  its first ``timeProcessedMjdTai``); a release DiaObject's prompt counterpart
  (same local number, origin 1) with its alerts, and the releases that carry a
  prompt DiaObject.

The reads are in :mod:`dpdb.provenance_read`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg

import dpdb.provenance_read as read

from ._version import code_version as dpdb_version
from .config import Settings
from .errors import ProvenanceError
from .ids import PROMPT_ORIGIN, reorigin
from .readers import read_snapshot
from .registry.activations import activation_history
from .registry.catalogs import find_catalog
from .registry.releases import owner_of_id, release_names
from .registry.states import CatalogKind
from .registry.versions import applied_by
from .timeutil import iso_utc_many

__all__ = [
    "ProvenanceError",
    "CatalogPlace",
    "DiaObjectVersion",
    "VisitContribution",
    "LoadEntry",
    "Alert",
    "Provenance",
    "provenance",
    "read_provenance",
    "alert_command",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogPlace:
    """The catalog an ID belongs to, as the registry describes it.

    Attributes
    ----------
    name, kind, origin
        Catalog (schema) name, ``prompt`` or ``release``, and its ID origin.
    schema_version, partition_order
        Of its tables (a release's schema version is kept after it is archived).
    loaded
        Its tables are in the database (not archived or dropped).
    state, source, archive_path
        A release's lifecycle state, the directory it was last loaded from, its archive directory.
    times
        Lifecycle instants the registry holds (``created``, ``loaded``, ``validated``, ``activated``...).
    roles
        ``current`` and/or ``previous`` when those schemas point at it now.
    activations
        Activations that made it current or previous: ``at``, ``made`` (current/previous),
        ``other`` (the release on the other side) and ``forced``.
    """

    name: str
    kind: str
    origin: int
    schema_version: int | None
    partition_order: int | None
    loaded: bool
    state: str | None = None
    source: str | None = None
    archive_path: str | None = None
    times: dict[str, datetime] = field(default_factory=dict)
    roles: tuple[str, ...] = ()
    activations: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class DiaObjectVersion:
    """One version (row) of a DiaObject; ``made_by``/``ended_by``: the prompt visit or relink."""

    valid_from_mjd_tai: float
    valid_to_mjd_tai: float | None
    n_dia_sources: int
    ra: float
    dec: float
    valid_from_utc: str
    valid_to_utc: str | None
    made_by: str | None
    ended_by: str | None


@dataclass(frozen=True)
class VisitContribution:
    """A visit with measurements of the object: rows per table, withdrawn rows, CcdVisits."""

    visit: int
    band: str | None
    midpoint_mjd: float | None
    ccd_visits: tuple[int, ...]
    rows: dict[str, int]
    withdrawn: dict[str, int]

    @property
    def contributes(self) -> bool:
        """Some row of it is not withdrawn."""
        return any(self.rows.values())


@dataclass(frozen=True)
class LoadEntry:
    """A ``dpdb_meta.load_manifest`` entry and how many of the object's rows (by table) came from it."""

    load_id: int
    rows: dict[str, int]
    path: str | None
    size: int | None
    sha256: str | None
    table_name: str | None
    target: str | None
    row_count: int | None
    schema_version: int | None
    software_version: str | None
    loaded_at: datetime | None


@dataclass(frozen=True)
class Alert:
    """An alert issued for a DiaSource of the DiaObject (alert ID = diaSourceId)."""

    alert_id: int
    visit: int | None
    issued_mjd_tai: float
    issued_utc: str
    withdrawn_mjd_tai: float | None
    moved_to_ssobject: int | None
    moved_to_diaobject: int | None
    command: str

    @property
    def destination(self) -> str | None:
        """Where a DiaSource withdrawn from the DiaObject went (an SSObject, rarely another DiaObject)."""
        if self.withdrawn_mjd_tai is None:
            return None
        if self.moved_to_ssobject is not None:
            return f"SSObject {self.moved_to_ssobject}"
        if self.moved_to_diaobject is not None:
            return f"DiaObject {self.moved_to_diaobject}"
        return "no object"


@dataclass
class Provenance:
    """Everything :func:`provenance` found about one Object or DiaObject ID.

    Attributes
    ----------
    kind
        ``Object`` or ``DiaObject``; None when its release is not loaded and no sample holds it.
    place
        The catalog the ID's origin names.
    database_schema_version, database_code_version, software_version
        Schema version in force, the dpdb that applied it, and this dpdb.
    found
        False when the release is archived or dropped (``status`` says where its files are).
    versions
        DiaObject versions in time order (one row for a release Object: none).
    visits
        Visits of its measurements, in time order, with rows, withdrawn rows and CcdVisits.
    loads, computed_rows
        Load-manifest entries of its rows and its measurements' rows; rows with no entry, by table.
    alerts
        One per DiaSource (for a release DiaObject: its prompt counterpart's).
    counterpart_id, counterpart
        For a release DiaObject: the prompt DiaObject with its local number, and its report.
    in_releases
        For a prompt DiaObject: the loaded releases that carry it, with its ID there.
    sample_tables
        For an archived release: the sample tables (``samples.<release>_<table>``) that hold it.
    """

    object_id: int
    kind: str | None
    place: CatalogPlace
    database_schema_version: int | None
    database_code_version: str | None
    software_version: str
    found: bool = True
    status: str = ""
    position: tuple[float, float] | None = None
    versions: list[DiaObjectVersion] = field(default_factory=list)
    visits: list[VisitContribution] = field(default_factory=list)
    loads: list[LoadEntry] = field(default_factory=list)
    computed_rows: dict[str, int] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    counterpart_id: int | None = None
    counterpart: Provenance | None = None
    in_releases: dict[str, int] = field(default_factory=dict)
    sample_tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def contributing_visits(self) -> list[int]:
        """Visits with rows of the object that are not withdrawn."""
        return [v.visit for v in self.visits if v.contributes]

    @property
    def ccd_visit_count(self) -> int:
        """Distinct CcdVisits of the object's rows that are not withdrawn."""
        return len({c for v in self.visits if v.contributes for c in v.ccd_visits})

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times ISO 8601, the nested counterpart too)."""
        out = {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}
        out["contributing_visits"] = self.contributing_visits
        out["ccd_visit_count"] = self.ccd_visit_count
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Provenance):
        return value.to_json()
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def alert_command(alert_id: int) -> str:
    """The command that regenerates the alert as it was issued."""
    return f"dpdb prompt alert {alert_id} -o {alert_id}.avro"


def _iso(mjds: list[float | None]) -> list[str | None]:
    """ISO UTC of MJD TAI instants (one call for all)."""
    known = iter(iso_utc_many([m for m in mjds if m is not None]))
    return [None if m is None else next(known) for m in mjds]


# -- assembling the report ------------------------------------------------------------------------------


def provenance(settings: Settings, object_id: int) -> Provenance:
    """Where Object or DiaObject ``object_id`` lives, and the visits, files and alerts behind it.

    Parameters
    ----------
    settings : Settings
        The database.
    object_id : int
        A data-release Object or DiaObject ID, or a prompt DiaObject ID.

    Returns
    -------
    Provenance
        The report; for an ID of an archived or dropped release, the release's
        registry entry and archive with ``found`` False (the tables are gone).

    Raises
    ------
    ProvenanceError
        When no catalog of the database holds the ID (named, with where it was looked for).
    """
    with read_snapshot(settings) as conn:  # one snapshot for every read
        return read_provenance(conn, int(object_id))


def read_provenance(conn: psycopg.Connection, object_id: int) -> Provenance:
    """:func:`provenance` on an open read-only connection (one snapshot the caller holds, e.g. pooled)."""
    return _provenance(conn, int(object_id))


def _provenance(conn: psycopg.Connection, object_id: int) -> Provenance:
    place = _place(conn, object_id)
    version, code_version = applied_by(conn)
    prov = Provenance(object_id, None, place, version, code_version, dpdb_version())
    if not place.loaded:
        return _unloaded(conn, prov)
    found = read.object_kind(conn, place.name, place.kind, object_id)
    if found is None:
        hint = read.source_hint(conn, place.name, place.kind, object_id)
        looked = "DiaObject" if place.kind == "prompt" else "Object or DiaObject"
        raise ProvenanceError(f"no {looked} {object_id} in {_describe(place)}{hint}")
    prov.kind = found
    _fill_rows(conn, prov)
    if found == "DiaObject":
        _fill_dia(conn, prov)
    return prov


def _describe(place: CatalogPlace) -> str:
    if place.kind == "prompt":
        return "the prompt catalog"
    return f"release {place.name} ({place.state})"


def _place(conn: psycopg.Connection, object_id: int) -> CatalogPlace:
    if not 0 <= object_id < 1 << 63:
        raise ProvenanceError(f"{object_id} is not a dpdb ID (IDs are non-negative 64-bit integers)")
    owner = owner_of_id(conn, object_id)
    origin = owner.origin
    if owner.kind is None:
        raise ProvenanceError(
            f"{object_id} is not a dpdb ID (its origin bits are {origin}; 1 is the prompt catalog, "
            f"N+1 release drN)"
        )
    if owner.kind is CatalogKind.PROMPT:
        cat = owner.catalog
        if cat is None:
            raise ProvenanceError(
                f"ID {object_id} is a prompt-catalog ID, but this database has no prompt catalog"
            )
        return CatalogPlace("prompt", "prompt", origin, cat.schema_version, cat.partition_order, True,
                            times={"created": cat.created_at} if cat.created_at else {})  # fmt: skip
    rel = owner.release
    if rel is None:
        known = ", ".join(release_names(conn)) or "none"
        raise ProvenanceError(
            f"no catalog holds ID {object_id}: its origin {origin} would be release dr{origin - 1}, "
            f"and no release has that origin (releases: {known})"
        )
    cat = owner.catalog
    times = {
        f.removesuffix("_at"): value
        for f in _RELEASE_TIMES
        if (value := getattr(rel, f)) is not None
    }
    roles, activations = activation_history(conn, rel.name)
    return CatalogPlace(
        rel.name, "release", origin, rel.schema_version, cat.partition_order if cat else None,
        cat is not None, str(rel.state), rel.source, rel.archive_path, times, roles, activations,
    )  # fmt: skip


_RELEASE_TIMES = (
    "created_at", "loaded_at", "validated_at", "activated_at", "superseded_at", "archived_at", "restored_at",
    "dropped_at",
)  # fmt: skip


def _unloaded(conn: psycopg.Connection, prov: Provenance) -> Provenance:
    """An ID of an archived or dropped release: its registry entry, archive and sample."""
    place = prov.place
    prov.found = False
    since = place.times.get(place.state or "")
    when = f" since {since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if since else ""
    if place.archive_path:
        where = (
            f"its files are in {place.archive_path} (`dpdb release restore {place.name}` loads them again)"
        )
    else:
        where = "it has no archive"
    prov.status = f"release {place.name} is {place.state}{when}: its tables are not loaded; {where}"
    for kind, table, ra_dec in read.sample_rows(conn, place.name, prov.object_id):
        prov.kind = prov.kind or kind
        prov.position = prov.position or ra_dec
        prov.sample_tables.append(table)
    if prov.sample_tables:
        prov.notes.append(f"the sample region kept loaded holds it: {', '.join(prov.sample_tables)}")
    return prov


def _fill_rows(conn: psycopg.Connection, prov: Provenance) -> None:
    """Object row(s) and versions, visits and load-manifest entries of the object and its measurements."""
    schema, kind, oid = prov.place.name, prov.kind or "", prov.object_id
    rows = read.object_rows(conn, schema, prov.place.kind, kind, oid)
    last = rows[-1]
    prov.position = (last["ra"], last["dec"])
    if kind == "DiaObject":
        starts = _iso([r["validitystartmjdtai"] for r in rows])
        ends = _iso([r["validityendmjdtai"] for r in rows])
        prov.versions = [
            DiaObjectVersion(r["validitystartmjdtai"], r["validityendmjdtai"], r["ndiasources"], r["ra"],
                             r["dec"], s or "", e, r["made_by"], r["ended_by"])
            for r, s, e in zip(rows, starts, ends, strict=True)
        ]  # fmt: skip
        current = prov.versions[-1]
        if current.valid_to_mjd_tai is None:
            prov.status = (
                f"current version valid from {current.valid_from_utc} UTC, {current.n_dia_sources} DiaSources"
            )
        else:
            by = f" by {current.ended_by}" if current.ended_by else ""
            prov.status = (
                f"deleted: its last version was closed at {current.valid_to_utc} UTC{by}, with no successor"
            )
    else:
        prov.status = f"Object of release {prov.place.name}"
    prov.visits = [VisitContribution(**v) for v in read.visits(conn, schema, kind, oid)]
    for entry in read.loads(conn, schema, kind, oid):
        if entry["load_id"] is None:
            prov.computed_rows = entry["rows"]
        else:
            prov.loads.append(LoadEntry(**entry))
    if prov.computed_rows:
        prov.notes.append(
            "rows with no load-manifest entry were computed in the database (prompt processing): "
            + ", ".join(f"{t} {n}" for t, n in prov.computed_rows.items())
        )


def _fill_dia(conn: psycopg.Connection, prov: Provenance) -> None:
    """A prompt DiaObject's alerts and the releases carrying it; a release DiaObject's prompt counterpart."""
    oid = prov.object_id
    if prov.place.kind == "prompt":
        found = read.alerts(conn, oid)
        issued = _iso([a["issued_mjd_tai"] for a in found])
        prov.alerts = [
            Alert(**a, issued_utc=t or "", command=alert_command(a["alert_id"]))
            for a, t in zip(found, issued, strict=True)
        ]
        withdrawn = [a for a in prov.alerts if a.withdrawn_mjd_tai is not None]
        if withdrawn:
            moves = ", ".join(f"{a.alert_id} to {a.destination}" for a in withdrawn[:5])
            more = f" and {len(withdrawn) - 5} more" if len(withdrawn) > 5 else ""
            prov.notes.append(
                f"{len(withdrawn)} of its DiaSources were withdrawn from it (daytime relink): {moves}{more}"
            )
        prov.in_releases = read.release_counterparts(conn, oid)
        return
    prov.counterpart_id = int(reorigin(np.array([oid]), PROMPT_ORIGIN)[0])
    if find_catalog(conn, "prompt") is None:
        prov.notes.append("this database has no prompt catalog to hold its prompt counterpart")
        return
    try:
        prov.counterpart = _provenance(conn, prov.counterpart_id)
    except ProvenanceError:
        prov.notes.append(f"its prompt counterpart {prov.counterpart_id} is not in the prompt catalog")
        return
    prov.alerts = prov.counterpart.alerts
