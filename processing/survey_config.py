"""The configuration of the simulated survey (processing/survey.py), which its daytime linkage
(processing/linkage.py) reads too."""

from __future__ import annotations

from dataclasses import dataclass

from dpdb.errors import ConfigError

from .visits import MAX_VISITS_PER_NIGHT

__all__ = ["SurveyConfig"]


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
