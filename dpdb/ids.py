"""64-bit IDs unique across the prompt catalog and every data release.

DPDD §2.4; docs/architecture.md, decision 8.

Layout of an ID (bit 63, the sign bit, is always 0)::

    bits 58-62  origin: 1 = prompt catalog, 2 = dr1, 3 = dr2, ... (31 origins)
    bits 0-57   local number, assigned by whoever produces the rows

(The simulated survey's scheme for the local part of DiaSource IDs is in
``processing/visits.py``.)
"""

from __future__ import annotations

from typing import overload

import numpy as np

__all__ = [
    "ORIGIN_SHIFT",
    "PROMPT_ORIGIN",
    "release_origin",
    "make_id",
    "origin_of",
    "reorigin",
]

ORIGIN_SHIFT = 58
PROMPT_ORIGIN = 1
_MAX_ORIGIN = 31
_LOCAL_MASK = (1 << ORIGIN_SHIFT) - 1


def release_origin(number: int) -> int:
    """Origin of data release number ``number`` (dr1 -> 2)."""
    origin = number + 1
    if not 2 <= origin <= _MAX_ORIGIN:
        raise ValueError(f"release number {number} outside 1..{_MAX_ORIGIN - 1}")
    return origin


@overload
def make_id(origin: int, local: int) -> int: ...
@overload
def make_id(origin: int, local: np.ndarray) -> np.ndarray: ...
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


def reorigin(ids: np.ndarray, origin: int) -> np.ndarray:
    """The same local numbers under another origin (prompt IDs carried into a release)."""
    if not 1 <= origin <= _MAX_ORIGIN:
        raise ValueError(f"origin {origin} outside 1..{_MAX_ORIGIN}")
    return (np.asarray(ids, dtype=np.int64) & np.int64(_LOCAL_MASK)) | (
        np.int64(origin) << np.int64(ORIGIN_SHIFT)
    )
