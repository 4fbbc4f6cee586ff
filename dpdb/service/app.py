"""The ASGI app factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from .._version import code_version

if TYPE_CHECKING:
    from ..archive import Archive
    from ..tap.run import Limits

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(
    archive: Archive, *, limits: Limits | None = None, job_dir: str | Path | None = None,
    fast_sync: bool = True,
) -> FastAPI:
    """The dpdb web app for ``archive``: the IVOA TAP 1.1 service at ``/tap``.

    Parameters
    ----------
    archive
        The database the service reads; every user query goes through its read-only query path.
    limits
        The TAP limits (MAXREC, upload size, timeouts); default :class:`dpdb.tap.run.Limits`.
    job_dir
        Folder of the async jobs' results (default ``<DPDB_HOME>/tap-jobs``).
    fast_sync
        Answer ``/tap/sync`` queries of kept shapes on the event loop (:mod:`dpdb.tap.fastsync`);
        False: every sync query through the FastAPI route (benchmarks compare the two).
    """
    from ..db import connect
    from ..tap.router import TapService, tap_router
    from ..tap.run import Limits
    from ..tap.tap_schema import refresh_tap_schema
    from ..tap.uws import JobStore

    limits = limits or Limits()
    jobs = JobStore(archive, Path(job_dir) if job_dir else archive.settings.home / "tap-jobs", limits)
    service = TapService(archive, jobs, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        archive.up()
        with connect(archive.settings) as conn:  # bookkeeping: describe the catalogs that exist now
            refresh_tap_schema(conn)
        jobs.start()
        yield
        jobs.stop()
        from ..tap.engine import close_async_pools

        await close_async_pools()  # the sync path's kept connections of this event loop

    app = FastAPI(title="dpdb", version=code_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.archive = archive
    app.state.tap = service
    app.include_router(tap_router(service), prefix="/tap")
    from ..tap.auth import Authenticator, BasicAuthMiddleware
    from ..tap.fastsync import SyncFastPath

    if fast_sync:  # added first: inside the login middleware (each request runs as its login)
        app.add_middleware(SyncFastPath, service=service, path="/tap/sync")

    app.add_middleware(BasicAuthMiddleware, authenticator=Authenticator(archive, anonymous=limits.anonymous))
    from ..portal import mount_portal

    mount_portal(app, archive)  # the web portal at /
    return app
