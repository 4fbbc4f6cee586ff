"""The TAP service's fast query path: kept reader connections, two statements per query, Arrow results.

A TAP query without ``ASOF`` or ``RELEASE`` (the common case: a cone, a light curve) runs here
instead of through :meth:`dpdb.Archive.query_arrow`, which opens a checked psycopg connection per
call and asks the registry in separate transactions. Here, on a pooled ADBC connection of the
reader login (:func:`dpdb.readers.reader_adbc_connection`: kept open between queries, checked once
per process and login):

1. one statement makes the transaction read-only, sets the reader limits, and reads in the same
   snapshot the instant the query is evaluated at (the latest committed change, as
   :func:`dpdb.asof.latest_processing_time`) and the releases ``current``/``previous`` name then
   (the last activation, ``dpdb_registry.release_activation``); for a query on the prompt catalog
   it also sets ``dpdb.as_of`` to that instant and puts the as-of views first on the search path;
   The statement timeout is the stricter of the service's and the login's own, so the limits an
   operator gives one login (``ALTER ROLE NAME SET statement_timeout``) apply to its queries;
2. the user's statement, fetched as Arrow by the driver (PostgreSQL's binary COPY, no Python
   per-row loop);

then the transaction is rolled back. The result, the instant and the releases come from one
snapshot, so what the result records is exactly what it read (docs/architecture.md, decision 12).
User SQL runs only as the reader login, with the reader limits (statement timeout), in a
read-only transaction, as on the general path.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import adbc_driver_manager
import pyarrow as pa

from ..config import Settings
from ..errors import QueryError

__all__ = ["FastResult", "run_fast", "CannotRunFast"]

log = logging.getLogger(__name__)


class CannotRunFast(Exception):
    """This query needs the general path (a type ADBC cannot fetch, no recorded change yet...)."""


@dataclass(frozen=True)
class FastResult:
    table: pa.Table
    instant: float
    current: str | None
    previous: str | None


_STATE = (
    "SELECT set_config('transaction_read_only', 'on', true) AS ro, "
    "set_config('statement_timeout', (SELECT CASE WHEN setting::int8 > 0 AND setting::int8 < $1::int8 "
    "  THEN setting ELSE $1 END FROM pg_settings WHERE name = 'statement_timeout'), true) AS st, "
    "set_config('client_connection_check_interval', $2, true) AS cc, "
    "s.instant, a.name AS current, a.previous "
    "FROM (SELECT greatest((SELECT max(latest_mjd_tai) FROM dpdb_registry.prompt_latest), "
    "                      (SELECT max(activated_mjd_tai) FROM dpdb_registry.release_activation)"
    "                     )::float8 AS instant) s "
    "LEFT JOIN LATERAL (SELECT name, previous FROM dpdb_registry.release_activation "
    "                   ORDER BY activation_id DESC LIMIT 1) a ON true"
)

_STATE_AS_OF = (
    "SELECT set_config('transaction_read_only', 'on', true) AS ro, "
    "set_config('statement_timeout', (SELECT CASE WHEN setting::int8 > 0 AND setting::int8 < $1::int8 "
    "  THEN setting ELSE $1 END FROM pg_settings WHERE name = 'statement_timeout'), true) AS st, "
    "set_config('client_connection_check_interval', $2, true) AS cc, "
    "set_config('dpdb.as_of', s.instant::text, true) AS asof, "
    "set_config('search_path', $3, true) AS sp, "
    "s.instant, a.name AS current, a.previous "
    "FROM (SELECT greatest((SELECT max(latest_mjd_tai) FROM dpdb_registry.prompt_latest), "
    "                      (SELECT max(activated_mjd_tai) FROM dpdb_registry.release_activation)"
    "                     )::float8 AS instant) s "
    "LEFT JOIN LATERAL (SELECT name, previous FROM dpdb_registry.release_activation "
    "                   ORDER BY activation_id DESC LIMIT 1) a ON true "
    "WHERE s.instant IS NOT NULL"
)


@functools.cache
def _as_of_views(settings_key: str, settings: Settings) -> frozenset[str]:
    """The prompt tables that have an as-of view (fixed for a schema version: read once)."""
    from ..as_of_rewrite import AS_OF_SCHEMA
    from ..readers import reader_connect

    with reader_connect(settings) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('v', 'm')",
            (AS_OF_SCHEMA,),
        ).fetchall()
    return frozenset(r[0] for r in rows)


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
    from ..as_of_rewrite import AS_OF_SCHEMA, prompt_references, rewrite_as_of
    from ..query import _canonical, _limits, _normalize_adbc, _server_message, _statement
    from ..readers import reader_adbc_connection, reader_conninfo

    text = _statement(text)
    # the stricter of the service's statement timeout and the login's own (ALTER ROLE ... SET)
    limits = [
        str(int(settings.reader_statement_timeout * 1000)),
        dict(_limits(settings))["client_connection_check_interval"],
    ]
    if reads_prompt:
        views = _as_of_views(reader_conninfo(settings), settings)
        if not views:
            raise CannotRunFast("no as-of views")
        if any(name not in views for name in prompt_references(text)):
            raise CannotRunFast("a prompt table without an as-of view: the general path explains")
        text = rewrite_as_of(text, set(views))
        state_sql, state_params = _STATE_AS_OF, (*limits, f"{AS_OF_SCHEMA}, public")
    else:
        state_sql, state_params = _STATE, tuple(limits)
    fresh = True
    try:
        with reader_adbc_connection(settings) as aconn:
            try:
                with aconn.cursor() as cur:
                    cur.execute(state_sql, state_params)
                    state = cur.fetchone()
                    fresh = False
                    if state is None or state[-3] is None:
                        raise CannotRunFast("no committed change has a time yet")
                    instant, current, previous = state[-3], state[-2], state[-1]
                    # A newline so that a trailing -- comment does not swallow ADBC's COPY ( ... ) wrapper.
                    cur.execute(text + "\n")
                    table = cur.fetch_arrow_table()
            finally:
                aconn.rollback()
    except adbc_driver_manager.Error as e:
        message = str(e)
        if fresh and isinstance(e, adbc_driver_manager.OperationalError):
            raise CannotRunFast("the pooled connection was stale") from e
        if "no binary output function" in message or "could not begin COPY" in message:
            raise CannotRunFast(message) from e
        raise QueryError(f"query failed: {_server_message(message)}") from e
    return FastResult(_canonical(_normalize_adbc(table)), float(instant), current, previous)
