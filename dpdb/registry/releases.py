"""The data-release registry (``dpdb_meta.release``): each release, its ID origin and lifecycle state.

Each release is a catalog schema (dr1, dr2, ...); its states and the moves
between them are in :mod:`dpdb.registry.states`. The lifecycle actions
themselves live in :mod:`dpdb.lifecycle`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from dpdb.access import grant_loader
from dpdb.errors import ReleaseStateError
from dpdb.ids import PROMPT_ORIGIN, origin_of, release_origin

from .catalogs import Catalog, create_catalog, find_catalog
from .states import UNLOADED, CatalogKind, ReleaseState, check_transition

__all__ = [
    "RESERVED_NAMES",
    "Release",
    "IdOwner",
    "create_release",
    "get_release",
    "find_release",
    "all_releases",
    "release_names",
    "release_by_origin",
    "owner_of_id",
    "origin_holders",
    "releases_in",
    "set_state",
    "NOW",
    "LIFECYCLE_LOCK",
    "lock_lifecycle",
    "release_number",
]

RESERVED_NAMES = frozenset(
    {"prompt", "current", "previous", "samples", "dpdb_meta", "public", "prompt_as_of"}
)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_NUMBERED = re.compile(r"^dr(\d+)$")


@dataclass(frozen=True)
class Release:
    """A row of the release registry."""

    name: str
    state: ReleaseState
    origin: int | None
    schema_version: int | None
    created_at: datetime | None
    loaded_at: datetime | None
    validated_at: datetime | None
    activated_at: datetime | None
    superseded_at: datetime | None
    archived_at: datetime | None
    restored_at: datetime | None
    dropped_at: datetime | None
    source: str | None
    expected_rows: dict[str, int] | None
    report: dict[str, Any] | None
    archive_path: str | None
    archive_rows: dict[str, int] | None
    archive_bytes: int | None

    @property
    def loaded(self) -> bool:
        """Its tables are in the database."""
        return self.state not in UNLOADED


def release_number(name: str, number: int | None = None) -> int:
    """The release number (dr3 -> 3): given, or read from a ``drN`` name."""
    if number is not None:
        return number
    m = _NUMBERED.match(name)
    if not m:
        raise ReleaseStateError(f"release {name}: give --number (names other than drN carry no number)")
    return int(m.group(1))


def create_release(
    conn: psycopg.Connection,
    name: str,
    version: int,
    partition_order: int,
    number: int | None = None,
    weights: Sequence[float] | None = None,
) -> Release:
    """Create release ``name`` (a new catalog schema at schema ``version``) in state ``created``.

    Its ID origin comes from its number (DPDD §2.4); two releases never share one.
    ``weights`` (rows per partition) balance its partitions over the shards, if any.
    """
    if not _NAME.match(name) or name in RESERVED_NAMES or name.startswith("pg_"):
        raise ReleaseStateError(
            f"invalid release name {name!r} (lower-case letters, digits and _, not a reserved schema name)"
        )
    exists = find_release(conn, name)
    if exists:
        raise ReleaseStateError(f"release {name} already exists (state {exists.state})")
    try:
        origin = release_origin(release_number(name, number))
    except ValueError as e:
        raise ReleaseStateError(f"release {name}: {e}") from None
    holder = release_by_origin(conn, origin)
    if holder:
        raise ReleaseStateError(
            f"release {name}: ID origin {origin} already belongs to release {holder.name}"
        )
    create_catalog(conn, name, CatalogKind.RELEASE, version, partition_order, weights)
    grant_loader(conn, name)
    conn.execute(
        "INSERT INTO dpdb_meta.release (name, state, created_at, origin, schema_version) "
        "VALUES (%s, %s, now(), %s, %s)",
        (name, str(ReleaseState.CREATED), origin, version),
    )
    return get_release(conn, name)


def _release(row: dict[str, Any]) -> Release:
    for key in ("expected_rows", "report", "archive_rows"):
        row[key] = json.loads(row[key]) if row[key] else None
    row["state"] = ReleaseState(row["state"])
    return Release(**{k: row[k] for k in Release.__dataclass_fields__})


def _select(conn: psycopg.Connection, where: str = "", params: tuple[object, ...] = ()) -> list[Release]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT * FROM dpdb_meta.release {where} ORDER BY created_at, name", params)
        return [_release(r) for r in rows.fetchall()]


def find_release(conn: psycopg.Connection, name: str) -> Release | None:
    """The registry entry of ``name``, or None."""
    found = _select(conn, "WHERE name = %s", (name,))
    return found[0] if found else None


def get_release(conn: psycopg.Connection, name: str) -> Release:
    """The registry entry of ``name``, or a one-line error listing the releases there are."""
    found = find_release(conn, name)
    if found is None:
        known = release_names(conn)
        raise ReleaseStateError(f"unknown release {name} (releases: {', '.join(known) or 'none'})")
    return found


def all_releases(conn: psycopg.Connection) -> list[Release]:
    """Every release ever created (archived and dropped ones too), oldest first."""
    return _select(conn)


def release_names(conn: psycopg.Connection) -> list[str]:
    """Names of every release, oldest first."""
    return [r[0] for r in conn.execute("SELECT name FROM dpdb_meta.release ORDER BY created_at, name")]


def releases_in(conn: psycopg.Connection, states: tuple[ReleaseState, ...]) -> list[Release]:
    """The releases in one of ``states``, oldest first."""
    return _select(conn, "WHERE state = ANY(%s)", ([str(s) for s in states],))


def release_by_origin(conn: psycopg.Connection, origin: int) -> Release | None:
    """The release that holds ID ``origin`` (DPDD §2.4: at most one ever does)."""
    found = _select(conn, "WHERE origin = %s", (origin,))
    return found[0] if found else None


def origin_holders(conn: psycopg.Connection, origin: int, *, besides: str) -> int:
    """How many releases other than ``besides`` hold ID ``origin`` (0 in a sound registry)."""
    row = conn.execute(
        "SELECT count(*) FROM dpdb_meta.release WHERE origin = %s AND name <> %s", (origin, besides)
    ).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class IdOwner:
    """Who made an ID, from its origin bits (:mod:`dpdb.ids`).

    ``kind`` is None when the origin bits are no dpdb origin; for a release
    origin, ``release`` is None when no release holds it. ``catalog`` is the
    catalog to read, None when it is not loaded (no prompt catalog, or the
    release archived or dropped).
    """

    origin: int
    kind: CatalogKind | None
    release: Release | None
    catalog: Catalog | None


def owner_of_id(conn: psycopg.Connection, ident: int) -> IdOwner:
    """The catalog that made ``ident``: the prompt catalog or the release registered with its origin."""
    origin = origin_of(ident) if 0 <= ident < 1 << 63 else 0
    if origin < PROMPT_ORIGIN:
        return IdOwner(origin, None, None, None)
    if origin == PROMPT_ORIGIN:
        return IdOwner(origin, CatalogKind.PROMPT, None, find_catalog(conn, "prompt"))
    rel = release_by_origin(conn, origin)
    catalog = find_catalog(conn, rel.name) if rel is not None and rel.loaded else None
    return IdOwner(origin, CatalogKind.RELEASE, rel, catalog)


LIFECYCLE_LOCK = 0x6470_6462_7265_6C
"""Advisory lock key: one lifecycle change (swap, archive, restore, drop) at a time."""


def lock_lifecycle(conn: psycopg.Connection) -> None:
    """Wait for, then hold until the transaction ends, the one lifecycle-change lock."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LIFECYCLE_LOCK,))


