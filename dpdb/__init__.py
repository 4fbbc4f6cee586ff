"""dpdb: a catalog and archive system for LSST/Rubin-style survey data on PostgreSQL.

The public API is :class:`Archive` (``dpdb.Archive()``), with :class:`Settings`
and the error classes; everything else is internal.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dpdb")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

from .archive import Archive
from .config import Settings
from .errors import (
    AlertError,
    ConfigError,
    DpdbError,
    PlotError,
    ProvenanceError,
    QueryError,
    ReleaseStateError,
    SchemaError,
    ServerError,
    ValidationError,
    VersionMismatchError,
)

__all__ = [
    "__version__",
    "Archive",
    "Settings",
    "DpdbError",
    "ConfigError",
    "ServerError",
    "SchemaError",
    "VersionMismatchError",
    "ValidationError",
    "ReleaseStateError",
    "QueryError",
    "AlertError",
    "PlotError",
    "ProvenanceError",
]
