"""Loads into sharded releases: each file commits on the coordinator and its shards together.

A file's load writes its manifest row on the coordinator and its rows straight
into the shards that own their partitions (binary COPY over ADBC, no detour
through the coordinator). PostgreSQL's two-phase commit ties them together:

1. each shard's transaction is prepared (``PREPARE TRANSACTION``) under a
   global id that names the coordinator database, the manifest entry and the
   file's checksum;
2. the coordinator's transaction (manifest row) commits: this is the decision;
3. each shard commits its prepared transaction (``COMMIT PREPARED``).

A crash between 1 and 3 leaves prepared transactions on shards; before loading,
:func:`recover` settles every one whose coordinator transaction has ended:
committed if its manifest row exists, rolled back if not. A load still running
holds the file's advisory lock on the coordinator, so its transactions are
left alone. So a file is loaded on all its shards or on none, and a rerun of
the same command finishes the job, as for unsharded releases.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import re
import threading
from urllib.parse import quote

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import psycopg
import pyarrow as pa
from psycopg import sql

from dpdb.errors import ShardError
from dpdb.pg import fetch_value
from dpdb.registry import manifest

from . import registry

__all__ = ["adbc_uri_of", "take_connection", "give_back", "ShardTransaction", "gid_for", "recover"]

log = logging.getLogger(__name__)

_GID = re.compile(r"^dpdb_load:(?P<db>[^:]+):(?P<load_id>\d+):(?P<sha>[0-9a-f]{64})$")


def adbc_uri_of(info: str) -> str:
    """A libpq conninfo as the URI ADBC takes (every parameter in the query string)."""
    params = psycopg.conninfo.conninfo_to_dict(info)
    return "postgresql:///?" + "&".join(f"{k}={quote(str(v), safe='/')}" for k, v in params.items())


_pool_lock = threading.Lock()
_idle: dict[str, list[adbc.Connection]] = {}


def take_connection(info: str, shard: str) -> adbc.Connection:
    """An autocommit ADBC connection to a shard, reused within the process (opening one reads the
    server's type catalog: a quarter of a second); give it back with :func:`give_back`."""
    uri = adbc_uri_of(info)
    with _pool_lock:
        idle = _idle.get(uri)
        if idle:
            return idle.pop()
    try:
        return adbc.connect(uri, autocommit=True)
    except adbc_driver_manager.Error as e:
        raise ShardError(f"shard {shard} is unreachable: {_first(e)}") from e


def give_back(info: str, conn: adbc.Connection) -> None:
    """Return a connection to the pool, out of any transaction; one that cannot say so is closed."""
    try:
        with conn.cursor() as cur:
            cur.execute("ROLLBACK")  # a no-op (with a warning) outside a transaction
    except adbc_driver_manager.Error:
        with contextlib.suppress(adbc_driver_manager.Error):
            conn.close()
        return
    with _pool_lock:
        _idle.setdefault(adbc_uri_of(info), []).append(conn)


def _close_idle() -> None:
    with _pool_lock:
        conns = [c for idle in _idle.values() for c in idle]
        _idle.clear()
    for conn in conns:
        with contextlib.suppress(adbc_driver_manager.Error):
            conn.close()


atexit.register(_close_idle)


def gid_for(database: str, load_id: int, sha256: str) -> str:
    """Global id of the prepared shard transactions of one file's load."""
    return f"dpdb_load:{database}:{load_id}:{sha256}"


class ShardTransaction:
    """The shard side of one file's load: a transaction per shard written to, prepared together.

    ``connections`` maps a shard name to an autocommit ADBC connection (the
    transaction is opened here with BEGIN, so that it can be prepared).
    """

    def __init__(self, connect: object, gid: str) -> None:
        self._connect = connect
        self.gid = gid
        self._open: dict[str, adbc.Cursor] = {}
        self._prepared: list[str] = []

    def _cursor(self, shard: str) -> adbc.Cursor:
        cur = self._open.get(shard)
        if cur is None:
            conn: adbc.Connection = self._connect(shard)  # type: ignore[operator]
            cur = conn.cursor()
            try:
                cur.execute("BEGIN")
            except adbc_driver_manager.Error as e:
                raise ShardError(f"shard {shard} is unreachable: {_first(e)}") from e
            self._open[shard] = cur
        return cur

    def ingest(self, shard: str, schema: str, table: str, data: pa.RecordBatch | pa.Table) -> int:
        """Append ``data`` to ``schema``.``table`` on ``shard`` (it routes rows to its partitions)."""
        return int(self._cursor(shard).adbc_ingest(table, data, mode="append", db_schema_name=schema))

    def execute(self, shard: str, statement: str) -> None:
        self._cursor(shard).execute(statement)

    def prepare(self) -> None:
        for shard, cur in self._open.items():
            try:
                cur.execute(f"PREPARE TRANSACTION '{self.gid}'")
            except adbc_driver_manager.Error as e:
                raise ShardError(f"shard {shard}: cannot prepare the load's transaction: {_first(e)}") from e
            self._prepared.append(shard)

    def commit(self) -> None:
        """Commit the prepared transactions (after the coordinator committed); failures are left to
        :func:`recover`, which commits them since the manifest row exists."""
        for shard in self._prepared:
            try:
                self._open[shard].execute(f"COMMIT PREPARED '{self.gid}'")
            except adbc_driver_manager.Error as e:
                log.warning("shard %s: %s not committed yet (%s); the next load does", shard, self.gid, e)
        self._open.clear()
        self._prepared.clear()

    def abort(self) -> None:
        """Roll back everything on the shards (the coordinator's transaction did not commit)."""
        for shard, cur in self._open.items():
            with contextlib.suppress(adbc_driver_manager.Error):
                cur.execute(f"ROLLBACK PREPARED '{self.gid}'" if shard in self._prepared else "ROLLBACK")
        self._open.clear()
        self._prepared.clear()


def _first(e: BaseException) -> str:
    text = str(e).strip()
    m = re.search(r"ERROR:\s+(.*)", text)
    line = m.group(1) if m else (text.splitlines() or [type(e).__name__])[0]
    return re.sub(r"\.? SQLSTATE: \w+$", "", line).strip()


def recover(conn: psycopg.Connection, infos: dict[str, str]) -> int:
    """Settle the prepared load transactions the shards ``infos`` hold for this coordinator database.

    ``conn`` is a coordinator connection (not autocommit). Returns how many were settled.
    """
    database = conn.info.dbname
    settled = 0
    for shard, info in infos.items():
        with registry.connect_shard(info, shard, autocommit=True) as remote:
            gids = [
                r[0]
                for r in remote.execute(
                    "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE %s",
                    (f"dpdb_load:{database}:%",),
                )
            ]
            for gid in gids:
                m = _GID.match(gid)
                if m is None:
                    continue
                try:
                    got = fetch_value(
                        conn, "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", (m["sha"],)
                    )
                    if not got:  # a load of this file is running: its own commit step settles it
                        continue
                    done = manifest.is_recorded(conn, int(m["load_id"]))
                    verb = "COMMIT PREPARED" if done else "ROLLBACK PREPARED"
                    try:
                        remote.execute(sql.SQL(verb + " {}").format(sql.Literal(gid)))
                        settled += 1
                        log.info("shard %s: %s %s", shard, verb.lower(), gid)
                    except psycopg.errors.UndefinedObject:
                        pass  # settled meanwhile by the load itself
                finally:
                    conn.rollback()  # releases the advisory lock
    return settled