NOW = object()
"""Value for :func:`set_state` columns: the transaction's ``now()``."""

_COLUMNS = frozenset(Release.__dataclass_fields__) - {"name", "state", "origin", "created_at"}


def set_state(
    conn: psycopg.Connection, name: str, state: ReleaseState | str, *, force: bool = False, **columns: object
) -> None:
    """Move ``name`` to ``state`` (a move :data:`~dpdb.registry.states.TRANSITIONS` allows), setting the
    given registry columns (dicts are stored as JSON, :data:`NOW` is the transaction's time)."""
    new = ReleaseState(state)
    row = conn.execute("SELECT state FROM dpdb_meta.release WHERE name = %s FOR UPDATE", (name,)).fetchone()
    if row is None:
        raise ReleaseStateError(f"unknown release {name}")
    check_transition(name, row[0], new, force=force)
    unknown = set(columns) - _COLUMNS
    if unknown:
        raise ValueError(f"not release registry columns: {', '.join(sorted(unknown))}")
    values = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in columns.items() if v is not NOW}
    assigns = "".join(f", {k} = %({k})s" for k in values)  # keys are checked column names
    assigns += "".join(f", {k} = now()" for k, v in columns.items() if v is NOW)
    conn.execute(
        f"UPDATE dpdb_meta.release SET state = %(state)s{assigns} WHERE name = %(name)s",
        {"state": str(new), "name": name, **values},
    )
