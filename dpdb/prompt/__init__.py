"""The living prompt catalog (DPDD §3.2-3.3): visit ingest with association and DiaObject aggregation."""

from .ingest import STEPS, VisitResult, ingest
from .relink import RelinkResult, relink

__all__ = ["STEPS", "VisitResult", "ingest", "RelinkResult", "relink"]
