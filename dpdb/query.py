"""Queries: one read-only SQL statement, at present or as of a past instant, in a release, as Arrow.

The statement runs in a ``READ ONLY`` transaction that is always rolled back.
Time travel (DPDD §2.5) uses the session form of ``sql/as_of.sql``: the
transaction sets ``dpdb.as_of`` (MJD TAI) and puts schema ``prompt_as_of``
(views of the prompt tables as of that instant) first on the search path, and
schema-qualified references ``prompt.<table>`` in the SQL text are rewritten to
``prompt_as_of.<table>``. Results come back through ADBC (Arrow directly), or
through psycopg for what ADBC cannot fetch (``SHOW``, ``EXPLAIN``, types without
a binary form such as pg_sphere's); column names get their canonical camelCase
spelling from the schema.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import adbc_driver_manager
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from dpdb.model.felis import latest_version
from dpdb.model.table import canonical_names

from .access import reader_limits
from .as_of_rewrite import AS_OF_SCHEMA, prompt_references, rewrite_as_of
from .asof import AsOf, as_of_against, parse_as_of, resolve_as_of
from .config import Settings
from .errors import QueryError, ReleaseStateError
from .pruning import ObjectPosition, OrderOf, prune_sql
from .query_output import FILE_FORMATS, FORMATS, write_result
from .readers import reader_adbc_connection, reader_connect, reader_conninfo
from .registry.activations import ALIASES, named_now, resolve_alias
from .registry.catalogs import Catalog, all_catalogs, present_catalog_names, queue_all_catalogs
from .registry.prompt_log import queue_latest_processing_time
from .shards.aggregate import rewrite_aggregate

__all__ = [
    "FORMATS",
    "FILE_FORMATS",
    "AS_OF_SCHEMA",
    "QueryError",
    "run_query",
    "rewrite_as_of",
    "write_result",
    "partition_orders",
    "cached_partition_orders",
    "query_text",
    "QueryFacts",
    "queue_query_facts",
]

log = logging.getLogger(__name__)


# -- running ---------------------------------------------------------------------------------------


def run_query(
    settings: Settings,
    sql_text: str,
    *,
    as_of: float | str | None = None,
    release: str | None = None,
    provisional: bool = False,
    on_batch: Callable[[pa.RecordBatch], None] | None = None,
    before_fetch: Callable[[], None] | None = None,
    facts: Callable[[], QueryFacts] | None = None,
) -> pa.Table:
    """Run one read-only SQL statement and return its result with canonical column names.

    Parameters
    ----------
    settings
        The database to query.
    sql_text
        One SQL statement (a trailing ``;`` is allowed). It runs in a read-only
        transaction that is rolled back, so it cannot change anything.
    as_of
        Read the prompt catalog as it was at this instant (MJD TAI, e.g. from
        :func:`dpdb.timeutil.parse_instant`, or ``"now"``: the current instant,
        resolved once). An instant later than the latest processing time is
        refused unless ``provisional`` (see :mod:`dpdb.asof`); the result's
        schema metadata records the resolved instant and whether the answer is
        repeatable (``dpdb.as_of_*``). Unqualified prompt table names
        resolve to their as-of views, and ``prompt.<table>`` references are
        rewritten to ``prompt_as_of.<table>`` (see :func:`rewrite_as_of`).
        ``None`` reads the present.
    provisional
        Evaluate an instant later than the latest processing time anyway; the
        answer is labelled not yet repeatable.
    release
        Catalog whose tables unqualified names resolve to: a release schema
        (``dr1``), ``prompt``, or ``current`` / ``previous`` when they exist.
        With ``as_of``, ``current`` / ``previous`` mean the releases they named
        at that instant (``dpdb_meta.release_activation``).
    on_batch
        Called with each record batch of the result as it arrives (in smaller
        batches than otherwise, column names as PostgreSQL gives them), while
        the rest is still being fetched: a citation hashes the result this way
        (``dpdb/citations/rowset.py``).
    before_fetch
        Called right before the statement is sent, once its transaction is set up: what the
        caller must have read before the statement's snapshot is taken (a citation waits there
        for the prompt catalog's last write time, read meanwhile on another connection). May be
        called again if the statement is sent again; an exception it raises ends the query.
    facts
        Gives what the caller has read already of what the statement's rewriting needs
        (:func:`queue_query_facts`); called once the query's connection is open (it may wait for
        the caller's read there), and those reads are not made again (a citation reads them with
        its bookkeeping, in the round trip it makes anyway: dpdb/citations/cite.py).

    Returns
    -------
    pyarrow.Table
        The rows; column names that are schema columns carry their canonical
        camelCase spelling, other names (aliases, expressions) are as PostgreSQL
        returns them.

    Raises
    ------
    QueryError
        The statement is empty, not a single statement, fails, or tries to write.
    ReleaseStateError
        ``release`` names no catalog of this database.
    """
    text = _statement(sql_text)
    path: list[str] = []
    config: list[tuple[str, str]] = []
    resolved: AsOf | None = None
    if as_of is not None:
        instant, is_now = parse_as_of(as_of)
    with reader_connect(settings) as conn:
        known = facts() if facts is not None else None
        if as_of is not None:
            if known is None:
                resolved = resolve_as_of(conn, instant, provisional=provisional, now=is_now)
            else:
                resolved = as_of_against(instant, known.latest, provisional=provisional, now=is_now)
            as_of = resolved.mjd_tai
            config.append(("dpdb.as_of", _instant_text(as_of)))
            text = _as_of_statement(as_of_relations(conn) if known is None else known.relations, text)
            path.append(AS_OF_SCHEMA)
        if release is not None:
            if as_of is not None and release in ALIASES:
                release = resolve_alias(conn, release, as_of)
            _check_release(conn, release)
            release = _published(conn, release)
            path.append(release)
        if path:
            names = sql.SQL(", ").join(sql.Identifier(p) for p in [*path, "public"])
            config.append(("search_path", names.as_string(conn)))
        catalogs = None if known is None else known.catalogs
        orders = partition_orders(conn, path, as_of, catalogs)
        text = prune_sql(text, orders, object_positions(conn, path, catalogs))
        # An aggregate over a sharded table runs once per shard (dpdb/shards/aggregate.py).
        per_shard = rewrite_aggregate(conn, text, [*path, "public"])
        if per_shard is not None:
            text = per_shard
    log.info("query (%s): %s", ", ".join(f"{k}={v}" for k, v in config) or "present", text)
    try:
        table = _fetch_adbc(settings, text, config, on_batch, before_fetch)
    except _AdbcCannot as e:
        log.info("ADBC cannot fetch this result (%s); fetching it with psycopg", e)
        table = _fetch_psycopg(settings, text, config, before_fetch)
        if on_batch is not None:
            for batch in table.to_batches():
                on_batch(batch)
    table = _canonical(table)
    if resolved is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **resolved.metadata()})
    return table


def partition_orders(
    conn: psycopg.Connection, path: list[str], as_of: float | None, catalogs: Sequence[Catalog] | None = None
) -> OrderOf:
    """What :func:`dpdb.pruning.prune_sql` needs: the partition order of a table as the statement
    names it (``schema`` '' when unqualified, resolved along ``path``, the search path the statement
    runs with), or None when it is no partitioned catalog table. ``current``/``previous`` are the
    releases they name (at ``as_of``); ``prompt_as_of`` views read the prompt catalog. ``catalogs``:
    the registered catalogs, when the caller has read them."""
    aliases: dict[str, str | None] = {}

    def alias(schema: str) -> str | None:
        if schema not in aliases:
            try:
                aliases[schema] = resolve_alias(conn, schema, as_of) if as_of is not None else (
                    dict(zip(ALIASES, named_now(conn), strict=True)).get(schema))  # fmt: skip
            except ReleaseStateError:
                aliases[schema] = None
        return aliases[schema]

    return _order_of(all_catalogs(conn) if catalogs is None else list(catalogs), path, alias)


_CATALOGS: dict[tuple[str, str, str], tuple[float, list[Any]]] = {}
_CATALOGS_TTL = 60.0
_CATALOGS_LOCK = threading.Lock()


def cached_partition_orders(settings: Settings, path: list[str]) -> OrderOf:
    """:func:`partition_orders` without a round trip per query, for the TAP fast path: the catalogs
    are read at most once a minute, and ``current``/``previous`` take the finest order of the
    releases. Any order gives ranges that cover the region (never a row lost); the finest prunes
    at least as well as the release's own."""
    import time

    key = (str(settings.dsn or ""), str(settings.home), settings.database)
    cached = _CATALOGS.get(key)
    if cached is None or time.monotonic() - cached[0] > _CATALOGS_TTL:
        # One refresh at a time: concurrent queries finding the entry expired would each open a
        # connection of the reader login, past its connection limit (8 TAP clients: "too many
        # connections for role" once a minute, benchmarks/README.md).
        with _CATALOGS_LOCK:
            cached = _CATALOGS.get(key)
            if cached is None or time.monotonic() - cached[0] > _CATALOGS_TTL:
                with reader_connect(settings) as conn:
                    cached = (time.monotonic(), all_catalogs(conn))
                _CATALOGS[key] = cached
    catalogs = cached[1]
    releases = [c for c in catalogs if str(c.kind) == "release"]
    finest = max(releases, key=lambda c: c.partition_order).name if releases else None
    return _order_of(catalogs, path, lambda schema: finest)


