"""64-bit IDs unique across the prompt catalog and every data release.

DPDD §2.4; docs/architecture.md, decision 8.

Layout of an ID (bit 63, the sign bit, is always 0)::

    bits 58-62  origin: 1 = prompt catalog, 2 = dr1, 3 = dr2, ... (31 origins)
    bits 0-57   local number, assigned by whoever produces the rows

Prompt DiaSource and DiaForcedSource IDs put the visit in the local part::

    local = visit << 20 | kind << 19 | index     (kind 0 = DiaSource, 1 = DiaForcedSource)

A new DiaObject takes the ID of the DiaSource that created it (as Rubin's
prompt pipeline does), so a rerun of the same visit makes the same IDs.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ORIGIN_SHIFT",
    "PROMPT_ORIGIN",
    "release_origin",
    "make_id",
    "origin_of",
    "visit_source_ids",
    "reorigin",
]

ORIGIN_SHIFT = 58
PROMPT_ORIGIN = 1
_MAX_ORIGIN = 31
_LOCAL_MASK = (1 << ORIGIN_SHIFT) - 1
_VISIT_SHIFT = 20
_INDEX_LIMIT = 1 << 19


def release_origin(number: int) -> int:
    """Origin of data release number ``number`` (dr1 -> 2)."""
    origin = number + 1
    if not 2 <= origin <= _MAX_ORIGIN:
        raise ValueError(f"release number {number} outside 1..{_MAX_ORIGIN - 1}")
    return origin


def make_id(origin: int, local: int | np.ndarray) -> int | np.ndarray:
    """IDs with ``origin`` in the top bits and ``local`` below (scalar or int64 array)."""
    if not 1 <= origin <= _MAX_ORIGIN:
        raise ValueError(f"origin {origin} outside 1..{_MAX_ORIGIN}")
    if np.any(np.asarray(local) < 0) or np.any(np.asarray(local) > _LOCAL_MASK):
        raise ValueError("local ID part outside 0..2**58-1")
    if isinstance(local, np.ndarray):
        return (np.int64(origin) << np.int64(ORIGIN_SHIFT)) | local.astype(np.int64)
    return (origin << ORIGIN_SHIFT) | int(local)


def origin_of(ident: int) -> int:
    return int(ident) >> ORIGIN_SHIFT


def visit_source_ids(visit: int, count: int, forced: bool = False) -> np.ndarray:
    """``count`` prompt DiaSource (or DiaForcedSource) IDs of one visit."""
    if count > _INDEX_LIMIT:
        raise ValueError(f"visit {visit}: {count} sources exceed the {_INDEX_LIMIT} a visit can number")
    local = (np.int64(visit) << np.int64(_VISIT_SHIFT)) | (np.int64(int(forced)) << np.int64(19))
    return make_id(PROMPT_ORIGIN, local + np.arange(count, dtype=np.int64))  # type: ignore[return-value]


def reorigin(ids: np.ndarray, origin: int) -> np.ndarray:
    """The same local numbers under another origin (prompt IDs carried into a release)."""
    if not 1 <= origin <= _MAX_ORIGIN:
        raise ValueError(f"origin {origin} outside 1..{_MAX_ORIGIN}")
    return (np.asarray(ids, dtype=np.int64) & np.int64(_LOCAL_MASK)) | (
        np.int64(origin) << np.int64(ORIGIN_SHIFT)
    )
