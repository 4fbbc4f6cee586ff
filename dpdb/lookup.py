"""One object by ID, in whatever catalog its ID came from: its row as of an instant, its versions,
what changed from one version to the next, and the same object in the other loaded catalogs.

This is what the portal's object page shows (``Archive.lookup``). IDs carry their
origin (:mod:`dpdb.ids`): 1 is the prompt catalog, N+1 release drN. A prompt
DiaObject or SSObject has versions (``validityStartMjdTai`` ..
``validityEndMjdTai``, DPDD §2.5); the version visible at an instant is the
one with ``start <= t < end``, exactly what ``dpdb query --as-of`` reads through
``prompt_as_of``. A release is frozen: its object has one row whatever the instant.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
import pyarrow as pa
from astropy.table import Table
from psycopg import sql

from .config import Settings
from .errors import PlotError, ProvenanceError, ReleaseStateError
from .ids import PROMPT_ORIGIN, origin_of, reorigin
from .pooling import KeptConnections
from .readers import open_reader
from .registry.catalogs import all_catalogs, find_catalog
from .registry.prompt_log import latest_processing_time
from .registry.releases import all_releases, release_by_origin
from .results import column_meta, to_astropy

if TYPE_CHECKING:
    from .plots.lightcurve import LightCurve
    from .provenance import Provenance

__all__ = ["KINDS", "Column", "ObjectView", "snapshot", "lookup_object", "catalog_of", "lightcurve"]

log = logging.getLogger(__name__)

KINDS = {"DiaObject": "diaObjectId", "SSObject": "ssObjectId", "Object": "objectId"}
"""Object tables an ID is looked up in, with their key column, in the order they are tried."""

_PROMPT_KINDS = ("DiaObject", "SSObject")
_VERSIONED = ("DiaObject", "SSObject")
_START, _END = "validityStartMjdTai", "validityEndMjdTai"


@dataclass(frozen=True)
class Column:
    """A column of the object's table: canonical name, unit, UCD and description from the schema."""

    name: str
    unit: str | None
    ucd: str | None
    description: str | None


@dataclass(frozen=True)
class ObjectView:
    """An object as the portal shows it.

    Attributes
    ----------
    object_id, kind, catalog
        The ID, its table (``DiaObject``, ``SSObject`` or ``Object``) and its catalog
        (``prompt`` or a release schema).
    as_of
        The instant asked for (MJD TAI), or None for the present.
    columns
        The table's columns with unit, UCD and description.
    records
        Every version as a tuple of values in ``columns`` order, oldest first
        (one for a release object); NULL is None.
    changes
        Per version, the columns whose value differs from the previous version
        (the first version: empty).
    counterparts
        Other loaded catalogs that hold the same object (same local number), catalog -> ID.
    latest
        The prompt catalog's latest processing time (MJD TAI), the present of its time line.
    curve, curve_note
        With ``lookup_object(..., lightcurve=True)``: its light curve as of ``as_of`` read in
        the same snapshot (see :func:`lightcurve`), or why there is none.
    provenance, provenance_note
        With ``lookup_object(..., provenance=True)``: its provenance report
        (:func:`dpdb.provenance.provenance`) from the same snapshot, or why there is none.
    """

    object_id: int
    kind: str
    catalog: str
    as_of: float | None
    columns: list[Column]
    records: list[tuple[Any, ...]]
    changes: list[list[str]] = field(default_factory=list)
    counterparts: dict[str, int] = field(default_factory=dict)
    latest: float | None = None
    curve: LightCurve | None = None
    curve_note: str = ""
    provenance: Provenance | None = None
    provenance_note: str = ""

    @property
    def versioned(self) -> bool:
        """The object has a time line (prompt DiaObject or SSObject)."""
        return self.catalog == "prompt" and self.kind in _VERSIONED

    def column(self, name: str) -> list[Any]:
        """The values of column ``name`` in every version, oldest first."""
        i = [c.name for c in self.columns].index(name)
        return [r[i] for r in self.records]

    def _value(self, index: int, name: str) -> Any:
        return self.records[index][[c.name for c in self.columns].index(name)]

    @property
    def first_mjd_tai(self) -> float | None:
        """When its first version became valid (None for a release object)."""
        return float(self._value(0, _START)) if self.versioned and self.records else None

    @property
    def deleted_mjd_tai(self) -> float | None:
        """When its last version was closed without a successor (None while it is open)."""
        if not self.versioned or not self.records:
            return None
        end = self._value(-1, _END)
        return None if end is None else float(end)

    @property
    def version_index(self) -> int | None:
        """Index in :attr:`records` of the version visible at :attr:`as_of` (None: none)."""
        if not self.versioned:
            return 0 if self.records else None
        for i in range(len(self.records)):
            start, end = self._value(i, _START), self._value(i, _END)
            if self.as_of is None:
                if end is None:
                    return i
            elif start <= self.as_of < (math.inf if end is None else end):
                return i
        return None

    def values(self) -> dict[str, Any] | None:
        """The version visible at :attr:`as_of`, column -> value, as the as-of query shows it
        (a close after the instant had not happened yet: ``validityEndMjdTai`` is None); None if none."""
        index = self.version_index
        if index is None:
            return None
        out = dict(zip((c.name for c in self.columns), self.records[index], strict=True))
        if self.versioned and self.as_of is not None and out[_END] is not None and out[_END] > self.as_of:
            out[_END] = None
        return out

    @functools.cached_property
    def versions(self) -> Table:
        """Every version as an astropy Table with units, UCDs and descriptions."""
        return to_astropy(_arrow(self.columns, self.records), [self.kind])

    @property
    def row(self) -> Table:
        """The version visible at :attr:`as_of` as an astropy Table (zero rows when there is none)."""
        found = self.values()
        return to_astropy(_arrow(self.columns, [tuple(found.values())] if found else []), [self.kind])


