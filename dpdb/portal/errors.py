"""Error pages: every expected failure is a page with a one-line message and its HTTP status.

Domain errors map to statuses by what they mean for a reader of the portal: an
unknown ID or catalog is 404, an archived release 410, bad input 400, the
database unreachable or out of connections 503 ("service busy", with
``Retry-After``). Paths under ``/tap`` keep the TAP service's own error documents.
"""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    DpdbError,
    PlotError,
    ProvenanceError,
    QueryError,
    ReleaseStateError,
    ServerError,
    ValidationError,
)
from .render import page

__all__ = ["PortalError", "portal_error", "install_error_pages"]

log = logging.getLogger(__name__)

_TITLES = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    410: "Gone",
    500: "Server error",
    503: "Service busy",
}


class PortalError(Exception):
    """A failure shown as an error page (or as JSON under ``/api``)."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint


def portal_error(error: Exception) -> PortalError:
    """The page a domain or database error becomes."""
    message = str(error) or type(error).__name__
    if isinstance(error, PortalError):
        return error
    if isinstance(error, ServerError | psycopg.OperationalError):
        return PortalError(503, f"the database is not answering: {message.splitlines()[0]}",
                           "The service is busy or restarting; try again in a few seconds.")  # fmt: skip
    if isinstance(error, ReleaseStateError):
        gone = "archived" in message or "dropped" in message
        return PortalError(410 if gone else 404, message)
    if isinstance(error, ProvenanceError | PlotError):
        return PortalError(404, message)
    if isinstance(error, ValidationError | QueryError):
        return PortalError(400, message)
    if isinstance(error, DpdbError):
        return PortalError(400, message)
    log.exception("portal: unexpected error")
    return PortalError(500, f"unexpected error: {type(error).__name__}")


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _render(request: Request, error: PortalError) -> Response:
    headers = {"Retry-After": "5"} if error.status == 503 else None
    if _wants_json(request):
        return JSONResponse({"status": error.status, "error": error.message, "hint": error.hint},
                            status_code=error.status, headers=headers)  # fmt: skip
    title = _TITLES.get(error.status, "Error")
    response = page(request, "error.html", error.status, status=error.status, title=title,
                    message=error.message, hint=error.hint)  # fmt: skip
    if headers:
        response.headers.update(headers)
    return response


def install_error_pages(app: FastAPI) -> None:
    """HTML error pages for the portal's paths; ``/tap`` paths get the handlers they had."""
    http_default = app.exception_handlers.get(StarletteHTTPException)
    validation_default = app.exception_handlers.get(RequestValidationError)

    async def on_portal_error(request: Request, exc: Exception) -> Response:
        return _render(request, portal_error(exc))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path.startswith("/tap") and http_default is not None:
            return await http_default(request, exc)  # type: ignore[misc]
        if request.url.path.startswith("/tap"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        message = {404: f"no page at {request.url.path}", 405: f"{request.method} is not allowed here: "
                   "the portal only reads (GET)"}.get(exc.status_code, str(exc.detail))  # fmt: skip
        response = _render(request, PortalError(exc.status_code, message))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if request.url.path.startswith("/tap") and validation_default is not None:
            return await validation_default(request, exc)  # type: ignore[misc]
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("path", "query"))
        message = f"invalid {where or 'request'}: {first.get('msg', 'invalid')}"
        return _render(request, PortalError(400, message))

    app.add_exception_handler(PortalError, on_portal_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)


def html_error(request: Request, error: Exception) -> HTMLResponse:
    """An error page for ``error`` (for routes that catch it themselves)."""
    return _render(request, portal_error(error))  # type: ignore[return-value]
