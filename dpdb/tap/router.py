"""The TAP 1.1 HTTP interface: ``/sync``, ``/async`` (UWS 1.1), ``/capabilities``, ``/availability``,
``/tables`` (VOSI), ``/examples`` (DALI), as a FastAPI router that :mod:`dpdb.service` mounts at ``/tap``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import io
import logging
from collections.abc import Mapping
from typing import Any, cast
from xml.sax.saxutils import escape, quoteattr

import pyarrow as pa
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from .output import VOTABLE_MIME, error_votable
from .run import Limits, TapError, parse_params, request_params, run_query
from .uws import Job, JobStore

__all__ = ["tap_router", "TapService"]

log = logging.getLogger(__name__)

UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK_NS = "http://www.w3.org/1999/xlink"


class TapService:
    """What the routes share: the archive, the limits and the async job store."""

    def __init__(self, archive: Any, jobs: JobStore, limits: Limits) -> None:
        self.archive = archive
        self.jobs = jobs
        self.limits = limits

    def archive_for(self, request: Request) -> Any:
        """The archive whose reader login runs this request's queries (its HTTP Basic login, or the
        service's own query login for an anonymous request; see :mod:`dpdb.tap.auth`)."""
        login = request.scope.get("state", {}).get("tap_login")
        return login.archive if login is not None else self.archive