def _arrow(columns: list[Column], records: list[tuple[Any, ...]]) -> pa.Table:
    arrays = []
    for i, _ in enumerate(columns):
        values = [r[i] for r in records]
        array = pa.array(values)
        arrays.append(array.cast(pa.float64()) if pa.types.is_null(array.type) else array)
    return pa.table(arrays, names=[c.name for c in columns])


def _open_snapshot(settings: Settings) -> psycopg.Connection:
    # as the inspector login, like plots and provenance (dpdb/readers.py): reads only, never the owner
    conn = open_reader(settings, inspect=True)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.prepare_threshold = 0
    return conn


def _end_snapshot(conn: psycopg.Connection) -> None:
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
        conn.commit()  # read-only: nothing to keep, but the prepared statements stay
    else:
        conn.rollback()


_POOL = KeptConnections(8, _open_snapshot, _end_snapshot)


@contextlib.contextmanager
def snapshot(settings: Settings) -> Iterator[psycopg.Connection]:
    """A read-only, repeatable-read transaction on a pooled connection, ended afterwards.

    Connections are kept (up to 8 per database) because a fresh one plans its first
    queries on the partitioned tables slowly (its catalog cache is cold), and statements
    are prepared on first use: after a few runs PostgreSQL keeps their generic plans, so
    a page's reads cost an index probe each instead of planning every partition again.
    The transaction ends with COMMIT (it wrote nothing): psycopg deallocates every
    prepared statement on ROLLBACK.
    """
    with _POOL.connection(settings) as conn:
        yield conn


def catalog_of(conn: psycopg.Connection, object_id: int) -> str:
    """The loaded catalog an ID's origin names: ``prompt`` or a release schema.

    Raises
    ------
    ProvenanceError
        Not a dpdb ID, or no release has its origin.
    ReleaseStateError
        Its release is archived or dropped.
    """
    if not 0 < object_id < 1 << 63:
        raise ProvenanceError(f"{object_id} is not a dpdb ID (IDs are positive 64-bit integers)")
    origin = origin_of(object_id)
    if origin < PROMPT_ORIGIN:
        raise ProvenanceError(
            f"{object_id} is not a dpdb ID (its origin bits are {origin}; 1 = prompt, N+1 = drN)"
        )
    if origin == PROMPT_ORIGIN:
        return "prompt"
    rel = release_by_origin(conn, origin)
    if rel is None:
        raise ProvenanceError(f"no catalog holds ID {object_id}: no release has its origin {origin}")
    name, state = rel.name, str(rel.state)
    if find_catalog(conn, name) is None or state in ("archived", "dropped"):
        hint = f"; `dpdb release restore {name}` loads it again" if state == "archived" else ""
        raise ReleaseStateError(f"ID {object_id} is from release {name}, which is {state}{hint}")
    return str(name)


