"""The simulators as the rest of dpdb sees them: the one module of ``processing/`` that the CLI,
the demo and :class:`dpdb.Archive` import.

dpdb's own code never reaches into the simulators' internals (their sky
models, visit numbering or file layout); it asks this interface:

- :func:`simulate` a survey (:class:`SurveyConfig`, :func:`survey_config`) into per-visit Parquet
  directories, continuing at :func:`next_night` after the last visit ingested;
- :func:`produce` a data release directory;
- :func:`association_quality` of the prompt catalog against the simulated truth;
- :func:`first_visit_of_night`: where a night's visits start (to find the catalog
  as it was before a night).
"""

from __future__ import annotations

from .quality import Quality, association_quality
from .release import produce
from .survey import simulate
from .survey_config import SurveyConfig, survey_config
from .visits import first_visit_of_night, next_night

__all__ = [
    "SurveyConfig",
    "survey_config",
    "simulate",
    "next_night",
    "first_visit_of_night",
    "produce",
    "Quality",
    "association_quality",
]
