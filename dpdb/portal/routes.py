"""The portal's pages and the JSON they draw from; every route is a GET and only reads."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from ..errors import DpdbError, PlotError
from ..instants import to_mjd_tai
from ..timeutil import iso_utc, now_mjd_tai
from .errors import PortalError, portal_error
from .render import page
from .sky import sky_json

if TYPE_CHECKING:
    from ..archive import Archive

__all__ = ["create_router", "DEFAULT_MAXREC", "EXAMPLES", "light_curve_adql"]

log = logging.getLogger(__name__)

TAP_AS_OF_PARAM = "ASOF"
"""The TAP service's request parameter for the instant a query is evaluated at."""

DEFAULT_MAXREC = 1000
MAX_MAXREC = 100_000

EXAMPLES = [
    ("Cone search on the current release",
     "SELECT TOP 100 objectId, coord_ra, coord_dec, refExtendedness, r_psfFlux, r_psfFluxErr\n"
     "FROM current.Object\n"
     "WHERE 1 = CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', 150.2718, 1.7014, 0.05))"),
    ("Brightest current DiaObjects of the prompt catalog",
     "SELECT TOP 20 diaObjectId, ra, dec, nDiaSources, r_psfFluxMean\n"
     "FROM prompt.DiaObject\nWHERE validityEndMjdTai IS NULL\nORDER BY nDiaSources DESC"),
    ("A light curve (DiaSources of one DiaObject)",
     "SELECT midpointMjdTai, band, psfFlux, psfFluxErr\nFROM prompt.DiaSource\n"
     "WHERE diaObjectId = 288230377200288075\nORDER BY midpointMjdTai"),
    ("Visits of the prompt catalog", "SELECT * FROM prompt.Visit ORDER BY visit"),
]  # fmt: skip
"""Examples offered when the TAP service's ``/tap/examples`` cannot be read."""


def _as_of(text: str | None) -> float | None:
    """An as-of parameter (MJD TAI, ISO UTC or ``now``) as MJD TAI; empty: the present."""
    if text is None or not text.strip():
        return None
    try:
        value = to_mjd_tai(text.strip())
    except DpdbError as e:
        raise PortalError(400, f"as_of: {e}") from None
    assert value is not None
    return value


