"""Citations in the portal: a landing page per citation (``/cite/{id}``), the list of citations, the
re-run that verifies a citation, and the verified rows as files.

Every route is a GET and writes nothing: a citation is made through the TAP
service (``CITE=true`` on ``/tap/sync``, the "cite this query" actions of the
query and object pages), and the re-run here resolves without an audit-log
entry (:meth:`dpdb.Archive.citations.resolve` with ``record=False``).
"""

from __future__ import annotations

import io
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..citations import CitationError, CitationUnavailableError, Resolution, citation_line, datacite, render
from ..registry.citations import Citation
from .errors import PortalError, portal_error
from .render import page

if TYPE_CHECKING:
    from ..archive import Archive

__all__ = ["create_cite_router", "PREVIEW_ROWS", "AUTO_VERIFY_ROWS"]

PREVIEW_ROWS = 200
"""Rows of a re-run shown on the landing page (the files hold them all)."""
AUTO_VERIFY_ROWS = 10_000
"""A landing page re-runs its citation on opening when it has at most this many rows."""

_MIME = {"votable": "application/x-votable+xml", "csv": "text/csv",
         "parquet": "application/vnd.apache.parquet"}  # fmt: skip
_SUFFIX = {"votable": "xml", "csv": "csv", "parquet": "parquet"}
_EXPORTS = {"datacite": ("application/vnd.datacite.datacite+json", "json"),
            "bibtex": ("application/x-bibtex", "bib"), "json": ("application/json", "json")}  # fmt: skip


def _citation_error(error: Exception) -> PortalError:
    """A missing citation is 404, one whose data is archived or dropped 410, the rest as usual."""
    if isinstance(error, CitationUnavailableError):
        return PortalError(410, str(error))
    if isinstance(error, CitationError):
        return PortalError(404, str(error))
    return portal_error(error)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return str(value)  # JavaScript numbers lose 64-bit IDs
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def _fields(c: Citation, resolution: Resolution) -> list[dict[str, Any]]:
    """Name, unit and description of each result column, from the tables the query read."""
    from ..results import column_meta

    meta = column_meta()
    tables = [t.split(".", 1)[-1].lower() for t in c.tables]
    types = {col["name"]: col["type"] for col in c.columns}
    out = []
    for name in resolution.result.column_names:
        unit, ucd, description = next(
            (meta[t][name] for t in tables if name in meta.get(t, {})), (None, None, None)
        )
        out.append({"name": name, "type": types.get(name, ""), "unit": unit or "", "ucd": ucd or "",
                    "description": description or ""})  # fmt: skip
    return out


def outcome_json(resolution: Resolution) -> dict[str, Any]:
    """What the landing page shows of a re-run: the verdict, what differs, and the first rows."""
    c = resolution.citation
    preview = resolution.result.slice(0, PREVIEW_ROWS)
    columns = [preview.column(i).to_pylist() for i in range(preview.num_columns)]
    return {
        "id": c.citation_id,
        "verified": resolution.verified,
        "outcome": resolution.lines()[0] if resolution.verified else "differs",
        "differences": resolution.differences,
        "rows": resolution.rows,
        "sha256": resolution.sha256,
        "cited_rows": c.row_count,
        "cited_sha256": c.result_sha256,
        "source": resolution.source,
        "seconds": round(resolution.seconds, 4),
        "as_of_mjd_tai": c.as_of_mjd_tai,
        "as_of_utc": c.as_of_utc,
        "fields": _fields(c, resolution),
        "data": [[_jsonable(col[i]) for col in columns] for i in range(preview.num_rows)],
        "preview_rows": preview.num_rows,
    }


def create_cite_router(archive: Archive) -> APIRouter:
    """The citation routes of the portal over ``archive`` (all GET)."""
    router = APIRouter()

    def get(reference: str) -> Citation:
        try:
            return archive.citations.get(reference)
        except Exception as e:  # noqa: BLE001 - every failure is an error page
            raise _citation_error(e) from e

    def resolve(reference: str) -> Resolution:
        try:
            return archive.citations.resolve(reference, record=False)
        except Exception as e:  # noqa: BLE001 - every failure is an error page
            raise _citation_error(e) from e

    @router.get("/cite", response_class=HTMLResponse)
    def citations(request: Request) -> HTMLResponse:
        try:
            found = archive.citations.list()
        except Exception as e:  # noqa: BLE001
            raise _citation_error(e) from e
        return page(request, "citations.html", citations=list(reversed(found)), active="cite")

    @router.get("/cite/{reference}", response_class=HTMLResponse)
    def landing(request: Request, reference: str, verify: bool | None = None) -> HTMLResponse:
        c = get(reference)
        base = _base(request)
        meta = datacite(c, archive.settings, base)["data"]["attributes"]
        auto = verify if verify is not None else c.row_count <= AUTO_VERIFY_ROWS
        return page(request, "cite.html", c=c, dc=meta, line=citation_line(c, archive.settings),
                    landing=c.landing_url(archive.settings, base), auto_verify=auto,
                    bibtex=render(c, archive.settings, "bibtex", base), active="cite")  # fmt: skip

    @router.get("/api/cite/{reference}")
    def export(request: Request, reference: str, format: str = "json") -> Response:  # noqa: A002
        if format not in _EXPORTS:
            raise PortalError(400, f"unknown citation format {format!r} (formats: {', '.join(_EXPORTS)})")
        c = get(reference)
        mime, suffix = _EXPORTS[format]
        text = render(c, archive.settings, format, _base(request))
        name = f"dpdb-{c.citation_id}.{suffix}"
        return Response(text, media_type=mime, headers={"Content-Disposition": f'inline; filename="{name}"'})

    @router.get("/api/cite/{reference}/verify")
    def verify_json(reference: str) -> JSONResponse:
        """Re-run the citation as of its instant (nothing is written): verified, or what differs."""
        return JSONResponse(outcome_json(resolve(reference)))

    @router.get("/cite/{reference}/rows")
    def rows(request: Request, reference: str, format: str = "votable") -> Response:  # noqa: A002
        """The re-run's rows as a file with the citation in its metadata (only when they verify)."""
        if format not in _MIME:
            raise PortalError(400, f"unknown format {format!r} (formats: {', '.join(_MIME)})")
        resolution = resolve(reference)
        c = resolution.citation
        if not resolution.verified:
            differs = "; ".join(resolution.differences)
            raise PortalError(409, f"citation {c.citation_id} does not verify ({differs}): no rows are "
                              "served as cited")  # fmt: skip
        from ..citations import file_metadata
        from ..query_output import write_result

        meta = file_metadata(c, archive.settings, _base(request))
        with tempfile.TemporaryDirectory(prefix="dpdb-cite-") as tmp:
            out = Path(tmp) / f"rows.{_SUFFIX[format]}"
            write_result(resolution.result, format, out, meta=meta)
            body = io.BytesIO(out.read_bytes())
        name = f"dpdb-{c.citation_id}.{_SUFFIX[format]}"
        return Response(body.getvalue(), media_type=_MIME[format],
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip

    return router
