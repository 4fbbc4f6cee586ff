"""The data-release registry (``dpdb_meta.release``): each release, its ID origin and lifecycle state.

Each release is a catalog schema (dr1, dr2, ...). Its states::

    created -> loaded -> validated | failed -> active -> superseded -> archived -> restoring -> loaded
                                                                  (any but active/penultimate) -> dropped

Loads are allowed in created, loaded and failed; validated and later releases
are frozen. The lifecycle actions themselves live in :mod:`dpdb.lifecycle`.
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

from .access import grant_loader
from .catalogs import create_catalog
from .errors import ReleaseStateError
from .ids import release_origin

__all__ = [
    "RESERVED_NAMES",
    "Release",
    "create_release",
    "get_release",
    "all_releases",
    "set_state",
    "NOW",
    "LIFECYCLE_LOCK",
    "active_release",
    "previous_release",
    "release_number",
]

RESERVED_NAMES = frozenset(
    {"prompt", "current", "previous", "samples", "dpdb_meta", "public", "prompt_as_of"}
)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_NUMBERED = re.compile(r"^dr(\d+)$")


@dataclass(frozen=True)
class Release:
    name: str
    state: str
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
        return self.state not in ("archived", "dropped")


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
    exists = conn.execute("SELECT state FROM dpdb_meta.release WHERE name = %s", (name,)).fetchone()
    if exists:
        raise ReleaseStateError(f"release {name} already exists (state {exists[0]})")
    try:
        origin = release_origin(release_number(name, number))
    except ValueError as e:
        raise ReleaseStateError(f"release {name}: {e}") from None
    holder = conn.execute("SELECT name FROM dpdb_meta.release WHERE origin = %s", (origin,)).fetchone()
    if holder:
        raise ReleaseStateError(f"release {name}: ID origin {origin} already belongs to release {holder[0]}")
    create_catalog(conn, name, "release", version, partition_order, weights)
    grant_loader(conn, name)
    conn.execute(
        "INSERT INTO dpdb_meta.release (name, state, created_at, origin, schema_version) "
        "VALUES (%s, 'created', now(), %s, %s)",
        (name, origin, version),
    )
    return get_release(conn, name)


def _release(row: dict[str, Any]) -> Release:
    for key in ("expected_rows", "report", "archive_rows"):
        row[key] = json.loads(row[key]) if row[key] else None
    return Release(**{k: row[k] for k in Release.__dataclass_fields__})


_SELECT = "SELECT * FROM dpdb_meta.release"


def get_release(conn: psycopg.Connection, name: str) -> Release:
    """The registry entry of ``name``, or a one-line error listing the releases there are."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"{_SELECT} WHERE name = %s", (name,)).fetchone()
    if row is None:
        known = [r.name for r in all_releases(conn)]
        raise ReleaseStateError(f"unknown release {name} (releases: {', '.join(known) or 'none'})")
    return _release(row)


def all_releases(conn: psycopg.Connection) -> list[Release]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"{_SELECT} ORDER BY created_at, name").fetchall()
    return [_release(r) for r in rows]


LIFECYCLE_LOCK = 0x6470_6462_7265_6C
"""Advisory lock key: one lifecycle change (swap, archive, restore, drop) at a time."""

NOW = object()
"""Value for :func:`set_state` columns: the transaction's ``now()``."""


def set_state(conn: psycopg.Connection, name: str, state: str, **columns: object) -> None:
    """Move ``name`` to ``state``, setting the given registry columns (dicts are stored as JSON)."""
    values = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in columns.items() if v is not NOW}
    assigns = "".join(f", {k} = %({k})s" for k in values)  # keys are our own column names
    assigns += "".join(f", {k} = now()" for k, v in columns.items() if v is NOW)
    conn.execute(
        f"UPDATE dpdb_meta.release SET state = %(state)s{assigns} WHERE name = %(name)s",
        {"state": state, "name": name, **values},
    )


def active_release(conn: psycopg.Connection) -> str | None:
    """Name of the active data release (the one ``current`` points at), if any."""
    row = conn.execute("SELECT name FROM dpdb_meta.release WHERE state = 'active'").fetchone()
    return row[0] if row else None


def previous_release(conn: psycopg.Connection) -> str | None:
    """Name of the penultimate release (the one ``previous`` points at), if any."""
    row = conn.execute(
        "SELECT previous FROM dpdb_meta.release_activation ORDER BY activation_id DESC LIMIT 1"
    ).fetchone()
    return row[0] if row else None