def lookup_object(
    settings: Settings,
    object_id: int,
    *,
    as_of: float | None = None,
    lightcurve: bool = False,
    provenance: bool = False,
) -> ObjectView:
    """Find ``object_id`` and read it as of ``as_of`` (MJD TAI; None: now), in one read-only snapshot;
    with ``lightcurve``, its light curve too (``.curve``), with ``provenance`` its provenance report.

    One snapshot (one transaction) for everything a page shows: each transaction that
    touches a partitioned table locks every partition, which costs more than the reads.

    Raises
    ------
    ProvenanceError
        No catalog holds an object with this ID.
    ReleaseStateError
        The ID's release is not loaded.
    """
    object_id = int(object_id)
    with snapshot(settings) as conn:
        catalog = catalog_of(conn, object_id)
        kinds = _PROMPT_KINDS if catalog == "prompt" else tuple(KINDS)
        kind = _kind(conn, catalog, kinds, object_id)
        if kind is None:
            where = "the prompt catalog" if catalog == "prompt" else f"release {catalog}"
            raise ProvenanceError(f"no {' or '.join(kinds)} {object_id} in {where}")
        stmt = sql.SQL("SELECT * FROM {} WHERE {} = %s").format(
            sql.Identifier(catalog, kind.lower()), sql.Identifier(KINDS[kind].lower())
        )
        if catalog == "prompt":
            stmt += sql.SQL(" ORDER BY validitystartmjdtai")
        cur = conn.execute(stmt, (object_id,))
        records = [tuple(r) for r in cur.fetchall()]
        names = [d.name for d in cur.description or []]
        counterparts = _counterparts(conn, catalog, kind, object_id)
        latest = _latest(conn)
        curve, note = None, ""
        if lightcurve:
            try:
                if catalog == "prompt" and kind == "DiaObject":  # its versions are read: no second look
                    curve = _prompt_curve(conn, object_id, as_of, names, records)
                else:
                    curve = _read_lightcurve(conn, catalog, kind, object_id, as_of)
            except PlotError as e:
                note = str(e)
        prov, prov_note = None, ""
        if provenance:
            from .provenance import read_provenance

            try:
                prov = read_provenance(conn, object_id)
            except ProvenanceError as e:  # e.g. an SSObject: the report covers Objects and DiaObjects
                prov_note = str(e)
    columns = _columns(kind, names)
    return ObjectView(object_id, kind, catalog, as_of, columns, records, _changes(columns, records),
                      counterparts, latest, curve, note, prov, prov_note)  # fmt: skip


def _columns(kind: str, names: list[str]) -> list[Column]:
    """Canonical names and metadata of a result's columns (implementation columns keep theirs)."""
    meta = column_meta().get(kind.lower(), {})
    canonical = {n.lower(): n for n in meta}
    out = []
    for lower in names:
        name = canonical.get(lower, lower)
        out.append(Column(name, *meta.get(name, (None, None, None))))
    return out


def _kind(conn: psycopg.Connection, catalog: str, kinds: tuple[str, ...], object_id: int) -> str | None:
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("(SELECT {} FROM {} WHERE {} = %(id)s LIMIT 1)").format(
            sql.Literal(kind), sql.Identifier(catalog, kind.lower()), sql.Identifier(KINDS[kind].lower())
        )
        for kind in kinds
    )
    row = conn.execute(query, {"id": object_id}).fetchone()
    return str(row[0]) if row else None


def _counterparts(conn: psycopg.Connection, catalog: str, kind: str, object_id: int) -> dict[str, int]:
    """Loaded catalogs other than ``catalog`` whose ``kind`` table holds the same local number."""
    releases = {r.name: r for r in all_releases(conn)}
    others: list[tuple[str, int]] = []
    for c in sorted(all_catalogs(conn), key=lambda c: (c.created_at is None, c.created_at, c.name)):
        rel = releases.get(c.name)
        if c.name == catalog or (rel is not None and str(rel.state) in ("archived", "dropped")):
            continue
        if str(c.kind) == "prompt":
            if kind in _PROMPT_KINDS:
                others.append((c.name, PROMPT_ORIGIN))
        elif rel is not None and rel.origin is not None:
            others.append((c.name, rel.origin))
    if not others:
        return {}
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("(SELECT %s::text, {} FROM {} WHERE {} = %s LIMIT 1)").format(
            sql.Identifier(KINDS[kind].lower()),
            sql.Identifier(name, kind.lower()),
            sql.Identifier(KINDS[kind].lower()),
        )  # fmt: skip
        for name, _ in others
    )
    params = [v for name, origin in others for v in (name, int(reorigin(np.array([object_id]), origin)[0]))]
    return {name: int(oid) for name, oid in conn.execute(query, params).fetchall()}


