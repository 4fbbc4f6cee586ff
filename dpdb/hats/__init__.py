"""HATS export of dpdb catalogs for LSDB (docs/architecture.md, decision 9)."""

from __future__ import annotations

from .export import CatalogResult, ExportResult, HatsExportError, export_hats

__all__ = ["CatalogResult", "ExportResult", "HatsExportError", "export_hats"]
