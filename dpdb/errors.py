"""The domain exceptions of dpdb.

Every failure a user can cause or meet is one of these; the CLI prints
``error: <message>`` and exits non-zero. Database errors are wrapped at the
boundary with ``raise ... from e``.
"""

from __future__ import annotations

__all__ = [
    "first_line",
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
    "ShardError",
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


def first_line(error: BaseException | str, default: str | None = None) -> str:
    """The first non-empty line of an error's message: what a one-line error shows of a wrapped one.

    An empty message gives ``default``, else the exception's class name.
    """
    text = str(error).strip()
    if text:
        return text.splitlines()[0].strip()
    if default is not None:
        return default
    return type(error).__name__ if isinstance(error, BaseException) else ""


class ShardError(DpdbError):
    """A shard cannot be registered, reached or removed (the message names the shard)."""
