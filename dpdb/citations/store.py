"""The citation store: owned by the registry (:mod:`dpdb.registry.citations`), re-exported here."""

from __future__ import annotations

from dpdb.registry.citations import (
    LANDING_PATH,
    Citation,
    CitationError,
    CitationUnavailableError,
    ReleaseFact,
    all_citations,
    citing,
    find,
    get,
    handle_of,
    insert,
    latest_prompt_change,
    make_id,
    release_facts,
    release_named,
    rows,
)

__all__ = [
    "LANDING_PATH",
    "Citation",
    "CitationError",
    "CitationUnavailableError",
    "ReleaseFact",
    "all_citations",
    "citing",
    "find",
    "get",
    "handle_of",
    "insert",
    "latest_prompt_change",
    "make_id",
    "release_facts",
    "release_named",
    "rows",
]