def _order_of(catalog_list: list[Any], path: list[str], alias: Any) -> OrderOf:
    find = _catalog_finder(catalog_list, path, alias)

    def order_of(schema: str, table: str) -> int | None:
        found = find(schema, table)
        return int(found[0].partition_order) if found is not None and found[1] else None

    return order_of


def _catalog_finder(catalog_list: list[Any], path: list[str], alias: Any) -> Any:
    """(schema as written, table) -> (the catalog the name resolves to, whether the table is
    partitioned there), or None when it names no catalog table."""
    from .model.layout import layout, tables_for

    catalogs = {c.name: c for c in catalog_list}

    def catalog_of(schema: str) -> str | None:
        if schema == AS_OF_SCHEMA:
            return "prompt"
        if schema in ALIASES:
            return cast(str | None, alias(schema))
        return schema

    def find(schema: str, table: str) -> tuple[Any, bool] | None:
        try:
            lay = layout(table)
        except KeyError:
            return None
        for candidate in [schema] if schema else path:
            name = catalog_of(candidate)
            found = catalogs.get(name) if name else None
            if found is None:
                continue
            if candidate == AS_OF_SCHEMA and lay.name.lower() not in {"diaobject", "diasource",
                                                                       "diaforcedsource"}:  # fmt: skip
                continue  # no as-of view: the name resolves further along the path
            if lay.name in tables_for(str(found.kind)):
                return found, bool(lay.partitioned)
            return None
        return None

    return find


