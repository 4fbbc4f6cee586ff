"""Making and resolving citations: a query pinned to an instant, its result hashed, re-run and compared.

A citation (RDA dynamic data citation) is made in four steps:

1. the SQL is normalized and the schemas ``current``/``previous`` are replaced by
   the releases they name, so the stored text reads the same tables forever;
2. the instant is fixed: ``--as-of`` when given (never in the future: data of a
   future instant can still change), else the newest processing time the prompt
   catalog holds. Prompt changes only ever get later processing times
   (``dpdb/prompt/order.py``), so no later ingest or relink changes what the query
   sees at that instant, and the result is the present one;
3. PostgreSQL's planner says which tables the query reads (``EXPLAIN`` with the
   settings the query runs with): only the prompt catalog (read as of the
   instant), frozen releases and the samples are citable;
4. the query runs through :func:`dpdb.query.run_query`, the path of
   :meth:`dpdb.Archive.query_arrow` (this package sits below the Archive, which
   calls it; docs/architecture.md, layers); its row count and
   hash (``dpdb/citations/digest.py``) are stored with the text, instant, catalogs
   and versions under an identifier derived from text, release and instant.

Resolving re-runs the stored text as of the stored instant and compares. A
release archived since is read from its kept sample when the query's cones lie
inside the sample region (the hash then proves the sample held every row);
otherwise the message says which release to restore.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

import psycopg
import pyarrow as pa

from dpdb.config import Settings
from dpdb.db import connect
from dpdb.errors import QueryError, first_line
from dpdb.pg import fetch_value
from dpdb.query import QueryFacts, queue_query_facts, run_query
from dpdb.registry.citations import (
    Citation,
    CitationError,
    CitationUnavailableError,
    Lookup,
    ReleaseFact,
    find,
    get,
    handle_of,
    lookup,
    make_id,
    release_facts,
    release_named,
    rows,
)
from dpdb.registry.prompt_log import latest_processing_time

from . import sqltext
from ._conn import one_round_trip, owner_connection
from .digest import METHOD, METHOD_V1, ResultDigest, check_method
from .rowset import RowsetHasher, digest_table

__all__ = ["Made", "Resolution", "cite", "resolve", "dependents", "drop_warning", "citation_line"]

log = logging.getLogger(__name__)

QUERY_WORDS = ("select", "with", "values", "table")
FROZEN_STATES = ("validated", "active", "superseded")
"""Release states whose rows can no longer change (plus ``loaded`` after a restore from the archive)."""
_IGNORED_TABLES = {("dpdb_meta", "leap_second")}  # read by the time functions; history, never rewritten


@dataclass(frozen=True)
class Made:
    """What :func:`cite` did: the citation, and whether it existed already (same query, same instant)."""

    citation: Citation
    existing: bool
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Resolution:
    """The outcome of re-running a citation."""

    citation: Citation
    verified: bool
    rows: int
    sha256: str
    differences: list[str]
    result: pa.Table
    source: str  # "database", or "sample of drN" when read from an archived release's kept sample
    seconds: float

    def lines(self) -> list[str]:
        if self.verified:
            where = "" if self.source == "database" else f" (read from the {self.source})"
            return [f"verified: {rows(self.rows)}, sha256 {self.sha256}{where}"]
        return ["differs:", *(f"  {d}" for d in self.differences)]


# -- making ----------------------------------------------------------------------------------------


def _check_text(sql_text: str) -> str:
    text = sqltext.normalize(sql_text)
    if not text:
        raise CitationError("no SQL statement given")
    word = sqltext.first_word(text)
    if word not in QUERY_WORDS:
        raise CitationError(f"only a query can be cited (SELECT, WITH, VALUES or TABLE), not {word.upper()}")
    if sqltext.has_semicolon(text):
        raise CitationError("the SQL holds several statements; a citation is of one query")
    volatile = sqltext.volatile_calls(text)
    if volatile:
        raise CitationError(
            f"the query calls {', '.join(volatile)}, whose value changes from run to run, so its "
            "result cannot be cited; write the value as a constant"
        )
    return text


def _instant(conn: psycopg.Connection, as_of: float | None) -> float:
    from dpdb.timeutil import iso_utc, now_mjd_tai

    if as_of is not None and not (math.isfinite(as_of) and as_of >= 0):
        raise CitationError(f"invalid instant {as_of!r}: give an MJD TAI >= 0 or an ISO time")
    if as_of is not None and as_of <= time.time() / 86_400 + 40_587:  # MJD UTC now, behind MJD TAI
        return as_of  # a past instant: no need to ask the catalog for its last change
    now = now_mjd_tai()
    latest = latest_processing_time(conn)
    if as_of is None:
        return latest if latest is not None else now
    if as_of > max(now, latest if latest is not None else -math.inf):
        raise CitationError(
            f"--as-of {iso_utc(as_of)} UTC is in the future: what the catalogs hold then can still "
            "change, so there is no stable result to cite (give a past instant, or none for the present)"
        )
    return as_of


def _tables_read(
    conn: psycopg.Connection, text: str, as_of: float, release: str | None, views: set[str],
    roots_key: tuple = (),
) -> list[tuple[str, str]]:  # fmt: skip
    """(schema, table) of every table the planner reads for ``text``; partitions as their parent.

    ``EXPLAIN`` runs with the settings :func:`dpdb.query.run_query` gives the query
    (``dpdb.as_of``, search path, ``prompt.<table>`` read through ``prompt_as_of``, whose
    ``views`` are given), in a savepoint that is rolled back; all of it in one round trip (and
    one more for partitions not seen before in this process: ``roots_key`` names the database
    and its schema version).
    """
    from psycopg import sql as psql

    from dpdb.as_of_rewrite import AS_OF_SCHEMA, rewrite_as_of

    path = [AS_OF_SCHEMA, *([release] if release else []), "public"]
    statement = "EXPLAIN (VERBOSE, COSTS OFF, FORMAT JSON) " + rewrite_as_of(text, views) + "\n"
    try:
        with one_round_trip(conn):  # in a transaction rolled back: the settings end with it
            conn.execute("BEGIN")
            conn.execute(
                "SELECT set_config('dpdb.as_of', %s, true), set_config('search_path', %s, true)",
                (repr(float(as_of)), psql.SQL(", ").join(map(psql.Identifier, path)).as_string(conn)),
            )
            explained = conn.execute(statement.encode())
            conn.execute("ROLLBACK")
        row = explained.fetchone()
    except psycopg.Error as e:
        primary = e.diag.message_primary if isinstance(e, psycopg.errors.DatabaseError) else None
        raise QueryError(f"query failed: {primary or str(e).strip().splitlines()[0]}") from e
    assert row is not None
    plan = row[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    found: set[tuple[str, str]] = set()
    nodes = [p["Plan"] for p in plan] if isinstance(plan, list) else [plan.get("Plan", plan)]
    while nodes:  # the plan tree: every node's children (InitPlans, SubPlans, CTEs too) are in "Plans"
        node = nodes.pop()
        if "Relation Name" in node and "Schema" in node:
            found.add((node["Schema"], node["Relation Name"]))
        nodes.extend(node.get("Plans", ()))
    if not found:
        return []
    with _roots_lock:
        roots = _roots.setdefault(roots_key, {})
        missing = sorted(found - roots.keys())
    if missing:  # partitions never seen in this process (at this schema version): one round trip
        schemas, names = zip(*missing, strict=True)
        with one_round_trip(conn):
            found_roots = conn.execute(
                "SELECT t.s, t.r, rn.nspname, rc.relname FROM unnest(%s::text[], %s::text[]) AS t(s, r) "
                "JOIN pg_namespace n ON n.nspname = t.s "
                "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.r "
                "JOIN pg_class rc ON rc.oid = coalesce(pg_partition_root(c.oid), c.oid) "
                "JOIN pg_namespace rn ON rn.oid = rc.relnamespace",
                (list(schemas), list(names)),
            )
        rows = found_roots.fetchall()
        with _roots_lock:
            roots.update({(s, r): (rs, rr) for s, r, rs, rr in rows})
    tables = {roots[f] for f in found if f in roots}
    return sorted(t for t in tables if t not in _IGNORED_TABLES)


_roots: dict[tuple, dict[tuple[str, str], tuple[str, str]]] = {}
"""Per database and schema version: (schema, relation) -> (schema, table) of its partition root (a
relation's own name when it is not a partition); the partitions of dpdb's tables never move."""
_roots_lock = threading.Lock()


def _catalogs(facts: dict[str, ReleaseFact], tables: list[tuple[str, str]]) -> list[str]:
    """The catalogs ``tables`` belong to; refuses tables whose rows can change under a citation."""
    catalogs: set[str] = set()
    for schema, table in tables:
        if schema == "prompt" or schema == "samples":
            catalogs.add(schema)
        elif schema in facts:
            fact = facts[schema]
            if fact.state not in FROZEN_STATES and not (fact.state == "loaded" and fact.restored):
                raise CitationError(
                    f"release {schema} is {fact.state}: its rows can still change, so a query of "
                    f"{schema}.{table} cannot be cited yet (validate the release first)"
                )
            catalogs.add(schema)
        else:
            raise CitationError(
                f"the query reads {schema}.{table}, which dpdb does not keep as of an instant; a citation "
                "can read the prompt catalog, data releases and samples"
            )
    return sorted(catalogs)


def cite(
    settings: Settings,
    sql_text: str,
    *,
    as_of: float | None = None,
    release: str | None = None,
    title: str | None = None,
    creator: str | None = None,
) -> Made:
    """Cite the result of a query: run it pinned to an instant and store its identifier, count and hash.

    Parameters
    ----------
    settings
        The database.
    sql_text
        One query (SELECT, WITH, VALUES or TABLE).
    as_of
        Instant (MJD TAI) to evaluate at; not in the future. ``None``: the
        present, pinned to the newest processing time the prompt catalog holds.
    release
        Catalog that unqualified table names resolve to (as ``dpdb query --release``);
        ``current``/``previous`` are replaced by the releases they name.
    title, creator
        Title of the cited result and who to credit (default: a generated title, the OS user).

    Returns
    -------
    Made
        The citation, and whether the same query at the same instant was cited before
        (then nothing is re-run: one query at one instant has one identifier).
    """
    text = _check_text(sql_text)
    warnings = []
    if sqltext.has_unordered_limit(text):
        warnings.append(
            "the query takes a LIMIT/OFFSET subset without ORDER BY: PostgreSQL may pick other rows "
            "another time, and the citation would no longer verify"
        )
    user = getpass.getuser()
    arguments = {"query": text, "release": release, "as_of": as_of}
    start = time.monotonic()
    with owner_connection(settings) as conn:
        try:
            instant = _instant(conn, as_of)
            aliases = {"current", "previous"} & (sqltext.schema_references(text) | {release})
            pinned_at = as_of  # current/previous: the releases they named at --as-of, else now
            mapping = {a: release_named(conn, a, pinned_at) for a in sorted(aliases)}
            pinned = sqltext.replace_schemas(text, mapping)
            pinned_release = mapping.get(release, release) if release is not None else None
            citation_id = make_id(sqltext.identity_text(pinned), pinned_release, instant)
            # A worker reads the bookkeeping (is it cited already; the prompt catalog's latest
            # processing time, which must be read before the query's snapshot is taken; versions and
            # release states; what the query's rewriting reads, which the query then does not read
            # again) and asks the planner which tables the query reads, while the query runs (and
            # its result is hashed) on this thread, which waits for the bookkeeping once its
            # connection is open: the citation costs little more than the query itself
            # (benchmarks/bench_cite.py).
            looked_up: Future[_Read] = Future()
            checking = _submit(
                _prepare, settings, conn, looked_up, citation_id, pinned, pinned_release, instant, title,
                creator, user,
            )  # fmt: skip

            def before_fetch() -> None:
                if looked_up.result().found.existing is not None:
                    raise _Existing()

            def facts() -> QueryFacts:
                return looked_up.result().facts

            try:
                _, digest, seconds = _run_and_hash(
                    settings, pinned, instant, pinned_release, before_fetch=before_fetch, facts=facts
                )
            except BaseException as e:
                template = checking.result()  # the check's error is the one to report
                if isinstance(e, _Existing):
                    existing = looked_up.result().found.existing
                    assert existing is not None
                    _audit(conn, "cite", arguments, f"ok: {citation_id} (existed)", start)
                    return Made(existing, True, warnings)
                raise
            template = checking.result()
            assert template is not None
            frontier = looked_up.result().facts.latest
            for attempt in range(_ATTEMPTS):
                if attempt:
                    _, digest, seconds = _run_and_hash(settings, pinned, instant, pinned_release)
                citation = dataclasses.replace(
                    template,
                    row_count=digest.rows,
                    result_sha256=digest.sha256,
                    hash_method=digest.method,
                    columns=[c.to_json() for c in digest.columns],
                    query_seconds=seconds,
                )
                # When the instant is later than the latest change, a prompt write or an activation
                # committed since the query's snapshot could have come before it. Once the citation is
                # stored none can (cited_time, sql/prompt_ingest.sql; dpdb/lifecycle/activate.py); until
                # then the writers' lock, which activations take too, is held shared, and the citation
                # is stored only if the latest change is still the one read before the query. Otherwise
                # every later change comes after the instant (docs/architecture.md, decision 14). Either
                # way the citation row, its audit entry and the commit go in one round trip (pipeline
                # mode), with the lock and the check when needed.
                check = frontier is None or instant > frontier
                stored, later = _store(conn, citation, arguments, start, frontier if check else _UNCHECKED)
                if later is None:
                    break
                frontier = later[0]  # a write came in while the query ran (nothing was stored): run again
            else:
                raise CitationError(
                    f"the prompt catalog changed {_ATTEMPTS} times while the query ran; cite it again"
                )
            new = stored is not None
            if stored is None:  # cited meanwhile by someone else (their audit entry says so): theirs
                stored = get(conn, citation_id)
            assert stored is not None
        except BaseException as e:
            _audit_failure(settings, conn, "cite", arguments, e, start)
            raise
    return Made(stored, not new, warnings)


_Stored = tuple[Citation | None, tuple[float | None] | None]
"""What storing a citation gave: the citation stored (None when its identifier existed already or
nothing was stored), and None, or the latest change in a 1-tuple when it had moved (nothing stored)."""
_ATTEMPTS = 3
"""Runs of a query whose instant the prompt catalog's writes have not passed yet, while writes come in."""


class _Existing(Exception):
    """The query was cited before (its run is stopped before the statement is sent)."""


_UNCHECKED = object()


def _store(
    conn: psycopg.Connection, citation: Citation, arguments: dict, start: float,
    frontier: float | None | object,
) -> _Stored:  # fmt: skip
    """Insert the citation and its audit entry and commit, durably, in one round trip: the citation
    stored (None when its identifier was there already), and None, or when a prompt write came in
    since ``frontier`` was read (and nothing was written), the prompt catalog's latest processing time
    now (in a 1-tuple).

    ``frontier``: the latest processing time read before the query ran, or ``_UNCHECKED`` when no
    prompt write can change the result any more. When given, the writers' lock is taken shared by a
    first statement, and a second (a later snapshot, which sees every write committed before the lock)
    writes the row and the audit entry only if the time is still ``frontier`` (else nothing is, and
    the caller runs the query again)."""
    from dpdb.registry.citations import store_statement, stored_citation
    from dpdb.registry.prompt_log import writers_lock_shared_statement

    audit = ("cite", arguments, f"ok: {citation.citation_id}", time.monotonic() - start)
    with one_round_trip(conn):
        conn.execute("BEGIN")
        if frontier is _UNCHECKED:
            stored = store_statement(conn, citation, audit)
        else:
            writers_lock_shared_statement(conn)
            stored = store_statement(conn, citation, audit, if_latest=frontier)
        conn.execute("COMMIT")  # durable: the identifier printed survives a crash
    row = stored.fetchone()
    assert row is not None
    if frontier is _UNCHECKED:
        return stored_citation(row, citation), None
    now = float(row[0]) if row[0] is not None else None
    return stored_citation(row, citation), None if now == frontier else (now,)


class _Read(NamedTuple):
    """What citing reads before its query's snapshot: the bookkeeping, and the query's own facts."""

    found: Lookup
    facts: QueryFacts


def _prepare(
    settings: Settings, conn: psycopg.Connection, looked_up: Future[_Read],
    citation_id: str, pinned: str, release: str | None, instant: float, title: str | None,
    creator: str | None, user: str,
) -> Citation | None:  # fmt: skip
    """Read the bookkeeping and the query's facts into ``looked_up`` (one round trip), then (unless
    the citation exists) everything of the citation but the result's count and hash (two more, with
    the planner)."""
    from dpdb.as_of_rewrite import AS_OF_SCHEMA

    try:
        with one_round_trip(conn):
            query_facts = queue_query_facts(conn)
            schema = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (release,)) if release else None
            collect = lookup(conn, citation_id)
        found, facts = collect(), query_facts()
    except BaseException as e:
        looked_up.set_exception(e)
        raise
    looked_up.set_result(_Read(found, facts))
    if found.existing is not None:
        return None
    if schema is not None and schema.fetchone() != (True,):
        raise CitationError(f"unknown release {release!r}: no such catalog in this database")
    key = (str(settings.dsn or ""), str(settings.home), settings.database, found.schema_version)
    views = {name for schema_name, name in facts.relations if schema_name == AS_OF_SCHEMA}
    tables = _tables_read(conn, pinned, instant, release, views, key)
    return _template(settings, found, tables, citation_id, pinned, release, instant, title, creator, user)


