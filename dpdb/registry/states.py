"""Release states, catalog kinds, and the one table of allowed state transitions.

A release moves through::

    created -> loaded -> validated | failed -> active -> superseded -> archived -> restoring -> loaded
                                                 (any but active and dropped) -> dropped

:data:`TRANSITIONS` is the only statement of which moves are allowed;
:func:`check_transition` enforces it in :func:`dpdb.registry.releases.set_state`,
and the sets the lifecycle asks about (which states accept loads, which can be
validated or activated) are derived from it. The database enforces the values
with CHECK constraints (schema v6, ``schema/v6/meta.yaml``), which
``tests/test_registry.py`` holds equal to these enums.
"""

from __future__ import annotations

from enum import StrEnum

from dpdb.errors import ReleaseStateError

__all__ = [
    "CatalogKind",
    "ReleaseState",
    "TRANSITIONS",
    "FORCED",
    "check_transition",
    "WRITABLE",
    "VALIDATABLE",
    "ACTIVATABLE",
    "FORCE_ACTIVATABLE",
    "UNLOADED",
    "names",
]


class CatalogKind(StrEnum):
    """What a catalog schema holds."""

    PROMPT = "prompt"
    """The living prompt catalog (DPDD §3.3)."""
    RELEASE = "release"
    """A data release (DPDD §4.3)."""


class ReleaseState(StrEnum):
    """Where a data release is in its lifecycle (DPDD §4.5)."""

    CREATED = "created"
    LOADED = "loaded"
    VALIDATED = "validated"
    FAILED = "failed"
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    ARCHIVED = "archived"
    RESTORING = "restoring"
    DROPPED = "dropped"


_S = ReleaseState

TRANSITIONS: dict[ReleaseState, frozenset[ReleaseState]] = {
    _S.CREATED: frozenset({_S.LOADED, _S.DROPPED}),
    _S.LOADED: frozenset({_S.LOADED, _S.VALIDATED, _S.FAILED, _S.ACTIVE, _S.DROPPED}),
    _S.FAILED: frozenset({_S.LOADED, _S.VALIDATED, _S.FAILED, _S.ACTIVE, _S.DROPPED}),
    _S.VALIDATED: frozenset({_S.VALIDATED, _S.FAILED, _S.ACTIVE, _S.DROPPED}),
    _S.ACTIVE: frozenset({_S.SUPERSEDED}),
    _S.SUPERSEDED: frozenset({_S.ACTIVE, _S.ARCHIVED, _S.DROPPED}),
    _S.ARCHIVED: frozenset({_S.RESTORING, _S.DROPPED}),
    _S.RESTORING: frozenset({_S.LOADED, _S.DROPPED}),
    _S.DROPPED: frozenset(),
}
"""State -> the states it may move to (a state listed in its own set may be re-entered)."""

FORCED: frozenset[tuple[ReleaseState, ReleaseState]] = frozenset(
    {(_S.LOADED, _S.ACTIVE), (_S.FAILED, _S.ACTIVE)}
)
"""Moves allowed only when the operator forces them (activating an unvalidated release)."""


def _from(target: ReleaseState, *, forced: bool = False) -> tuple[ReleaseState, ...]:
    return tuple(s for s in ReleaseState if target in TRANSITIONS[s] and ((s, target) in FORCED) == forced)


WRITABLE = _from(_S.LOADED)
"""States that accept loads (created, loaded, failed, restoring); validated and later are frozen."""
VALIDATABLE = _from(_S.VALIDATED)
"""States a release can be validated in."""
ACTIVATABLE = _from(_S.ACTIVE)
"""States a release can be activated from."""
FORCE_ACTIVATABLE = _from(_S.ACTIVE, forced=True)
"""States a release can be activated from with ``--force``."""
UNLOADED = (_S.ARCHIVED, _S.DROPPED)
"""States in which a release's tables are not in the database."""


def check_transition(
    name: str, old: ReleaseState | str, new: ReleaseState | str, *, force: bool = False
) -> None:
    """Refuse a move of release ``name`` that :data:`TRANSITIONS` does not allow (one-line error)."""
    before, after = ReleaseState(old), ReleaseState(new)
    if after not in TRANSITIONS[before]:
        allowed = ", ".join(sorted(TRANSITIONS[before])) or "none"
        raise ReleaseStateError(f"release {name} is {before}; it cannot become {after} (allowed: {allowed})")
    if (before, after) in FORCED and not force:
        raise ReleaseStateError(f"release {name} is {before}; it becomes {after} only when forced")


def names(states: tuple[ReleaseState, ...]) -> str:
    """``a, b, c``: states for a message."""
    return ", ".join(states)
