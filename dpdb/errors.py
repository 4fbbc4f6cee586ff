"""The domain exceptions of dpdb.

Every failure a user can cause or meet is one of these; the CLI prints
``error: <message>`` and exits non-zero. Database errors are wrapped at the
boundary with ``raise ... from e``.
"""

from __future__ import annotations

__all__ = [
    "QueryError",
    "AlertError",
    "PlotError",
    "ProvenanceError",
    "DpdbError",
    "ConfigError",
    "ServerError",
    "SchemaError",
    "VersionMismatchError",
    "ValidationError",
    "ReleaseStateError",
    "first_line",
]


class DpdbError(Exception):
    """Base class of every expected dpdb failure (message is one line)."""


class ConfigError(DpdbError):
    """A setting, path or DSN is unusable."""


class ServerError(DpdbError):
    """The PostgreSQL server cannot be found, started, reached or lacks an extension."""


class SchemaError(DpdbError):
    """A schema definition or a requested schema version is invalid."""


class VersionMismatchError(DpdbError):
    """The database was created or migrated by incompatible code."""


class ValidationError(DpdbError):
    """Input data fails validation (file, table, column and row are named)."""


class ReleaseStateError(DpdbError):
    """A catalog or release is not in a state that allows the action."""


class QueryError(DpdbError):
    """A query cannot run (bad SQL, a write in the read-only transaction) or its result cannot be written."""


class AlertError(DpdbError):
    """An alert cannot be made: unknown DiaSource, not visible at the instant, or an unreadable packet."""


class PlotError(DpdbError):
    """A plot cannot be made: unknown ID or table, nothing to plot, or the file cannot be written."""


class ProvenanceError(DpdbError):
    """An ID that no catalog of the database holds (or that is no dpdb ID)."""


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first line of ``exc``'s message: what a one-line error shows of a wrapped exception.

    An empty message gives ``default``, or the exception's class name.
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else (default or type(exc).__name__)