def _template(
    settings: Settings, found: Lookup, tables: list[tuple[str, str]], citation_id: str, pinned: str,
    release: str | None, instant: float, title: str | None, creator: str | None, user: str,
) -> Citation:  # fmt: skip
    """Everything of the citation but the result's count and hash (filled while the query runs)."""
    from dpdb._version import code_version
    from dpdb.timeutil import iso_utc

    schema_version = found.schema_version
    catalogs = _catalogs(found.releases, tables)
    return Citation(
        citation_id=citation_id,
        handle=handle_of(settings, citation_id),
        query=pinned,
        release=release,
        as_of_mjd_tai=instant,
        as_of_utc=iso_utc(instant),
        catalogs=catalogs,
        tables=[f"{s}.{t}" for s, t in tables],
        schema_version=schema_version,
        software_version=code_version(),
        row_count=0,
        result_sha256="",
        hash_method="",
        columns=[],
        title=title or _default_title(catalogs),
        creator=creator or user,
        created_at=None,  # type: ignore[arg-type]  # the database's now()
        created_by=user,
        query_seconds=0.0,
    )


_T = TypeVar("_T")
_workers: ThreadPoolExecutor | None = None
_workers_lock = threading.Lock()


def _submit(fn: Callable[..., _T], *args: object) -> Future[_T]:
    """Run ``fn`` on the citations' worker threads."""
    global _workers
    with _workers_lock:
        if _workers is None:
            _workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dpdb-cite")
    return _workers.submit(fn, *args)