def _xml(body: str, status: int = 200) -> Response:
    return Response(content=('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode(), status_code=status,
                    media_type="text/xml")  # fmt: skip


def _error(message: str, status: int = 400, query: str | None = None) -> Response:
    return Response(content=error_votable(message, query=query), status_code=status, media_type=VOTABLE_MIME)


async def _params(request: Request) -> tuple[dict[str, str], dict[str, Any]]:
    """Request parameters (query string and form, :func:`request_params`: a single-valued one sent twice is a
    :class:`TapError`), names as sent, and the uploaded files by field name."""
    pairs = list(request.query_params.multi_items())
    files: dict[str, Any] = {}
    if request.method in ("POST", "PUT"):
        ctype = request.headers.get("content-type", "")
        if "form" in ctype:
            form = await request.form()
            for k, item in form.multi_items():
                if isinstance(item, str):
                    pairs.append((k, item))
                else:
                    files[k] = await item.read()
    return request_params(pairs), files


def _query_of(params: Mapping[str, str]) -> str | None:
    return next((v for k, v in params.items() if k.upper() == "QUERY"), None)


def _tap_errors(endpoint: Any) -> Any:
    """An endpoint whose :class:`TapError` becomes the TAP error document with its HTTP status."""

    @functools.wraps(endpoint)  # FastAPI reads the endpoint's own signature through __wrapped__
    async def answer(*args: Any, **kwargs: Any) -> Response:
        try:
            return cast(Response, await endpoint(*args, **kwargs))
        except TapError as e:
            return _error(str(e), e.status)

    return answer


def _uploads(params: Mapping[str, str], files: Mapping[str, bytes], limits: Limits) -> dict[str, pa.Table]:
    """TAP_UPLOAD tables of ``UPLOAD=name,param:field;name2,param:field2`` (VOTables in the request)."""
    spec = next((v for k, v in params.items() if k.upper() == "UPLOAD"), None)
    if not spec:
        return {}
    out: dict[str, pa.Table] = {}
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        name, _, where = item.partition(",")
        name = name.strip()
        if not name.isidentifier():
            raise TapError(
                f"UPLOAD {item!r}: the table name must be a simple identifier (letters, digits, _)"
            )
        data: bytes | None
        if where.startswith(("http://", "https://")):
            data = _fetch_upload(name, where, limits)
        elif where.startswith("param:"):
            data = files.get(where.removeprefix("param:"))
        else:
            raise TapError(f"UPLOAD {item!r}: give param:<field> (inline) or an http(s) URL")
        if data is None:
            raise TapError(f"UPLOAD {item!r}: the request has no file field {where.removeprefix('param:')!r}")
        if len(data) > limits.upload_max_bytes:
            raise TapError(f"UPLOAD {name}: {len(data)} bytes, above the limit of {limits.upload_max_bytes}",
                           status=413)  # fmt: skip
        out[name.lower()] = _votable_table(name, data, limits)
    return out


def _fetch_upload(name: str, url: str, limits: Limits) -> bytes:
    from .fetch import fetch_upload

    return fetch_upload(name, url, limits)


def _votable_table(name: str, data: bytes, limits: Limits) -> pa.Table:
    import warnings

    from astropy.io.votable import parse_single_table

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            votable = parse_single_table(io.BytesIO(data))
            table = votable.to_table()
            xtypes = {f.name: f.xtype for f in votable.fields if f.xtype}
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's malformed upload
        raise TapError(f"UPLOAD {name}: not a readable VOTable ({str(e).splitlines()[0][:200]})") from e
    if len(table) > limits.upload_max_rows:
        raise TapError(
            f"UPLOAD {name}: {len(table)} rows is above the limit of {limits.upload_max_rows}", 413
        )
    columns = {}
    for col in table.columns.values():
        values = col.filled(None) if hasattr(col, "filled") and col.dtype.kind in "OSU" else col
        if col.dtype.kind in "SUO":
            columns[col.name] = pa.array([None if v is None else str(v) for v in list(values)], pa.string())
        else:
            mask = getattr(col, "mask", None)
            arr = col.data.data if hasattr(col.data, "data") and mask is not None else col.data
            columns[col.name] = pa.array(arr, mask=mask if mask is not None and mask is not False else None)
    out = pa.table(columns)
    return out.cast(pa.schema([f.with_metadata({"xtype": xtypes[f.name]}) if f.name in xtypes else f
                               for f in out.schema]))  # fmt: skip


def tap_router(service: TapService) -> APIRouter:
    router = APIRouter()

    async def job(job_id: str) -> Job:
        return await asyncio.to_thread(service.jobs.get, job_id)

    # -- sync ----------------------------------------------------------------------------------------
    @router.api_route("/sync", methods=["GET", "POST"])
    async def sync(request: Request) -> Response:
        try:
            params, files = await _params(request)
        except TapError as e:
            return _error(str(e), e.status)
        query = _query_of(params)
        try:
            tap = parse_params(params, service.limits, _uploads(params, files, service.limits))
            async with asyncio.timeout(service.limits.sync_timeout_s):
                outcome = await asyncio.to_thread(run_query, service.archive_for(request), tap)
        except TapError as e:
            return _error(str(e), e.status, query)
        except Exception as e:  # noqa: BLE001 - a client always gets a TAP error document
            if isinstance(e, TimeoutError):
                limit = service.limits.sync_timeout_s
                return _error(f"the query ran longer than the sync limit of {limit:g} s; "
                              "run it as an async job (/tap/async)", 400, query)  # fmt: skip
            log.exception("TAP sync query failed")
            return _error(f"internal error: {str(e).splitlines()[0][:300]}", 500, query)
        headers = {"X-Dpdb-Citation": outcome.info.citation} if outcome.info.citation else None
        return Response(content=outcome.body, media_type=outcome.mime, headers=headers)

    # -- async (UWS 1.1) -----------------------------------------------------------------------------
    @router.get("/async")
    async def job_list(request: Request) -> Response:
        phases = [v.upper() for k, v in request.query_params.multi_items() if k.upper() == "PHASE"]
        after_text = next((v for k, v in request.query_params.items() if k.upper() == "AFTER"), None)
        last_text = next((v for k, v in request.query_params.items() if k.upper() == "LAST"), None)
        try:
            after = dt.datetime.fromisoformat(after_text.replace("Z", "+00:00")) if after_text else None
            last = int(last_text) if last_text else None
        except ValueError:
            return _error("AFTER must be an ISO 8601 time and LAST a whole number", 400)
        jobs = await asyncio.to_thread(service.jobs.list, phases or None, after, last)
        base = _base(request)
        items = "".join(
            f'  <uws:jobref id="{j.job_id}" xlink:href="{base}/async/{j.job_id}">'
            f"<uws:phase>{j.phase}</uws:phase>{_opt('runId', j.run_id)}{_opt('ownerId', j.owner)}"
            f"<uws:creationTime>{_iso(j.created_at)}</uws:creationTime></uws:jobref>\n"
            for j in jobs
        )
        return _xml(
            f'<uws:jobs xmlns:uws="{UWS_NS}" xmlns:xlink="{XLINK_NS}" version="1.1">\n{items}</uws:jobs>'
        )

    @router.post("/async")
    @_tap_errors
    async def job_create(request: Request) -> Response:
        params, files = await _params(request)
        query = _query_of(params)
        try:
            uploads = _uploads(params, files, service.limits)
            job = await asyncio.to_thread(
                service.jobs.create, params, _user(request), uploads, service.archive_for(request)
            )
            if any(k.upper() == "PHASE" and v.upper() == "RUN" for k, v in params.items()):
                await asyncio.to_thread(service.jobs.run, job.job_id)
        except TapError as e:
            return _error(str(e), e.status, query)
        return RedirectResponse(f"{_base(request)}/async/{job.job_id}", status_code=303)

    @router.get("/async/{job_id}")
    @_tap_errors
    async def job_get(job_id: str, request: Request) -> Response:
        wait = next((v for k, v in request.query_params.items() if k.upper() == "WAIT"), None)
        phase = next((v for k, v in request.query_params.items() if k.upper() == "PHASE"), None)
        if wait is None:
            return _xml(_job_xml(await job(job_id), _base(request)))
        try:
            seconds = float(wait)
        except ValueError:
            return _error(f"WAIT={wait} is not a number of seconds", 400)
        seconds = 60.0 if seconds < 0 else min(seconds, 60.0)
        waited = await asyncio.to_thread(service.jobs.wait, job_id, seconds, phase.upper() if phase else None)
        return _xml(_job_xml(waited, _base(request)))

    @router.api_route("/async/{job_id}", methods=["DELETE", "POST"])
    @_tap_errors
    async def job_delete(job_id: str, request: Request) -> Response:
        params, _ = await _params(request)
        action = next((v for k, v in params.items() if k.upper() == "ACTION"), None)
        if request.method == "POST" and (action or "").upper() != "DELETE":
            return _error("POST to a job takes ACTION=DELETE", 400)
        await asyncio.to_thread(service.jobs.destroy, job_id)
        return RedirectResponse(f"{_base(request)}/async", status_code=303)

    @router.get("/async/{job_id}/phase")
    @_tap_errors
    async def job_phase(job_id: str) -> Response:
        return PlainTextResponse((await job(job_id)).phase)

    @router.post("/async/{job_id}/phase")
    @_tap_errors
    async def job_phase_set(job_id: str, request: Request) -> Response:
        params, _ = await _params(request)
        phase = next((v for k, v in params.items() if k.upper() == "PHASE"), "").upper()
        if phase == "RUN":
            await asyncio.to_thread(service.jobs.run, job_id)
        elif phase == "ABORT":
            await asyncio.to_thread(service.jobs.abort, job_id)
        else:
            raise TapError(f"PHASE={phase or '(missing)'}: send PHASE=RUN or PHASE=ABORT")
        return RedirectResponse(f"{_base(request)}/async/{job_id}", status_code=303)

    @router.get("/async/{job_id}/parameters")
    @_tap_errors
    async def job_parameters(job_id: str) -> Response:
        return _xml(f'<uws:parameters xmlns:uws="{UWS_NS}">{_parameters(await job(job_id))}</uws:parameters>')

    @router.post("/async/{job_id}/parameters")
    @_tap_errors
    async def job_parameters_set(job_id: str, request: Request) -> Response:
        params, _ = await _params(request)
        await asyncio.to_thread(service.jobs.set_parameters, job_id, params)
        return RedirectResponse(f"{_base(request)}/async/{job_id}", status_code=303)

    @router.get("/async/{job_id}/results")
    @_tap_errors
    async def job_results(job_id: str, request: Request) -> Response:
        return _xml(f'<uws:results xmlns:uws="{UWS_NS}" xmlns:xlink="{XLINK_NS}">'
                    f"{_results(await job(job_id), _base(request))}</uws:results>")  # fmt: skip

    @router.get("/async/{job_id}/results/result")
    @_tap_errors
    async def job_result(job_id: str) -> Response:
        found = await job(job_id)
        return FileResponse(service.jobs.result_file(found), media_type=found.result_type or VOTABLE_MIME)

    @router.get("/async/{job_id}/error")
    @_tap_errors
    async def job_error(job_id: str) -> Response:
        found = await job(job_id)
        if found.phase != "ERROR":
            return _error(f"job {job_id} is {found.phase}: it has no error", 404)
        return _error(found.error or "unknown error", 200, found.parameters.get("QUERY"))

    for name, column in (("destruction", "destruction_at"), ("executionduration", "execution_duration"),
                         ("quote", None), ("owner", "owner")):  # fmt: skip
        _job_property(router, service, job, name, column)

    # -- VOSI and DALI ---------------------------------------------------------------------------------
    @router.get("/capabilities")
    async def capabilities(request: Request) -> Response:
        from .metadata import capabilities_xml

        return _xml(capabilities_xml(_base(request), service.limits))

    @router.get("/availability")
    async def availability() -> Response:
        from .metadata import availability_xml

        return _xml(await asyncio.to_thread(availability_xml, service.archive))

    @router.get("/tables")
    @_tap_errors
    async def tables(request: Request) -> Response:
        from .metadata import tables_xml

        detail = next((v for k, v in request.query_params.items() if k.upper() == "DETAIL"), "max")
        # only_tables=true: the TAP+ (ESA, astroquery's TapPlus) spelling of detail=min
        names_only = request.query_params.get("only_tables", "").lower() == "true"
        full = detail.lower() != "min" and not names_only
        return _xml(await asyncio.to_thread(tables_xml, service.archive, None, full))

    @router.get("/tables/{name}")
    @_tap_errors
    async def table(name: str) -> Response:
        from .metadata import tables_xml

        return _xml(await asyncio.to_thread(tables_xml, service.archive, name, True))

    @router.get("/examples")
    async def examples(request: Request) -> Response:
        from .metadata import examples_html

        return Response(examples_html(_base(request)), media_type="application/xhtml+xml")

    @router.get("")
    @router.get("/")
    async def root(request: Request) -> Response:
        base = _base(request)
        links = "".join(f'<li><a href="{base}/{p}">{p}</a></li>' for p in
                        ("sync", "async", "capabilities", "availability", "tables", "examples"))  # fmt: skip
        return Response(f"<html><body><h1>dpdb TAP service</h1><ul>{links}</ul></body></html>",
                        media_type="text/html")  # fmt: skip

    return router


def _job_property(router: APIRouter, service: TapService, job: Any, name: str, column: str | None) -> None:
    @router.get(f"/async/{{job_id}}/{name}", name=f"job_{name}")
    @_tap_errors
    async def get_property(job_id: str) -> Response:
        found = await job(job_id)
        if name == "quote":
            return PlainTextResponse("")
        value = getattr(found, column) if column else None
        if isinstance(value, dt.datetime):
            return PlainTextResponse(_iso(value))
        return PlainTextResponse("" if value is None else str(value))

    if name in ("destruction", "executionduration"):

        @router.post(f"/async/{{job_id}}/{name}", name=f"job_{name}_set")
        @_tap_errors
        async def set_property(job_id: str, request: Request) -> Response:
            params, _ = await _params(request)
            value = next((v for k, v in params.items() if k.upper() == name.upper()), None)
            if value is None:
                raise TapError(f"send {name.upper()}=<value>")
            try:
                if name == "destruction":
                    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                    if when.tzinfo is None:
                        when = when.replace(tzinfo=dt.UTC)
                    await asyncio.to_thread(service.jobs.update, job_id, destruction_at=when)
                else:
                    seconds = int(value)
                    limit = service.limits.async_max_duration_s
                    seconds = limit if seconds <= 0 or seconds > limit else seconds
                    await asyncio.to_thread(service.jobs.update, job_id, execution_duration=seconds)
            except ValueError:
                return _error(f"{name.upper()}={value} is not valid", 400)
            return RedirectResponse(f"/tap/async/{job_id}", status_code=303)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + request.scope.get("root_path", "") + "/tap"


def _user(request: Request) -> str | None:
    login = request.scope.get("state", {}).get("tap_login")
    return login.name if login is not None else None


def _iso(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _opt(tag: str, value: object) -> str:
    return f"<uws:{tag}>{escape(str(value))}</uws:{tag}>" if value not in (None, "") else ""


def _parameters(job: Job) -> str:
    return "".join(
        f'<uws:parameter id={quoteattr(k.lower())}>{escape(v)}</uws:parameter>'
        for k, v in job.parameters.items() if not k.startswith("_")
    )  # fmt: skip


def _results(job: Job, base: str) -> str:
    if job.phase != "COMPLETED":
        return ""
    href = f"{base}/async/{job.job_id}/results/result"
    mime = quoteattr(job.result_type or VOTABLE_MIME)
    return f'<uws:result id="result" xlink:type="simple" xlink:href="{href}" mime-type={mime}/>'


def _job_xml(job: Job, base: str) -> str:
    error = ""
    if job.phase == "ERROR":
        error = (f'<uws:errorSummary type="fatal" hasDetail="true"><uws:message>{escape(job.error or "")}'
                 "</uws:message></uws:errorSummary>")  # fmt: skip
    owner = (
        f"<uws:ownerId>{escape(job.owner)}</uws:ownerId>" if job.owner else '<uws:ownerId xsi:nil="true"/>'
    )
    quote = '<uws:quote xsi:nil="true"/>'
    return (
        f'<uws:job xmlns:uws="{UWS_NS}" xmlns:xlink="{XLINK_NS}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="1.1">'
        f"<uws:jobId>{job.job_id}</uws:jobId>{_opt('runId', job.run_id)}{owner}"
        f"<uws:phase>{job.phase}</uws:phase>{quote}"
        f"<uws:creationTime>{_iso(job.created_at)}</uws:creationTime>"
        + (f"<uws:startTime>{_iso(job.started_at)}</uws:startTime>" if job.started_at else
           '<uws:startTime xsi:nil="true"/>')
        + (f"<uws:endTime>{_iso(job.ended_at)}</uws:endTime>" if job.ended_at else
           '<uws:endTime xsi:nil="true"/>')
        + f"<uws:executionDuration>{job.execution_duration}</uws:executionDuration>"
        f"<uws:destruction>{_iso(job.destruction_at)}</uws:destruction>"
        f"<uws:parameters>{_parameters(job)}</uws:parameters>"
        f"<uws:results>{_results(job, base)}</uws:results>{error}"
        "</uws:job>"
    )  # fmt: skip
