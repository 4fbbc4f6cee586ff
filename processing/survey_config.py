"""The configuration of the simulated survey (processing/survey.py), which its daytime linkage
(processing/linkage.py) reads too."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from dpdb.errors import ConfigError

from .visits import MAX_VISITS_PER_NIGHT

__all__ = ["SurveyConfig", "survey_config"]


@dataclass(frozen=True)
class SurveyConfig:
    seed: int = 1
    visits_per_night: int = 10
    sources_per_visit: int = 1000  # about this many DiaSources per visit
    area_deg2: float = 30.0  # survey region: a square in (ra cos(dec0), dec) around center
    center: tuple[float, float] = (150.0, 2.0)  # ra, dec in deg
    field_area_deg2: float = 9.6  # one visit's footprint, split in 3x3 detectors
    first_mjd: float = 61000.0  # MJD TAI of night 0's start
    known_asteroid_fraction: float = 0.7

    def __post_init__(self) -> None:
        if not 1 <= self.visits_per_night < MAX_VISITS_PER_NIGHT:
            raise ConfigError(f"visits_per_night {self.visits_per_night} outside 1..999")
        if self.sources_per_visit <= 0 or self.area_deg2 <= 0 or self.field_area_deg2 <= 0:
            raise ConfigError("sources_per_visit, area_deg2 and field_area_deg2 must be positive")
        if not 0 <= self.known_asteroid_fraction <= 1:
            raise ConfigError("known_asteroid_fraction outside 0..1")


def survey_config(out: Path, **given: object) -> SurveyConfig:
    """The configuration of the survey in ``out`` (if one is there) with the values ``given`` on top.

    ``given`` uses the CLI's names (``area`` for ``area_deg2``); ``None`` values are ignored.
    """
    values: dict[str, Any] = {}
    stored = out / "survey.json"
    if stored.is_file():
        known = {f.name for f in fields(SurveyConfig)}
        values = {k: v for k, v in json.loads(stored.read_text())["config"].items() if k in known}
        values["center"] = tuple(values["center"])
    for option, value in given.items():
        if value is not None:
            values["area_deg2" if option == "area" else option] = value
    return SurveyConfig(**values)
