"""Which catalog the plots read: the one an ID came from, or the one a release name means.

IDs carry their origin (:mod:`dpdb.ids`): 1 is the prompt catalog, N+1 release
drN, found in the release registry by its origin. A release must be loaded
(not archived or dropped) to be read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from dpdb.catalogs import catalog_info
from dpdb.config import Settings
from dpdb.db import connect
from dpdb.errors import ReleaseStateError
from dpdb.ids import PROMPT_ORIGIN, origin_of
from dpdb.releases import active_release, get_release, previous_release

from ._figure import PlotError

__all__ = ["PROMPT", "reading", "catalog_of_id", "catalog_named", "latest_processing_time"]

PROMPT = "prompt"
"""Schema of the living prompt catalog."""


@contextlib.contextmanager
def reading(settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection in read-only transactions: a plot never changes the database."""
    with connect(settings) as conn:
        conn.rollback()  # the version check opened a transaction
        conn.read_only = True
        yield conn


def catalog_of_id(conn: psycopg.Connection, ident: int) -> str:
    """Schema of the catalog that made ``ident``: ``prompt``, or the loaded release of its origin.

    Raises
    ------
    PlotError
        The ID has no valid origin, or no release has its origin.
    ReleaseStateError
        The release of its origin is archived or dropped.
    """
    origin = origin_of(ident) if ident > 0 else 0
    if origin < PROMPT_ORIGIN:
        raise PlotError(f"ID {ident} is not a dpdb ID (its origin bits are {origin}; 1 = prompt, N+1 = drN)")
    if origin == PROMPT_ORIGIN:
        return PROMPT
    row = conn.execute("SELECT name FROM dpdb_meta.release WHERE origin = %s", (origin,)).fetchone()
    if row is None:
        raise PlotError(f"ID {ident}: no release has ID origin {origin} (that of dr{origin - 1})")
    return _loaded(conn, row[0], f"ID {ident}: ")


def catalog_named(conn: psycopg.Connection, release: str) -> str:
    """Schema of ``release``: ``prompt``, ``current``, ``previous`` or a release name (``dr1``).

    Raises
    ------
    ReleaseStateError
        No release is current (previous), the name is unknown, or the release is not loaded.
    """
    if release == PROMPT:
        return PROMPT
    name: str | None = release
    if release == "current":
        name = active_release(conn)
    elif release == "previous":
        name = previous_release(conn)
    if name is None:
        raise ReleaseStateError(f"no release is {release} (activate one with `dpdb release activate NAME`)")
    return _loaded(conn, name, f"{release}: " if name != release else "")


def _loaded(conn: psycopg.Connection, name: str, context: str) -> str:
    rel = get_release(conn, name)
    if not rel.loaded or catalog_info(conn, name) is None:
        hint = f"; restore it with `dpdb release restore {name}`" if rel.state == "archived" else ""
        raise ReleaseStateError(f"{context}release {name} is {rel.state}, its tables are not loaded{hint}")
    return name


def latest_processing_time(conn: psycopg.Connection) -> float | None:
    """The prompt catalog's latest processing time (visit ingest or daytime relink), MJD TAI."""
    row = conn.execute(
        "SELECT greatest((SELECT max(processing_time_mjd_tai) FROM dpdb_meta.prompt_visit), "
        "(SELECT max(processing_time_mjd_tai) FROM dpdb_meta.prompt_relink))"
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else None
