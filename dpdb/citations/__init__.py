"""Citable queries (RDA dynamic data citation): a persistent identifier for any query result.

``dpdb cite`` and :meth:`dpdb.Archive.cite` pin a query to an instant, store it
with the row count and hash of its result under an identifier derived from the
query and its instant, and resolve it later by re-running and comparing. See
``docs/citations.md`` for the identifier, the hashing method and which RDA
recommendations this meets.
"""

from __future__ import annotations

from dpdb.registry.citations import Citation, CitationError, CitationUnavailableError

from .cite import Made, Resolution, citation_line, cite, dependents, drop_warning, resolve
from .digest import METHOD, ResultDigest, digest_rows
from .formats import FORMATS, bibtex, datacite, file_metadata, render
from .rowset import digest_table

__all__ = [
    "Citation",
    "CitationError",
    "CitationUnavailableError",
    "Made",
    "Resolution",
    "cite",
    "resolve",
    "dependents",
    "drop_warning",
    "citation_line",
    "METHOD",
    "ResultDigest",
    "digest_table",
    "digest_rows",
    "FORMATS",
    "datacite",
    "bibtex",
    "render",
    "file_metadata",
]
