"""Every change to the prompt catalog: one writer at a time, time only moving forward, all or nothing.

Visit ingests and daytime relinks are :class:`PromptChange` subclasses: each
runs in one transaction on an ADBC connection, holding the prompt catalog's
advisory lock, at a processing time later than every change committed so far (release
activations included: one timeline, so an answer as of a past instant never changes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import adbc_driver_postgresql.dbapi as adbc

from dpdb.errors import ValidationError
from dpdb.named_sql import named_blocks
from dpdb.registry.prompt_log import LATEST_TIME_SQL, WRITER_LOCK
from dpdb.timeutil import iso_utc, now_mjd_tai

__all__ = ["LOCK", "PromptChange"]

LOCK = WRITER_LOCK
"""Transaction advisory lock (hashtext) held by visit ingests and relinks (a citation takes it shared
while it stores an instant the catalog's writes have not passed yet, dpdb/citations/cite.py)."""


class PromptChange:
    """A change to the prompt catalog, committed whole or not at all."""

    def __init__(self, aconn: adbc.Connection) -> None:
        self.aconn = aconn

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the lock for the block and commit at its end; roll back on any exception."""
        try:
            with self.aconn.cursor() as cur:
                self.cur = cur
                # Compiling these short statements costs more than it saves.
                self._execute("SET LOCAL jit = off")
                self._query("SELECT pg_advisory_xact_lock(hashtext($1))", (LOCK,))
                yield
                self.aconn.commit()
        except BaseException:
            self.aconn.rollback()
            raise

    def processing_time(self, given: float | None, what: str) -> float:
        """``given`` (default: now), refused unless later than every change committed so far (visits,
        relinks and release activations: one timeline, docs/architecture.md, decision 14) and than every
        instant a citation of the prompt catalog is pinned to."""
        t = given if given is not None else now_mjd_tai()
        held = self._query(LATEST_TIME_SQL)[0][0]
        if held is not None and t <= held:
            raise ValidationError(
                f"{what}: processing time {iso_utc(t)} is not later than {iso_utc(held)}, the latest "
                "change already committed (a visit, a daytime relink or a release activation); "
                "time only moves forward"
            )
        cited = self._query(named_blocks("prompt_ingest.sql")["cited_time"])[0][0]
        if cited is not None and t <= cited:
            raise ValidationError(
                f"{what}: processing time {iso_utc(t)} is not later than {iso_utc(cited)}, an instant "
                "a citation of the prompt catalog is pinned to (its result must not change)"
            )
        return t

    def _execute(self, statement: str, parameters: tuple | None = None) -> int:
        """Run one statement; the rows it affected."""
        self.cur.execute(statement, parameters=parameters)
        return max(self.cur.rowcount, 0)

    def _query(self, statement: str, parameters: tuple | None = None) -> list[tuple]:
        self.cur.execute(statement, parameters=parameters)
        return self.cur.fetchall()

    def _execute_all(self, statements: list[str], parameters: tuple | None = None) -> int:
        """Run statements in order; the rows affected by the last one."""
        rows = 0
        for statement in statements:
            rows = self._execute(statement, parameters)
        return rows