def object_positions(
    conn: psycopg.Connection, path: list[str], catalogs: Sequence[Catalog] | None = None
) -> ObjectPosition:
    """What :func:`dpdb.pruning.prune_sql` needs to prune a light curve by ``diaObjectId``: the
    DiaObject's position when the table resolves to the prompt catalog, from ``DiaObjectLast`` (one
    index probe); a DiaObject no longer there (closed without successor) from its latest version.
    ``catalogs``: the registered catalogs, when the caller has read them."""
    finder: list[Any] = []  # read on the first identifier met: most statements have none

    def position_of(schema: str, table: str, key: int) -> tuple[float, float] | None:
        if not finder:
            known = all_catalogs(conn) if catalogs is None else list(catalogs)
            finder.append(_catalog_finder(known, path, lambda schema: None))
        found = finder[0](schema, table)
        if found is None or str(found[0].kind) != "prompt":
            return None
        last, versions = (sql.Identifier(str(found[0].name), t) for t in ("diaobjectlast", "diaobject"))
        query = sql.SQL("SELECT ra, dec FROM {} WHERE diaobjectid = %s").format(last)
        row = conn.execute(query, (key,)).fetchone()
        if row is None:
            row = conn.execute(
                sql.SQL("SELECT ra, dec FROM {} WHERE diaobjectid = %s "
                        "ORDER BY validitystartmjdtai DESC LIMIT 1").format(versions), (key,)
            ).fetchone()  # fmt: skip
        if row is None or row[0] is None or row[1] is None:
            return None
        return float(row[0]), float(row[1])

    return position_of


def query_text(
    settings: Settings, sql_text: str, *, as_of: float | None = None, release: str | None = None
) -> str:
    """The SQL text :func:`run_query` runs for ``sql_text`` (as-of views, partition ranges added), for
    EXPLAIN and tests; ``as_of`` is an MJD TAI, ``release`` a catalog or ``current``/``previous``."""
    text = _statement(sql_text)
    path: list[str] = []
    with reader_connect(settings) as conn:
        if as_of is not None:
            text = _as_of_statement(as_of_relations(conn), text)
            path.append(AS_OF_SCHEMA)
        if release is not None:
            if as_of is not None and release in ALIASES:
                release = resolve_alias(conn, release, as_of)
            path.append(_published(conn, release))
        return prune_sql(text, partition_orders(conn, path, as_of), object_positions(conn, path))


