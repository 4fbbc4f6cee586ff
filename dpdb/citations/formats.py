"""A citation's metadata for others: DataCite JSON, BibTeX, plain JSON, and file metadata.

DataCite JSON is the payload of the DataCite REST API (``{"data": {"type":
"dois", "attributes": ...}}``) whose attributes follow the DataCite metadata
schema 4.5; registering the DOI at DataCite is an operator's step outside dpdb.
"""

from __future__ import annotations

import json
from typing import Any

from dpdb.config import Settings
from dpdb.registry.citations import Citation, rows

__all__ = ["FORMATS", "datacite", "bibtex", "as_json", "render", "file_metadata"]

FORMATS = ("json", "datacite", "bibtex")
"""Formats of ``dpdb cite show``."""

DATACITE_SCHEMA = "http://datacite.org/schema/kernel-4"


def datacite(c: Citation, settings: Settings, base: str | None = None) -> dict[str, Any]:
    """The DataCite REST API payload (metadata schema 4.5) of a citation; ``url`` is its landing page
    (under ``base``, or the configured or running portal: :meth:`Citation.landing_url`)."""
    prefix, suffix = c.handle.split("/", 1)
    technical = (
        f"{rows(c.row_count)}; {c.hash_method} SHA-256 {c.result_sha256}; read "
        f"{', '.join(c.tables) or 'no table'} as of MJD {c.as_of_mjd_tai!r} TAI; "
        f"dpdb {c.software_version}, schema v{c.schema_version}"
    )
    attributes: dict[str, Any] = {
        "doi": c.handle,
        "prefix": prefix,
        "suffix": suffix,
        "types": {"resourceTypeGeneral": "Dataset", "resourceType": "Query result"},
        "creators": [{"name": c.creator}],
        "titles": [{"title": c.title}],
        "publisher": {"name": settings.citation_publisher},
        "publicationYear": str(c.created_at.year),
        "dates": [
            {"date": c.created_at.date().isoformat(), "dateType": "Created"},
            {
                "date": c.as_of_utc + "Z",
                "dateType": "Other",
                "dateInformation": "the instant the query is evaluated at (data as of)",
            },
        ],
        "alternateIdentifiers": [
            {"alternateIdentifier": c.citation_id, "alternateIdentifierType": "dpdb citation"}
        ],
        "sizes": [f"{rows(c.row_count)}"],
        "formats": [
            "text/csv",
            "application/json",
            "application/vnd.apache.parquet",
            "application/x-votable+xml",
        ],  # fmt: skip
        "version": c.software_version,
        "descriptions": [
            {"description": c.query, "descriptionType": "Methods"},
            {"description": technical, "descriptionType": "TechnicalInfo"},
        ],
        "schemaVersion": DATACITE_SCHEMA,
    }
    landing = c.landing_url(settings, base)
    if landing:
        attributes["url"] = landing
    return {"data": {"id": c.handle, "type": "dois", "attributes": attributes}}


_BIBTEX_ESCAPES = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "%": r"\%", "&": r"\&", "#": r"\#", "_": r"\_",
    "$": r"\$", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


def _tex(text: str) -> str:
    return "".join(_BIBTEX_ESCAPES.get(ch, ch) for ch in " ".join(text.split()))


def bibtex(c: Citation, settings: Settings, base: str | None = None) -> str:
    """A BibTeX ``@misc`` entry of a citation (key ``dpdb:<id>``)."""
    fields = [
        ("author", _tex(c.creator)),
        ("title", "{" + _tex(c.title) + "}"),
        ("year", str(c.created_at.year)),
        ("publisher", _tex(settings.citation_publisher)),
        ("howpublished", _tex(f"dpdb query result as of {c.as_of_utc} UTC")),
        ("doi", c.handle),
        ("url", c.landing_url(settings, base) or c.doi_url),
        ("note", _tex(f"{rows(c.row_count)}, {c.hash_method} SHA-256 {c.result_sha256}. Query: {c.query}")),
    ]
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields)
    return f"@misc{{dpdb:{c.citation_id},\n{body}\n}}\n"


def as_json(c: Citation, settings: Settings, base: str | None = None) -> dict[str, Any]:
    """Everything stored about a citation, with its landing URL and citation line."""
    from .cite import citation_line

    return {**c.to_json(settings, base), "citation": citation_line(c, settings)}


def render(c: Citation, settings: Settings, fmt: str, base: str | None = None) -> str:
    """The text of a citation in format ``fmt`` (json, datacite or bibtex); ``base``: the portal's URL."""
    if fmt == "bibtex":
        return bibtex(c, settings, base)
    if fmt == "datacite":
        return json.dumps(datacite(c, settings, base), indent=2) + "\n"
    if fmt == "json":
        return json.dumps(as_json(c, settings, base), indent=2) + "\n"
    from dpdb.registry.citations import CitationError

    raise CitationError(f"unknown citation format {fmt!r} (formats: {', '.join(FORMATS)})")


def file_metadata(c: Citation, settings: Settings, base: str | None = None) -> dict[str, str]:
    """Key/value metadata a result file carries (Parquet key-value, VOTable INFO, CSV comments)."""
    from .cite import citation_line

    landing = c.landing_url(settings, base)
    return {
        "citation_id": c.citation_id,
        "citation_doi": c.handle,
        "citation": citation_line(c, settings),
        "citation_query": c.query,
        "citation_as_of_mjd_tai": repr(c.as_of_mjd_tai),
        "citation_as_of_utc": c.as_of_utc,
        "citation_row_count": str(c.row_count),
        "citation_result_sha256": c.result_sha256,
        "citation_hash_method": c.hash_method,
        "citation_columns": json.dumps([[col["name"], col["type"]] for col in c.columns]),
        **({"citation_landing_url": landing} if landing else {}),
    }
