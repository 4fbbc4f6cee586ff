"""The TAP service's fast query path: kept reader connections, one round trip per query.

A TAP query without ``ASOF`` or ``RELEASE`` (the common case: a cone, a light curve) runs here
instead of through :meth:`dpdb.Archive.query_arrow`, which opens a checked connection per call
and asks the registry in separate transactions. Here, on a connection of the reader login kept
open between queries (:class:`ReaderPool`: a few per login, checked once when opened, as
:func:`dpdb.readers.reader_connect` does), one pipelined round trip sends:

1. ``BEGIN ... REPEATABLE READ, READ ONLY`` (the connection is in autocommit mode: the service makes
   the transaction; repeatable read, so that the state statement and the query share one snapshot);
2. one statement that sets the reader limits and reads, in the same snapshot as the rows, the
   instant the query is evaluated at (the latest committed change, as
   :func:`dpdb.asof.latest_processing_time`) and the releases ``current``/``previous`` name then
   (the last activation, ``dpdb_registry.release_activation``); for a query on the prompt catalog
   it also sets ``dpdb.as_of`` to that instant and puts the as-of views first on the search path.
   The statement timeout is the stricter of the service's and the login's own, so the limits an
   operator gives one login (``ALTER ROLE NAME SET statement_timeout``) apply to its queries;
3. the user's statement (extended protocol: one statement, never several) as a cursor, and its
   first 10,001 rows, in binary;

4. ``ROLLBACK``. The result, the instant and the releases come from one
snapshot, so what the result records is exactly what it read (docs/architecture.md, decision 12).
A result of more than 10,000 rows is run again, whole, on a pooled ADBC connection of the same
login (state statement and query in one transaction), which reads PostgreSQL's binary COPY into
Arrow in C: no Python loop over rows.
User SQL runs only as the reader login, with the reader limits, in a read-only transaction, as on
the general path.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import queue
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa

from ..config import Settings
from ..errors import QueryError

__all__ = ["FastResult", "run_fast", "final_text", "as_of_text", "run_final", "run_final_async",
           "as_of_views", "CannotRunFast", "ReaderPool", "AsyncReaderPool"]

log = logging.getLogger(__name__)


class CannotRunFast(Exception):
    """This query needs the general path (a type ADBC cannot fetch, no recorded change yet...)."""


@dataclass(frozen=True)
class FastResult:
    table: pa.Table
    instant: float
    current: str | None
    previous: str | None


_LIMITS = (
    "set_config('statement_timeout', CASE WHEN current_setting('statement_timeout')::interval > '0' "
    "  AND current_setting('statement_timeout')::interval < %(timeout)s::int8 * interval '1 ms' "
    "  THEN current_setting('statement_timeout') ELSE %(timeout)s::text END, true) AS st, "
    "set_config('client_connection_check_interval', %(check)s, true) AS cc, "
)
_FROM = (
    "FROM (SELECT greatest((SELECT max(latest_mjd_tai) FROM dpdb_registry.prompt_latest), "
    "                      (SELECT max(activated_mjd_tai) FROM dpdb_registry.release_activation)"
    "                     )::float8 AS instant) s "
    "LEFT JOIN LATERAL (SELECT name, previous FROM dpdb_registry.release_activation "
    "                   ORDER BY activation_id DESC LIMIT 1) a ON true"
)
_STATE = f"SELECT {_LIMITS} s.instant, a.name AS current, a.previous {_FROM}"
_STATE_GENERIC = f"SELECT set_config('plan_cache_mode', 'force_generic_plan', true) AS pc, {_LIMITS} " \
    f"s.instant, a.name AS current, a.previous {_FROM}"
"""The state statement of a prepared kept shape (``_run_prepared_async``): also sets, for its transaction
only, that prepared statements run with their generic plan."""
_STATE_AS_OF = (
    f"SELECT {_LIMITS} set_config('dpdb.as_of', s.instant::text, true) AS asof, "
    f"set_config('search_path', %(path)s, true) AS sp, s.instant, a.name AS current, a.previous {_FROM} "
    "WHERE s.instant IS NOT NULL"
)


_views: dict[str, frozenset[str]] = {}


def as_of_views(settings: Settings) -> frozenset[str]:
    """The prompt tables that have an as-of view (fixed for a schema version: read once per login)."""
    from ..as_of_rewrite import AS_OF_SCHEMA

    pool = pool_for(settings)
    found = _views.get(pool.info)
    if found is not None:
        return found
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('v', 'm')",
            (AS_OF_SCHEMA,),
        ).fetchall()
    found = _views[pool.info] = frozenset(r[0] for r in rows)
    return found


class ReaderPool:
    """Kept psycopg connections of one reader login: at most ``size`` open, reused LIFO."""

    def __init__(self, settings: Settings, size: int) -> None:
        from ..readers import reader_conninfo

        self.settings = settings
        self.info = reader_conninfo(settings)
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    def _open(self) -> psycopg.Connection:
        from ..db import prepare
        from ..pg import check_compatible, raw_connect
        from ..readers import _check_reader

        prepare(self.settings)
        conn = raw_connect(self.info, autocommit=True)  # transactions: BEGIN READ ONLY ... ROLLBACK
        try:
            _check_reader(conn, self.info)
            check_compatible(conn)
            conn.prepare_threshold = None  # see _PREPARED
            conn.execute(_PREPARE_STATES)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection in no transaction; back to the pool after use (closed if it broke)."""
        self._slots.acquire()
        conn: psycopg.Connection | None = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._open()
            yield conn
        finally:
            if conn is not None:
                if conn.broken or conn.closed:
                    conn.close()
                elif conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    self._idle.put(conn)
                else:
                    try:
                        conn.execute(b"ROLLBACK")
                        self._idle.put(conn)
                    except psycopg.Error:
                        conn.close()
            self._slots.release()

    def discard_idle(self) -> None:
        """Close the idle connections (a stale one was found: the server restarted)."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def close(self) -> None:
        self.discard_idle()


_pools: dict[str, ReaderPool] = {}
_pools_lock = threading.Lock()


_recent: dict[int, tuple[Settings, ReaderPool, float]] = {}
_RECENT_S = 1.0
"""How long the pool found for one settings object is reused without working out its login again
(the connection string reads the embedded server's port file: not on every query)."""


def pool_for(settings: Settings) -> ReaderPool:
    """The process's pool of the reader login of ``settings`` (a quarter of its connection limit)."""
    import time

    from ..readers import reader_conninfo

    now = time.monotonic()
    recent = _recent.get(id(settings))
    if recent is not None and recent[0] is settings and now - recent[2] < _RECENT_S:
        return recent[1]
    info = reader_conninfo(settings)
    with _pools_lock:
        found = _pools.get(info)
        if found is None:
            # a quarter of its connections: the event loop's pool (AsyncReaderPool, most sync queries)
            # keeps up to half, so a quarter stays for ADBC and the general path
            found = _pools[info] = ReaderPool(settings, max(1, settings.reader_login_connections // 4))
        if len(_recent) > 64:
            _recent.clear()
        _recent[id(settings)] = (settings, found, now)
        return found


def close_pools() -> None:
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
        _recent.clear()
    for p in pools:
        p.close()


def run_fast(settings: Settings, text: str, *, reads_prompt: bool) -> FastResult:
    """Run one translated statement as the reader login at the latest committed change.

    ``reads_prompt``: the statement reads the prompt catalog, which is then read through its as-of
    views at that instant (so that the recorded instant replays the rows exactly).

    Raises
    ------
    CannotRunFast
        The general path must run it (see the class).
    QueryError
        The statement failed (the server's message).
    """
    final = final_text(settings, text, reads_prompt=reads_prompt)
    return run_final(settings, final, reads_prompt=reads_prompt)


def final_text(settings: Settings, text: str, *, reads_prompt: bool) -> str:
    """The statement :func:`run_fast` sends for ``text``: as-of views, partition ranges."""
    from ..pruning import prune_sql
    from ..query import cached_partition_orders

    text, path = as_of_text(settings, text, reads_prompt=reads_prompt)
    # The _healpix_29 ranges of the partitions each q3c region overlaps, as on the general path.
    return prune_sql(text, cached_partition_orders(settings, path))


def as_of_text(settings: Settings, text: str, *, reads_prompt: bool) -> tuple[str, list[str]]:
    """``text`` reading the prompt tables through their as-of views (``reads_prompt``), and the
    search path its partition orders are looked up on. Raises :class:`CannotRunFast`."""
    from ..as_of_rewrite import AS_OF_SCHEMA, prompt_references, rewrite_as_of
    from ..query import _statement

    text = _statement(text)
    if not reads_prompt:
        return text, []
    views = as_of_views(settings)
    if not views:
        raise CannotRunFast("no as-of views")
    if any(name not in views for name in prompt_references(text)):
        raise CannotRunFast("a prompt table without an as-of view: the general path explains")
    return rewrite_as_of(text, set(views)), [AS_OF_SCHEMA]


def _state(settings: Settings, reads_prompt: bool) -> tuple[str, dict[str, str]]:
    """The state statement (see the module) and its parameters."""
    from ..as_of_rewrite import AS_OF_SCHEMA

    params: dict[str, str] = {
        "timeout": str(int(settings.reader_statement_timeout * 1000)),
        "check": f"{int(settings.reader_connection_check_interval * 1000)}ms",
    }
    if not reads_prompt:
        return _STATE, params
    params["path"] = f"{AS_OF_SCHEMA}, public"
    return _STATE_AS_OF, params


def run_final(
    settings: Settings, text: str, *, reads_prompt: bool, many: bool = False, single: bool = False
) -> FastResult:
    """Run ``text`` as :func:`final_text` made it (see :func:`run_fast`). ``many``: the query asks for
    more rows than psycopg fetches (its own TOP): straight to ADBC, without trying psycopg first.
    ``single``: ``text`` is known to be one statement (:func:`one_statement`): the statements go to
    the server as one message (:func:`_message`)."""
    state_sql, params = _state(settings, reads_prompt)
    if many:
        return _run_adbc(settings, _literal_state(state_sql, params), text)
    pool = pool_for(settings)
    for attempt in (1, 2):
        try:
            if single:
                return _run_message(pool, _message(state_sql, params, text), state_sql, params, text)
            return _run(pool, state_sql, params, text)
        except _Stale as e:
            pool.discard_idle()
            if attempt == 2:
                raise QueryError(f"query failed: {e}") from e
    raise AssertionError("unreachable")


_BEGIN = b"BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
"""Repeatable read: the snapshot taken by the state statement is the query's too (read committed would
take a new one per statement, and a change committed in between would be read but not recorded)."""
_FETCH = b"FETCH FORWARD %d FROM dpdb_result"


class _Stale(Exception):
    """The kept connection had lost its server before the statement ran."""


_SMALL = 10_000
"""Results up to this many rows come through psycopg; larger ones through ADBC (binary COPY to Arrow)."""
_FETCH_SMALL = _FETCH % (_SMALL + 1)


def _run(pool: ReaderPool, state_sql: str, params: dict[str, str], text: str) -> FastResult:

    with pool.connection() as conn:
        state_cur = conn.cursor()
        cur = conn.cursor(binary=True)
        started = False
        try:
            with conn.pipeline():  # one round trip: the connection is in autocommit, the statements
                conn.execute(_BEGIN)  # make the transaction: one snapshot for the state and the rows
                state_cur.execute(_state_text(state_sql, tuple(params.items())))  # prepared when opened
                # bytes: the translated statement, one statement only (the extended protocol refuses more)
                conn.execute(b"DECLARE dpdb_result NO SCROLL CURSOR FOR " + text.encode())
                cur.execute(_FETCH_SMALL)
                conn.execute(b"ROLLBACK")
            started = True
            state = state_cur.fetchone()
            description = cur.description or []
            rows = cur.fetchall()
        except psycopg.Error as e:
            raise _failure(e, started=started, broken=conn.broken) from e
    if len(rows) > _SMALL:  # run again, all of it, where the rows come as Arrow (its own snapshot and state)
        return _run_adbc(pool.settings, _literal_state(state_sql, params), text)
    return _small_result(state, rows, description)


def one_statement(text: str) -> bool:
    """Whether ``text`` is certainly one SQL statement and nothing else: no ``;`` outside quotes, no
    comment, no dollar quote or backslash (what a lexer could read otherwise). Only such a statement
    is sent inside a multi-statement message (:func:`_message`)."""
    from sqlglot.dialects.postgres import Postgres
    from sqlglot.errors import TokenError
    from sqlglot.tokens import TokenType

    if "$" in text or "\\" in text or "--" in text or "/*" in text or "*/" in text:
        return False
    try:
        tokens = Postgres().tokenize(text)
    except (TokenError, ValueError):
        return False
    return bool(tokens) and not any(t.token_type == TokenType.SEMICOLON or t.comments for t in tokens)


_PREPARED = {_STATE: "dpdb_state", _STATE_AS_OF: "dpdb_state_as_of", _STATE_GENERIC: "dpdb_state_generic"}
"""The state statements, prepared by name on each kept connection when it opens (``_PREPARE_STATES``)
and run with ``EXECUTE``: planned once per connection. psycopg's own prepared statements are off on
these connections (``prepare_threshold = None``): psycopg deallocates every prepared statement of a
connection, these too, after a ROLLBACK once it has prepared one itself (psycopg/_preparing.py)."""
_ARGS = ("timeout", "check", "path")


def _prepare_text(state_sql: str) -> bytes:
    body = state_sql
    for i, name in enumerate(_ARGS, 1):
        body = body.replace(f"%({name})s", f"${i}")
    count = sum(f"%({name})s" in state_sql for name in _ARGS)
    return f"PREPARE {_PREPARED[state_sql]} ({', '.join(['text'] * count)}) AS {body}".encode()


_PREPARE_STATES = b";\n".join(_prepare_text(s) for s in _PREPARED)


@functools.lru_cache(maxsize=64)
def _state_text(state_sql: str, params: tuple[tuple[str, str], ...]) -> bytes:
    """``EXECUTE`` of the prepared state statement, its parameters (the service's own values) written in."""
    from psycopg import sql

    values = dict(params)
    args = ", ".join(sql.Literal(values[name]).as_string(None) for name in _ARGS if name in values)
    return f"EXECUTE {_PREPARED[state_sql]}({args})".encode()


def _missing_state(e: psycopg.Error) -> bool:
    """The connection lost its prepared state statements (someone deallocated them): open another."""
    return isinstance(e, psycopg.errors.InvalidSqlStatementName)


def _message(state_sql: str, params: dict[str, str], text: str) -> bytes:
    """The statements of :func:`_run` as one simple-query message (one packet, one reply to read): the
    transaction, the state (parameters written in), the cursor over ``text``, its first rows in
    binary, the rollback. ``text`` must be :func:`one_statement`; the server parses the message
    whole before running any of it, and a failing statement stops the rest."""
    return b"".join((_BEGIN, b";\n", _state_text(state_sql, tuple(params.items())),
                     b";\nDECLARE dpdb_result BINARY NO SCROLL CURSOR FOR ", text.encode(), b";\n",
                     _FETCH_SMALL, b";\nROLLBACK"))  # fmt: skip


def _run_message(pool: ReaderPool, message: bytes, state_sql: str, params: dict[str, str],
                 text: str) -> FastResult:  # fmt: skip
    """:func:`_run` with the statements as one message (:func:`_message`)."""

    with pool.connection() as conn:
        cur = conn.cursor()
        started = False
        try:
            cur.execute(message, prepare=False)  # no parameters: the simple-query protocol, results in order
            started = True
            state, rows, description = _message_results(cur)
        except psycopg.Error as e:
            raise _failure(e, started=started, broken=conn.broken) from e
    if len(rows) > _SMALL:
        return _run_adbc(pool.settings, _literal_state(state_sql, params), text)
    return _small_result(state, rows, description)


def _message_results(cur: psycopg.Cursor) -> tuple[tuple | None, list[tuple], list]:
    """(state row, rows, description) of a :func:`_message`'s results, in order."""
    cur.nextset()  # BEGIN -> the state
    state = cur.fetchone()
    cur.nextset()  # -> DECLARE
    cur.nextset()  # -> FETCH
    return state, cur.fetchall(), cur.description or []


def _small_result(state: tuple | None, rows: list[tuple], description: list) -> FastResult:
    from ..query import _canonical

    if state is None or state[-3] is None:
        raise CannotRunFast("no committed change has a time yet")
    table = pa.Table.from_batches([_batch(rows, description)])
    return FastResult(_canonical(table), float(state[-3]), state[-2], state[-1])


# -- the same on the event loop (psycopg's asyncio connections) ----------------------------------------


class AsyncReaderPool:
    """Kept asyncio psycopg connections of one reader login on one event loop (at most ``size`` open,
    reused LIFO): the service's sync endpoint runs small queries on its event loop without a thread."""

    def __init__(self, settings: Settings, size: int) -> None:
        import asyncio

        from ..readers import reader_conninfo

        self.settings = settings
        self.info = reader_conninfo(settings)
        self._idle: list[psycopg.AsyncConnection] = []
        self._slots = asyncio.Semaphore(size)
        self._checked = False

    async def _open(self) -> psycopg.AsyncConnection:
        import asyncio

        if not self._checked:  # the checks of ReaderPool._open, once, on a kept connection: on a thread
            await asyncio.to_thread(_check_login, self.settings)
            self._checked = True
        try:
            conn = await psycopg.AsyncConnection.connect(self.info, connect_timeout=10, autocommit=True)
        except psycopg.OperationalError as e:
            from ..errors import ServerError
            from ..pg import _redact

            raise ServerError(f"cannot connect to PostgreSQL ({_redact(self.info)}): {e}") from e
        try:
            conn.prepare_threshold = None  # see _PREPARED
            await conn.execute(_PREPARE_STATES)
        except BaseException:
            await conn.close()
            raise
        return conn

    @contextlib.asynccontextmanager
    async def connection(self):  # -> AsyncIterator[psycopg.AsyncConnection]
        """A connection in no transaction; back to the pool after use (closed if it broke)."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._open()
            try:
                yield conn
            finally:
                if conn.broken or conn.closed:
                    await conn.close()
                elif conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    self._idle.append(conn)
                else:
                    try:
                        await conn.execute(b"ROLLBACK")
                        self._idle.append(conn)
                    except psycopg.Error:
                        await conn.close()

    async def wait_free(self, seconds: float) -> bool:
        """Whether a connection is free now or within ``seconds`` (left for the next taker, so a query
        may still wait for one, as long as small queries keep them)."""
        import asyncio

        if not self._slots.locked():
            return True
        try:
            await asyncio.wait_for(self._slots.acquire(), seconds)
        except TimeoutError:
            return False
        self._slots.release()
        return True

    def discard_idle(self) -> None:
        """Drop the idle connections (a stale one was found: the server restarted)."""
        while self._idle:
            conn = self._idle.pop()
            conn.pgconn.finish()  # no await: the server is gone or the pool is dropped


def _check_login(settings: Settings) -> None:
    """The server is up, the login may not write, the schema is this code's (as ReaderPool._open), checked
    on a connection of the login's ReaderPool (no connection beyond the pools' own)."""
    from ..pg import check_compatible

    with pool_for(settings).connection() as conn:
        check_compatible(conn)


_async_pools: dict[tuple[int, str], tuple[object, AsyncReaderPool]] = {}


def async_pool_for(settings: Settings) -> AsyncReaderPool:
    """The running event loop's pool of the reader login of ``settings``."""
    import asyncio

    loop = asyncio.get_running_loop()
    info = pool_for(settings).info
    key = (id(loop), info)
    found = _async_pools.get(key)
    if found is None or found[0] is not loop:
        if len(_async_pools) > 64:  # pools of event loops that are gone (tests)
            _async_pools.clear()
        # half the login's connections (the threads' pool keeps up to a quarter: a quarter stays for
        # ADBC and the general path)
        size = max(1, settings.reader_login_connections // 2)
        found = _async_pools[key] = (loop, AsyncReaderPool(settings, size))
    return found[1]


async def close_async_pools() -> None:
    """Close the running event loop's kept connections (the service's shutdown)."""
    import asyncio

    loop = asyncio.get_running_loop()
    for key, (owner, pool) in list(_async_pools.items()):
        if owner is loop:
            del _async_pools[key]
            while pool._idle:
                await pool._idle.pop().close()


async def run_final_async(
    settings: Settings, text: str, *, reads_prompt: bool, single: bool = False,
    direct: Callable[[float, str | None, str | None, psycopg.pq.abc.PGresult], Any] | None = None,
    prepared: Any = None,
) -> Any:  # fmt: skip
    """:func:`run_final` on the event loop; None: the result has more than 10,000 rows (the caller runs it
    with :func:`run_final` ``many=True`` on a thread: ADBC).

    ``direct`` (``single`` only): called with the recorded instant, the releases ``current`` and
    ``previous`` name and the libpq result of the rows (binary) before they are loaded; what it returns,
    unless None, is returned instead of a :class:`FastResult` (:mod:`dpdb.tap.direct` writes the
    document from the result's bytes).

    ``prepared`` (a :class:`dpdb.tap.shapes.Prepared` of ``text``; ``single`` only, not for the prompt
    catalog): ``text`` runs as a statement prepared on the connection and executed with a generic plan,
    when that plan does what the planner does for ``text`` itself (:func:`_run_prepared_async`)."""
    state_sql, params = _state(settings, reads_prompt)
    pool = async_pool_for(settings)
    for attempt in (1, 2):
        try:
            if prepared is not None and single and not reads_prompt and _USE_PREPARED:
                done = await _run_prepared_async(pool, state_sql, params, prepared, direct)
                if done is not _UNPREPARED:
                    return done
            if single:
                return await _run_message_async(pool, _message(state_sql, params, text), direct)
            return await _run_async(pool, state_sql, params, text)
        except _Stale as e:
            pool.discard_idle()
            if attempt == 2:
                raise QueryError(f"query failed: {e}") from e
    raise AssertionError("unreachable")


async def _run_async(
    pool: AsyncReaderPool, state_sql: str, params: dict[str, str], text: str
) -> FastResult | None:

    async with pool.connection() as conn:
        state_cur = conn.cursor()
        cur = conn.cursor(binary=True)
        started = False
        try:
            async with conn.pipeline():  # as _run: one round trip, one snapshot, one statement
                await conn.execute(_BEGIN)
                await state_cur.execute(_state_text(state_sql, tuple(params.items())))
                await conn.execute(b"DECLARE dpdb_result NO SCROLL CURSOR FOR " + text.encode())
                await cur.execute(_FETCH_SMALL)
                await conn.execute(b"ROLLBACK")
            started = True
            state = await state_cur.fetchone()
            description = cur.description or []
            rows = await cur.fetchall()
        except psycopg.Error as e:
            raise _failure(e, started=started, broken=conn.broken) from e
    if len(rows) > _SMALL:
        return None
    return _small_result(state, rows, description)


async def _run_message_async(pool: AsyncReaderPool, message: bytes, direct: Any = None) -> Any:

    async with pool.connection() as conn:
        cur = conn.cursor()
        started = False
        try:
            await cur.execute(message, prepare=False)  # as _run_message; the results are all read here
            started = True
            cur.nextset()
            state = await cur.fetchone()
            cur.nextset()
            cur.nextset()
            made = _direct_document(direct, state, cur)
            if made is not None:
                return made
            rows, description = await cur.fetchall(), cur.description or []
        except psycopg.Error as e:
            raise _failure(e, started=started, broken=conn.broken) from e
    if len(rows) > _SMALL:
        return None
    return _small_result(state, rows, description)


def _direct_document(direct: Any, state: tuple | None, cur: Any) -> Any:
    """What ``direct`` (:func:`run_final_async`) makes of the result on ``cur``, or None (no writer, no
    recorded instant, or a result it does not take)."""
    if direct is None or state is None or state[-3] is None:
        return None
    return direct(float(state[-3]), state[-2], state[-1], cur.pgresult)


# -- kept shapes as prepared statements with a generic plan -------------------------------------------
#
# PostgreSQL plans a cone in ~1.8 ms (q3c's 100 index conditions) and runs it in ~0.3 ms. A kept shape's
# statement differs from query to query only in its slots' numbers (its partition ranges are written in:
# they are part of the key, so pruning stays plan-time pruning), so it is prepared once per connection
# with the slots as parameters and executed with a generic plan: planned once, not per query. A generic
# plan is planned without the values and may be worse than a plan made for them (the planner cannot see
# how few rows a cone's ranges select), so the first time a statement is prepared (per login) its
# generic plan is compared with the plan PostgreSQL makes for the values: only if both use the same
# nodes on the same tables and indexes is it executed with the generic plan; otherwise the shape runs as
# before (``_run_message_async``). PostgreSQL itself replans a prepared statement whose tables or views
# changed (a release activation, DDL); if executing it fails because what it read is gone, it is
# deallocated and the query runs the other way.

_USE_PREPARED = True
"""Off: kept shapes are planned per query (measurements)."""
_PREPARED_MAX = 64
"""Prepared shape statements kept per connection (least recently used deallocated)."""
_UNPREPARED = object()
"""What :func:`_run_prepared_async` returns when the query must run the other way."""
_REPREPARE = frozenset({"26000", "0A000", "42P01", "42703", "42883", "3F000"})
"""SQLSTATEs of an EXECUTE whose statement is gone or no longer fits what it reads (invalid statement
name, cached plan must not change result type, undefined table/column/function, invalid schema)."""
_generic_ok: OrderedDict[tuple[str, str, tuple[str, ...]], bool] = OrderedDict()
"""(login, text, types) -> whether its generic plan is the planner's plan for the values (see above)."""
_names: weakref.WeakKeyDictionary[Any, OrderedDict[tuple[str, tuple[str, ...]], str]] = (
    weakref.WeakKeyDictionary()
)
"""Per connection: (text, types) -> the name it is prepared under."""
_counter = itertools.count(1)


def _prepare_sql(name: str, prepared: Any) -> bytes:
    """``PREPARE``: the statement under a row limit as the message's ``FETCH`` (one more row than a
    small result: a larger result is run again through ADBC)."""
    types = ", ".join(prepared.types)
    return (f"PREPARE {name} ({types}) AS SELECT * FROM ({prepared.text}) dpdb_prepared "
            f"LIMIT {_SMALL + 1}").encode()  # fmt: skip


def _execute_sql(name: str, prepared: Any) -> bytes:
    return f"EXECUTE {name}({', '.join(prepared.args)})".encode()


def _plan_nodes(plan: dict) -> list[tuple]:
    """The nodes of an ``EXPLAIN (FORMAT JSON)`` plan: type, table, index, join, scan direction, keys."""
    keys = ("Node Type", "Relation Name", "Index Name", "Join Type", "Scan Direction", "Parent Relationship")
    out = [(*(plan.get(k) for k in keys), len(plan.get("Sort Key") or ()), len(plan.get("Group Key") or ()))]
    for child in plan.get("Plans", []):
        out += _plan_nodes(child)
    return out


async def _same_plans(conn: psycopg.AsyncConnection, name: str, prepared: Any, state: bytes) -> bool:
    """Whether the generic plan of the prepared ``name`` uses the nodes PostgreSQL plans for its values
    (each planned in the query's transaction, under the reader limits of the ``state`` statement)."""
    plans = []
    for mode in ("force_generic_plan", "force_custom_plan"):
        await conn.execute(_BEGIN)
        try:
            await conn.execute(state)
            await conn.execute(f"SET LOCAL plan_cache_mode = {mode}".encode())
            cur = await conn.execute(b"EXPLAIN (FORMAT JSON, COSTS OFF) " + _execute_sql(name, prepared))
            row = await cur.fetchone()
        finally:
            await conn.execute(b"ROLLBACK")
        assert row is not None  # EXPLAIN gives one row
        plans.append(_plan_nodes(row[0][0]["Plan"]))
    return plans[0] == plans[1]


async def _run_prepared_async(
    pool: AsyncReaderPool, state_sql: str, params: dict[str, str], prepared: Any, direct: Any
) -> Any:
    """The query of ``prepared`` as :func:`_run_message_async` runs its text (the same transaction, state
    statement and limits; rows in binary), executed as a prepared statement with a generic plan; or
    ``_UNPREPARED`` (the caller runs the text)."""
    key = (prepared.text, prepared.types)
    judged = (pool.info, *key)
    if _generic_ok.get(judged) is False:
        return _UNPREPARED
    async with pool.connection() as conn:
        names = _names.setdefault(conn, OrderedDict())
        kept = names.get(key)
        new = kept is None
        name = f"dpdb_shape_{next(_counter)}" if kept is None else kept
        started = False
        try:
            if new:
                if len(names) >= _PREPARED_MAX:
                    await conn.execute(f"DEALLOCATE {names.popitem(last=False)[1]}".encode())
                await conn.execute(_prepare_sql(name, prepared))
                names[key] = name
                if judged not in _generic_ok:
                    checked_under = _state_text(state_sql, tuple(params.items()))
                    ok = await _same_plans(conn, name, prepared, checked_under)
                    _generic_ok[judged] = ok
                    while len(_generic_ok) > 4096:
                        _generic_ok.popitem(last=False)
                    if not ok:
                        log.info("TAP shape planned per query (its generic plan differs): %s", prepared.text)
                        del names[key]
                        await conn.execute(f"DEALLOCATE {name}".encode())
                        return _UNPREPARED
            state_cur = conn.cursor()
            cur = conn.cursor(binary=True)
            async with conn.pipeline():  # one round trip, one snapshot (as _message)
                await conn.execute(_BEGIN)
                await state_cur.execute(_state_text(_STATE_GENERIC, tuple(params.items())))
                await cur.execute(_execute_sql(name, prepared))
                await conn.execute(b"ROLLBACK")
            started = True
            log.debug("TAP kept shape executed as %s", name)
            state = await state_cur.fetchone()
            made = _direct_document(direct, state, cur)
            if made is not None:
                return made
            rows, description = await cur.fetchall(), cur.description or []
        except psycopg.Error as e:
            if not isinstance(e, psycopg.OperationalError) and e.sqlstate in _REPREPARE:
                names.pop(key, None)
                _generic_ok.pop(judged, None)  # what it reads changed: its plans are compared again
                log.info("TAP prepared shape statement dropped (%s): %s", e.sqlstate, prepared.text)
                with contextlib.suppress(psycopg.Error):
                    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        await conn.execute(b"ROLLBACK")
                    await conn.execute(f"DEALLOCATE {name}".encode())
                return _UNPREPARED
            raise _failure(e, started=started, broken=conn.broken) from e
    if len(rows) > _SMALL:
        return None
    return _small_result(state, rows, description)


def _literal_state(state_sql: str, params: dict[str, str]) -> str:
    """The state statement with its parameters written in (the service's own values, quoted)."""
    from psycopg import sql

    for name, value in params.items():
        state_sql = state_sql.replace(f"%({name})s", sql.Literal(value).as_string(None))
    return state_sql


def _run_adbc(settings: Settings, state_text: str, text: str) -> FastResult:
    """A large result through a pooled ADBC connection of the reader login (PostgreSQL's binary COPY
    read into Arrow by the driver: no Python per row), state read in the same transaction."""
    import adbc_driver_manager

    from ..query import _canonical, _normalize_adbc, _server_message
    from ..readers import reader_adbc_connection

    try:
        # autocommit: the transaction is opened here, so that the state statement's settings (limits,
        # the as-of instant) and its snapshot hold for the query; the pool rolls it back
        with reader_adbc_connection(settings) as aconn, aconn.cursor() as cur:
            cur.execute(_BEGIN.decode())
            cur.execute(state_text)
            state = cur.fetchone()
            # A newline so that a trailing -- comment does not swallow ADBC's COPY ( ... ) wrapper.
            cur.execute(text + "\n")
            table = cur.fetch_arrow_table()
    except adbc_driver_manager.Error as e:
        raise QueryError(f"query failed: {_server_message(str(e))}") from e
    if state is None or state[-3] is None:
        raise CannotRunFast("no committed change has a time yet")
    return FastResult(_canonical(_normalize_adbc(table)), float(state[-3]), state[-2], state[-1])


def _failure(e: psycopg.Error, *, started: bool, broken: bool) -> Exception:
    """What a failed run raises: :class:`_Stale` (open another connection and retry) when the kept
    connection died before the statements were sent or lost its prepared state statements, else the
    user's :class:`QueryError` with the server's message."""
    from ..query import _server_message

    if isinstance(e, psycopg.OperationalError) and not started and broken:
        return _Stale(str(e))
    if not isinstance(e, psycopg.OperationalError) and _missing_state(e):
        return _Stale(str(e))
    return QueryError(f"query failed: {_server_message(_primary(e))}")


def _primary(e: psycopg.Error) -> str:
    primary = e.diag.message_primary if isinstance(e, psycopg.errors.DatabaseError) else None
    return primary or str(e)


def _batch(rows: list[tuple], description: list) -> pa.RecordBatch:
    """Rows (psycopg tuples) as an Arrow batch, column by column (C-level conversions)."""
    from ..query import _arrow_column

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in description]
    arrays = [_arrow_column(values, d.type_code) for values, d in zip(columns, description, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, names=[d.name for d in description])