def _limits(settings: Settings) -> list[tuple[str, str]]:
    """The reader limits the query's own transaction sets (whatever the login's defaults are)."""
    limits = reader_limits(settings)
    return [(k, limits[k]) for k in ("statement_timeout", "client_connection_check_interval")]


def _statement(sql_text: str) -> str:
    text = sql_text.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    if not text:
        raise QueryError("no SQL statement given")
    return text


def _instant_text(as_of: float) -> str:
    """The setting dpdb.as_of: an MJD TAI as text that ``dpdb_instant()`` reads as a number."""
    value = float(as_of)
    if not math.isfinite(value) or value < 0:
        raise QueryError(f"invalid as-of instant {as_of!r}: give an MJD TAI >= 0 or an ISO time")
    return repr(value)


def _published(conn: psycopg.Connection, release: str) -> str:
    """The schema a reader reads release ``release`` through: ``current`` or ``previous`` when it is
    one of them (readers have no rights on release schemas themselves, docs/architecture.md)."""
    if release in ("prompt", "current", "previous") or conn.execute(
        "SELECT has_schema_privilege(%s, 'USAGE')", (release,)
    ).fetchone() == (True,):
        return release
    current, previous = named_now(conn)  # from the activation history, which readers may read
    if release == current:
        return "current"
    if release == previous:
        return "previous"
    raise ReleaseStateError(
        f"release {release} is neither current nor previous, so queries cannot read it "
        "(readers see current, previous, samples and prompt)"
    )


def _check_release(conn: psycopg.Connection, release: str) -> None:
    """Refuse a release that names neither a registered catalog nor a populated current/previous."""
    aliases = [
        r[0]
        for r in conn.execute(
            "SELECT n.nspname::text FROM pg_namespace n WHERE n.nspname = ANY(%s) "
            "AND EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid)",
            (list(ALIASES),),
        )
    ]
    known = sorted(present_catalog_names(conn) + aliases)
    if release in known:
        return
    if release in ALIASES:
        raise ReleaseStateError(f"no release is {release} yet (see `dpdb release activate`)")
    raise ReleaseStateError(f"unknown release {release!r} (catalogs: {', '.join(known) or 'none'})")


@dataclass(frozen=True)
class QueryFacts:
    """What :func:`run_query` reads on its own connection before it can rewrite a statement, when a
    caller has read it already (:func:`queue_query_facts`)."""

    latest: float | None  # the latest change an as-of answer can see (dpdb/asof.py)
    relations: Sequence[tuple[str, str]]  # (schema, name) of the prompt tables and the as-of views
    catalogs: Sequence[Catalog]  # every registered catalog


