"""Deprecated alias of :mod:`dpdb.registry.releases` and :mod:`dpdb.registry.activations` for branches
written before the registry. Nothing in dpdb imports it; delete it once no branch in flight does."""

from __future__ import annotations

from dpdb.registry.activations import active_release, previous_release
from dpdb.registry.releases import (
    LIFECYCLE_LOCK,
    NOW,
    RESERVED_NAMES,
    Release,
    all_releases,
    create_release,
    get_release,
    release_number,
    set_state,
)

__all__ = [
    "RESERVED_NAMES",
    "Release",
    "create_release",
    "get_release",
    "all_releases",
    "set_state",
    "NOW",
    "LIFECYCLE_LOCK",
    "active_release",
    "previous_release",
    "release_number",
]
