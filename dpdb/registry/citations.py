"""The citation store, ``dpdb_meta.citation`` (schema v8): one row per citation, written once.

Also the few bookkeeping facts citations need (release states, what ``current``
and ``previous`` name, the prompt catalog's last change). The citations
themselves are made and resolved by :mod:`dpdb.citations`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from dpdb.config import Settings
from dpdb.errors import DpdbError

__all__ = [
    "CitationError",
    "CitationUnavailableError",
    "Citation",
    "ReleaseFact",
    "LANDING_PATH",
    "make_id",
    "rows",
    "handle_of",
    "store_statement",
    "stored_citation",
    "get",
    "Lookup",
    "lookup",
    "find",
    "all_citations",
    "citing",
    "release_facts",
    "release_named",
]

LANDING_PATH = "/cite/{id}"
"""Path of a citation's landing page under the portal's base URL (``Settings.portal_url``)."""

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base 32, lower case: no i, l, o, u
_ID = re.compile(r"^[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}$")


class CitationError(DpdbError):
    """A query cannot be cited, or a citation cannot be found or shown."""


class CitationUnavailableError(CitationError):
    """A citation reads data that is not loaded now (an archived or dropped release)."""


@dataclass(frozen=True)
class Citation:
    """One stored citation (a row of ``dpdb_meta.citation``)."""

    citation_id: str
    handle: str
    query: str
    release: str | None
    as_of_mjd_tai: float
    as_of_utc: str
    catalogs: list[str]
    tables: list[str]
    schema_version: int
    software_version: str
    row_count: int
    result_sha256: str
    hash_method: str
    columns: list[dict[str, str]]
    title: str
    creator: str
    created_at: _dt.datetime
    created_by: str
    query_seconds: float

    @property
    def releases(self) -> list[str]:
        """The data releases among the catalogs read."""
        return [c for c in self.catalogs if c not in ("prompt", "samples")]

    @property
    def doi_url(self) -> str:
        return f"https://doi.org/{self.handle}"

    def landing_url(self, settings: Settings, base: str | None = None) -> str | None:
        """The portal's page of this citation: under ``base``, else under the configured portal URL
        (``DPDB_PORTAL_URL``) or the running ``dpdb serve``'s (:func:`dpdb.serving.portal_base`)."""
        from dpdb.serving import portal_base

        root = base or portal_base(settings)
        if not root:
            return None
        return root.rstrip("/") + LANDING_PATH.format(id=self.citation_id)

    def to_json(self, settings: Settings | None = None, base: str | None = None) -> dict[str, Any]:
        out = {
            "id": self.citation_id,
            "handle": self.handle,
            "doi_url": self.doi_url,
            "title": self.title,
            "creator": self.creator,
            "query": self.query,
            "release": self.release,
            "as_of_mjd_tai": self.as_of_mjd_tai,
            "as_of_utc": self.as_of_utc,
            "catalogs": self.catalogs,
            "tables": self.tables,
            "row_count": self.row_count,
            "result_sha256": self.result_sha256,
            "hash_method": self.hash_method,
            "columns": self.columns,
            "schema_version": self.schema_version,
            "software_version": self.software_version,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "created_by": self.created_by,
            "query_seconds": self.query_seconds,
        }
        if settings is not None:
            out["landing_url"] = self.landing_url(settings, base)
        return out


def rows(n: int) -> str:
    """``1 row``, ``2 rows``."""
    return f"{n} row{'' if n == 1 else 's'}"


def make_id(identity_text: str, release: str | None, as_of_mjd_tai: float) -> str:
    """The short identifier of a query at an instant: 60 bits of SHA-256, base 32, ``xxxx-xxxx-xxxx``.

    The key is the identity form of the pinned query text, the release its
    unqualified names resolve to, and the instant (``repr`` of the MJD TAI
    float, exact), as canonical JSON.
    """
    key = json.dumps(
        {"as_of_mjd_tai": repr(float(as_of_mjd_tai)), "query": identity_text, "release": release},
        sort_keys=True,
        separators=(",", ":"),
    )
    value = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 4  # 60 bits
    chars = "".join(_ALPHABET[(value >> (5 * k)) & 31] for k in reversed(range(12)))
    return f"{chars[:4]}-{chars[4:8]}-{chars[8:]}"


def handle_of(settings: Settings, citation_id: str) -> str:
    """The DOI-shaped handle of an identifier under the configured prefix."""
    return f"{settings.citation_prefix}/dpdb.{citation_id}"


