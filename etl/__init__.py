"""ETL: the one door into the database (Parquet validation and bulk loading).

``dpdb.etl.load(settings, "DiaSource", [path], into="prompt")`` is what
``dpdb load`` and the processing stages call; ``dpdb.etl.export_table`` writes
a table back to Parquet.
"""

from __future__ import annotations

from .export import export_table
from .load import FileResult, LoadSummary, load

__all__ = ["load", "LoadSummary", "FileResult", "export_table"]
