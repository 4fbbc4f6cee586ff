"""Deprecated alias of :mod:`dpdb.model.layout` for branches written before the move. Nothing in dpdb
imports it; delete it once no branch in flight does."""

from __future__ import annotations

from dpdb.model.layout import (
    LAYOUTS,
    LOAD_ID_COLUMN,
    PIXEL_COLUMN,
    PROMPT_TABLES,
    RELEASE_TABLES,
    TableLayout,
    layout,
    tables_for,
)

__all__ = [
    "LAYOUTS",
    "LOAD_ID_COLUMN",
    "PIXEL_COLUMN",
    "PROMPT_TABLES",
    "RELEASE_TABLES",
    "TableLayout",
    "layout",
    "tables_for",
]
