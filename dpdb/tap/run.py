"""One TAP query, from request parameters to a result document, through :class:`dpdb.Archive`.

User queries run only through :meth:`dpdb.Archive.query_arrow` (the read-only query path,
docs/architecture.md decision 12): this module never opens a connection of its own.

Time travel: ``ASOF`` (ISO 8601 UTC or MJD TAI; ``AS_OF`` is accepted too) is the instant
the query reads the catalogs at: the prompt catalog through its as-of views, ``current`` and
``previous`` as the releases they named then. Without ASOF the query is evaluated at the
present instant, which the result records, so sending it back as ASOF gives the same rows.
``RELEASE`` names the catalog unqualified table names resolve to.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..errors import DpdbError
from .adql import AdqlError, Translation, translate
from .output import ResultInfo, resolve_format, write_result

__all__ = ["TapError", "TapParams", "Limits", "request_params", "parse_params", "run_query", "service_sql",
           "QueryOutcome", "outcome", "fast_read", "releases_read", "asks_many", "user_message"]

log = logging.getLogger(__name__)

LANGS = {"ADQL", "ADQL-2.0", "ADQL-2.1"}


class TapError(DpdbError):
    """A request the service refuses: the message is what the user must change; ``status`` the HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """The service's limits."""

    default_maxrec: int = 100_000
    max_maxrec: int = 10_000_000
    upload_max_bytes: int = 10_000_000
    upload_max_rows: int = 100_000
    sync_timeout_s: float = 60.0
    async_max_duration_s: int = 3600
    destruction_days: float = 7.0
    upload_url_allow: tuple[str, ...] = ()
    """Hosts or CIDR networks URL uploads may be read from although they are not public addresses
    (``("*",)``: any); see :mod:`dpdb.tap.fetch`."""
    upload_url_timeout_s: float = 10.0
    anonymous: bool = True
    """Anonymous requests run as the service's query login; False: every request needs an HTTP Basic
    login (``dpdb db grant-reader``), see :mod:`dpdb.tap.auth`."""


@dataclass
class TapParams:
    query: str
    maxrec: int
    writer: str
    mime: str
    as_of: str | None = None
    release: str | None = None
    uploads: dict[str, pa.Table] = field(default_factory=dict)
    cite: bool = False
    """CITE=true: cite the result (:meth:`dpdb.Archive.cite`); its identifier goes into the result."""


_MULTI_VALUED = frozenset({"UPLOAD"})
"""Parameters a request may repeat (DALI 1.1, UPLOAD); every other one takes one value."""