_COLUMNS = (
    "citation_id, handle, query, release, as_of_mjd_tai, as_of_utc, catalogs, tables, schema_version, "
    "software_version, row_count, result_sha256, hash_method, columns, title, creator, created_at, "
    "created_by, query_seconds"
)


def _from_row(row: dict[str, Any]) -> Citation:
    values = dict(row)
    for k in ("catalogs", "tables", "columns"):
        values[k] = json.loads(values[k])
    return Citation(**values)


_ANY = object()


_ROW = (
    "%(id)s, %(handle)s, %(query)s, %(release)s, %(as_of_mjd_tai)s, %(as_of_utc)s, %(catalogs)s, "
    "%(tables)s, %(schema_version)s, %(software_version)s, %(row_count)s, %(result_sha256)s, "
    "%(hash_method)s, %(columns)s, %(title)s, %(creator)s, now(), "
    "%(created_by)s || '/' || current_user, %(query_seconds)s"
)


def _row_values(c: Citation) -> dict[str, Any]:
    return {
        **c.to_json(),
        "catalogs": json.dumps(c.catalogs),
        "tables": json.dumps(c.tables),
        "columns": json.dumps(c.columns),
    }


def store_statement(
    conn: psycopg.Connection, c: Citation, audit: tuple[str, Mapping[str, object], str, float], *,
    if_latest: float | None | object = _ANY,
) -> psycopg.Cursor:  # fmt: skip
    """Send, as one statement, the INSERT of ``c`` (``ON CONFLICT DO NOTHING``) and its audit-log entry
    (``audit``: action, arguments, outcome, seconds), both only if the latest change (visit, relink,
    activation) is still ``if_latest`` (the caller holds the writers' lock shared, taken by an earlier
    statement of its transaction, so that this one's snapshot sees every write before the lock).
    Its row, once the pipeline has synced: the latest change now (NULL when not checked), and the
    stored citation's creation time and user (NULL when nothing was inserted): :func:`stored_citation`.
    """
    from .audit import AUDIT_COLUMNS, entry_values
    from .prompt_log import LATEST_TIME_SQL

    checked = if_latest is not _ANY
    latest = f"SELECT ({LATEST_TIME_SQL}) AS t" if checked else "SELECT NULL::float8 AS t"
    ok = "SELECT FROM latest WHERE t IS NOT DISTINCT FROM %(latest)s::float8" if checked else "SELECT"
    who, action, arguments, outcome, seconds = entry_values(*audit)
    return conn.execute(
        f"WITH latest AS ({latest}), ok AS ({ok}), "  # noqa: S608 - our own column lists
        f"ins AS (INSERT INTO dpdb_meta.citation ({_COLUMNS}) SELECT {_ROW} FROM ok "
        "ON CONFLICT (citation_id) DO NOTHING RETURNING created_at, created_by), "
        f"aud AS (INSERT INTO dpdb_meta.audit_log ({AUDIT_COLUMNS}) SELECT now(), %(who)s || '/' || "
        "current_user, %(action)s, %(arguments)s, %(outcome)s, %(seconds)s FROM ok) "
        "SELECT (SELECT t FROM latest), (SELECT created_at FROM ins), (SELECT created_by FROM ins)",
        {
            **_row_values(c),
            "latest": if_latest if checked else None,
            "who": who, "action": action, "arguments": arguments, "outcome": outcome, "seconds": seconds,
        },
    )  # fmt: skip


def stored_citation(row: tuple[Any, ...], c: Citation) -> Citation | None:
    """The citation :func:`store_statement` stored (its creation time and user from the database), None
    when nothing was (the identifier existed already, or the latest change had moved)."""
    return None if row[1] is None else dataclasses.replace(c, created_at=row[1], created_by=row[2])


def get(conn: psycopg.Connection, citation_id: str) -> Citation | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_COLUMNS} FROM dpdb_meta.citation WHERE citation_id = %s",  # noqa: S608
            (citation_id,),
        ).fetchone()
    return _from_row(row) if row else None


@dataclass(frozen=True)
class Lookup:
    """What citing needs from the registry before its query's snapshot is taken (:func:`lookup`)."""

    existing: Citation | None  # the citation of this identifier, when it was made before
    schema_version: int  # in force
    releases: dict[str, ReleaseFact]  # every registered release