def _latest(conn: psycopg.Connection) -> float | None:
    return latest_processing_time(conn)


def _changes(columns: list[Column], records: list[tuple[Any, ...]]) -> list[list[str]]:
    """Per version, the columns (other than validity and bookkeeping) that differ from the previous one."""
    skip = {_START, _END, "_load_id", "_healpix_29"}
    watched = [(i, c.name) for i, c in enumerate(columns) if c.name not in skip]
    out: list[list[str]] = [[]] if records else []
    for before, after in itertools.pairwise(records):
        out.append([name for i, name in watched if not _same(before[i], after[i])])
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def lightcurve(settings: Settings, object_id: int, *, as_of: float | None = None) -> LightCurve:
    """The light curve of a DiaObject, Object or SSObject (its DiaSources: detections only).

    DiaObjects and Objects are read as :func:`dpdb.plots.lightcurve.lightcurve_data` reads them;
    an SSObject's points are the DiaSources attributed to it, visible at ``as_of``.

    Raises
    ------
    PlotError
        Unknown ID, or no measurement with a flux.
    """
    object_id = int(object_id)
    with snapshot(settings) as conn:
        catalog = catalog_of(conn, object_id)
        kinds = _PROMPT_KINDS if catalog == "prompt" else tuple(KINDS)
        kind = _kind(conn, catalog, kinds, object_id)
        if kind is None:
            raise PlotError(f"no {' or '.join(kinds)} {object_id} in {catalog}")
        return _read_lightcurve(conn, catalog, kind, object_id, as_of)


def _prompt_curve(
    conn: psycopg.Connection, object_id: int, as_of: float | None, names: list[str], records: list[tuple]
) -> LightCurve:
    """A prompt DiaObject's light curve, as :func:`dpdb.plots.lightcurve.read_lightcurve` reads it, with
    its checks (deleted now, not yet there at ``as_of``) made on the versions already read."""
    from .plots.lightcurve import prompt_points_query, read_points
    from .timeutil import iso_utc

    start, end = names.index(_START.lower()), names.index(_END.lower())
    if as_of is None:
        if records and all(r[end] is not None for r in records):
            closed = max(r[end] for r in records)
            raise PlotError(
                f"DiaObject {object_id} was deleted at MJD {closed:.5f} TAI (closed without successor); "
                "plot it --as-of an earlier instant"
            )
        visible = bool(records)
    else:
        visible = any(r[start] <= as_of and (r[end] is None or as_of < r[end]) for r in records)
    if not visible:
        when = f" as of {iso_utc(as_of)} UTC (MJD {as_of} TAI)" if as_of is not None else ""
        raise PlotError(f"DiaObject {object_id} not found in the prompt catalog{when}")
    return read_points(conn, prompt_points_query(as_of), "DiaObject", "prompt", object_id, as_of)


def _read_lightcurve(
    conn: psycopg.Connection, catalog: str, kind: str, object_id: int, as_of: float | None
) -> LightCurve:
    from .plots.lightcurve import LightCurve, read_lightcurve

    if kind == "SSObject":
        table: sql.Composable
        if catalog == "prompt" and as_of is not None:
            table = sql.SQL("prompt.diasource_as_of(%(t)s::float8)")
            live = sql.SQL("")
        else:
            table = sql.Identifier(catalog, "diasource")
            live = sql.SQL(" AND timewithdrawnmjdtai IS NULL")
        rows = conn.execute(
            sql.SQL(
                "SELECT false, band, midpointmjdtai, psfflux, psffluxerr FROM {} "
                "WHERE ssobjectid = %(id)s AND psfflux IS NOT NULL{} ORDER BY 3"
            ).format(table, live),
            {"id": object_id, "t": as_of},
        ).fetchall()
        forced, band, time, flux, err = zip(*rows, strict=True) if rows else ((),) * 5
        return LightCurve(
            object_id, "SSObject", catalog, as_of, np.array(forced, dtype=bool),
            np.array(band, dtype=str), np.array(time, dtype=float), np.array(flux, dtype=float),
            np.array([math.nan if e is None else e for e in err], dtype=float),
        )  # fmt: skip
    return read_lightcurve(conn, object_id, as_of=as_of if catalog == "prompt" else None)