def _run_and_hash(
    settings: Settings, query: str, instant: float, release: str | None, method: str = METHOD,
    before_fetch: Callable[[], None] | None = None, facts: Callable[[], QueryFacts] | None = None,
) -> tuple[pa.Table, ResultDigest, float]:  # fmt: skip
    """The query's rows as of ``instant``, their digest with ``method``, and the seconds both took
    (``before_fetch``, ``facts``: as :func:`dpdb.query.run_query`).

    ``dpdb-rowset-v3`` (and ``-v2``) hash each batch on a thread of its own while the next one is
    fetched; ``dpdb-rowset-v1`` (older citations) needs the whole result first.
    """
    start = time.perf_counter()
    # provisional: an instant later than the latest change is final once its citation is stored (every
    # later change comes after cited instants: dpdb/prompt/order.py, dpdb/lifecycle/activate.py)
    if method == METHOD_V1:
        result = run_query(
            settings, query, as_of=instant, release=release, provisional=True, before_fetch=before_fetch,
            facts=facts,
        )  # fmt: skip
        return result, digest_table(result, method), time.perf_counter() - start
    from dpdb.query import STREAM_BATCH_BYTES

    hasher = RowsetHasher(method, threaded=True, inline_below=STREAM_BATCH_BYTES // 2)
    try:
        result = run_query(
            settings, query, as_of=instant, release=release, on_batch=hasher.add, provisional=True,
            before_fetch=before_fetch, facts=facts,
        )  # fmt: skip
        digest = hasher.finish(result.column_names, result.schema)
    finally:
        hasher.close()
    return result, digest, time.perf_counter() - start


def _audit(
    conn: psycopg.Connection, action: str, arguments: dict, outcome: str, start: float, *,
    durable: bool = True,
) -> None:  # fmt: skip
    """The audit-log entry of a citation step, committed with what the step wrote (one round trip).
    ``durable=False``: the commit does not wait for its WAL flush (for steps that wrote nothing else)."""
    from dpdb.registry.audit import record

    with one_round_trip(conn):
        conn.execute("BEGIN")
        if not durable:
            conn.execute("SET LOCAL synchronous_commit = off")
        record(conn, action, arguments, outcome, time.monotonic() - start)
        conn.execute("COMMIT")


def _drain(running: Future) -> None:
    """Wait for a run whose result is not needed (its error neither)."""
    with contextlib.suppress(Exception):
        running.result()


def _audit_failure(
    settings: Settings, conn: psycopg.Connection, action: str, arguments: dict, error: BaseException,
    start: float,
) -> None:  # fmt: skip
    """Record a failed step (its own transaction; never hides the step's error)."""
    from dpdb.registry.audit import record

    outcome = f"error: {first_line(error)}"
    try:
        conn.rollback()
        _audit(conn, action, arguments, outcome, start)
    except psycopg.Error:
        try:
            with connect(settings, check=False, autocommit=True) as fresh:
                record(fresh, action, arguments, outcome, time.monotonic() - start)
        except Exception as e:  # noqa: BLE001 - the step's own error is the one to report
            log.log(
                logging.INFO if isinstance(e, psycopg.OperationalError) else logging.WARNING,
                "could not write the audit log entry of %s: %s", action, first_line(e),
            )  # fmt: skip


def _default_title(catalogs: list[str]) -> str:
    return f"Query result from {', '.join(catalogs)}" if catalogs else "Query result"


def citation_line(c: Citation, settings: Settings) -> str:
    """A human citation line: creator (year). title [rows, instant]. publisher. DOI URL."""
    year = c.created_at.year
    return (
        f"{c.creator} ({year}). {c.title} [{rows(c.row_count)}; query as of {c.as_of_utc} UTC]. "
        f"{settings.citation_publisher}. {c.doi_url}"
    )


# -- resolving -------------------------------------------------------------------------------------


def _compare(c: Citation, found: ResultDigest) -> list[str]:
    out = []
    if found.rows != c.row_count:
        out.append(f"row count: cited {c.row_count}, found {found.rows}")
    cited_cols = [(col["name"], col["type"]) for col in c.columns]
    found_cols = [(col.name, col.type) for col in found.columns]
    if cited_cols != found_cols:
        out.append(
            "columns: cited " + ", ".join(f"{n} ({t})" for n, t in cited_cols)
            + "; found " + ", ".join(f"{n} ({t})" for n, t in found_cols)
        )  # fmt: skip
    elif found.sha256 != c.result_sha256:
        changed = [
            col["name"]
            for col, now in zip(c.columns, found.columns, strict=True)
            if col["sha256"] != now.sha256
        ]
        if changed and found.rows == c.row_count:
            out.append(f"values differ in column{'s' if len(changed) > 1 else ''} {', '.join(changed)}")
    if found.sha256 != c.result_sha256:
        out.append(f"result hash: cited {c.result_sha256}, found {found.sha256}")
    return out


def _method_of(c: Citation) -> str:
    """The hashing method the citation was made with (the method is stored with each citation)."""
    try:
        return check_method(c.hash_method)
    except ValueError as e:
        raise CitationError(f"citation {c.citation_id}: {e}; a newer dpdb can verify it") from e


def _unavailable(c: Citation, facts: dict[str, ReleaseFact]) -> list[ReleaseFact]:
    return [
        facts[r] for r in c.catalogs if r in facts and not facts[r].loaded
    ]  # archived, dropped, or being restored


def _advice(c: Citation, missing: list[ReleaseFact]) -> str:
    parts = []
    for fact in missing:
        if fact.state == "archived":
            parts.append(
                f"release {fact.name} is archived (files in {fact.archive_path}): restore it with "
                f"`dpdb release restore {fact.name}`, then resolve again"
            )
        elif fact.state == "restoring":
            parts.append(
                f"release {fact.name} is being restored: finish with `dpdb release restore {fact.name}`"
            )
        else:
            kept = f"; its archive files are kept in {fact.archive_path}" if fact.archive_path else ""
            parts.append(f"release {fact.name} was dropped and cannot be restored by dpdb{kept}")
    return f"citation {c.citation_id} reads data that is not loaded: " + "; ".join(parts)


def _inside_sample(settings: Settings, c: Citation) -> bool:
    """True when every cone of the query lies inside the sample region (and there is at least one)."""
    cones = sqltext.radial_cones(c.query)
    if not cones or any(cone is None for cone in cones):
        return False
    ra0, dec0, radius0 = settings.sample_region
    for ra, dec, radius in cones:  # type: ignore[misc]
        a, b = math.radians(ra - ra0), (math.radians(dec), math.radians(dec0))
        cos_d = math.sin(b[0]) * math.sin(b[1]) + math.cos(b[0]) * math.cos(b[1]) * math.cos(a)
        separation = math.degrees(math.acos(max(-1.0, min(1.0, cos_d))))
        if separation + radius > radius0:
            return False
    return True


def _sample_query(
    conn: psycopg.Connection, settings: Settings, c: Citation, missing: list[ReleaseFact]
) -> str | None:
    """The query rewritten onto the kept samples of the archived releases it reads, if they can hold it."""
    if any(f.state != "archived" for f in missing) or not _inside_sample(settings, c):
        return None
    from dpdb.lifecycle.samples import SAMPLE_TABLES

    sampled = {t.lower() for t in SAMPLE_TABLES}
    names = {f.name for f in missing}
    mapping: dict[tuple[str | None, str], str] = {}
    for full in c.tables:
        schema, table = full.split(".", 1)
        if schema in names:
            if table not in sampled:
                return None
            mapping[(schema, table)] = f"samples.{schema}_{table}"
            if c.release == schema:
                mapping[(None, table)] = f"samples.{schema}_{table}"
    for target in set(mapping.values()):
        if fetch_value(conn, "SELECT to_regclass(%s)", (target,)) is None:
            return None
    return sqltext.replace_tables(c.query, mapping)


def resolve(settings: Settings, reference: str, *, record: bool = True) -> Resolution:
    """Re-run a citation as of its instant and compare row count and hash with the stored ones.

    Parameters
    ----------
    settings
        The database.
    reference
        The citation's ID, handle, DOI URL or landing-page URL.
    record
        Write the outcome to the audit log (``cite.resolve``). The web portal,
        which never writes, resolves with ``record=False``.

    Raises
    ------
    CitationError
        ``reference`` names no citation.
    CitationUnavailableError
        The query reads a release that is archived or dropped (and its kept
        sample cannot answer it): the message says which release to restore.
    """
    start = time.monotonic()
    with owner_connection(settings) as conn:
        # one round trip (autocommit: no transaction to open and end), nothing held open while the query
        # runs; with the citation, what the query's rewriting reads (it does not read them again)
        conn.autocommit = True
        try:
            with conn.pipeline():
                queued = queue_query_facts(conn)
                c = find(conn, reference)  # its fetch sends and syncs what is queued
            query_facts = queued()
        finally:
            conn.autocommit = False

        def known() -> QueryFacts:
            return query_facts

        arguments = {"id": c.citation_id}
        try:
            method = _method_of(c)
            if not c.releases:  # nothing to look up while it runs: run here, without a thread hand-off
                result, found, seconds = _run_and_hash(
                    settings, c.query, c.as_of_mjd_tai, c.release, method, facts=known
                )
                return _resolved(conn, c, result, found, seconds, [], "database", record, start)
            # The query is run at once, on a worker thread, while the states of the releases it read
            # are looked up: nearly always they are loaded and this run is the one (else it is dropped).
            speculative = _submit(
                _run_and_hash, settings, c.query, c.as_of_mjd_tai, c.release, method, None, known
            )
            running: Future | None = speculative
            try:
                with conn.pipeline():
                    if not record:
                        conn.execute("SET TRANSACTION READ ONLY")
                    facts = release_facts(conn, c.releases)
                missing = _unavailable(c, facts)
                query, release, source = c.query, c.release, "database"
                if missing:
                    _drain(speculative)  # it read a release that is not loaded: not the run we need
                    running = None
                    sample = _sample_query(conn, settings, c, missing)
                    if sample is None:
                        raise CitationUnavailableError(_advice(c, missing))
                    query, source = sample, "kept sample of " + ", ".join(f.name for f in missing)
                    release = None if c.release in {f.name for f in missing} else release
                conn.rollback()  # nothing is held open while the query runs
            except BaseException:
                if running is not None:
                    _drain(running)
                raise
            try:
                if running is not None:
                    result, found, seconds = running.result()
                else:
                    result, found, seconds = _run_and_hash(
                        settings, query, c.as_of_mjd_tai, release, method, facts=known
                    )
            except QueryError as e:
                if missing:
                    raise CitationUnavailableError(_advice(c, missing)) from e
                raise
            return _resolved(conn, c, result, found, seconds, missing, source, record, start)
        except BaseException as e:
            if record:
                _audit_failure(settings, conn, "cite.resolve", arguments, e, start)
            raise


def _resolved(
    conn: psycopg.Connection, c: Citation, result: pa.Table, found: ResultDigest,
    seconds: float, missing: list[ReleaseFact], source: str, record: bool, start: float,
) -> Resolution:  # fmt: skip
    """Compare the re-run with the citation and record the outcome."""
    differences = _compare(c, found)
    if differences and missing:
        raise CitationUnavailableError(
            _advice(c, missing) + " (the kept sample does not hold all of its rows)"
        )
    if record:
        outcome = "verified" if not differences else "differs: " + "; ".join(differences)
        # A resolution changes nothing: its audit entry does not wait for the WAL to reach the
        # disk (the server flushes it within wal_writer_delay), one fsync less per resolution.
        _audit(conn, "cite.resolve", {"id": c.citation_id}, outcome, start, durable=False)
    return Resolution(c, not differences, found.rows, found.sha256, differences, result, source, seconds)


def dependents(settings: Settings, release: str) -> list[Citation]:
    """The citations whose query read ``release`` (``dpdb release drop`` warns about them)."""
    from dpdb.registry.citations import citing

    try:
        with connect(settings) as conn:
            return citing(conn, release)
    except psycopg.errors.UndefinedTable:  # a database from before schema v8
        return []


def drop_warning(settings: Settings, release: str) -> str | None:
    """The warning ``dpdb release drop`` prints (and audits) when citations read ``release``."""
    cited = dependents(settings, release)
    if not cited:
        return None
    ids = ", ".join(c.citation_id for c in cited[:10]) + (", ..." if len(cited) > 10 else "")
    n = len(cited)
    return (
        f"warning: {n} citation{'s' if n > 1 else ''} read{'' if n > 1 else 's'} release {release} ({ids}); "
        "once it is dropped they can no longer be verified"
    )
