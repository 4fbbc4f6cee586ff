"""``/tap/sync`` for kept query shapes on the event loop: no thread hand-off, no FastAPI machinery.

A small synchronous TAP query (a cone, a light curve) costs PostgreSQL a couple of milliseconds;
routing it through FastAPI and handing it to a worker thread (and back) costs about as much again.
This ASGI middleware sits in front of the app (inside the HTTP Basic middleware, so a request
still runs as its login, :mod:`dpdb.tap.auth`) and answers ``GET``/``POST`` (URL-encoded) on
``/tap/sync`` itself when the query's shape is kept (:mod:`dpdb.tap.shapes`) and it has no
``ASOF``, ``RELEASE``, ``CITE`` or upload: the statement comes from the shape, runs on a kept
asyncio connection of the reader login (:func:`dpdb.tap.engine.run_final_async`: the same
statements, limits, read-only repeatable-read transaction and recorded instant as the threaded
path), and a small result is written on the loop. Everything else (the first query of a shape,
uploads, time travel, citations, multipart forms, and any query that finds every connection of
the loop's pool busy for 50 ms) goes to the FastAPI route unchanged, and a result of more than 10,000 rows is
fetched (ADBC) and written on a worker thread.
Errors are the same TAP error documents as the route's (docs/architecture.md, decision 12).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from ..errors import DpdbError
from .output import VOTABLE_MIME, error_votable
from .run import (
    Limits,
    TapError,
    asks_many,
    fast_read,
    outcome,
    parse_params,
    releases_read,
    request_params,
    run_query,
    user_message,
)

__all__ = ["SyncFastPath"]

log = logging.getLogger(__name__)

_FALL_THROUGH = {"UPLOAD", "ASOF", "AS_OF", "RELEASE", "CITE"}
"""Parameters whose requests the FastAPI route runs (uploads, time travel, citations)."""
_WRITE_ON_LOOP = 1_000
"""Results up to this many rows are written on the event loop; larger ones on a worker thread."""
_WAIT_FOR_CONNECTION = 0.05
"""Seconds a query waits for a connection of the loop's pool before the route takes it: concurrent
small queries free one within a few milliseconds (8 clients, 4 connections: 1.51x one client's
throughput waiting, 0.81-1.29x when the route took every query that found them busy, planned per query
on a thread; benchmarks/README.md), while a pool held by slow queries does not hold up the rest."""
_MAX_FORM = 1_000_000
"""A URL-encoded POST body larger than this goes to the route (which reads any size)."""


class SyncFastPath:
    """ASGI middleware: kept-shape ``/tap/sync`` queries on the event loop (see the module)."""

    def __init__(self, app: Any, service: Any, path: str = "/tap/sync") -> None:
        self.app = app
        self.service = service  # dpdb.tap.router.TapService
        self.path = path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] not in ("GET", "POST"):
            await self.app(scope, receive, send)
            return
        body = b""
        if scope["method"] == "POST":
            ctype = _header(scope, b"content-type")
            if not ctype.startswith("application/x-www-form-urlencoded"):
                await self.app(scope, receive, send)  # multipart (uploads): the route reads it
                return
            body, whole = await _read_body(receive)
            receive = _replay(body, whole, receive)
            if not whole:
                await self.app(scope, receive, send)
                return
        pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if body:
            pairs += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        try:
            params = request_params(pairs)  # as the route reads them: a repeated parameter is refused alike
        except TapError as e:
            await _send(send, e.status, error_votable(str(e)), VOTABLE_MIME)
            return
        if any(k.upper() in _FALL_THROUGH for k in params):
            await self.app(scope, receive, send)
            return
        answered = await self._answer(scope, params, send)
        if not answered:
            await self.app(scope, receive, send)

    async def _answer(self, scope: Any, params: dict[str, str], send: Any) -> bool:
        """Answer the request if its shape is kept; False: the route must."""
        from . import shapes

        limits: Limits = self.service.limits
        query = next((v for k, v in params.items() if k.upper() == "QUERY"), None)
        try:
            tap = parse_params(params, limits)
        except TapError as e:
            await _send(send, e.status, error_votable(str(e), query=query), VOTABLE_MIME)
            return True
        login = scope.get("state", {}).get("tap_login")
        archive = login.archive if login is not None else self.service.archive
        settings = archive.settings
        statement = shapes.lookup(settings, tap.query, tap.maxrec)
        if statement is None or asks_many(statement.translation):
            return False  # a new shape (translated, and kept, on the route's thread) or a large TOP
        from .engine import async_pool_for

        if not await async_pool_for(settings).wait_free(_WAIT_FOR_CONNECTION):
            return False  # every loop connection held by longer queries: a worker thread and its pool
        try:
            async with asyncio.timeout(limits.sync_timeout_s):
                done = await self._run(archive, tap, statement)
        except TapError as e:
            await _send(send, e.status, error_votable(str(e), query=query), VOTABLE_MIME)
            return True
        except Exception as e:  # noqa: BLE001 - a client always gets a TAP error document
            if isinstance(e, TimeoutError):
                message = (f"the query ran longer than the sync limit of {limits.sync_timeout_s:g} s; "
                           "run it as an async job (/tap/async)")  # fmt: skip
                await _send(send, 400, error_votable(message, query=query), VOTABLE_MIME)
                return True
            log.exception("TAP sync query failed")
            message = f"internal error: {str(e).splitlines()[0][:300]}"
            await _send(send, 500, error_votable(message, query=query), VOTABLE_MIME)
            return True
        await _send(send, 200, done.body, done.mime)
        log.debug("TAP sync query answered on the event loop: %s", tap.query)
        return True

    async def _run(self, archive: Any, tap: Any, statement: Any) -> Any:
        from .engine import CannotRunFast, run_final, run_final_async

        settings = archive.settings
        text, reads_prompt = statement.text, statement.reads_prompt
        direct = _direct(statement.translation, tap) if tap.writer == "binary2" else None
        try:
            result = await run_final_async(settings, text, reads_prompt=reads_prompt, single=statement.single,
                                           direct=direct, prepared=statement.prepared)  # fmt: skip
            if isinstance(result, _Written):
                return result
            if result is None:  # more than 10,000 rows: ADBC, on a thread
                result = await asyncio.to_thread(
                    run_final, settings, text, reads_prompt=reads_prompt, many=True
                )
        except CannotRunFast as e:
            log.info("TAP query on the general path (%s)", e)
            return await asyncio.to_thread(run_query, archive, tap)
        except TapError:
            raise
        except DpdbError as e:
            raise TapError(user_message(str(e))) from e
        table, translation, instant, read = fast_read(statement.translation, result)
        if len(table) > _WRITE_ON_LOOP:
            return await asyncio.to_thread(outcome, table, translation, instant, read, tap, archive)
        return outcome(table, translation, instant, read, tap, archive)


@dataclass(frozen=True)
class _Written:
    """A result document written from the rows' bytes (:mod:`dpdb.tap.direct`)."""

    body: bytes
    mime: str


def _direct(translation: Any, tap: Any) -> Any:
    """The ``direct`` of :func:`dpdb.tap.engine.run_final_async` for a BINARY2 query: its document written
    from PostgreSQL's binary rows, the result recording the releases read (:func:`releases_read`)."""
    from .direct import binary2_body

    def write(instant: float, current: str | None, previous: str | None, pgresult: Any) -> _Written | None:
        read = releases_read(translation, current, previous)
        made = binary2_body(pgresult, translation, instant, read, tap)
        return None if made is None else _Written(made[0], tap.mime)

    return write


def _header(scope: Any, name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == name), "").lower()


async def _read_body(receive: Any) -> tuple[bytes, bool]:
    """The request body, and whether it is whole (False: above the size this path reads)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > _MAX_FORM:
            return b"".join(chunks), False


def _replay(body: bytes, whole: bool, receive: Any) -> Any:
    """``receive`` for the app behind: what was read of the body first, then the rest (if any)."""
    sent = False

    async def again() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not whole}
        return await receive()

    return again


async def _send(send: Any, status: int, body: bytes, mime: str) -> None:
    headers = [(b"content-type", mime.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
