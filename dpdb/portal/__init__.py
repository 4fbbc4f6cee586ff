"""The web portal: server-rendered pages over the public API and the TAP service (docs/architecture.md,
decision 12).

``dpdb serve`` runs one ASGI app: the TAP service at ``/tap`` and this portal at
``/``. The portal only reads: every route is a GET, every read goes through
:class:`dpdb.Archive` in a read-only transaction, and user queries (ADQL) run
through the TAP service, which runs them as the reader role. Pages:

- ``/``: the catalogs (prompt and releases) with state, rows, dates and schema
  version, the TAP URL with a pyvo snippet, the last prompt visit;
- ``/query``: an ADQL editor that runs through ``/tap/sync`` (paged results,
  downloads, "as of", permalinks);
- ``/object/{id}``: an object's row, light curve, versions, provenance and
  counterparts, with a time slider;
- ``/sky``: a HEALPix density map; a click runs a cone search;
- ``/cite/{id}``: a citation's landing page (its DataCite metadata, a re-run that
  verifies it, the verified rows as files), ``/cite`` the list of citations.
  Citations are made through the TAP service (``CITE=true``): the query and
  object pages' "cite" actions.

The JSON the pages draw from is under ``/api``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .cite import create_cite_router
from .errors import install_error_pages
from .routes import create_router

if TYPE_CHECKING:
    from ..archive import Archive

__all__ = ["create_router", "mount_portal", "STATIC_DIR", "TEMPLATE_DIR"]

STATIC_DIR = Path(__file__).with_name("static")
TEMPLATE_DIR = Path(__file__).with_name("templates")


def mount_portal(app: FastAPI, archive: Archive) -> None:
    """Add the portal to ``app``: its pages at ``/``, its JSON at ``/api``, its files at ``/static``,
    and HTML error pages for every path outside ``/tap`` (the TAP service keeps its own error documents).
    """
    app.include_router(create_router(archive))
    app.include_router(create_cite_router(archive))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_error_pages(app)
