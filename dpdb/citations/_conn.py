"""Kept connections for citing and resolving: the bookkeeping of a citation costs a few index probes,
not a connection set-up (a new session, its version check and cold catalog caches cost more than a
small query; benchmarks/README.md, bench_cite.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from dpdb.config import Settings
from dpdb.db import connect
from dpdb.pooling import KeptConnections

__all__ = ["owner_connection", "one_round_trip"]


def _opened(settings: Settings) -> psycopg.Connection:
    conn = connect(settings)  # checks the schema version once per connection
    conn.commit()
    return conn


_KEPT = KeptConnections(4, _opened, lambda conn: conn.rollback())


@contextlib.contextmanager
def owner_connection(settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection as the database owner (it writes the registry), kept for reuse in this process.

    The caller commits what it wrote; whatever is still open on exit is rolled back.
    """
    with _KEPT.connection(settings) as conn:
        yield conn


@contextlib.contextmanager
def one_round_trip(conn: psycopg.Connection) -> Iterator[None]:
    """What the block executes goes to the server in one round trip; read the results after the block.

    psycopg's pipeline mode waits for the server where it opens a transaction (``BEGIN``, sent and
    synced on its own), at each ``commit()`` and at every fetch inside the block, and again at the
    block's end. Here the connection is in autocommit mode for the block, so a transaction is one
    the block opens and ends itself with ``BEGIN``/``COMMIT`` statements, and nothing but the block's
    end waits. A transaction left open (or failed) by the block is rolled back.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    conn.autocommit = True
    try:
        with conn.pipeline():
            yield
    finally:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        conn.autocommit = False