def lookup(conn: psycopg.Connection, citation_id: str) -> Callable[[], Lookup]:
    """Queue the reads of the citation ``citation_id`` (if it exists), the schema version and the
    releases' states; the returned function gives them once the caller's pipeline has synced (one
    round trip with whatever else the caller queued)."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(f"SELECT {_COLUMNS} FROM dpdb_meta.citation WHERE citation_id = %s", (citation_id,))  # noqa: S608
    version = conn.execute("SELECT max(version) FROM dpdb_meta.schema_version")
    facts = conn.execute(_RELEASE_FACTS_SQL, (None, None))

    def result() -> Lookup:
        row = cur.fetchone()
        version_row = version.fetchone()
        return Lookup(
            existing=_from_row(row) if row else None,
            schema_version=int(version_row[0]) if version_row and version_row[0] is not None else 0,
            releases={r[0]: ReleaseFact(*r) for r in facts.fetchall()},
        )

    return result


def _parse_reference(text: str) -> str | None:
    """The short identifier in an ID, a handle, ``doi:...``, a doi.org URL or a landing-page URL."""
    value = text.strip().lower()
    for lead in ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "doi:"):
        if value.startswith(lead):
            value = value[len(lead) :]
    value = value.rstrip("/").rsplit("/", 1)[-1]
    if value.startswith("dpdb."):
        value = value[len("dpdb.") :]
    if len(value) == 12 and "-" not in value:
        value = f"{value[:4]}-{value[4:8]}-{value[8:]}"
    return value if _ID.match(value) else None


def find(conn: psycopg.Connection, reference: str) -> Citation:
    """The citation named by ``reference`` (its ID, handle, DOI URL or landing URL), or a one-line error."""
    citation_id = _parse_reference(reference)
    if citation_id is None:
        raise CitationError(
            f"{reference!r} is not a citation identifier (expected xxxx-xxxx-xxxx, or its handle "
            "prefix/dpdb.xxxx-xxxx-xxxx)"
        )
    found = get(conn, citation_id)
    if found is None:
        raise CitationError(f"no citation {citation_id} in this database (see `dpdb cite list`)")
    return found


def all_citations(conn: psycopg.Connection) -> list[Citation]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_COLUMNS} FROM dpdb_meta.citation ORDER BY created_at, citation_id")  # noqa: S608
        return [_from_row(r) for r in rows]


def citing(conn: psycopg.Connection, catalog: str) -> list[Citation]:
    """The citations whose query read ``catalog`` (a release name, ``prompt`` or ``samples``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM dpdb_meta.citation "  # noqa: S608
            "WHERE catalogs::jsonb ? %s ORDER BY created_at, citation_id",
            (catalog,),
        )
        return [_from_row(r) for r in rows]


@dataclass(frozen=True)
class ReleaseFact:
    name: str
    state: str
    restored: bool
    archive_path: str | None
    loaded: bool  # its schema exists


_RELEASE_FACTS_SQL = (
    "SELECT r.name, r.state, r.restored_at IS NOT NULL, r.archive_path, "
    "to_regnamespace(quote_ident(r.name)) IS NOT NULL FROM dpdb_meta.release r "
    "WHERE %s::text[] IS NULL OR r.name = ANY(%s::text[])"
)


def release_facts(conn: psycopg.Connection, names: Sequence[str] | None = None) -> dict[str, ReleaseFact]:
    """State and whereabouts of the registered releases (all, or those named)."""
    rows = conn.execute(
        _RELEASE_FACTS_SQL,
        (list(names) if names is not None else None, list(names) if names is not None else None),
    ).fetchall()
    return {r[0]: ReleaseFact(*r) for r in rows}


def release_named(conn: psycopg.Connection, alias: str, at: float | None) -> str:
    """The release ``current`` or ``previous`` names now (``at`` None) or named at MJD TAI ``at``."""
    if at is None:
        row = conn.execute(
            "SELECT name, previous FROM dpdb_meta.release_activation ORDER BY activation_id DESC LIMIT 1"
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT name, previous FROM dpdb_meta.release_activation WHERE activated_mjd_tai <= %s "
            "ORDER BY activation_id DESC LIMIT 1",
            (at,),
        ).fetchone()
    name = (row[0] if alias == "current" else row[1]) if row else None
    if name is None:
        when = "now" if at is None else f"at MJD {at} (TAI)"
        raise CitationError(f"no release was {alias} {when}, so the query has nothing to cite there")
    return str(name)