_AS_OF_RELATIONS_SQL = (
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname IN ('prompt', %s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
)


def as_of_relations(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(schema, name) of the prompt catalog's relations and of the as-of views."""
    return conn.execute(_AS_OF_RELATIONS_SQL, (AS_OF_SCHEMA,)).fetchall()


def queue_query_facts(conn: psycopg.Connection) -> Callable[[], QueryFacts]:
    """Queue, in the caller's pipeline, the reads :func:`run_query` makes before it rewrites a
    statement; the returned function gives them once the pipeline has synced. As the database
    owner (the registry's own tables): a citation's bookkeeping reads them so, and hands them to
    the query (``facts``), which then skips those reads on its new connection."""
    relations = conn.execute(_AS_OF_RELATIONS_SQL, (AS_OF_SCHEMA,))
    latest = queue_latest_processing_time(conn)
    catalogs = queue_all_catalogs(conn)
    return lambda: QueryFacts(latest(), relations.fetchall(), catalogs())


def _as_of_statement(rows: Sequence[tuple[str, str]], text: str) -> str:
    """``text`` with its prompt tables read through the as-of views (``rows``: :func:`as_of_relations`);
    refuse prompt tables without one."""
    views = {name for schema, name in rows if schema == AS_OF_SCHEMA}
    if not views:
        raise QueryError(
            f"this database has no time travel views (schema {AS_OF_SCHEMA}, installed with the "
            "prompt catalog); run `dpdb db migrate`"
        )
    tables = {name for schema, name in rows if schema == "prompt"}
    for name in prompt_references(text):
        if name in tables and name not in views:
            raise QueryError(
                f"prompt.{name} cannot be read as of an instant; time travel covers "
                f"{', '.join(sorted(views))} (or query without --as-of)"
            )
    return rewrite_as_of(text, views)


class _AdbcCannot(Exception):
    """The statement is fine but ADBC cannot fetch its result (not a COPY-able query, no binary type)."""


def _first_line(message: str) -> str:
    """The server's message out of a driver error: the text after ``ERROR:``, first line."""
    found = re.search(r"ERROR:\s+(.*)", message)
    line = found.group(1) if found else (message.strip().splitlines() or [""])[0]
    return re.sub(r"\.? SQLSTATE: \w+$", "", line).strip()


def _server_message(message: str) -> str:
    first = _first_line(message)
    if "cannot insert multiple commands" in first:
        return "the SQL holds several statements; dpdb query runs one"
    shard = re.search(r'could not connect to server "dpdb_shard_(\w+)"', first)
    if shard:  # postgres_fdw names the foreign server; say which shard, and that nothing partial came back
        return f"shard {shard.group(1)} is unreachable; this query needs its partitions ({first})"
    return first


_Sink = Callable[[pa.RecordBatch], None] | None
_Hook = Callable[[], None] | None


def _fetch_adbc(
    settings: Settings, text: str, config: list[tuple[str, str]], on_batch: _Sink = None,
    before_fetch: _Hook = None,
) -> pa.Table:  # fmt: skip
    """Fetch through a pooled ADBC connection; once more on a new one if the pooled one was dead
    (a server restart, or a session ended by the server while it waited in the pool)."""
    try:
        return _fetch_adbc_once(settings, text, config, on_batch, before_fetch)
    except _StaleConnection:
        pass
    try:
        return _fetch_adbc_once(settings, text, config, on_batch, before_fetch)
    except _StaleConnection as e:
        raise QueryError(f"query failed: {_server_message(str(e.__cause__))}") from e.__cause__


class _StaleConnection(Exception):
    """The pooled connection had lost its server before the statement ran."""


STREAM_BATCH_BYTES = 4 << 20
"""Batch size (ADBC's hint; the default is 16 MiB) when the result's batches are handed on as they
arrive: a 1M-row result comes in about twenty, each costing little (1 MiB batches cost 0.1 s more
CPU per million rows, benchmarks/README.md)."""


def _fetch_adbc_once(
    settings: Settings, text: str, config: list[tuple[str, str]], on_batch: _Sink = None,
    before_fetch: _Hook = None,
) -> pa.Table:  # fmt: skip
    fresh = True
    try:
        # autocommit: the transaction is the one opened here, and the pool rolls it back
        with reader_adbc_connection(settings) as aconn, aconn.cursor() as cur:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            fresh = False  # the connection works: errors from here on are the statement's
            for name, value in [*_limits(settings), *config]:
                cur.execute("SELECT set_config($1, $2, true)", (name, value))
                cur.fetchall()
            if on_batch is not None:
                cur.adbc_statement.set_options(
                    **{"adbc.postgresql.batch_size_hint_bytes": str(STREAM_BATCH_BYTES)}
                )
            if before_fetch is not None:
                before_fetch()
            # A newline so that a trailing -- comment does not swallow ADBC's COPY ( ... ) wrapper.
            cur.execute(text + "\n")
            if on_batch is None:
                table = cur.fetch_arrow_table()
            else:
                return _stream(cur.fetch_record_batch(), on_batch)
    except adbc_driver_manager.Error as e:
        message = str(e)
        if fresh and isinstance(e, adbc_driver_manager.OperationalError):
            raise _StaleConnection() from e
        if "no binary output function" in message or (
            "could not begin COPY" in message and getattr(e, "sqlstate", None) == "42601"
        ):
            raise _AdbcCannot(_first_line(message)) from e
        raise QueryError(f"query failed: {_server_message(message)}") from e
    return _normalize_adbc(table)


def _stream(reader: pa.RecordBatchReader, on_batch: Callable[[pa.RecordBatch], None]) -> pa.Table:
    """The result, each batch handed to ``on_batch`` as soon as it is read (normalized as the whole
    table would be)."""
    batches = []
    try:
        for raw in reader:
            batch = _normalize_adbc(pa.Table.from_batches([raw])).combine_chunks().to_batches()
            for b in batch:
                on_batch(b)
            batches.extend(batch)
    except (pa.ArrowException, OSError) as e:  # the driver's error, read through pyarrow's reader
        raise QueryError(f"query failed: {_server_message(str(e))}") from e
    # the batches' own schema (normalized); without rows, the reader's
    schema = batches[0].schema if batches else _normalize_adbc(reader.schema.empty_table()).schema
    return pa.Table.from_batches(batches, schema)


def _normalize_adbc(table: pa.Table) -> pa.Table:
    """Types every output format can write, as the psycopg path gives them: numeric as float64, uuid
    as text, other extension types (json, opaque) as their storage, intervals as durations (a month
    is 30 days, as psycopg has it); no field metadata."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        meta = field.metadata or {}
        typname = meta.get(b"ADBC:postgresql:typname") or meta.get(b"POSTGRESQL:type")
        if isinstance(field.type, pa.UuidType):
            column = pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())
        elif isinstance(field.type, pa.BaseExtensionType):
            column = pa.chunked_array([c.storage for c in column.chunks], field.type.storage_type)
        elif pa.types.is_interval(field.type):
            micros = [
                None if v is None else (v.months * 30 + v.days) * 86_400_000_000 + v.nanoseconds // 1000
                for v in column.to_pylist()
            ]
            column = pa.array(micros, pa.duration("us"))
        if typname == b"numeric":
            column = pc.cast(column, pa.float64())
        elif pa.types.is_list(column.type):  # without the driver's metadata on the element field
            column = column.cast(pa.list_(column.type.value_type))
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


# psycopg (text results) -> Arrow, by type OID; anything else becomes text.
_ARROW_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(), 26: pa.int64(),
    700: pa.float32(), 701: pa.float64(), 1700: pa.float64(),
    18: pa.string(), 19: pa.string(), 25: pa.string(), 1042: pa.string(), 1043: pa.string(),
    17: pa.binary(), 1082: pa.date32(), 1083: pa.time64("us"), 1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"), 1186: pa.duration("us"),
    1000: pa.list_(pa.bool_()), 1005: pa.list_(pa.int16()), 1007: pa.list_(pa.int32()),
    1016: pa.list_(pa.int64()), 1021: pa.list_(pa.float32()), 1022: pa.list_(pa.float64()),
    1009: pa.list_(pa.string()), 1015: pa.list_(pa.string()),
}  # fmt: skip


def _fetch_psycopg(
    settings: Settings, text: str, config: list[tuple[str, str]], before_fetch: _Hook = None
) -> pa.Table:
    try:
        with psycopg.connect(reader_conninfo(settings)) as conn:
            try:
                conn.execute("SET TRANSACTION READ ONLY")
                for name, value in [*_limits(settings), *config]:
                    conn.execute("SELECT set_config(%s, %s, true)", (name, value))
                if before_fetch is not None:
                    before_fetch()
                cur = conn.cursor()
                cur.execute(
                    text.encode(), prepare=True
                )  # prepared: one statement only (bytes: not a LiteralString)
                description = cur.description or []
                rows = cur.fetchall() if description else []
            finally:
                conn.rollback()
    except psycopg.Error as e:
        primary = e.diag.message_primary if isinstance(e, psycopg.errors.DatabaseError) else None
        raise QueryError(f"query failed: {_server_message(primary or str(e))}") from e
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in description]
    arrays = [_arrow_column(values, d.type_code) for values, d in zip(columns, description, strict=True)]
    return pa.Table.from_arrays(arrays, names=[d.name for d in description])


def _arrow_column(values: tuple[Any, ...], oid: int) -> pa.Array:
    target = _ARROW_TYPES.get(oid)
    if oid == 1700:
        values = tuple(None if v is None else float(v) for v in values)
    if target is not None:
        try:
            return pa.array(values, target)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
    if oid in (114, 3802):  # json, jsonb
        return pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
    return pa.array([None if v is None else str(v) for v in values], pa.string())


# -- canonical names and column descriptions -------------------------------------------------------


@functools.cache
def _canonical_columns() -> dict[str, str]:
    """Lower-case column name -> canonical name, over every table of the newest schema."""
    names: dict[str, str] = {}
    for columns in canonical_names(latest_version()).values():
        for lower, canonical in columns.items():
            names.setdefault(lower, canonical)
    return names


def _canonical(table: pa.Table) -> pa.Table:
    names = _canonical_columns()
    return table.rename_columns([names.get(n, n) for n in table.column_names])