def _object_id(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise PortalError(404, f"{text!r} is not an object ID (IDs are 64-bit integers)") from None
    if not 0 < value < 1 << 63:
        raise PortalError(404, f"{value} is not an object ID (IDs are positive 64-bit integers)")
    return value


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except PortalError:
        raise
    except Exception as e:  # domain and database errors become error pages
        raise portal_error(e) from e


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def object_data(archive: Archive, object_id: int, as_of: float | None, view: Any = None) -> dict[str, Any]:
    """An object at an instant: its visible version's values, its state and its light curve (JSON-ready)."""
    view = view if view is not None else _call(archive.lookup, object_id, as_of=as_of, lightcurve=True)
    values = view.values()
    index = view.version_index
    total = len(view.records)
    if values is not None:
        if not view.versioned:
            state = f"{view.kind} of release {view.catalog}"
        else:
            end = view.column("validityEndMjdTai")[index]
            if end is None:
                until = "still open"
            elif as_of is not None and end > as_of:
                until = f"open at that instant (closed later, at {iso_utc(end)[:19]} UTC)"
            else:
                until = f"until {iso_utc(end)[:19]} UTC"
            state = (f"version {index + 1} of {total}, valid from "
                     f"{iso_utc(values['validityStartMjdTai'])[:19]} UTC, {until}")  # fmt: skip
    elif view.first_mjd_tai is not None and as_of is not None and as_of < view.first_mjd_tai:
        state = f"did not exist yet (its first version is from {iso_utc(view.first_mjd_tai)[:19]} UTC)"
    elif view.deleted_mjd_tai is not None:
        state = f"deleted at {iso_utc(view.deleted_mjd_tai)[:19]} UTC (closed without successor)"
    else:
        state = "no version visible at this instant"
    curve: dict[str, Any] = {"points": [], "note": view.curve_note}
    lc = view.curve
    if lc is None and not view.curve_note:  # a view looked up without its light curve
        try:
            lc = archive.lightcurve(object_id, as_of=as_of if view.versioned else None)
        except PlotError as e:
            curve["note"] = str(e)
    if lc is not None:
        curve["points"] = [
            {"band": str(b), "forced": bool(f), "t": float(t), "flux": float(x), "err": _finite(float(e))}
            for f, b, t, x, e in zip(lc.forced, lc.band, lc.time, lc.flux, lc.flux_err, strict=True)
        ]
    detection, forced = {"DiaObject": ("DiaSource", "DiaForcedSource"), "Object": ("Source", "ForcedSource"),
                         "SSObject": ("DiaSource", "")}[view.kind]  # fmt: skip
    curve.update(detection_table=detection, forced_table=forced)
    return {
        "id": str(object_id),
        "kind": view.kind,
        "catalog": view.catalog,
        "as_of": as_of,
        "as_of_iso": iso_utc(as_of)[:23] if as_of is not None else None,
        "version_index": index,
        "versions": total,
        "state": state,
        "values": {k: _jsonable(v) for k, v in values.items()} if values is not None else None,
        "lightcurve": curve,
    }


def light_curve_adql(kind: str, catalog: str, object_id: int) -> str:
    """ADQL for the points of an object's light curve as the page draws them (what "Cite this light
    curve" cites through the TAP service, as of the page's instant)."""
    if kind == "Object":
        parts = [
            f"SELECT '{table}' AS source_table, m.ccdVisitId, c.expMidptMJD AS midpointMjdTai, m.band, "
            f"m.psfFlux, m.psfFluxErr FROM {catalog}.{table} AS m JOIN {catalog}.CcdVisit AS c "
            f"ON c.ccdVisitId = m.ccdVisitId WHERE m.objectId = {object_id} AND m.psfFlux IS NOT NULL"
            for table in ("Source", "ForcedSource")
        ]
        return "\nUNION ALL\n".join(parts) + "\nORDER BY 3, 1, 2"
    key = "ssObjectId" if kind == "SSObject" else "diaObjectId"
    tables = [("DiaSource", "diaSourceId")]
    if kind != "SSObject":
        tables.append(("DiaForcedSource", "diaForcedSourceId"))
    parts = [
        f"SELECT '{table}' AS source_table, {pk} AS id, midpointMjdTai, band, psfFlux, psfFluxErr "
        f"FROM {catalog}.{table} WHERE {key} = {object_id} AND psfFlux IS NOT NULL"
        for table, pk in tables
    ]
    return "\nUNION ALL\n".join(parts) + "\nORDER BY 3, 1, 2"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and abs(value) > 2**53:
        return str(value)  # JavaScript numbers lose 64-bit IDs
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def create_router(archive: Archive) -> APIRouter:
    """The portal's routes over ``archive`` (all GET)."""
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    def home(request: Request) -> HTMLResponse:
        ov = _call(archive.overview)
        tap_url = str(request.base_url).rstrip("/") + "/tap"
        return page(request, "home.html", overview=ov, tap_url=tap_url, active="home")

    @router.get("/query", response_class=HTMLResponse)
    def query(request: Request, q: str = "", as_of: str = "", maxrec: int = DEFAULT_MAXREC,
              run: bool = False) -> HTMLResponse:  # fmt: skip
        if not 0 <= maxrec <= MAX_MAXREC:
            raise PortalError(400, f"maxrec must lie in 0..{MAX_MAXREC}, not {maxrec}")
        mjd = _as_of(as_of)
        return page(request, "query.html", q=q or EXAMPLES[0][1], as_of=as_of.strip(), as_of_mjd=mjd,
                    as_of_iso=iso_utc(mjd)[:23] if mjd is not None else "", maxrec=maxrec, run=run,
                    examples=EXAMPLES, active="query", as_of_param=TAP_AS_OF_PARAM)  # fmt: skip

    @router.get("/object")
    def object_search(id: str = "") -> RedirectResponse:  # noqa: A002 - the form field's name
        return RedirectResponse(f"/object/{_object_id(id)}", status_code=303)

    @router.get("/object/{object_id}", response_class=HTMLResponse)
    def object_page(request: Request, object_id: str, as_of: str = "") -> HTMLResponse:
        oid, mjd = _object_id(object_id), _as_of(as_of)
        view = _call(archive.lookup, oid, as_of=mjd, lightcurve=True, provenance=True)
        data = object_data(archive, oid, mjd, view)
        history = None
        if view.versioned and view.kind == "DiaObject":
            # the data of archive.plot.history_data, from the versions already read
            names = {c.name for c in view.columns}
            flux = {b: view.column(f"{b}_psfFluxMean") for b in "ugrizy" if f"{b}_psfFluxMean" in names}
            history = {"start": view.column("validityStartMjdTai"), "end": view.column("validityEndMjdTai"),
                       "n": view.column("nDiaSources"), "latest": view.latest, "flux": flux}  # fmt: skip
        prov, prov_note = view.provenance, view.provenance_note
        return page(request, "object.html", data=data, view=view, history=history, prov=prov,
                    prov_note=prov_note, values=data["values"], active="object", now_mjd=view.latest,
                    cite_adql=light_curve_adql(view.kind, view.catalog, oid))  # fmt: skip

    @router.get("/sky", response_class=HTMLResponse)
    def sky(request: Request, release: str = "current", table: str = "") -> HTMLResponse:
        ov = _call(archive.overview)
        loaded = [r.name for r in ov.releases if r.bytes_where == "database"]
        catalogs = ["current", "previous", "prompt", *loaded]
        if release not in catalogs:
            raise PortalError(404, f"no catalog {release!r} to map (catalogs: {', '.join(catalogs)})")
        if table and table.lower() not in ("object", "diaobject"):
            raise PortalError(400, f"no sky map of table {table!r} (tables: Object, DiaObject)")
        return page(request, "sky.html", release=release, table=table, catalogs=catalogs, active="sky")

    @router.get("/api/object/{object_id}")
    def object_json(object_id: str, as_of: str = "") -> JSONResponse:
        return JSONResponse(object_data(archive, _object_id(object_id), _as_of(as_of)))

    @router.get("/api/sky")
    def sky_api(release: str = "current", table: str = "", order: int | None = None) -> JSONResponse:
        sky = _call(archive.plot.sky_data, release=release, table=table or None, order=order)
        return JSONResponse(sky_json(sky))

    @router.get("/api/instant")
    def instant(t: str = "now") -> JSONResponse:
        """An instant (MJD TAI, ISO UTC or ``now``) as MJD TAI and ISO UTC: what a permalink pins.

        ``now`` pins the latest committed change (as the TAP service's present does): the same
        rows as now, at an instant that replays them forever."""
        mjd = _as_of(t) if t.strip().lower() != "now" else _present(archive)
        assert mjd is not None
        return JSONResponse({"mjd_tai": mjd, "iso": iso_utc(mjd)})

    return router


def _present(archive: Archive) -> float:
    from ..asof import latest_processing_time
    from ..readers import reader_connect

    with reader_connect(archive.settings) as conn:
        latest = latest_processing_time(conn)
    return latest if latest is not None else now_mjd_tai()
