"""The catalog tables, which catalogs hold them, and how they are partitioned.

This module is the one place that knows the table list and the partition keys
(docs/architecture.md, decision 6): large tables are range-partitioned on ``_healpix_29``,
and a child table takes its parent object's pixel so an object and its
measurements share a partition.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "TableLayout",
    "LAYOUTS",
    "PROMPT_TABLES",
    "RELEASE_TABLES",
    "PIXEL_COLUMN",
    "LOAD_ID_COLUMN",
    "tables_for",
    "layout",
]

PIXEL_COLUMN = "_healpix_29"
"""HEALPix nested index at order 29 (as HATS' ``_healpix_29``); partition key."""

LOAD_ID_COLUMN = "_load_id"
"""Reference to ``dpdb_meta.load_manifest.load_id`` of the file a row came from."""


@dataclass(frozen=True)
class TableLayout:
    """Physical layout of one catalog table.

    Attributes
    ----------
    name
        Canonical (felis) table name.
    partitioned
        Range-partitioned on ``_healpix_29``.
    parent
        Table whose pixel the rows take (None: the row's own position).
    parent_key
        Column of this table that holds the parent's ID.
    since
        Schema version that added the table.
    internal
        Kept by dpdb itself (not loaded from files).
    """

    name: str
    partitioned: bool = False
    parent: str | None = None
    parent_key: str | None = None
    since: int = 1
    internal: bool = False


LAYOUTS: dict[str, TableLayout] = {
    t.name: t
    for t in (
        TableLayout("DiaObject", partitioned=True),
        TableLayout("DiaObjectLast", since=3, internal=True),
        TableLayout("DiaObjectSums", since=9, internal=True),
        TableLayout("DiaSource", partitioned=True, parent="DiaObject", parent_key="diaObjectId"),
        TableLayout("DiaForcedSource", partitioned=True, parent="DiaObject", parent_key="diaObjectId"),
        TableLayout("SSObject"),
        TableLayout("SSSource"),
        TableLayout("Object", partitioned=True),
        TableLayout("Source", partitioned=True, parent="Object", parent_key="objectId"),
        TableLayout("ForcedSource", partitioned=True, parent="Object", parent_key="objectId"),
        TableLayout("Visit"),
        TableLayout("CcdVisit"),
    )
}

PROMPT_TABLES = (
    "Visit",
    "CcdVisit",
    "DiaObject",
    "DiaObjectLast",
    "DiaObjectSums",
    "DiaSource",
    "DiaForcedSource",
    "SSObject",
    "SSSource",
)
"""Tables of the living prompt catalog (DPDD §3.3)."""

RELEASE_TABLES = (
    "Visit",
    "CcdVisit",
    "Object",
    "Source",
    "ForcedSource",
    "DiaObject",
    "DiaSource",
    "DiaForcedSource",
    "SSObject",
    "SSSource",
)
"""Tables of a data release (DPDD §4.3 plus the reprocessed prompt tables, §3.3.5)."""


def tables_for(kind: str) -> tuple[str, ...]:
    """Canonical table names of a catalog of ``kind`` ('prompt' or 'release')."""
    if kind == "prompt":
        return PROMPT_TABLES
    if kind == "release":
        return RELEASE_TABLES
    raise ValueError(f"unknown catalog kind {kind!r}")


def layout(table: str) -> TableLayout:
    """Layout of a table by canonical name, matched case-insensitively."""
    for name, lay in LAYOUTS.items():
        if name.lower() == table.lower():
            return lay
    raise KeyError(table)
