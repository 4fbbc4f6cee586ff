"""dpdb: a catalog and archive system for LSST/Rubin-style survey data on PostgreSQL.

The public API is :class:`Archive` (``dpdb.Archive()``), with :class:`Settings`
and the error classes; everything else is internal.
"""

from __future__ import annotations

from typing import Any

from ._version import code_version
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
    ShardError,
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
    "ShardError",
]


def __getattr__(name: str) -> Any:
    # The version is asked of git only when something needs it (a subprocess; see _version.py).
    if name == "__version__":
        return code_version()
    raise AttributeError(f"module 'dpdb' has no attribute {name!r}")