def request_params(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A request's parameters from its (name, value) pairs in the order sent (query string, then form),
    each under the name it was first sent as. DALI 1.1 (section 3, parameters): names are
    case-insensitive, and "services must respond with an error if the request includes multiple values
    for parameters defined to be single-valued": a parameter sent twice with different values is a
    :class:`TapError` (the same value twice is one value). UPLOAD may repeat: its values are joined
    with ``;``, the TAP 1.0 form of several uploads."""
    out: dict[str, str] = {}
    names: dict[str, str] = {}
    for name, value in pairs:
        key = name.upper()
        first = names.setdefault(key, name)
        if first not in out:
            out[first] = value
        elif key in _MULTI_VALUED:
            out[first] = f"{out[first]};{value}"
        elif out[first] != value:
            raise TapError(f"{key} is given more than once, with different values: send it once")
    return out


def parse_params(
    params: Mapping[str, str], limits: Limits, uploads: Mapping[str, pa.Table] | None = None
) -> TapParams:
    """Check the TAP parameters (names case-insensitive); a :class:`TapError` names what is wrong."""
    p = {k.upper(): v for k, v in params.items()}
    request = p.get("REQUEST", "doQuery")
    if request.lower() != "doquery":
        raise TapError(f"REQUEST={request} is not supported: use REQUEST=doQuery (or leave it out)")
    lang = p.get("LANG")
    if not lang:
        raise TapError("LANG is missing: send LANG=ADQL")
    if lang.upper() not in LANGS:
        raise TapError(f"LANG={lang} is not supported: this service speaks ADQL (LANG=ADQL)")
    query = p.get("QUERY", "")
    if not query.strip():
        raise TapError("QUERY is missing: send QUERY=<an ADQL SELECT statement>")
    maxrec = limits.default_maxrec
    if p.get("MAXREC", "").strip():
        try:
            maxrec = int(p["MAXREC"])
        except ValueError:
            raise TapError(f"MAXREC={p['MAXREC']!r} is not a whole number") from None
        if maxrec < 0:
            raise TapError(f"MAXREC={maxrec} is negative")
        if maxrec > limits.max_maxrec:
            raise TapError(f"MAXREC={maxrec} is above this service's hard limit of {limits.max_maxrec} rows")
    fmt = p.get("RESPONSEFORMAT") or p.get("FORMAT")
    resolved = resolve_format(fmt)
    if resolved is None:
        raise TapError(
            f"RESPONSEFORMAT={fmt} is not supported: votable (BINARY2), votable/td, votable/b, csv, tsv, "
            "parquet"
        )
    as_of = (p.get("ASOF") or p.get("AS_OF") or "").strip() or None
    release = (p.get("RELEASE") or "").strip() or None
    cite_text = (p.get("CITE") or "false").strip().lower()
    if cite_text not in ("true", "false", "yes", "no", "1", "0", ""):
        raise TapError(f"CITE={p['CITE']} is not a boolean: send CITE=true to cite the result")
    cite = cite_text in ("true", "yes", "1")
    if cite and uploads:
        raise TapError("CITE=true: a query with uploaded tables cannot be cited (the upload is not kept)")
    return TapParams(query, maxrec, resolved[0], resolved[1], as_of, release, dict(uploads or {}), cite)


@dataclass
class QueryOutcome:
    body: bytes
    mime: str
    rows: int
    overflow: bool
    info: ResultInfo


def _instant(archive: Any, as_of: str | None) -> float:
    from ..instants import to_mjd_tai

    if as_of is None:
        # The present is the latest committed change (prompt processing or release activation): the
        # same rows as now, and an instant that replays them forever (processing times only grow).
        from ..asof import latest_processing_time
        from ..readers import reader_connect
        from ..timeutil import now_mjd_tai

        with reader_connect(archive.settings) as conn:
            latest = latest_processing_time(conn)
        return latest if latest is not None else now_mjd_tai()
    try:
        value = to_mjd_tai(as_of)
    except DpdbError as e:
        raise TapError(f"ASOF={as_of}: {e}; give an ISO 8601 UTC time or an MJD (TAI)") from e
    assert value is not None
    return value


@functools.lru_cache(maxsize=256)
def _utc(mjd_tai: float) -> str:
    from astropy.time import Time

    return Time(mjd_tai, format="mjd", scale="tai").utc.isot + "Z"


_SETTLED_S = 60.0
"""An instant this far in the past has a fixed activation history (activations are appended with
their commit time), so what it resolves to can be cached."""


@functools.lru_cache(maxsize=4096)
def _settled_releases(archive, mjd_tai: float) -> tuple[tuple[str, str], ...]:
    return tuple(_releases_at(archive, mjd_tai).items())


def _releases(archive, mjd_tai: float) -> dict[str, str]:
    """{'current': name, 'previous': name} as the activation history had them at ``mjd_tai``."""
    from ..timeutil import now_mjd_tai

    if (now_mjd_tai() - mjd_tai) * 86400 > _SETTLED_S:
        return dict(_settled_releases(archive, mjd_tai))
    return _releases_at(archive, mjd_tai)


def _releases_at(archive, mjd_tai: float) -> dict[str, str]:
    """Bookkeeping read (the registry's activation history), not a user query."""
    from ..db import connect
    from ..errors import ReleaseStateError
    from ..registry.activations import resolve_alias

    out: dict[str, str] = {}
    with connect(archive.settings) as conn:
        for alias in ("current", "previous"):
            try:
                out[alias] = resolve_alias(conn, alias, mjd_tai)
            except ReleaseStateError:
                continue
    return out


@functools.cache
def known_names() -> frozenset[str]:
    from .output import _felis_columns

    names = set()
    for table, columns in _felis_columns().items():
        names.add(table)
        names.update(columns)
    return frozenset(names)


def prepare(archive, params: TapParams) -> tuple[Translation, float, dict[str, str], bool]:
    """Translate the query for its instant: (translation, MJD TAI, schemas read, as_of needed)."""
    instant = _instant(archive, params.as_of)
    maxrec = params.maxrec

    def run_translate(schemas: dict[str, str]) -> Translation:
        return translate(
            params.query, maxrec=maxrec if maxrec > 0 else None, schemas=schemas, uploads=params.uploads,
            known_names=known_names(),
        )  # fmt: skip

    try:
        translation = run_translate({})
        # current/previous: which release they name at the instant (read, and recorded in the result)
        names_releases = any(s in ("current", "previous") for s, _ in translation.tables) or (
            params.release in ("current", "previous")
        )
        at_instant = _releases(archive, instant) if names_releases else {}
        schemas = dict(at_instant) if params.as_of is not None else {}
        if schemas and any(s in schemas for s, _ in translation.tables):
            translation = run_translate(schemas)
    except AdqlError as e:
        raise TapError(str(e)) from e
    _complete(translation, params)
    read: dict[str, str] = {}
    for schema, _ in translation.tables:
        named = schema or (params.release or "")
        if not named:
            continue
        original = next((k for k, v in schemas.items() if v == named), named)
        read[original] = named if params.as_of is not None else at_instant.get(named, named)
    for missing in ("current", "previous"):
        if (
            params.as_of is not None
            and missing not in at_instant
            and any(s == missing for s, _ in translation.tables)
        ):
            raise TapError(f"no release was {missing} at ASOF={params.as_of} (MJD TAI {instant!r})")
    if any(t == "diaobjectlast" for _, t in translation.tables):
        reads_prompt = False  # the last-version table has no as-of view: it is the present by definition
        return translation, instant, read, reads_prompt
    reads_prompt = any(
        s == "prompt" or (not s and params.release in (None, "prompt")) for s, _ in translation.tables
    )
    return translation, instant, read, reads_prompt


def _translate_plain(params: TapParams) -> Translation:
    maxrec = params.maxrec
    try:
        translation = translate(
            params.query, maxrec=maxrec if maxrec > 0 else None, schemas={}, uploads=params.uploads,
            known_names=known_names(),
        )  # fmt: skip
    except AdqlError as e:
        raise TapError(str(e)) from e
    _complete(translation, params)
    return translation


def _complete(translation: Translation, params: TapParams) -> None:
    """What a translation takes from the request beyond the ADQL: the uploads' xtypes, MAXREC=0."""
    for upload in params.uploads.values():  # an uploaded column keeps its xtype (timestamp ...)
        for f in upload.schema:
            if f.metadata and b"xtype" in f.metadata:
                translation.xtypes.setdefault(f.name.lower(), f.metadata[b"xtype"].decode())
    if params.maxrec == 0:
        translation.sql = f"SELECT * FROM ({translation.sql}) AS _metadata LIMIT 0"
        translation.overflow_possible = True


def _reads_prompt(translation: Translation) -> bool:
    """Whether the fast path reads a translation's tables through the prompt catalog's as-of views."""
    if any(t == "diaobjectlast" for _, t in translation.tables):
        return False  # the last-version table has no as-of view: it is the present by definition
    return any(s in ("prompt", "") for s, _ in translation.tables)


def _fast_statement(archive, params: TapParams):  # -> shapes.Statement
    """The statement the fast path runs: from the shape cache (:mod:`dpdb.tap.shapes`), or translated
    in full and its shape kept. Queries with uploads are always translated in full."""
    from . import shapes

    settings = archive.settings

    def finish(translation: Translation) -> bool:
        _complete(translation, params)
        return _reads_prompt(translation)

    def full(query: str) -> shapes.Statement:
        return _full_statement(settings, dataclasses.replace(params, query=query))

    if params.uploads:
        return full(params.query)
    found = shapes.lookup(settings, params.query, params.maxrec)
    if found is not None:
        return found
    try:
        return shapes.learn(settings, params.query, params.maxrec, finish, full, known_names())
    except AdqlError as e:
        raise TapError(str(e)) from e


def _full_statement(settings, params: TapParams):  # -> shapes.Statement
    """The fast path's statement of a query translated in full (no shape kept or used)."""
    from . import shapes
    from .engine import final_text

    translation = _translate_plain(params)
    reads_prompt = _reads_prompt(translation)
    return shapes.Statement(translation, final_text(settings, translation.sql, reads_prompt=reads_prompt),
                            reads_prompt)  # fmt: skip


def service_sql(archive, params: TapParams) -> str:
    """The PostgreSQL statement the service sends for a query without ASOF or RELEASE (translation,
    as-of views, partition ranges), as :func:`run_query` runs it; for benchmarks and EXPLAIN."""
    return _fast_statement(archive, params).text


_MANY = 10_000
"""A TOP above this many rows is a large result (dpdb.tap.engine fetches up to 10,000 through psycopg)."""


def _run_fast(archive, params: TapParams) -> tuple[pa.Table, Translation, float, dict[str, str]] | None:
    """The query through :mod:`dpdb.tap.engine` (no ASOF, no RELEASE); None: the general path runs it."""
    from .engine import CannotRunFast, run_final

    if params.as_of is not None or params.release is not None:
        return None
    try:
        statement = _fast_statement(archive, params)
        result = run_final(archive.settings, statement.text, reads_prompt=statement.reads_prompt,
                           many=asks_many(statement.translation), single=statement.single)  # fmt: skip
    except CannotRunFast as e:
        log.info("TAP query on the general path (%s)", e)
        return None
    except TapError:
        raise
    except DpdbError as e:
        raise TapError(user_message(str(e))) from e
    return fast_read(statement.translation, result)


def asks_many(translation: Translation) -> bool:
    """A query whose own TOP asks for more rows than psycopg fetches: it goes straight to ADBC."""
    return not translation.overflow_possible and (translation.row_limit or 0) > _MANY


def fast_read(translation: Translation, result: Any) -> tuple[pa.Table, Translation, float, dict[str, str]]:
    """(rows, translation, instant, schemas read) of a fast-path result (:class:`engine.FastResult`)."""
    read = releases_read(translation, result.current, result.previous)
    return result.table, translation, result.instant, read


def releases_read(translation: Translation, current: str | None, previous: str | None) -> dict[str, str]:
    """The schemas a fast-path query read, ``current``/``previous`` named as the releases they were."""
    names = {"current": current, "previous": previous}
    read = {s: names.get(s) or s for s, _ in translation.tables if s}
    for alias in ("current", "previous"):
        if alias in read and names[alias] is None:
            raise TapError(f"no release is {alias} yet (see `dpdb release activate`)")
    return {k: v for k, v in read.items() if v}


def run_query(archive, params: TapParams) -> QueryOutcome:
    """Run one TAP query through the archive's read-only query path; the result document."""
    fast = _run_fast(archive, params)
    if fast is not None:
        table, translation, instant, read = fast
        return outcome(table, translation, instant, read, params, archive)
    translation, instant, read, reads_prompt = prepare(archive, params)
    # The prompt catalog is read as of the recorded instant even without ASOF, so that the
    # instant in the result reproduces it exactly.
    as_of = instant if (params.as_of is not None or reads_prompt) else None
    release = params.release
    if release in ("current", "previous") and params.as_of is not None:
        release = read.get(release, release)
    log.info("TAP query at MJD TAI %r: %s", instant, translation.sql)
    try:
        # Without ASOF the service pinned the query to its own "now": evaluated as such (dpdb.asof);
        # an ASOF later than the latest processing time is refused like everywhere else.
        table = archive.query_arrow(
            translation.sql, as_of=as_of, release=release, provisional=params.as_of is None
        )
    except DpdbError as e:
        raise TapError(user_message(str(e))) from e
    return outcome(table, translation, instant, read, params, archive)


def outcome(
    table: pa.Table,
    translation: Translation,
    instant: float,
    read: dict[str, str],
    params: TapParams,
    archive: Any,
) -> QueryOutcome:
    overflow = translation.overflow_possible and (params.maxrec == 0 or len(table) > params.maxrec)
    if len(table) > params.maxrec:
        table = table.slice(0, params.maxrec)
    info = ResultInfo(
        query=params.query, sql=translation.sql, as_of_mjd_tai=instant, as_of_utc=_utc(instant),
        releases=read,
        status="OVERFLOW" if overflow else "OK", maxrec=params.maxrec, xtypes=translation.xtypes,
        tables=translation.tables,
    )  # fmt: skip
    if params.cite:
        info.citation = _cite(archive, translation, instant, params, overflow)
    body = write_result(table, info, params.writer)
    return QueryOutcome(body, params.mime, len(table), overflow, info)


def _cite(archive: Any, translation: Translation, instant: float, params: TapParams, overflow: bool) -> str:
    """Cite the rows this query returned (the PostgreSQL it ran, at its instant); the identifier.

    The SQL cited names ``current``/``previous`` as the query did (the translation without ASOF);
    the citation store resolves them at the instant, so the same query at the same instant is the
    same citation whether the instant was sent as ASOF or recorded by the service."""
    sql = _translate_plain(params).sql if params.as_of is not None else translation.sql
    if overflow:  # the returned rows: MAXREC of them, not the one more that tells overflow
        sql = f"SELECT * FROM ({sql}) AS _returned LIMIT {params.maxrec}"
    try:
        citation = archive.cite(sql, as_of=instant, release=params.release)
    except DpdbError as e:
        raise TapError(f"CITE=true: the result cannot be cited ({e})") from e
    return str(citation.handle)


def user_message(message: str) -> str:
    text = message.removeprefix("query failed: ")
    if "does not exist" in text and "relation" in text:
        return f"{text}: see /tap/tables (TAP_SCHEMA.tables) for the tables this service holds"
    if "column" in text and "does not exist" in text:
        return f"{text}: see /tap/tables for the columns of each table"
    return text
