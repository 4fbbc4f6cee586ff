"""Which catalog the plots read: the one an ID came from, or the one a release name means.

IDs carry their origin (:mod:`dpdb.ids`): 1 is the prompt catalog, N+1 release
drN, found in the release registry by its origin. A release must be loaded
(not archived or dropped) to be read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from dpdb.config import Settings
from dpdb.errors import ReleaseStateError
from dpdb.readers import read_snapshot
from dpdb.registry import prompt_log
from dpdb.registry.activations import ALIASES, resolve_alias
from dpdb.registry.catalogs import find_catalog
from dpdb.registry.releases import get_release, owner_of_id
from dpdb.registry.states import CatalogKind, ReleaseState

from ._figure import PlotError

__all__ = ["PROMPT", "reading", "catalog_of_id", "catalog_named", "latest_processing_time"]

PROMPT = "prompt"
"""Schema of the living prompt catalog."""


@contextlib.contextmanager
def reading(settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection in read-only snapshots: a plot never changes the database."""
    with read_snapshot(settings) as conn:
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
    owner = owner_of_id(conn, ident) if ident > 0 else None
    if owner is None or owner.kind is None:
        origin = owner.origin if owner else 0
        raise PlotError(f"ID {ident} is not a dpdb ID (its origin bits are {origin}; 1 = prompt, N+1 = drN)")
    if owner.kind is CatalogKind.PROMPT:
        return PROMPT
    if owner.release is None:
        raise PlotError(f"ID {ident}: no release has ID origin {owner.origin} (that of dr{owner.origin - 1})")
    return _loaded(conn, owner.release.name, f"ID {ident}: ")


def catalog_named(conn: psycopg.Connection, release: str) -> str:
    """Schema of ``release``: ``prompt``, ``current``, ``previous`` or a release name (``dr1``).

    Raises
    ------
    ReleaseStateError
        No release is current (previous), the name is unknown, or the release is not loaded.
    """
    if release == PROMPT:
        return PROMPT
    name = resolve_alias(conn, release) if release in ALIASES else release
    return _loaded(conn, name, f"{release}: " if name != release else "")


def _loaded(conn: psycopg.Connection, name: str, context: str) -> str:
    rel = get_release(conn, name)
    if not rel.loaded or find_catalog(conn, name) is None:
        archived = rel.state == ReleaseState.ARCHIVED
        hint = f"; restore it with `dpdb release restore {name}`" if archived else ""
        raise ReleaseStateError(f"{context}release {name} is {rel.state}, its tables are not loaded{hint}")
    return name


def latest_processing_time(conn: psycopg.Connection) -> float | None:
    """The prompt catalog's latest processing time (visit ingest or daytime relink), MJD TAI."""
    return prompt_log.latest_processing_time(conn)
