"""The simulated survey's numbering: visits by night, and the IDs of a visit's DiaSources.

Night ``n`` holds visits ``(n + 1) * 1000 + j`` for ``j`` < 1000 (so visit numbers
sort by time and name their night). A prompt DiaSource (DiaForcedSource) ID puts
the visit in the local part of a prompt-origin ID (:mod:`dpdb.ids`)::

    local = visit << 20 | kind << 19 | index     (kind 0 = DiaSource, 1 = DiaForcedSource)

A new DiaObject takes the ID of the DiaSource that created it (as Rubin's
prompt pipeline does), so a rerun of the same visit makes the same IDs. This
scheme is the simulator's: dpdb takes IDs as the files give them.
"""

from __future__ import annotations

import numpy as np

from dpdb.ids import PROMPT_ORIGIN, make_id

__all__ = [
    "MAX_VISITS_PER_NIGHT",
    "visit_number",
    "night_of_visit",
    "first_visit_of_night",
    "next_night",
    "visit_source_ids",
]

MAX_VISITS_PER_NIGHT = 1000
_VISIT_SHIFT = 20
_INDEX_LIMIT = 1 << 19


def visit_number(night: int, j: int) -> int:
    """Visit number of the ``j``-th visit of ``night``."""
    if not 0 <= j < MAX_VISITS_PER_NIGHT:
        raise ValueError(f"visit index {j} outside 0..{MAX_VISITS_PER_NIGHT - 1}")
    return (night + 1) * MAX_VISITS_PER_NIGHT + j


def night_of_visit(visit: int) -> int:
    """The night a visit number belongs to."""
    return int(visit) // MAX_VISITS_PER_NIGHT - 1


def first_visit_of_night(night: int) -> int:
    """The lowest visit number of ``night`` (every visit of earlier nights is below it)."""
    return visit_number(night, 0)


def next_night(last_visit: int | None) -> int:
    """The night after the one of ``last_visit`` (0 when nothing was simulated yet)."""
    return 0 if last_visit is None else night_of_visit(last_visit) + 1


def visit_source_ids(visit: int, count: int, forced: bool = False) -> np.ndarray:
    """``count`` prompt DiaSource (or DiaForcedSource) IDs of one visit."""
    if count > _INDEX_LIMIT:
        raise ValueError(f"visit {visit}: {count} sources exceed the {_INDEX_LIMIT} a visit can number")
    local = (np.int64(visit) << np.int64(_VISIT_SHIFT)) | (np.int64(int(forced)) << np.int64(19))
    return make_id(PROMPT_ORIGIN, local + np.arange(count, dtype=np.int64))
