"""HEALPix pixel indexes (nested scheme) for partitioning, vectorized with healpy."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["PIXEL_ORDER", "pixels", "partition_bounds", "partition_of"]

PIXEL_ORDER = 29
"""Order of the stored pixel index; coarser partitions are ranges of it."""


def pixels(ra: npt.ArrayLike, dec: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Nested HEALPix index at order 29 of positions in degrees.

    Computed with cdshealpix (a hats dependency): the same indexes as healpy's ``ang2pix`` (tested),
    faster, and importing it costs a third of importing healpy, whose package imports matplotlib:
    this runs in every load, so in the start of every ``dpdb load`` and ``dpdb release load``.
    Positions outside the sphere (NaN, |dec| > 90) go to healpy, which refuses them.
    """
    ra_a = np.asarray(ra, dtype=np.float64)
    dec_a = np.asarray(dec, dtype=np.float64)
    if not (np.all(np.isfinite(ra_a)) and np.all(np.abs(dec_a) <= 90.0)):
        import healpy  # here, not at the top: it imports matplotlib, half a second of a command's start

        pix = healpy.ang2pix(1 << PIXEL_ORDER, ra_a, dec_a, nest=True, lonlat=True)
        return np.asarray(pix, dtype=np.int64)
    import astropy.units as u
    from astropy.coordinates import Latitude, Longitude
    from cdshealpix.nested import lonlat_to_healpix

    lon = Longitude(ra_a, unit=u.deg, copy=False)
    lat = Latitude(dec_a, unit=u.deg, copy=False)
    pix = np.asarray(lonlat_to_healpix(lon, lat, PIXEL_ORDER), dtype=np.int64)
    return pix.reshape(np.broadcast(ra_a, dec_a).shape)  # healpy's shape: a scalar for a scalar position


def partition_bounds(order: int) -> list[tuple[int, int, int]]:
    """(partition number, first pixel, end pixel exclusive) of each partition at ``order``."""
    if not 0 <= order <= PIXEL_ORDER:
        raise ValueError(f"partition order {order} outside 0..{PIXEL_ORDER}")
    shift = 2 * (PIXEL_ORDER - order)
    return [(n, n << shift, (n + 1) << shift) for n in range(12 * 4**order)]


def partition_of(pixel: int, order: int) -> int:
    """Partition number (pixel at ``order``) of an order-29 pixel."""
    return pixel >> (2 * (PIXEL_ORDER - order))
